"""RxRx1-WILDS with BEN: the supervised protocol of Lin & Lu, from a local folder.

Trains ``BENClassifier`` on the official ``train`` split of a WILDS
``rxrx1_v1.0`` folder (images read lazily from disk by DataLoader workers,
minibatches drawn plate by plate) and scores the official out-of-distribution
``test`` split with whole-plate inference: top-1 averaged over all test images
(WILDS's ``acc_avg``), top-5, top-1 per cell type and the worst cell type
(WILDS's ``acc_wg``). A plate is the pair (experiment, plate).

Defaults are the paper's: ResNet-50, 90 epochs, Adam at 1e-3, weight decay
1e-5, 10 warm-up epochs then cosine, batch 75. ``--loader-benchmark`` instead
measures images/s of the estimator's data path against plain PIL decoding.

Usage::

    python benchmarks/rxrx1_wilds.py --root /data/rxrx1_v1.0 --num-workers 12
    python benchmarks/rxrx1_wilds.py --root /data/rxrx1_v1.0 --norm frozen \\
        --sampling random                      # the vanilla baseline
    python benchmarks/rxrx1_wilds.py --root /data/rxrx1_v1.0 --loader-benchmark \\
        --limit 5000 --num-workers 12
"""

import argparse
import os
import platform
import shlex
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from sklearn_ben import BENClassifier
from sklearn_ben._data import BatchDataset
from sklearn_ben.io import ImageFiles, read_image, read_rxrx1_metadata
from sklearn_ben.samplers import GroupBatchSampler

RESULTS = Path(__file__).parent / "results"
CELL_TYPES = ("HEPG2", "HUVEC", "RPE", "U2OS")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--root", required=True, help="the rxrx1_v1.0 folder")
    parser.add_argument("--epochs", type=int, default=90)
    parser.add_argument("--batch-size", type=int, default=75)
    parser.add_argument("--warmup", type=int, default=10, help="warm-up epochs")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-5)
    parser.add_argument(
        "--module", default="resnet50", choices=["resnet50", "resnet18", "cnn"]
    )
    parser.add_argument(
        "--norm", default="group", choices=["group", "controls", "frozen"]
    )
    parser.add_argument("--sampling", default="group", choices=["group", "random"])
    parser.add_argument(
        "--controls",
        default="negative",
        choices=["negative", "all"],
        help="control wells: negative only (sirna_id 1138) or also the positive "
        "controls (1108-1137); used with --norm controls",
    )
    parser.add_argument("--num-workers", type=int, default=min(8, os.cpu_count()))
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--precision",
        default="float32",
        choices=["float32", "bfloat16"],
        help="bfloat16: mixed-precision forward passes (recommended on H100/A100)",
    )
    parser.add_argument(
        "--predict-batch-size",
        type=int,
        default=None,
        help="largest chunk at inference (default: the whole plate at once)",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="keep at most this many images per split (a seeded random subset "
        "of the split, so plates and cell types stay mixed)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="Markdown results")
    parser.add_argument(
        "--loader-benchmark",
        action="store_true",
        help="measure images/s of the data path instead of training",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="loader benchmark: passes, best kept"
    )
    parser.add_argument("--verbose", type=int, default=1)
    return parser.parse_args(argv)


# ------------------------------------------------------------------- data
def load_split(meta, split, limit, seed):
    """Rows of one split; with ``limit``, a random subset spread over plates."""
    rows = meta[meta.dataset == split]
    if rows.empty:
        raise ValueError(
            f"metadata.csv has no rows with dataset == {split!r} (splits seen: "
            f"{sorted(meta.dataset.unique())}); pass the WILDS rxrx1_v1.0 folder."
        )
    if limit is not None and limit < len(rows):
        rows = rows.sample(n=limit, random_state=seed)
        # Batch norm needs two samples of a plate; drop plates left with one.
        sizes = rows.plate_key.map(rows.plate_key.value_counts())
        rows = rows[sizes >= 2]
    return rows.sort_values(["plate_key", "well", "site"]).reset_index(drop=True)


def read_plate(paths, num_workers, batch_size=64):
    """One plate's images as a uint8 array, decoded by DataLoader workers."""
    loader = DataLoader(
        ImageFiles(paths, mode="RGB", check=False),
        batch_size=batch_size,
        num_workers=num_workers,
    )
    return torch.cat(list(loader)).numpy()


def predict_proba_by_plate(clf, rows, args):
    """Whole-plate inference, one plate read into memory at a time.

    Group-wise normalisation treats plates independently, so predicting plate
    by plate gives the same outputs as one call over the whole split; reading
    each plate with workers decodes in parallel, and with
    ``--predict-batch-size`` the chunks (re-run once per batch-norm layer)
    come from memory instead of being decoded again.
    """
    proba = np.empty((len(rows), len(clf.classes_)), dtype=np.float32)
    for key, index in rows.groupby("plate_key", sort=False).indices.items():
        images = read_plate(rows.path.to_numpy()[index], args.num_workers)
        proba[index] = clf.predict_proba(
            images,
            groups=np.full(len(index), key),
            controls=rows.is_control.to_numpy()[index],
        )
    return proba


# ---------------------------------------------------------------- scoring
def top_k_hits(proba, classes, y, k):
    """Whether each true label is among the ``k`` most probable classes."""
    top = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    return (classes[top] == np.asarray(y)[:, None]).any(axis=1)


def score(proba, classes, rows):
    """WILDS's rxrx1 metrics: accuracy over all images, per cell type, worst."""
    top1 = top_k_hits(proba, classes, rows.label, 1)
    top5 = top_k_hits(proba, classes, rows.label, 5)
    cells = rows.cell_type.to_numpy()
    per_cell = {c: float(top1[cells == c].mean()) for c in sorted(set(cells))}
    return {
        "top1": float(top1.mean()),
        "top5": float(top5.mean()),
        "per_cell_type": per_cell,
        "n_per_cell_type": {c: int((cells == c).sum()) for c in per_cell},
        "worst_cell_type": min(per_cell.values()),
    }


# ---------------------------------------------------------------- reports
def machine():
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.platform()}, Python {platform.python_version()}, torch "
        f"{torch.__version__}, {os.cpu_count()} CPU cores, {gpu}"
    )


