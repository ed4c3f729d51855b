"""Loader throughput of ImageFiles against a plain tifffile Dataset.

Generates 16-bit 5-channel sites, one uncompressed TIFF per channel, in a
temporary folder (removed at the end), then measures, in the same run:

1. images/s of ``ImageFiles`` and of a plain ``torch.utils.data.Dataset``
   whose ``__getitem__`` stacks ``tifffile.imread`` of the 5 files, both in the
   same ``DataLoader`` (batch_size, default collate), for each
   ``num_workers``; the ratio is ImageFiles / plain (>= 0.95 is the target).
   The order of the two alternates between repeats and the best of the
   repeats counts, since the machine is shared;
2. the up-front checks on every file: ``check="exists"`` and ``"header"``;
3. the data path's share of a training epoch: the time to draw every batch
   the estimator draws (``BatchDataset`` over ``ImageFiles``, with the
   conversion to float32) over the time of one epoch of ``BENClassifier``
   with ``SmallCNN`` on the same sites, both with ``num_workers=0``.

Usage::

    python benchmarks/bench_io.py            # 10,000 sites, results/io.md
    python benchmarks/bench_io.py --quick    # 120 sites, a few seconds
"""

import argparse
import shutil
import tempfile
import time
from io import BytesIO
from pathlib import Path

import numpy as np
import tifffile
import torch
from _common import RESULTS, command, markdown_table, setup_torch, write_results
from torch.utils.data import DataLoader, Dataset

from sklearn_ben import BENClassifier
from sklearn_ben._data import BatchDataset
from sklearn_ben.backbones import SmallCNN
from sklearn_ben.io import ImageFiles

CHANNELS = ("DNA", "ER", "RNA", "AGP", "Mito")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="120 sites, 1 repeat")
    parser.add_argument("--sites", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=64, help="site height and width")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epoch-sites", type=int, default=2_000)
    parser.add_argument("--out", type=Path, default=RESULTS / "io.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.sites, args.size, args.repeats = 120, 32, 1
        args.workers, args.epoch_sites, args.batch_size = [0, 2], 120, 16
    return args


def make_sites(folder: Path, n_sites: int, size: int, seed: int = 0) -> np.ndarray:
    """Write n_sites x 5 uint16 TIFFs; return the (n_sites, 5) path array.

    One template file is made with tifffile; every file is its header bytes
    followed by fresh random pixels at the template's data offset, so writing
    50,000 files costs little more than the bytes.
    """
    buffer = BytesIO()
    tifffile.imwrite(buffer, np.zeros((size, size), np.uint16))
    template = buffer.getvalue()
    with tifffile.TiffFile(BytesIO(template)) as tif:
        offset = tif.pages[0].dataoffsets[0]
    head, tail = template[:offset], template[offset + 2 * size * size :]
    rng = np.random.default_rng(seed)
    paths = np.empty((n_sites, len(CHANNELS)), dtype=object)
    for i in range(n_sites):
        pixels = rng.integers(0, 4096, (len(CHANNELS), size, size), dtype=np.uint16)
        for c, stain in enumerate(CHANNELS):
            path = folder / f"site{i:05d}_{stain}.tif"
            path.write_bytes(head + pixels[c].tobytes() + tail)
            paths[i, c] = str(path)
    return paths


class PlainTiffDataset(Dataset):
    """What a user writes by hand: stack tifffile.imread of each channel file."""

    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return torch.from_numpy(np.stack([tifffile.imread(p) for p in self.paths[i]]))


def images_per_second(dataset, batch_size: int, num_workers: int) -> float:
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(0),
    )
    start = time.perf_counter()
    n = sum(len(batch) for batch in loader)
    return n / (time.perf_counter() - start)


def throughput(paths, args):
    """{num_workers: (ImageFiles images/s, plain images/s)}, best of repeats."""
    ours, plain = ImageFiles(paths, channels=CHANNELS), PlainTiffDataset(paths)
    results = {}
    for workers in args.workers:
        best = {"ours": 0.0, "plain": 0.0}
        for repeat in range(args.repeats):
            order = [("ours", ours), ("plain", plain)]
            for name, dataset in order[:: 1 if repeat % 2 == 0 else -1]:
                rate = images_per_second(dataset, args.batch_size, workers)
                best[name] = max(best[name], rate)
        results[workers] = (best["ours"], best["plain"])
    return results


