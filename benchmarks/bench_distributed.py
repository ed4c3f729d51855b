"""Data-parallel BENClassifier: images/s per process count, held-out accuracy.

Launch with Accelerate (or torchrun) on as many processes as you want to
measure; the main process first trains alone (``accelerator=None``, the
others wait), then all processes train together (``accelerator=Accelerator()``)
with the same seed. Throughput counts the training images of all processes
per wall-clock second; accuracy is on held-out plates, predicted by plate
(split over the processes in the data-parallel run)::

    accelerate launch --multi_gpu --num_processes 2 benchmarks/bench_distributed.py --quick
    accelerate launch --num_processes 4 benchmarks/bench_distributed.py  # 4 GPUs

Writes benchmarks/results/distributed.md (from the main process).
"""

import argparse
import sys
import time

import numpy as np
import torch
from _common import RESULTS, markdown_table, setup_torch, write_results
from accelerate import Accelerator

from sklearn_ben import BENClassifier
from sklearn_ben.datasets import make_plates


def _fit_and_score(data, train, accelerator, args):
    clf = BENClassifier(
        module="cnn",
        batch_size=args.batch_size,
        max_epochs=args.epochs,
        random_state=args.seed,
        accelerator=accelerator,
    )
    if accelerator is not None:
        accelerator.wait_for_everyone()
    start = time.perf_counter()
    clf.fit(data.X[train], data.y[train], groups=data.groups[train])
    if accelerator is not None:
        accelerator.wait_for_everyone()
    seconds = time.perf_counter() - start
    test = ~train
    accuracy = clf.score(data.X[test], data.y[test], groups=data.groups[test])
    return train.sum() * args.epochs / seconds, accuracy, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 plates, 2 epochs")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads/process")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.epochs = args.epochs or (2 if args.quick else 10)
    setup_torch(args.threads)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    if accelerator.num_processes == 1 and accelerator.is_main_process:
        print(
            "bench_distributed: only 1 process. accelerate 1.15's `launch --cpu` "
            "starts one process unless an MPI hostfile is configured; on CPU use "
            "`accelerate launch --multi_gpu --num_processes 2` or "
            "`ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2`.",
            file=sys.stderr,
        )
    n_plates, per_plate = (6, 64) if args.quick else (12, 128)
    data = make_plates(
        n_plates=n_plates,
        n_samples_per_plate=per_plate,
        image_size=16 if args.quick else 32,
        random_state=args.seed,
    )
    held_out = np.unique(data.groups)[-2:]
    train = ~np.isin(data.groups, held_out)
    start = time.perf_counter()
    rows = []
    if accelerator.is_main_process:
        speed, acc, sec = _fit_and_score(data, train, None, args)
        rows.append([1, "no (accelerator=None)", f"{speed:.0f}", "1.00x", f"{acc:.3f}"])
        base = speed
    accelerator.wait_for_everyone()
    speed, acc, sec = _fit_and_score(data, train, accelerator, args)
    if not accelerator.is_main_process:
        return
    n = accelerator.num_processes
    rows.append([n, "yes", f"{speed:.0f}", f"{speed / base:.2f}x", f"{acc:.3f}"])
    header = ["processes", "accelerator", "train images/s", "vs 1", "held-out acc"]
    table = markdown_table(header, rows)
    print(table)
    cmd = (
        f"accelerate launch --multi_gpu --num_processes {n} "
        "benchmarks/bench_distributed.py "
        + " ".join(sys.argv[1:] if argv is None else argv)
    )
    notes = [
        f"{int(train.sum())} training images on {n_plates - 2} plates, 2 held-out "
        f"plates, {args.epochs} epochs, batch_size={args.batch_size}, SmallCNN; "
        f"{args.threads} torch thread(s) per process on {accelerator.device}.",
        "Throughput: training images of all processes per second of fit "
        "(including start-up of the DDP wrapper and the final statistics "
        "average). With N processes each step sees N plate batches, so an "
        "epoch has ~1/N the optimiser steps: accuracy after a fixed number of "
        "epochs can differ.",
        "On a shared 2-core CPU, 2 processes compete with everything else; the "
        "ratio says little about GPUs. No GPU was available for this run.",
    ]
    write_results(
        RESULTS / "distributed.md",
        title="Data-parallel training (bench_distributed.py)",
        cmd=cmd,
        seeds=[args.seed],
        seconds=time.perf_counter() - start,
        body=table,
        notes=notes,
    )
    torch.distributed.destroy_process_group() if n > 1 else None


if __name__ == "__main__":
    main()
