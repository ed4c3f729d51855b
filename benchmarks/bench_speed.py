"""Speed and memory of BEN against plain PyTorch, as ratios measured in one run.

Measures, on the same network, batch size, data and group sampler:

1. training throughput of ``BENClassifier.fit`` vs a plain PyTorch loop;
2. inference throughput of group-wise BN (whole plate, and chunked with
   ``predict_batch_size``) vs plain frozen-BN eval, and the peak memory each
   needs, for a plate larger than one chunk;
3. the share of an epoch spent outside the network (sampler + batch assembly).

4. (``--chunks``) the cost of exact chunked plate statistics for ResNet-18
   and ResNet-50: time relative to one whole-plate pass, and reads per image,
   with block caching and with the layer-by-layer method it replaces.

Usage::

    python benchmarks/bench_speed.py --quick          # minutes on 2 CPU cores
    python benchmarks/bench_speed.py --chunks --quick # chunked statistics only
    python benchmarks/bench_speed.py --device cuda --precision bfloat16

Timings on shared machines are noisy: read the ratios, not the seconds.
"""

import argparse
import multiprocessing as mp
import platform
import resource
import sys
import threading
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from sklearn_ben import BENClassifier
from sklearn_ben._data import BatchDataset
from sklearn_ben.backbones import ResNet, SmallCNN
from sklearn_ben.samplers import GroupBatchSampler

RESULTS = Path(__file__).parent / "results"


def make_data(n_plates, per_plate, size, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_plates * per_plate, 3, size, size)).astype(np.float32)
    y = rng.integers(0, 4, len(X))
    groups = np.repeat([f"p{i}" for i in range(n_plates)], per_plate)
    return X, y, groups


def backbone_spec(name):
    return SmallCNN(width=16, n_blocks=3) if name == "cnn" else ResNet(depth=18)


def _autocast(device, precision):
    dtype = torch.bfloat16 if precision == "bfloat16" else None
    return torch.autocast(
        torch.device(device).type, dtype=dtype, enabled=dtype is not None
    )


def plain_loop(
    X, y, groups, spec, epochs, batch_size, device, seed=0, precision="float32"
):
    """The reference: a hand-written PyTorch loop, same network and sampler."""
    torch.manual_seed(seed)
    backbone = spec.build(X.shape[1])
    with torch.no_grad():
        dim = backbone.eval()(torch.from_numpy(X[:2])).shape[1]
    model = nn.Sequential(backbone, nn.Linear(dim, 4)).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    sampler = GroupBatchSampler(groups, batch_size, random_state=seed)
    loader = DataLoader(BatchDataset(X, y), sampler=sampler, batch_size=None)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for _ in range(epochs):
        for inputs, target in loader:
            opt.zero_grad()
            with _autocast(device, precision):
                logits = model(inputs["X"].to(device))
            loss = loss_fn(logits.float(), target.to(device))
            loss.backward()
            opt.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def ben_fit(
    X, y, groups, spec, epochs, batch_size, device, seed=0, precision="float32"
):
    clf = BENClassifier(
        module=spec,
        precision=precision,
        max_epochs=epochs,
        batch_size=batch_size,
        device=device,
        random_state=seed,
    )
    start = time.perf_counter()
    clf.fit(X, y, groups=groups)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, clf


def data_path_share(X, y, groups, batch_size, epoch_seconds):
    """Seconds of one epoch of sampler + batch assembly alone, as a share."""
    sampler = GroupBatchSampler(groups, batch_size, random_state=0)
    loader = DataLoader(BatchDataset(X, y), sampler=sampler, batch_size=None)
    start = time.perf_counter()
    for _ in loader:
        pass
    return (time.perf_counter() - start) / epoch_seconds


def _rss_mib():
    """Current resident set size of this process, in MiB (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


class _PeakRSS(threading.Thread):
    """Samples the resident set size every millisecond until stopped."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.running = _rss_mib(), True

    def run(self):
        while self.running:
            self.peak = max(self.peak, _rss_mib())
            time.sleep(0.001)


def _predict_child(args, queue):
    clf, X, groups, norm, chunk, device = args
    clf.set_params(norm=norm, predict_batch_size=chunk)
    with torch.no_grad():  # warm-up: the first forward of a process is slow
        clf.net_.module_.eval()(torch.from_numpy(X[:4]).to(device))
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base = _rss_mib()
    watcher = _PeakRSS()
    watcher.start()
    start = time.perf_counter()
    if norm == "plain-eval":
        model = clf.net_.module_.eval()
        with torch.no_grad(), _autocast(device, clf.precision):
            size = chunk or len(X)
            for i in range(0, len(X), size):
                model(torch.from_numpy(X[i : i + size]).to(device))
    else:
        clf.predict_proba(X, groups=groups)
    seconds = time.perf_counter() - start
    watcher.running = False
    watcher.join()
    peak = watcher.peak - base
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    queue.put((seconds, peak))


