"""Ablation of BEN on synthetic plates (Lin & Lu, Tables 3-4), held-out plates.

Each row changes one ingredient of BEN: how training batches are drawn
(``sampling``), where BatchNorm takes its statistics at inference (``norm``),
what a "batch" is (a plate, or an experiment of several plates), and whether
inference sees the whole plate or random minibatches of it. Every model is
trained on the first plates of ``make_plates`` and scored on plates it never
saw, for several seeds (each seed draws new plates and new weights).

Training with ``norm="frozen"`` and ``norm="group"`` is the same (BatchNorm
uses batch statistics in training whatever ``norm`` says), so one fitted
network serves both inference modes through ``set_params(norm=...)``.

Usage::

    python benchmarks/bench_ablation.py --quick    # ~1-2 minutes on 2 CPU cores
    python benchmarks/bench_ablation.py            # fuller: more plates, seeds, epochs
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    RESULTS,
    command,
    markdown_table,
    mean_std,
    setup_torch,
    write_results,
)

from sklearn_ben import BENClassifier  # noqa: E402
from sklearn_ben.backbones import SmallCNN  # noqa: E402
from sklearn_ben.datasets import make_plates  # noqa: E402

#: Configurations: plates, samples per plate, held-out plates, image side,
#: plates per experiment, epochs, seeds, minibatch size for the minibatch row.
CONFIGS = {
    "smoke": dict(
        n_plates=6, per_plate=24, n_test=2, size=16, per_exp=2, epochs=1,
        seeds=[0], chunk=8, width=4,
    ),
    "quick": dict(
        n_plates=9, per_plate=96, n_test=3, size=32, per_exp=3, epochs=15,
        seeds=[0, 1, 2], chunk=32, width=16,
    ),
    "full": dict(
        n_plates=12, per_plate=144, n_test=3, size=32, per_exp=3, epochs=30,
        seeds=[0, 1, 2, 3, 4], chunk=32, width=16,
    ),
}  # fmt: skip

#: (row, sampling, norm, fit batches, inference) in table order.
ROWS = [
    ("vanilla", "random", "frozen", "random", "whole plate"),
    ("group inference only", "random", "group", "random", "whole plate"),
    ("group training only", "group", "frozen", "plate", "whole plate"),
    ("BEN", "group", "group", "plate", "whole plate"),
    ("BEN with controls", "group", "controls", "plate", "whole plate"),
    ("BEN, batches by experiment", "group", "group", "experiment", "whole plate"),
    ("BEN, minibatch inference", "group", "group", "plate", "minibatches"),
]


def minibatch_groups(groups, chunk, seed):
    """Plate id + random chunk id: each chunk of ~``chunk`` samples of a plate
    is normalised on its own, as with plain minibatch inference."""
    rng = np.random.default_rng(seed)
    out = np.empty(len(groups), dtype=object)
    for plate in np.unique(groups):
        idx = rng.permutation(np.flatnonzero(groups == plate))
        n_chunks = max(1, len(idx) // chunk)
        for k, part in enumerate(np.array_split(idx, n_chunks)):
            out[part] = f"{plate}/{k}"
    return out


def _fit(cfg, seed, data, train, sampling, norm, fit_groups):
    clf = BENClassifier(
        module=SmallCNN(width=cfg["width"]),
        sampling=sampling,
        norm=norm,
        max_epochs=cfg["epochs"],
        batch_size=75,
        random_state=seed,
    )
    return clf.fit(
        data.X[train],
        data.y[train],
        groups=fit_groups[train],
        controls=data.controls[train],
    )


def run_seed(cfg, seed, composition):
    """Accuracy of every row on the held-out plates, for one seed."""
    data = make_plates(
        n_plates=cfg["n_plates"],
        n_samples_per_plate=cfg["per_plate"],
        image_size=cfg["size"],
        n_plates_per_experiment=cfg["per_exp"],
        composition=composition,
        random_state=seed,
    )
    plates = np.unique(data.groups)
    test = np.isin(data.groups, plates[-cfg["n_test"] :])
    train = ~test
    fitted = {}
    scores = {}
    for name, sampling, norm, batches, inference in ROWS:
        fit_groups = data.experiments if batches == "experiment" else data.groups
        train_norm = "controls" if norm == "controls" else "group"
        key = (sampling, train_norm, batches)
        if key not in fitted:
            fitted[key] = _fit(cfg, seed, data, train, sampling, train_norm, fit_groups)
        clf = fitted[key].set_params(norm=norm)
        groups = data.groups[test]
        if inference == "minibatches":
            groups = minibatch_groups(groups, cfg["chunk"], seed)
        pred = clf.predict(data.X[test], groups=groups, controls=data.controls[test])
        y = data.y[test]
        only_controls = _control_only_plates(data, test)
        scores[name] = {
            "accuracy": float(np.mean(pred == y)),
            "control_only": (
                float(np.mean(pred[only_controls] == y[only_controls]))
                if only_controls.any()
                else None
            ),
        }
    return scores


def _control_only_plates(data, test):
    """Mask (within the test samples) of the plates that hold controls only."""
    groups, y = data.groups[test], data.y[test]
    only = [p for p in np.unique(groups) if np.all(y[groups == p] == 0)]
    return np.isin(groups, only)


def run(cfg, compositions):
    results = {}
    for composition in compositions:
        per_seed = [run_seed(cfg, seed, composition) for seed in cfg["seeds"]]
        results[composition] = per_seed
    return results


def format_results(results, cfg):
    header = ["row", "sampling", "norm", "training batches", "inference"]
    header += ["balanced plates: accuracy"]
    varied = "varied" in results
    if varied:
        header += ["varied plates: accuracy", "varied: control-only plate accuracy"]
    rows = []
    for name, sampling, norm, batches, inference in ROWS:
        inference = (
            f"minibatches of ~{cfg['chunk']}"
            if inference == "minibatches"
            else inference
        )
        row = [name, sampling, norm, batches, inference]
        row.append(mean_std([s[name]["accuracy"] for s in results["balanced"]]))
        if varied:
            row.append(mean_std([s[name]["accuracy"] for s in results["varied"]]))
            row.append(mean_std([s[name]["control_only"] for s in results["varied"]]))
        rows.append(row)
    return markdown_table(header, rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="minutes on 2 CPU cores")
    mode.add_argument("--smoke", action="store_true", help="seconds; for the tests")
    parser.add_argument("--no-varied", action="store_true", help="skip varied plates")
    parser.add_argument("--out", default=str(RESULTS), help="results folder")
    args = parser.parse_args(argv)
    setup_torch(2)
    name = "smoke" if args.smoke else "quick" if args.quick else "full"
    cfg = CONFIGS[name]
    compositions = ["balanced"] if args.no_varied else ["balanced", "varied"]
    start = time.perf_counter()
    results = run(cfg, compositions)
    seconds = time.perf_counter() - start
    n_train = cfg["n_plates"] - cfg["n_test"]
    body = (
        f"Held-out-plate accuracy of a SmallCNN(width={cfg['width']}) on "
        f"`make_plates(n_plates={cfg['n_plates']}, n_samples_per_plate="
        f"{cfg['per_plate']}, image_size={cfg['size']}, n_classes=3, "
        f"n_plates_per_experiment={cfg['per_exp']})`: trained for "
        f"{cfg['epochs']} epochs (batch size 75) on the first {n_train} plates, "
        f"scored on the last {cfg['n_test']} (chance 0.333 on balanced plates).\n\n"
        + format_results(results, cfg)
        + "\n"
    )
    notes = [
        "vanilla = random minibatches and running-average BN at inference; "
        "BEN = one plate per training batch and the plate's own BN statistics "
        "at inference; rows in between change one of the two.",
        "`frozen` and `group` rows share one fitted network per seed "
        "(training is identical; only inference differs).",
        "Batches by experiment: `fit(groups=experiments)` (plates of one "
        "experiment share part of their plate effect), `predict(groups=plates)`.",
        f"Minibatch inference: the BEN model predicts with groups = plate + a "
        f"random chunk id (~{cfg['chunk']} samples each), so each chunk is "
        "normalised with its own statistics, as the paper's minibatch row.",
        'Varied plates: `composition="varied"`, every third plate holds '
        "controls only and the others random class shares; the control-only "
        "column is the accuracy on the held-out control-only plate (all DMSO).",
    ]
    path = write_results(
        Path(args.out) / "ablation.md",
        title="Ablation of BEN on synthetic plates (paper Tables 3-4)",
        cmd=command("bench_ablation.py", argv),
        seeds=cfg["seeds"],
        seconds=seconds,
        body=body,
        notes=notes,
    )
    print(path.read_text())
    return path


if __name__ == "__main__":
    main()
