"""Ablation of BEN on synthetic plates (Lin & Lu, Tables 3-4), held-out plates.

Each row changes one ingredient of BEN: how training batches are drawn
(``sampling``), where BatchNorm takes its statistics at inference (``norm``),
what a "batch" is (a plate, or an experiment of several plates), and whether
inference sees the whole plate or random minibatches of it. Every model is
trained on the first plates of ``make_plates`` and scored on plates it never
saw, for several seeds (each seed draws new plates and new weights).

The cheap alternative is in every table: a plain (vanilla) network on inputs
standardised per plate and channel (``PlateControlScaler``, statistics from
all the plate's samples or from its controls), and BEN on control-standardised
inputs. Plates come with the default, mostly affine plate effects and with
``nonaffine_effects="all"`` (size, density, texture, gamma, vignetting,
defocus, saturation), each balanced and varied. Every row is compared with
the stronger of the two standardised-input baselines by a paired 95%
t-interval over seeds.

Training with ``norm="frozen"`` and ``norm="group"`` is the same (BatchNorm
uses batch statistics in training whatever ``norm`` says), so one fitted
network serves both inference modes through ``set_params(norm=...)``.

Usage::

    python benchmarks/bench_ablation.py --quick    # ~7 minutes on 2 busy CPU cores
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
    SPREAD_T,
    command,
    comparison_table,
    markdown_table,
    setup_torch,
    standardise_inputs,
    strongest,
    write_results,
)
from _stats import format_mean, t_interval  # noqa: E402

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
        n_plates=6, per_plate=48, n_test=2, size=24, per_exp=2, epochs=8,
        seeds=[0, 1, 2], chunk=16, width=16,
    ),
    "full": dict(
        n_plates=9, per_plate=48, n_test=3, size=24, per_exp=3, epochs=10,
        seeds=[0, 1, 2, 3, 4], chunk=16, width=16,
    ),
}  # fmt: skip

#: Rows run on the affine plate sets only (to save CPU time).
AFFINE_ONLY = {"BEN, batches by experiment"}

#: Plate sets: (name, composition, nonaffine_effects).
PLATES = [
    ("balanced, affine", "balanced", None),
    ("varied, affine", "varied", None),
    ("balanced, non-affine", "balanced", "all"),
    ("varied, non-affine", "varied", "all"),
]

#: (row, inputs, sampling, norm, fit batches, inference) in table order.
#: inputs: raw, or standardised per plate and channel on all samples / controls.
ROWS = [
    ("vanilla", "raw", "random", "frozen", "random", "whole plate"),
    ("vanilla, inputs std. per plate", "all", "random", "frozen", "random",
     "whole plate"),
    ("vanilla, inputs std. on plate controls", "controls", "random", "frozen",
     "random", "whole plate"),
    ("group inference only", "raw", "random", "group", "random", "whole plate"),
    ("group training only", "raw", "group", "frozen", "plate", "whole plate"),
    ("BEN", "raw", "group", "group", "plate", "whole plate"),
    ("BEN with controls", "raw", "group", "controls", "plate", "whole plate"),
    ("BEN with controls, inputs std. on plate controls", "controls", "group",
     "controls", "plate", "whole plate"),
    ("BEN, batches by experiment", "raw", "group", "group", "experiment",
     "whole plate"),
    ("BEN, minibatch inference", "raw", "group", "group", "plate", "minibatches"),
]  # fmt: skip

#: The cheap alternatives; the stronger (by mean) is each table's baseline.
BASELINES = ["vanilla, inputs std. per plate", "vanilla, inputs std. on plate controls"]


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


def _fit(cfg, seed, X, data, train, sampling, norm, fit_groups):
    clf = BENClassifier(
        module=SmallCNN(width=cfg["width"]),
        sampling=sampling,
        norm=norm,
        max_epochs=cfg["epochs"],
        batch_size=75,
        random_state=seed,
    )
    return clf.fit(
        X[train],
        data.y[train],
        groups=fit_groups[train],
        controls=data.controls[train],
    )


def make_data(cfg, seed, composition, nonaffine):
    return make_plates(
        n_plates=cfg["n_plates"],
        n_samples_per_plate=cfg["per_plate"],
        image_size=cfg["size"],
        n_plates_per_experiment=cfg["per_exp"],
        composition=composition,
        nonaffine_effects=nonaffine,
        random_state=seed,
    )


def run_seed(cfg, seed, composition, nonaffine=None):
    """Accuracy of every row on the held-out plates, for one seed."""
    data = make_data(cfg, seed, composition, nonaffine)
    inputs = {
        "raw": data.X,
        "all": standardise_inputs(data.X, data.groups),
        "controls": standardise_inputs(data.X, data.groups, data.controls),
    }
    plates = np.unique(data.groups)
    test = np.isin(data.groups, plates[-cfg["n_test"] :])
    train = ~test
    fitted = {}
    scores = {}
    for name, source, sampling, norm, batches, inference in ROWS:
        if nonaffine is not None and name in AFFINE_ONLY:
            continue
        X = inputs[source]
        fit_groups = data.experiments if batches == "experiment" else data.groups
        train_norm = "controls" if norm == "controls" else "group"
        key = (source, sampling, train_norm, batches)
        if key not in fitted:
            fitted[key] = _fit(
                cfg, seed, X, data, train, sampling, train_norm, fit_groups
            )
        clf = fitted[key].set_params(norm=norm)
        groups = data.groups[test]
        if inference == "minibatches":
            groups = minibatch_groups(groups, cfg["chunk"], seed)
        pred = clf.predict(X[test], groups=groups, controls=data.controls[test])
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


def run(cfg, plate_sets):
    results = {}
    for label, composition, nonaffine in plate_sets:
        results[label] = [
            run_seed(cfg, seed, composition, nonaffine) for seed in cfg["seeds"]
        ]
        print(f"done: {label}", file=sys.stderr, flush=True)
    return results


def _accuracies(per_seed, metric="accuracy"):
    return {
        name: [s[name][metric] for s in per_seed]
        for name, *_ in ROWS
        if name in per_seed[0]
    }


def format_results(results, cfg):
    """A summary over plate sets, then one paired-comparison table per set."""
    names = [r[0] for r in ROWS]
    header = ["row", "inputs", "sampling", "norm", "training batches", "inference"]
    header += list(results)
    summary = []
    for name, source, sampling, norm, batches, inference in ROWS:
        if inference == "minibatches":
            inference = f"minibatches of ~{cfg['chunk']}"
        row = [name, source, sampling, norm, batches, inference]
        for per_seed in results.values():
            values = _accuracies(per_seed).get(name)
            row.append("not run" if values is None else format_mean(t_interval(values)))
        summary.append(row)
    out = (
        "### Held-out accuracy, mean ± 95% t half-width over seeds\n\n"
        + markdown_table(header, summary)
        + "\n"
    )
    for label, per_seed in results.items():
        scores = _accuracies(per_seed)
        baseline = strongest(scores, BASELINES)
        rows = comparison_table(scores, [n for n in names if n in scores], baseline)
        head = ["row", "accuracy", f"paired difference vs {baseline!r} [95% t]"]
        out += (
            f"\n### {label} plates: paired differences over seeds\n\n"
            + markdown_table(head + ["verdict"], rows)
            + "\n"
        )
        if label.startswith("varied"):
            only = _accuracies(per_seed, "control_only")
            cells = [
                f"{n}: {format_mean(t_interval(only[n]))}"
                for n in ("vanilla", baseline, "BEN", "BEN with controls")
            ]
            out += "\nAccuracy on the held-out control-only plate: " + "; ".join(cells)
            out += ".\n"
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="minutes on 2 CPU cores")
    mode.add_argument("--smoke", action="store_true", help="seconds; for the tests")
    parser.add_argument(
        "--plates",
        nargs="+",
        choices=[p[0] for p in PLATES],
        default=None,
        help="plate sets to run (default: all four)",
    )
    parser.add_argument("--out", default=str(RESULTS), help="results folder")
    args = parser.parse_args(argv)
    setup_torch(2)
    name = "smoke" if args.smoke else "quick" if args.quick else "full"
    cfg = CONFIGS[name]
    plate_sets = [p for p in PLATES if args.plates is None or p[0] in args.plates]
    start = time.perf_counter()
    results = run(cfg, plate_sets)
    seconds = time.perf_counter() - start
    n_train = cfg["n_plates"] - cfg["n_test"]
    body = (
        f"Held-out-plate accuracy of a SmallCNN(width={cfg['width']}) on "
        f"`make_plates(n_plates={cfg['n_plates']}, n_samples_per_plate="
        f"{cfg['per_plate']}, image_size={cfg['size']}, n_classes=3, "
        f"n_plates_per_experiment={cfg['per_exp']})`: trained for "
        f"{cfg['epochs']} epochs (batch size 75) on the first {n_train} plates, "
        f"scored on the last {cfg['n_test']} (chance 0.333 on balanced plates). "
        'Non-affine plates add `nonaffine_effects="all"`.\n\n'
        + format_results(results, cfg)
        + "\n"
    )
    notes = [
        "A difference is a win or a loss only when its 95% paired t-interval "
        f"over the {len(cfg['seeds'])} seeds excludes zero; otherwise a tie. "
        "The baseline of each table is the stronger (by mean) of the two "
        "vanilla rows on standardised inputs.",
        "Inputs std. = `PlateControlScaler().fit_transform(X, groups=plates"
        "[, controls=DMSO])`: every plate (held-out ones too, at prediction) "
        "standardised per channel with its own statistics, as BEN uses each "
        "plate's own statistics.",
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
        spread=SPREAD_T,
    )
    print(path.read_text())
    return path


if __name__ == "__main__":
    main()