def measure_predict(clf, X, groups, norm, chunk, device):
    """Time and extra peak memory (MiB) of one prediction, in a fresh process."""
    ctx = mp.get_context("spawn")  # fork after torch threads start can deadlock
    queue = ctx.Queue()
    proc = ctx.Process(
        target=_predict_child, args=((clf, X, groups, norm, chunk, device), queue)
    )
    proc.start()
    result = queue.get()
    proc.join()
    return result


def _timed_forward(net, x, size, cache_bytes=None):
    """Seconds, output and reads per image of one group_forward of plate ``x``."""
    from sklearn_ben.batchnorm import group_forward

    reads = [0]

    def chunks():
        for i in range(0, len(x), size):
            reads[0] += min(size, len(x) - i)
            yield x[i : i + size], None

    start = time.perf_counter()
    with torch.no_grad():
        out = group_forward(net, chunks, use_controls=False, cache_bytes=cache_bytes)
    return time.perf_counter() - start, out, reads[0] / len(x)


def chunk_cost(argv, smoke, quick, repeats, out_path):
    """Chunked/whole time and reads per image for ResNet-18 and ResNet-50."""
    from sklearn_ben.batchnorm import convert_batchnorm

    n, size, chunk = (12, 32, 4) if smoke else (64, 64, 8) if quick else (128, 96, 8)
    depths = (18,) if smoke else (18, 50)
    x = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))
    rows = []
    for depth in depths:
        torch.manual_seed(0)
        net = convert_batchnorm(ResNet(depth=depth).build(3)).eval()
        _timed_forward(net, x[:4], 4)  # warm-up
        runs = {"whole": [], "blocks": [], "layers": []}
        for _ in range(repeats):  # interleaved, so drift hits all alike
            t, whole, _ = _timed_forward(net, x, n)
            runs["whole"].append(t)
            t, out, r_blocks = _timed_forward(net, x, chunk)
            runs["blocks"].append(t)
            err_blocks = (out - whole).abs().max().item()
            t, out, r_layers = _timed_forward(net, x, chunk, cache_bytes=1)
            runs["layers"].append(t)
            err_layers = (out - whole).abs().max().item()
        base = np.median(runs["whole"])
        rows.append((depth, "whole plate, one pass", base, 1.0, 1.0, 0.0))
        rows.append(
            (
                depth,
                f"chunks of {chunk}, block cache",
                np.median(runs["blocks"]),
                np.median(runs["blocks"]) / base,
                r_blocks,
                err_blocks,
            )
        )
        rows.append(
            (
                depth,
                f"chunks of {chunk}, layer by layer (before)",
                np.median(runs["layers"]),
                np.median(runs["layers"]) / base,
                r_layers,
                err_layers,
            )
        )
        for row in rows[-3:]:
            print(
                f"  ResNet-{row[0]} {row[1]}: {row[2]:.2f} s, x{row[3]:.2f}, "
                f"{row[4]:.1f} reads/image, max diff {row[5]:.1e}"
            )
    lines = [
        "# Exact chunked plate statistics: cost of `predict_batch_size`",
        "",
        f"Command: `python benchmarks/bench_speed.py {' '.join(argv)}`  ",
        f"Date: {date.today()}; machine: {platform.machine()}, "
        f"{platform.processor() or 'cpu'}, {torch.get_num_threads()} torch threads "
        "on 2 cores shared with other jobs (read the ratios, not the seconds); "
        f"torch {torch.__version__}; median of {repeats} interleaved repeats.",
        "",
        f"One plate of {n} random images of 3x{size}x{size}, float32, CPU, "
        "`group_forward` with whole-plate statistics.",
        "",
        "| network | method | seconds | time / whole plate | reads per image "
        "| max abs diff to whole plate |",
        "|---|---|---|---|---|---|",
    ]
    for depth, label, sec, ratio, reads, err in rows:
        lines.append(
            f"| ResNet-{depth} | {label} | {sec:.2f} | {ratio:.2f} | {reads:.1f} "
            f"| {err:.1e} |"
        )
    lines += [
        "",
        "Block cache: the plate's activations are kept on the host at the "
        "boundaries of the network's blocks (stem layers, residual blocks, "
        "pooling), and each block's statistics are gathered from its cached "
        "input. Layer by layer (the method before, still the fallback for "
        "graphs that are no chain of blocks, measured here with a cache "
        "budget of 1 byte): one partial pass over the whole network per "
        "BatchNorm layer, reading every image again each time.",
    ]
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    Path(out_path).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return Path(out_path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, minutes on CPU"
    )
    parser.add_argument("--smoke", action="store_true", help="seconds; for the tests")
    parser.add_argument("--module", default="cnn", choices=["cnn", "resnet18"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--precision",
        default="float32",
        choices=["float32", "bfloat16"],
        help="bfloat16: mixed precision in both loops (for a GPU)",
    )
    parser.add_argument(
        "--chunks", action="store_true", help="only the chunked-statistics cost"
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.chunks:
        out = args.out or str(RESULTS / "chunking.md")
        argv = list(sys.argv[1:] if argv is None else argv)
        return chunk_cost(argv, args.smoke, args.quick, args.repeats, out)
    args.out = args.out or str(RESULTS / "speed.md")
    device = (
        "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    )
    if device == "auto":
        device = "cpu"
    sizes = {
        "smoke": (2, 60, 16, 1),
        "quick": (4, 600, 32, 2),
        "full": (6, 1000, 64, 3),
    }
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    n_plates, per_plate, size, epochs = sizes[mode]
    batch_size = 75
    X, y, groups = make_data(n_plates, per_plate, size)
    spec = backbone_spec(args.module)
    n_images = len(X) * epochs
    print(
        f"Training throughput: {len(X)} images {X.shape[1:]}, {epochs} epochs, {args.module}"
    )

    plain, ben = [], []
    for r in range(args.repeats):  # interleaved, so drift hits both alike
        plain.append(
            plain_loop(
                X, y, groups, spec, epochs, batch_size, device, r, args.precision
            )
        )
        seconds, clf = ben_fit(
            X, y, groups, spec, epochs, batch_size, device, r, args.precision
        )
        ben.append(seconds)
        print(
            f"  repeat {r}: plain {n_images / plain[-1]:.0f} img/s, "
            f"BENClassifier {n_images / ben[-1]:.0f} img/s"
        )
    plain_ips, ben_ips = n_images / np.median(plain), n_images / np.median(ben)
    share = data_path_share(X, y, groups, batch_size, np.median(plain) / epochs)

    # Inference: one plate larger than a chunk.
    plate = groups == groups[0]
    Xp, gp = X[plate], groups[plate]
    rows = []
    chunks = [
        ("plain-eval", None),
        ("frozen", None),
        ("group", None),
        ("group", 200),
        ("group", 50),
        ("plain-eval", 50),
    ]
    if args.smoke:
        chunks = [("plain-eval", None), ("group", None), ("group", 20)]
    for norm, chunk in chunks:
        times, peaks = zip(
            *[
                measure_predict(clf, Xp, gp, norm, chunk, device)
                for _ in range(args.repeats)
            ]
        )
        rows.append((norm, chunk, len(Xp) / np.median(times), np.median(peaks)))
        print(
            f"  inference {norm:>10s} chunk={chunk}: {rows[-1][2]:.0f} img/s, "
            f"peak +{rows[-1][3]:.0f} MiB"
        )
    base_ips = rows[0][2]

    lines = [
        "# Speed and memory: BEN vs plain PyTorch",
        "",
        f"Command: `python benchmarks/bench_speed.py {' '.join(argv or sys.argv[1:])}`  ",
        f"Date: {date.today()}; machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
        f"{torch.get_num_threads()} torch threads, device {device}"
        + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else "")
        + f"; torch {torch.__version__}; precision {args.precision}; median of "
        f"{args.repeats} interleaved repeats.",
        "",
        f"## Training throughput ({args.module}, {len(X)} images of {X.shape[1:]}, "
        f"batch {batch_size}, plate batches, {epochs} epochs)",
        "",
        "| loop | images/s | ratio to plain loop |",
        "|---|---|---|",
        f"| plain PyTorch loop (same network, sampler, data) | {plain_ips:.0f} | 1.00 |",
        f"| `BENClassifier.fit` (skorch) | {ben_ips:.0f} | {ben_ips / plain_ips:.2f} |",
        "",
        f"Share of a plain-loop epoch spent in the sampler and batch assembly "
        f"(no network): {share:.1%}.",
        "",
        f"## Inference on one plate of {len(Xp)} images",
        "",
        "| inference | chunk | images/s | ratio to plain eval | extra peak memory (MiB) |",
        "|---|---|---|---|---|",
    ]
    for norm, chunk, ips, peak in rows:
        label = {
            "plain-eval": "plain PyTorch eval (frozen BN)",
            "frozen": "BENClassifier norm='frozen'",
            "group": "BENClassifier norm='group'",
        }[norm]
        lines.append(
            f"| {label} | {chunk or 'whole plate'} | {ips:.0f} | "
            f"{ips / base_ips:.2f} | {peak:.0f} |"
        )
    lines += [
        "",
        "Peak memory is the growth of the resident set during the prediction, sampled "
        "every millisecond (CPU), or `torch.cuda.max_memory_allocated` (CUDA), each "
        "in a fresh process. Chunked group-wise inference trades compute (one partial pass "
        "per BatchNorm layer) for memory; its outputs equal the whole-plate ones.",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