def header(title, argv):
    command = "python benchmarks/rxrx1_wilds.py " + shlex.join(argv)
    return [
        f"# {title}",
        "",
        f"- Command: `{command}`",
        f"- Date: {datetime.now().isoformat(timespec='seconds')}",
        f"- Machine: {machine()}",
    ]


def write(lines, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwritten to {path}")


# ------------------------------------------------------------------- runs
def run_protocol(args, argv):
    meta = read_rxrx1_metadata(args.root, positive_controls=args.controls == "all")
    train = load_split(meta, "train", args.limit, args.seed)
    test = load_split(meta, "test", args.limit, args.seed)
    clf = BENClassifier(
        module=args.module,
        sampling=args.sampling,
        norm=args.norm,
        batch_size=args.batch_size,
        max_epochs=args.epochs,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup,
        predict_batch_size=args.predict_batch_size,
        device=args.device,
        precision=args.precision,
        num_workers=args.num_workers,
        random_state=args.seed,
        verbose=args.verbose,
    )
    start = time.perf_counter()
    clf.fit(
        ImageFiles(train.path, mode="RGB"),
        train.label.to_numpy(),
        groups=train.plate_key.to_numpy(),
        controls=train.is_control.to_numpy(),
    )
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    proba = predict_proba_by_plate(clf, test, args)
    predict_s = time.perf_counter() - start
    result = score(proba, clf.classes_, test)
    lines = header("RxRx1-WILDS, supervised BEN protocol", argv) + [
        f"- Settings: module={args.module}, norm={args.norm}, "
        f"sampling={args.sampling}, controls={args.controls}, epochs={args.epochs}, "
        f"warm-up={args.warmup}, batch={args.batch_size}, lr={args.lr}, "
        f"weight decay={args.weight_decay}, predict_batch_size="
        f"{args.predict_batch_size or 'whole plate'}, device={clf.device_}, "
        f"workers={args.num_workers}, seed={args.seed}",
        f"- Train: {len(train)} images, {train.plate_key.nunique()} plates, "
        f"{len(clf.classes_)} classes; fit {fit_s:.1f} s",
        f"- Test (official OOD split): {len(test)} images, "
        f"{test.plate_key.nunique()} plates; predict {predict_s:.1f} s",
    ]
    if args.limit is not None:
        lines.append(f"- Subset: at most {args.limit} images per split (--limit)")
    lines += [
        "",
        "| metric | value |",
        "|---|---|",
        f"| top-1 (WILDS acc_avg, all test images) | {result['top1']:.4f} |",
        f"| top-5 | {result['top5']:.4f} |",
        f"| top-1, worst cell type (WILDS acc_wg) | {result['worst_cell_type']:.4f} |",
    ]
    for cell, acc in result["per_cell_type"].items():
        n = result["n_per_cell_type"][cell]
        lines.append(f"| top-1, {cell} ({n} images) | {acc:.4f} |")
    write(lines, args.out or RESULTS / "rxrx1_wilds.md")
    return result


def time_plain(paths):
    """Sequential Pillow decoding to arrays, the floor any loader is held to."""
    from PIL import Image

    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            np.asarray(image.convert("RGB"))
    return len(paths) / (time.perf_counter() - start)


def time_loader(paths, groups, batch_size, num_workers, seed):
    """One epoch of the estimator's training data path, in images/s.

    The same pieces ``BENClassifier.fit`` uses: plate batches from
    ``GroupBatchSampler``, ``BatchDataset`` over ``ImageFiles`` (decoding and
    float32 scaling), a ``DataLoader`` with ``num_workers`` workers.
    """
    sampler = GroupBatchSampler(groups, batch_size, random_state=seed)
    loader = DataLoader(
        BatchDataset(ImageFiles(paths, mode="RGB")),
        sampler=sampler,
        batch_size=None,
        num_workers=num_workers,
    )
    start = time.perf_counter()
    n = sum(len(inputs["X"]) for inputs, _ in loader)
    return n / (time.perf_counter() - start)


def run_loader_benchmark(args, argv):
    meta = read_rxrx1_metadata(args.root)
    rows = load_split(meta, "train", args.limit, args.seed)
    paths, groups = rows.path.to_numpy(), rows.plate_key.to_numpy()
    for path in paths:  # warm the page cache: every run then reads from RAM
        Path(path).read_bytes()
    size = read_image(paths[0], "RGB").shape
    plain = max(time_plain(paths) for _ in range(args.repeats))
    workers = sorted({0, args.num_workers})
    loader = {
        w: max(
            time_loader(paths, groups, args.batch_size, w, args.seed)
            for _ in range(args.repeats)
        )
        for w in workers
    }
    lines = header("RxRx1 loader throughput", argv) + [
        f"- Images: {len(paths)} of split train, {rows.plate_key.nunique()} plates, "
        f"shape {size}, PNG, page cache warm; best of {args.repeats} passes",
        "- Plain: sequential `Image.open(p).convert('RGB')` to a numpy array",
        f"- Estimator: one epoch of DataLoader(BatchDataset(ImageFiles)) with "
        f"plate batches of {args.batch_size}, decoding and float32 scaling",
        "",
        "| data path | images/s | vs plain PIL |",
        "|---|---|---|",
        f"| plain PIL, sequential | {plain:.0f} | 1.00 |",
    ]
    for w, rate in loader.items():
        lines.append(
            f"| estimator, num_workers={w} | {rate:.0f} | {rate / plain:.2f} |"
        )
    write(lines, args.out or RESULTS / "rxrx1_loader.md")
    return {"plain": plain, "loader": loader}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.loader_benchmark:
        return run_loader_benchmark(args, argv)
    return run_protocol(args, argv)


if __name__ == "__main__":
    main()
