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
import copy
import multiprocessing as mp
import os
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


def _timed_forward(net, x, size, method="auto"):
    """Seconds, output and reads per image of one chunked pass over plate ``x``.

    ``method``: "auto" (what ``predict_batch_size`` does), one of the exact
    methods of ``sklearn_ben._blocks`` ("graph", "blocks", "layers"), or
    "frozen" (running statistics, chunk by chunk: no plate statistics at all,
    the cost of the network on small batches).
    """
    from sklearn_ben import _blocks
    from sklearn_ben.batchnorm import _Source, bn_statistics, group_forward

    reads = [0]

    def chunks():
        for i in range(0, len(x), size):
            reads[0] += min(size, len(x) - i)
            yield x[i : i + size], None

    start = time.perf_counter()
    with torch.no_grad():
        if method == "frozen":
            with bn_statistics("running"):
                out = torch.cat([net(c) for c, _ in chunks()])
        elif method == "auto":
            out = group_forward(net, chunks, use_controls=False)
        else:
            out = _blocks.gather_chunked(
                net, chunks, False, _Source("gather"), method=method
            )
    return time.perf_counter() - start, out, reads[0] / len(x)


_CHUNK_METHODS = {
    "frozen": "chunks of {}, frozen BN (no plate statistics; small-batch cost)",
    "auto": "chunks of {}, exact: staged graph (default)",
    "blocks": "chunks of {}, exact: block chain (fallback 1)",
    "layers": "chunks of {}, exact: layer by layer (fallback 2, the method before)",
}


def chunk_cost(argv, smoke, quick, repeats, out_path, device="cpu"):
    """Chunked/whole time and reads per image for ResNet-18 and ResNet-50."""
    from sklearn_ben.batchnorm import convert_batchnorm

    n, size, chunk = (12, 32, 4) if smoke else (64, 64, 8) if quick else (128, 96, 8)
    depths = (18,) if smoke else (18, 50)
    load = os.getloadavg()[0]  # noisy machines: say how busy this one was
    x = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))
    x = x.to(device)
    rows = []
    for depth in depths:
        torch.manual_seed(0)
        net = convert_batchnorm(ResNet(depth=depth).build(3)).eval().to(device)
        for method in ("whole", *_CHUNK_METHODS):  # warm-up
            _timed_forward(net, x[:8], 8 if method == "whole" else 4, method)
        runs = {method: [] for method in ("whole", *_CHUNK_METHODS)}
        reads, errs, outs = {}, {}, {}
        for _ in range(repeats):  # interleaved, so drift hits all alike
            _sync(device)
            t, whole, _ = _timed_forward(net, x, n)
            _sync(device)
            runs["whole"].append(t)
            for method in _CHUNK_METHODS:
                t, out, reads[method] = _timed_forward(net, x, chunk, method)
                _sync(device)
                runs[method].append(t)
                errs[method] = (out - whole).abs().max().item()
                outs[method] = out
        # float32 rounding, for scale: the same plate in float64
        _, ref, _ = _timed_forward(copy.deepcopy(net).double(), x.double(), n)
        exact = float((whole.double() - ref).abs().max())
        base = float(np.median(runs["whole"]))
        scale = whole.abs().max().item()
        rows.append(
            (
                depth,
                "whole plate, one pass (statistics of the plate)",
                base,
                1.0,
                1.0,
                0.0,
                exact,
                scale,
            )
        )
        for method, label in _CHUNK_METHODS.items():
            sec = float(np.median(runs[method]))
            err = errs[method] if method != "frozen" else float("nan")
            err64 = (
                float((outs[method].double() - ref).abs().max())
                if method != "frozen"
                else float("nan")
            )
            rows.append(
                (
                    depth,
                    label.format(chunk),
                    sec,
                    sec / base,
                    reads[method],
                    err,
                    err64,
                    scale,
                )
            )
        for row in rows[-1 - len(_CHUNK_METHODS) :]:
            print(
                f"  ResNet-{row[0]} {row[1]}: {row[2]:.3f} s, x{row[3]:.2f}, "
                f"{row[4]:.1f} reads/image, max diff {row[5]:.1e}"
            )
    lines = [
        "# Exact chunked plate statistics: cost of `predict_batch_size`",
        "",
        f"Command: `python benchmarks/bench_speed.py {' '.join(argv)}`  ",
        f"Date: {date.today()}; machine: {platform.machine()}, "
        f"{_device_name(device)}, {torch.get_num_threads()} torch threads; "
        f"torch {torch.__version__}; median of {repeats} interleaved repeats; "
        f"load average {load:.1f} at the start.",
        "",
        f"One plate of {n} random images of 3x{size}x{size}, float32, "
        f"{device}, outputs of the ResNet's pooled features (largest |value| "
        "in the last column). The float64 column compares each float32 result "
        "with the same plate computed in float64: the whole-plate pass's own "
        "rounding error is the scale to read the chunked differences against.",
        "",
        "| network | method | seconds | time / whole plate | reads per image "
        "| max abs diff to whole plate | max abs diff to float64 whole plate "
        "| max abs output |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for depth, label, sec, ratio, nreads, err, err64, scale in rows:
        lines.append(
            f"| ResNet-{depth} | {label} | {sec:.3f} | {ratio:.2f} | {nreads:.1f} "
            f"| {err:.1e} | {err64:.1e} | {scale:.1f} |"
        )
    lines += [
        "",
        "Staged graph (default for any network `torch.fx` can trace): each "
        "chunk runs up to the first BatchNorm layer whose plate statistics are "
        "unknown; the values the rest of the graph needs there are kept on the "
        "host; the layer's statistics are merged over the chunks and the next "
        "stage resumes from the kept values, so every layer runs once per "
        "chunk. Block chain (untraceable chains of blocks): activations kept "
        "at block boundaries, each block gathered layer by layer from its "
        "input (about k + 1 runs of a block with k BatchNorm layers). Layer by "
        "layer (other graphs, and the only method before): one partial pass "
        "over the whole network per BatchNorm layer, reading every image "
        "again each time. Frozen BN is no alternative (it ignores the plate); "
        "it is the price of running the network in chunks at all.",
    ]
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    Path(out_path).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return Path(out_path)


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _device_name(device):
    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or "cpu"


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
    device = (
        "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    )
    if device == "auto":
        device = "cpu"
    if args.chunks:
        out = args.out or str(RESULTS / "chunking.md")
        argv = list(sys.argv[1:] if argv is None else argv)
        return chunk_cost(argv, args.smoke, args.quick, args.repeats, out, device)
    args.out = args.out or str(RESULTS / "speed.md")
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
