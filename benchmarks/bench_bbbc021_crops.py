"""Vanilla, input standardisation and BEN on real BBBC021 crops, held-out plates.

DMSO vs cycloheximide on 6 plates of BBBC021 (batch Week4). Three plates hold
DMSO controls only; the other three (Week4_27801, 27821, 27861) hold both
classes. Each of those three is held out in turn: the network trains on the
other five plates (two mixed, three control-only) and is scored on the whole
held-out plate, with accuracy, balanced accuracy and ROC AUC (the held-out
plate's classes are not balanced, about 55% DMSO).

The cheap alternative is in the table: a plain (vanilla) network on crops
standardised per plate and channel (``PlateControlScaler``, statistics from
all the plate's crops or from its DMSO crops), and BEN on control-standardised
crops. Every row is compared with the stronger of the two standardised-input
baselines by paired 95% t-intervals: over seeds (balanced accuracy averaged
over the held-out plates) and, per held-out plate, over seeds.

For CPU speed the 68x68 crops are mean-pooled (``pool`` x ``pool`` blocks)
and training uses a seeded random subset of each training plate; held-out
plates are scored on all their crops. Needs the data in ``../shared/data``
(or ``$SKLEARN_BEN_DATA``).

Usage::

    python benchmarks/bench_bbbc021_crops.py --quick   # a few minutes on 2 CPU cores
    python benchmarks/bench_bbbc021_crops.py           # 5 seeds, smaller crops
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

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
from sklearn_ben.datasets import load_bbbc021_crops  # noqa: E402

#: Plates that hold both classes; each is held out in turn.
TREATED_PLATES = ["Week4_27801", "Week4_27821", "Week4_27861"]

#: The smoke run loads three plates only: one DMSO-only, two mixed.
SMOKE_PLATES = ["Week4_27481", "Week4_27801", "Week4_27821"]

CONFIGS = {
    "smoke": dict(per_plate=40, test_per_plate=60, epochs=1, seeds=[0], width=4,
                  pool=2, folds=TREATED_PLATES[:1]),
    "quick": dict(per_plate=150, test_per_plate=None, epochs=8, seeds=[0, 1, 2],
                  width=16, pool=2, folds=TREATED_PLATES),
    "full": dict(per_plate=100, test_per_plate=None, epochs=6, pool=3,
                 seeds=[0, 1, 2, 3, 4], width=16, folds=TREATED_PLATES),
}  # fmt: skip

#: (row, inputs, sampling, norm); rows with the same inputs and training share
#: one fitted network. inputs: raw, or standardised per plate and channel on
#: all crops / on DMSO crops.
ROWS = [
    ("vanilla", "raw", "random", "frozen"),
    ("vanilla, inputs std. per plate", "all", "random", "frozen"),
    ("vanilla, inputs std. on plate controls", "controls", "random", "frozen"),
    ("group inference only", "raw", "random", "group"),
    ("group training only", "raw", "group", "frozen"),
    ('BEN (norm="group")', "raw", "group", "group"),
    ("BEN with controls", "raw", "group", "controls"),
    ("BEN with controls, inputs std. on plate controls", "controls", "group",
     "controls"),
]  # fmt: skip

#: The cheap alternatives; the stronger (by mean) is the tables' baseline.
BASELINES = ["vanilla, inputs std. per plate", "vanilla, inputs std. on plate controls"]


def downsample(X, pool=2):
    """``pool`` x ``pool`` mean pooling of uint16 crops, scaled to [0, 1] float32."""
    n, c, h, w = X.shape
    X = X[:, :, : h // pool * pool, : w // pool * pool].astype(np.float32)
    X = X.reshape(n, c, h // pool, pool, w // pool, pool).mean(axis=(3, 5))
    return X / np.float32(65535)


def _subset(groups, n_per_plate, rng):
    """Indices of at most ``n_per_plate`` random samples of every plate."""
    keep = []
    for plate in np.unique(groups):
        idx = np.flatnonzero(groups == plate)
        if n_per_plate is not None and len(idx) > n_per_plate:
            idx = np.sort(rng.choice(idx, n_per_plate, replace=False))
        keep.append(idx)
    return np.concatenate(keep)


def run_fold(data, cfg, held_out, seed):
    """Scores of every row with ``held_out`` as the test plate, one seed."""
    rng = np.random.default_rng(seed)
    train_idx = np.flatnonzero(data.groups != held_out)[
        _subset(data.groups[data.groups != held_out], cfg["per_plate"], rng)
    ]
    test_idx = np.flatnonzero(data.groups == held_out)
    if cfg["test_per_plate"] is not None:
        test_idx = np.sort(rng.choice(test_idx, cfg["test_per_plate"], replace=False))
    fitted, scores = {}, {}
    for name, source, sampling, norm in ROWS:
        X = data.inputs[source]
        train_norm = "controls" if norm == "controls" else "group"
        key = (source, sampling, train_norm)
        if key not in fitted:
            clf = BENClassifier(
                module=SmallCNN(width=cfg["width"]),
                sampling=sampling,
                norm=train_norm,
                max_epochs=cfg["epochs"],
                batch_size=75,
                random_state=seed,
            )
            fitted[key] = clf.fit(
                X[train_idx],
                data.y[train_idx],
                groups=data.groups[train_idx],
                controls=data.controls[train_idx],
            )
        clf = fitted[key].set_params(norm=norm)
        print(f"{held_out} seed {seed}: {name}", file=sys.stderr, flush=True)
        kw = dict(groups=data.groups[test_idx], controls=data.controls[test_idx])
        proba = clf.predict_proba(X[test_idx], **kw)[:, 1]
        y = data.y[test_idx]
        pred = (proba >= 0.5).astype(int)
        scores[name] = {
            "accuracy": accuracy_score(y, pred),
            "balanced": balanced_accuracy_score(y, pred),
            "auc": roc_auc_score(y, proba),
        }
    return scores


def format_results(results, cfg):
    """Summary (mean over held-out plates), paired differences, per-plate tables."""
    folds, seeds = cfg["folds"], cfg["seeds"]
    names = [r[0] for r in ROWS]

    def per_seed(name, metric):
        return [np.mean([results[(f, s)][name][metric] for f in folds]) for s in seeds]

    summary = []
    for name, source, sampling, norm in ROWS:
        row = [name, source, sampling, norm]
        for metric in ("accuracy", "balanced", "auc"):
            row.append(format_mean(t_interval(per_seed(name, metric))))
        summary.append(row)
    header = ["method", "inputs", "sampling", "norm", "accuracy"]
    header += ["balanced accuracy", "ROC AUC"]
    out = (
        "### Mean over the held-out plates (± 95% t half-width over seeds)\n\n"
        + markdown_table(header, summary)
        + "\n"
    )
    scores = {name: per_seed(name, "balanced") for name in names}
    baseline = strongest(scores, BASELINES)
    head = ["method", "balanced accuracy"]
    head += [f"paired difference vs {baseline!r} [95% t over seeds]", "verdict"]
    out += (
        "\n### Balanced accuracy: paired differences over seeds\n\n"
        + markdown_table(head, comparison_table(scores, names, baseline))
        + "\n"
    )
    per_plate = []
    for name in names:
        row = [name]
        for f in folds:
            plate = {n: [results[(f, s)][n]["balanced"] for s in seeds] for n in names}
            cells = comparison_table(plate, [name], baseline, digits=2)[0]
            row.append(" ".join(c for c in cells[1:] if c and c != "(baseline)"))
        per_plate.append(row)
    header = ["method"] + [
        f"held out {f}: bal. acc, difference [95% t], verdict" for f in folds
    ]
    out += (
        "\n### Per held-out plate: balanced accuracy and paired difference vs "
        f"{baseline!r} over seeds\n\n" + markdown_table(header, per_plate) + "\n"
    )
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="minutes on 2 CPU cores")
    mode.add_argument("--smoke", action="store_true", help="seconds; for the tests")
    parser.add_argument("--out", default=str(RESULTS), help="results folder")
    parser.add_argument("--data-home", default=None, help="folder of bbbc021_crops/")
    args = parser.parse_args(argv)
    setup_torch(2)
    cfg = CONFIGS["smoke" if args.smoke else "quick" if args.quick else "full"]
    start = time.perf_counter()
    plates = SMOKE_PLATES if args.smoke else None
    raw = load_bbbc021_crops(plates=plates, data_home=args.data_home)
    if args.smoke:
        keep = _subset(raw.groups, 120, np.random.default_rng(0))
        raw.X, raw.y, raw.groups, raw.controls = (
            raw.X[keep], raw.y[keep], raw.groups[keep], raw.controls[keep]
        )  # fmt: skip
    raw.X = downsample(raw.X, cfg["pool"])
    raw.inputs = {
        "raw": raw.X,
        "all": standardise_inputs(raw.X, raw.groups),
        "controls": standardise_inputs(raw.X, raw.groups, raw.controls),
    }
    results = {
        (fold, seed): run_fold(raw, cfg, fold, seed)
        for fold in cfg["folds"]
        for seed in cfg["seeds"]
    }
    seconds = time.perf_counter() - start
    n_plates = len(np.unique(raw.groups))
    n_dmso_only = n_plates - len(np.unique(raw.groups[raw.y == 1]))
    per_plate = "all" if cfg["per_plate"] is None else f"{cfg['per_plate']} random"
    body = (
        f"DMSO (0) vs cycloheximide (1) on BBBC021 Week4 single-cell crops. "
        f"Leave one plate out over {', '.join(cfg['folds'])}: train on the other "
        f"{n_plates - 1} plates ({per_plate} crops of each, {n_dmso_only} of "
        "them DMSO-only), "
        f"score all crops of the held-out plate. SmallCNN(width={cfg['width']}), "
        f"{cfg['epochs']} epochs, batch size 75, crops {cfg['pool']}x{cfg['pool']} "
        f"mean-pooled to {raw.X.shape[-1]}x{raw.X.shape[-1]}.\n\n"
        + format_results(results, cfg)
    )
    notes = [
        "A difference is a win or a loss only when its 95% paired t-interval "
        f"over the {len(cfg['seeds'])} seeds excludes zero; otherwise a tie. "
        "The baseline is the stronger (by mean balanced accuracy) of the two "
        "vanilla rows on standardised inputs.",
        "Inputs std. = `PlateControlScaler().fit_transform(X, groups=plates"
        "[, controls=DMSO])` on the pooled crops: every plate (the held-out one "
        "too) standardised per channel with its own statistics.",
        "The full mode has 5 seeds but fewer crops (100 per training plate), "
        "epochs (6) and pixels (3x3 pooling, 22x22) than --quick, to fit the "
        "shared 2-core machine: compare its verdicts, not its levels, with the "
        "quick table.",
        "Held-out plates are about 55% DMSO, so always answering DMSO scores "
        "accuracy ~0.55 and balanced accuracy 0.5; read balanced accuracy and "
        "AUC.",
        "Training plates differ in composition: three DMSO-only plates and two "
        'mixed plates. With `norm="group"` a DMSO-only batch is normalised '
        "with DMSO statistics and a mixed batch with mixed statistics, so the "
        "same cell is represented differently depending on its plate; "
        '`norm="controls"` normalises every plate with its DMSO cells only.',
        "Rows sharing inputs and `sampling` share one fitted network per seed "
        "and fold "
        "(`frozen` vs `group` only changes inference).",
        "We used image set BBBC021v1 [Caie et al., Molecular Cancer "
        "Therapeutics, 2010], available from the Broad Bioimage Benchmark "
        "Collection [Ljosa et al., Nature Methods, 2012].",
    ]
    path = write_results(
        Path(args.out) / "bbbc021_crops.md",
        title="Real images: BBBC021 crops, held-out plates",
        cmd=command("bench_bbbc021_crops.py", argv),
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
