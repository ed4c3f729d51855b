"""Shared pieces of the accuracy benchmarks: machine facts, mean ± std, tables.

Every results file starts with the command that made it, the date, the
machine (platform, CPU count, torch version and threads) and the seeds, so a
number can always be traced back to a run.
"""

import os
import platform
import shlex
import sys
from datetime import date
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"


def setup_torch(threads: int = 2) -> None:
    """Pin torch's intra-op threads (the shared machines have 2 cores)."""
    torch.set_num_threads(threads)


def machine() -> str:
    """One line naming the machine the numbers were measured on."""
    return (
        f"{platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), "
        f"{'CUDA' if torch.cuda.is_available() else 'no GPU'}"
    )


def command(script: str, argv) -> str:
    """The command line that reproduces a run, from the repository root."""
    args = sys.argv[1:] if argv is None else list(argv)
    return f"python benchmarks/{script} {shlex.join(args)}".rstrip()


def _load() -> str:
    try:
        return ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:  # not on every platform
        return "n/a"


def mean_std(values, digits: int = 3) -> str:
    """``mean ± std`` over seeds (std with ddof=1; a lone value has no ±)."""
    values = np.asarray([v for v in values if v is not None], dtype=float)
    if values.size == 0:
        return "n/a"
    if values.size == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def markdown_table(header, rows) -> str:
    """A Markdown table from a header list and rows of cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


SPREAD_STD = "± is the standard deviation over seeds"
SPREAD_T = "± is the half-width of the 95% t-interval of the mean over seeds"


def write_results(
    path, *, title, cmd, seeds, seconds, body, notes=(), spread=SPREAD_STD
) -> Path:
    """Write a results page: provenance header, then ``body`` and notes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = [
        f"# {title}",
        "",
        f"- Command: `{cmd}`",
        f"- Date: {date.today().isoformat()}",
        f"- Machine: {machine()}",
        f"- Seeds: {', '.join(str(s) for s in seeds)} (data and networks; {spread})",
        f"- Run time: {seconds:.0f} s (load average {_load()} at the end: the "
        "2 cores are shared, so times are indicative)",
        "",
    ]
    tail = ["", "## Notes", ""] + [f"- {n}" for n in notes] if notes else []
    path.write_text(
        "\n".join(head) + "\n" + body.rstrip() + "\n" + "\n".join(tail) + "\n"
    )
    return path


def standardise_inputs(X, groups, controls=None):
    """Each plate's images standardised per channel, on all samples or controls.

    The cheap baseline every image benchmark includes: ``PlateControlScaler``
    (per plate, per channel; statistics from the plate's controls when
    ``controls`` is given, else from all its samples), float32 out.
    """
    from sklearn_ben import PlateControlScaler

    return PlateControlScaler().fit_transform(X, groups=groups, controls=controls)


def comparison_table(scores, rows, baseline, digits=3):
    """Rows of mean ± 95% t half-width and the paired difference vs ``baseline``.

    ``scores`` maps a row name to its per-seed (or per-pair) values, aligned
    across rows. The verdict is 'win' / 'loss' only when the 95% interval of
    the paired difference excludes zero.
    """
    from _stats import (
        format_difference,
        format_mean,
        paired_difference,
        t_interval,
        verdict,
    )

    out = []
    for name in rows:
        cells = [name, format_mean(t_interval(scores[name]), digits)]
        if name == baseline:
            cells += ["(baseline)", ""]
        else:
            diff = paired_difference(scores[name], scores[baseline])
            cells += [format_difference(diff, digits), verdict(diff)]
        out.append(cells)
    return out


def strongest(scores, candidates):
    """The candidate with the highest mean score."""
    return max(candidates, key=lambda name: float(np.mean(scores[name])))


def batch_mixing_score(X, batch):
    """Share of samples whose cosine nearest neighbour is from the same batch.

    Uses :func:`sklearn_ben.metrics.batch_mixing_score` when the package has
    it; otherwise computes the same quantity here. Returns ``(score, chance)``
    where ``chance`` is the share expected if neighbours ignored the batch,
    ``sum_b n_b (n_b - 1) / (n (n - 1))``. Lower is better mixed.
    """
    batch = np.asarray(batch)
    _, counts = np.unique(batch, return_counts=True)
    n = len(batch)
    chance = float((counts * (counts - 1)).sum() / (n * (n - 1)))
    try:
        from sklearn_ben.metrics import batch_mixing_score as packaged
    except ImportError:
        packaged = None
    if packaged is not None:
        result = packaged(X, batch)
        if isinstance(result, tuple):
            return float(result[0]), float(result[1])
        if isinstance(result, dict):
            return float(result["score"]), float(result.get("chance", chance))
        for attr in ("score", "statistic"):
            if hasattr(result, attr):
                return float(getattr(result, attr)), float(
                    getattr(result, "chance", chance)
                )
        return float(result), chance
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=2, metric="cosine").fit(X)
    idx = nn.kneighbors(X, return_distance=False)
    # the first neighbour is usually the sample itself; take the other one
    other = np.where(idx[:, 0] == np.arange(n), idx[:, 1], idx[:, 0])
    return float(np.mean(batch[other] == batch)), chance


def batch_mixing_source() -> str:
    """Where :func:`batch_mixing_score` comes from, for the notes."""
    try:
        from sklearn_ben.metrics import batch_mixing_score  # noqa: F401
    except ImportError:
        return (
            "computed in benchmarks/_common.py with sklearn NearestNeighbors "
            "(cosine), as sklearn_ben.metrics.batch_mixing_score was not there yet"
        )
    return "sklearn_ben.metrics.batch_mixing_score"