def check_times(paths):
    """Seconds of ImageFiles(paths, check=...) for "exists" and "header"."""
    times = {}
    for check in ("exists", "header"):
        start = time.perf_counter()
        ImageFiles(paths, check=check)
        times[check] = time.perf_counter() - start
    return times


def epoch_share(paths, args):
    """(data seconds, epoch seconds) over the first epoch_sites sites."""
    paths = paths[: args.epoch_sites]
    images = ImageFiles(paths, channels=CHANNELS)
    groups = np.arange(len(paths)) % 4  # four "plates"
    y = np.arange(len(paths)) % 2
    batches = [
        idx
        for g in range(4)
        for idx in np.array_split(
            np.flatnonzero(groups == g), max(1, (groups == g).sum() // args.batch_size)
        )
    ]
    loader = DataLoader(BatchDataset(images), sampler=batches, batch_size=None)
    start = time.perf_counter()
    for _ in loader:
        pass
    data = time.perf_counter() - start
    clf = BENClassifier(
        module=SmallCNN(width=16, n_blocks=3),
        max_epochs=1,
        batch_size=args.batch_size,
        random_state=0,
    )
    start = time.perf_counter()
    clf.fit(images, y, groups=groups)
    return data, time.perf_counter() - start


def report(args, results, checks, share, n_files, seconds, argv):
    rows = [
        [w, f"{ours:.0f}", f"{plain:.0f}", f"{ours / plain:.2f}"]
        for w, (ours, plain) in results.items()
    ]
    body = [
        f"{args.sites} sites x {len(CHANNELS)} channels = {n_files} uncompressed "
        f"uint16 TIFF files of {args.size}x{args.size}, one per channel; "
        f"batch size {args.batch_size}, shuffled; best of {args.repeats} repeats.",
        "",
        "## Throughput (images/s; an image is one 5-channel site)",
        "",
        markdown_table(
            ["num_workers", "ImageFiles", "plain tifffile Dataset", "ratio"], rows
        ),
        "",
        "## Up-front checks of every file",
        "",
        markdown_table(
            ["check", "seconds", "files/s"],
            [[k, f"{v:.2f}", f"{n_files / v:.0f}"] for k, v in checks.items()],
        ),
        "",
        "## Data path's share of a training epoch (num_workers=0)",
        "",
        markdown_table(
            ["sites", "loading + float32 (s)", "epoch of BENClassifier (s)", "share"],
            [
                [
                    min(args.epoch_sites, args.sites),
                    f"{share[0]:.2f}",
                    f"{share[1]:.2f}",
                    f"{share[0] / share[1]:.0%}",
                ]
            ],
        ),
    ]
    notes = [
        "The plain Dataset stacks `tifffile.imread` of the channel files; "
        "ImageFiles decodes each channel file straight into the sample's "
        "(C, H, W) array, with no stacking copy.",
        "The epoch uses SmallCNN(width=16, n_blocks=3); its data path is the "
        "estimator's own: BatchDataset over ImageFiles, decoding and float32 "
        "conversion of each batch.",
        "The files are in the page cache after generation: these are decode "
        "and Python costs, not disk reads.",
    ]
    return write_results(
        args.out,
        title="Loader benchmark: ImageFiles against a plain tifffile Dataset",
        cmd=command("bench_io.py", argv),
        seeds=[0],
        seconds=seconds,
        body="\n".join(body),
        notes=notes,
    )


def main(argv=None):
    args = parse_args(argv)
    setup_torch(2)
    start = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="bench_io_"))
    try:
        paths = make_sites(folder, args.sites, args.size)
        generated = time.perf_counter() - start
        print(f"generated {paths.size} files in {generated:.1f} s", flush=True)
        results = throughput(paths, args)
        print(results, flush=True)
        checks = check_times(paths)
        share = epoch_share(paths, args)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    seconds = time.perf_counter() - start
    path = report(args, results, checks, share, paths.size, seconds, argv)
    return {
        "throughput": results,
        "checks": checks,
        "share": share,
        "path": path,
        "folder": folder,
    }


if __name__ == "__main__":
    main()
