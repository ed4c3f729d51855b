"""NSC/NSCB MoA accuracy of profile normalisations on the real BBBC021 profiles.

Reads the 632 per-well CellProfiler profiles (55 plates, 10 batches) through
``sklearn_ben.datasets.load_bbbc021_profiles`` (``SKLEARN_BEN_DATA`` or
``<repo>/../shared/data``), normalises them, aggregates the treated wells to
one median profile per compound-concentration and scores cosine 1-NN MoA
accuracy, not same compound (NSC, 103 treatments) and not same compound or
batch (NSCB, 92 treatments). Also reports the batch-mixing score of the
control wells. Writes ``benchmarks/results/profiles_tvn.md``.

Nothing is fitted on MoA labels: every normalisation sees only the features,
the plate/batch of each well and the DMSO control mask. The whole table is
transductive (each method is fitted on all 632 wells), as in the BBBC021
literature.

Usage: python benchmarks/bench_profiles_tvn.py [--data-home PATH]
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.preprocessing import StandardScaler, normalize
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, command, markdown_table, write_results  # noqa: E402
from _stats import (  # noqa: E402
    format_difference,
    mcnemar_exact,
    paired_bootstrap_accuracy,
    verdict,
)

from sklearn_ben._tvn import TVN, PlateControlScaler  # noqa: E402
from sklearn_ben.datasets import load_bbbc021_profiles  # noqa: E402
from sklearn_ben.metrics import (  # noqa: E402
    aggregate_treatments,
    batch_mixing_score,
    moa_accuracy,
)

SWEEP = (0.0, 0.01, 0.1, 1.0, 10.0)

#: The cheap baseline every method is compared with, treatment by treatment.
BASELINE = "per-plate control standardisation"


def data_home(arg):
    """--data-home, else SKLEARN_BEN_DATA, else <repo>/../shared/data."""
    if arg:
        return arg
    if os.environ.get("SKLEARN_BEN_DATA"):
        return os.environ["SKLEARN_BEN_DATA"]
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def methods(whiten_reg):
    """name -> function(X, plate, batch, controls) returning profiles."""

    def plate_std(X, plate, batch, c, robust=False):
        return PlateControlScaler(robust=robust).fit_transform(
            X, groups=plate, controls=c
        )

    def tvn(X, plate, batch, c, groups=None):
        scaled = plate_std(X, plate, batch, c)
        return TVN(whiten_reg=whiten_reg).fit_transform(
            scaled, groups=groups, controls=c
        )

    def global_whiten(X, plate, batch, c):
        scaled = StandardScaler().fit(X[c]).transform(X)
        return TVN(whiten_reg=whiten_reg).fit_transform(scaled, controls=c)

    return {
        "raw features": lambda X, p, b, c: X,
        "per-plate control standardisation": plate_std,
        "per-plate control standardisation, robust (median/MAD)": (
            lambda X, p, b, c: plate_std(X, p, b, c, robust=True)
        ),
        "whitening on controls (global; raw features scaled on all controls)": (
            global_whiten
        ),
        "per-plate control std + whitening on controls (TVN, no CORAL)": tvn,
        "per-plate control std + TVN, CORAL per plate": (
            lambda X, p, b, c: tvn(X, p, b, c, groups=p)
        ),
        "per-plate control std + TVN, CORAL per batch": (
            lambda X, p, b, c: tvn(X, p, b, c, groups=b)
        ),
    }


def evaluate(Z, data, treatment):
    t = ~data.controls
    f = data.frame
    args = (Z[t], f["moa"][t], f["compound"][t], data.batches[t])
    nsc = moa_accuracy(*args, treatment=treatment[t])
    nscb = moa_accuracy(*args, treatment=treatment[t], exclude="compound_batch")
    mixing = batch_mixing_score(Z[data.controls], data.batches[data.controls])
    return nsc, nscb, mixing


def treatment_hits(Z, data, treatment, exclude):
    """Whether each counted treatment's nearest neighbour has its MoA.

    The same rule as :func:`sklearn_ben.metrics.moa_accuracy` (median profile
    per treatment, cosine 1-NN, candidates of another compound, and of another
    batch for ``exclude="compound_batch"``), kept per treatment so that two
    methods can be compared on the same treatments. Sorted by treatment.
    """
    t = ~data.controls
    profiles = aggregate_treatments(Z[t], treatment[t])
    meta = (
        data.frame[t][["moa", "compound"]]
        .assign(batch=np.asarray(data.batches)[t], treatment=treatment[t])
        .groupby("treatment", sort=True)
        .first()
        .loc[profiles.index]
    )
    moa, compound, batch = (meta[c].to_numpy() for c in ("moa", "compound", "batch"))
    candidate = compound[:, None] != compound[None, :]
    if exclude == "compound_batch":
        candidate &= batch[:, None] != batch[None, :]
    counted = (candidate & (moa[:, None] == moa[None, :])).any(axis=1)
    unit = normalize(profiles.to_numpy())
    neighbour = np.where(candidate, unit @ unit.T, -np.inf).argmax(axis=1)
    return (moa[neighbour] == moa)[counted]


def paired_rows(hits):
    """Each method vs the baseline over the same treatments: NSC and NSCB."""
    rows = []
    for name, per_metric in hits.items():
        if name == BASELINE:
            continue
        row = [name]
        for metric in ("NSC", "NSCB"):
            a, b = per_metric[metric], hits[BASELINE][metric]
            diff = paired_bootstrap_accuracy(a, b)
            a_only, b_only, p = mcnemar_exact(a, b)
            row += [format_difference(diff), verdict(diff), f"{a_only} / {b_only}"]
            row.append(f"{p:.3f}")
        rows.append(row)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-home", default=None)
    args = parser.parse_args(argv)
    start = time.time()
    data = load_bbbc021_profiles(data_home=data_home(args.data_home))
    f = data.frame
    treatment = f["compound"].astype(str) + "@" + f["concentration"].astype(str)
    treatment = treatment.to_numpy()
    X, plate, batch, c = data.X, data.groups, data.batches, data.controls

    rows, sweep_rows, hits = [], [], {}
    # One BLAS thread: the shared machines are small and busy, and threaded
    # eigensolvers on them were 20x slower than one thread.
    with threadpool_limits(1):
        for name, method in methods(whiten_reg=1.0).items():
            Z = method(X, plate, batch, c)
            nsc, nscb, mix = evaluate(Z, data, treatment)
            hits[name] = {
                "NSC": treatment_hits(Z, data, treatment, "compound"),
                "NSCB": treatment_hits(Z, data, treatment, "compound_batch"),
            }
            # the per-treatment rule must agree with the packaged metric
            assert np.isclose(hits[name]["NSC"].mean(), nsc.accuracy)
            assert np.isclose(hits[name]["NSCB"].mean(), nscb.accuracy)
            rows.append(
                [
                    name,
                    f"{nsc.accuracy:.3f}",
                    f"{nscb.accuracy:.3f}",
                    f"{nsc.n_treatments} / {nscb.n_treatments}",
                    f"{mix.score:.3f} (chance {mix.chance:.3f})",
                ]
            )
            print(" | ".join(rows[-1]), flush=True)
        for reg in SWEEP:
            table = methods(whiten_reg=reg)
            cells = [f"{reg:g}"]
            for name in list(table)[3:]:
                nsc, nscb, _ = evaluate(
                    table[name](X, plate, batch, c), data, treatment
                )
                cells.append(f"{nsc.accuracy:.3f} / {nscb.accuracy:.3f}")
            sweep_rows.append(cells)
            print("whiten_reg", " | ".join(cells), flush=True)
    seconds = time.time() - start

    main_table = markdown_table(
        [
            "method",
            "NSC",
            "NSCB",
            "treatments (NSC / NSCB)",
            "controls' batch mixing (same-batch NN share)",
        ],
        rows,
    )
    paired_table = markdown_table(
        [
            "method",
            "NSC: difference [95% bootstrap]",
            "verdict",
            "NSC: treatments only method / only baseline right",
            "McNemar p",
            "NSCB: difference [95% bootstrap]",
            "verdict",
            "NSCB: only method / only baseline",
            "McNemar p",
        ],
        paired_rows(hits),
    )
    sweep_table = markdown_table(
        [
            "whiten_reg",
            "global whitening",
            "std + TVN",
            "+ CORAL per plate",
            "+ CORAL per batch",
        ],
        sweep_rows,
    )
    body = "\n".join(
        [
            "Real BBBC021 per-well CellProfiler profiles (632 wells, 55 plates, "
            "10 batches, 12 MoAs). Treated wells aggregated to one median "
            "profile per compound-concentration; cosine 1-NN MoA accuracy. "
            "TVN settings: `TVN(n_components=None, whiten_reg=1.0, coral_reg=1.0, "
            "min_controls=2)` (the defaults); `PlateControlScaler()` defaults "
            "(mean/std of the 6 DMSO wells of each plate).",
            "",
            main_table,
            "",
            f"## Paired over treatments, against {BASELINE}",
            "",
            "Each method and the baseline are scored on the same treatments "
            "(one treatment is ~0.01 of NSC): the accuracy difference with a "
            "95% bootstrap interval over treatments (10,000 resamples, seed 0), "
            "a win or loss only when it excludes zero; the discordant "
            "treatments and the exact McNemar p-value. Not corrected for the "
            "six comparisons.",
            "",
            paired_table,
            "",
            "## Sensitivity to the whitening regulariser (NSC / NSCB)",
            "",
            "Same pipelines, `whiten_reg` varied (everything else fixed). "
            "Reported in full because the default was set after seeing it "
            "(see Notes).",
            "",
            sweep_table,
        ]
    )
    notes = [
        "Nothing is fitted on MoA labels, but the TVN default whiten_reg=1.0 "
        "was chosen after this sweep showed that 0.01 (the first default) lost "
        "to per-plate standardisation on NSCB; 1.0 is also CORAL's own "
        "convention (identity added to the covariance of standardised "
        "features). Read the TVN rows as the result for a regulariser picked "
        "on this data, not as a held-out estimate.",
        "Batch mixing: share of DMSO wells whose cosine nearest other DMSO "
        "well is from the same batch (sklearn_ben.metrics.batch_mixing_score); "
        "chance is sum_b n_b(n_b-1)/(n(n-1)). Lower is better mixed.",
        "The batch-mixing column is measured on the same DMSO wells that the "
        "methods were fitted on, so it flatters fitted alignments: CORAL per "
        "batch (0.015) falls below chance: a DMSO well's nearest neighbour is "
        "then almost never from its own batch; global whitening leaves DMSO wells "
        "clustered by batch (0.909) even though its MoA accuracy is high.",
        "Treatment counts: NSC counts all 103 treatments; NSCB counts the 92 "
        "whose MoA has a compound in another batch.",
        "Paired table: the percentile bootstrap is a little narrow when few "
        "treatments are discordant; where it calls a win or loss but the exact "
        "McNemar p is above 0.05, read the result as borderline, not a finding.",
    ]
    path = write_results(
        RESULTS / "profiles_tvn.md",
        title="Profile normalisation on real BBBC021 profiles: NSC / NSCB",
        cmd=command("bench_profiles_tvn.py", argv),
        seeds=["none (deterministic)"],
        seconds=seconds,
        body=body,
        notes=notes,
    )
    print(f"wrote {path} in {seconds:.0f} s")


if __name__ == "__main__":
    main()
