"""The field's profile normalisations side by side on the real BBBC021 profiles.

Reads the 632 per-well CellProfiler profiles (55 plates, 10 batches) through
``sklearn_ben.datasets.load_bbbc021_profiles`` (``SKLEARN_BEN_DATA`` or
``<repo>/../shared/data``), normalises them, aggregates the treated wells to
one median profile per compound-concentration and scores: cosine 1-NN MoA
accuracy not same compound (NSC, 103 treatments) and not same compound or
batch (NSCB, 92); mean average precision of retrieving the same MoA among
treatments of other compounds (mAP, as copairs computes it); and the
batch-mixing score of the DMSO wells. NSC, NSCB and mAP come with a 95%
bootstrap interval over treatments, and TVN's defaults with paired intervals
against per-plate standardisation and global whitening. Writes
``benchmarks/results/profiles_tvn.md``.

Nothing is fitted on MoA labels. The table is transductive (each method is
fitted on all 632 wells), as in the BBBC021 literature. Optional tools
(pycytominer, harmonypy) are skipped with a note when not installed.

Usage: python benchmarks/bench_profiles_tvn.py [--data-home PATH] [--boot N]
"""

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, command, markdown_table, write_results  # noqa: E402

from sklearn_ben._plate_scaler import PlateControlScaler  # noqa: E402
from sklearn_ben._tvn import TVN  # noqa: E402
from sklearn_ben.datasets import load_bbbc021_profiles  # noqa: E402
from sklearn_ben.metrics import (  # noqa: E402
    _moa_hits,
    average_precision,
    batch_mixing_score,
)
from sklearn_ben.profiles import aggregate_profiles  # noqa: E402


def data_home(arg):
    """--data-home, else SKLEARN_BEN_DATA, else <repo>/../shared/data."""
    if arg:
        return arg
    if os.environ.get("SKLEARN_BEN_DATA"):
        return os.environ["SKLEARN_BEN_DATA"]
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def _global_whiten(X, p, b, c):
    scaled = StandardScaler().fit(X[c]).transform(X)
    return TVN(center="global", whiten_reg=1.0, coral=False).fit_transform(
        scaled, controls=c
    )


def _pycytominer(method, per_plate=False):
    def run(X, p, b, c):
        from pycytominer import normalize

        cols = [f"f{j}" for j in range(X.shape[1])]
        table = pd.DataFrame(X, columns=cols)
        table["Metadata_is_control"] = c
        table["Metadata_Plate"] = p
        if per_plate:  # spherize after per-plate control standardisation
            table[cols] = PlateControlScaler().fit_transform(X, groups=p, controls=c)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = normalize(
                table,
                features=cols,
                meta_features=["Metadata_is_control", "Metadata_Plate"],
                samples="Metadata_is_control == True",
                method=method,
            )
        return out[cols].to_numpy()

    return run


def _harmony(X, p, b, c):
    import harmonypy

    pcs = PCA(50, random_state=0).fit_transform(StandardScaler().fit_transform(X))
    meta = pd.DataFrame({"plate": p})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = harmonypy.run_harmony(pcs, meta, ["plate"], random_state=0)
    Z = np.asarray(result.Z_corr)
    return Z.T if Z.shape[0] != X.shape[0] else Z


def _tvn(groups="plate", **params):
    def run(X, p, b, c):
        g = {"plate": p, "batch": b}[groups]
        return TVN(**params).fit_transform(X, groups=g, controls=c)

    return run


METHODS = {
    "raw features": lambda X, p, b, c: X,
    "pycytominer normalize standardize (controls, global)": _pycytominer("standardize"),
    "pycytominer normalize mad_robustize (controls, global)": _pycytominer(
        "mad_robustize"
    ),
    "pycytominer normalize spherize (controls, global)": _pycytominer("spherize"),
    "per-plate std, then pycytominer spherize": _pycytominer("spherize", True),
    "per-plate control standardisation": lambda X, p, b, c: (
        PlateControlScaler().fit_transform(X, groups=p, controls=c)
    ),
    "per-plate control standardisation, robust": lambda X, p, b, c: PlateControlScaler(
        robust=True
    ).fit_transform(X, groups=p, controls=c),
    "global whitening on controls (StandardScaler + whiten_reg=1)": _global_whiten,
    "Harmony (harmonypy, 50 PCs, plate)": _harmony,
    "TVN() defaults, groups=plate": _tvn(),
    "TVN defaults, groups=batch": _tvn("batch"),
    "TVN, whiten_reg='oas'": _tvn(whiten_reg="oas"),
    "TVN, center='global' (no per-plate centring)": _tvn(center="global"),
    "TVN, scale=False": _tvn(scale=False),
    "TVN, whiten=False": _tvn(whiten=False),
    "TVN, coral=False": _tvn(coral=False),
    "TVN, old defaults (whiten_reg=1, rank components, no centring/scale)": _tvn(
        center="global", scale=False, whiten_reg=1.0, n_components=0.999999
    ),
}


def scores(Z, data, treatment):
    """Per-treatment hits (NSC, NSCB), per-treatment AP, batch mixing."""
    t, f = ~data.controls, data.frame
    args = (Z[t], f["moa"][t], f["compound"][t], data.batches[t])
    nsc = _moa_hits(*args, "compound", treatment[t], "median")
    nscb = _moa_hits(*args, "compound_batch", treatment[t], "median")
    meta = pd.DataFrame(
        {"treatment": treatment[t], "moa": f["moa"][t], "cpd": f["compound"][t]}
    ).reset_index(drop=True)
    profiles = aggregate_profiles(Z[t], meta, by="treatment", how="median")
    feats = profiles.drop(columns=["treatment", "moa", "cpd"]).to_numpy()
    ap = average_precision(feats, profiles["moa"], exclude=profiles["cpd"])
    mixing = batch_mixing_score(Z[data.controls], data.batches[data.controls])
    return {"NSC": nsc, "NSCB": nscb, "mAP": ap[~np.isnan(ap)], "mix": mixing}


def interval(values, rng, n_boot):
    """Mean and 95% percentile bootstrap interval over treatments."""
    values = np.asarray(values, dtype=float)
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    low, high = np.percentile(values[idx].mean(axis=1), [2.5, 97.5])
    return values.mean(), low, high


def fmt(values, rng, n_boot):
    mean, low, high = interval(values, rng, n_boot)
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--boot", type=int, default=2000)
    args = parser.parse_args(argv)
    start = time.time()
    data = load_bbbc021_profiles(data_home=data_home(args.data_home))
    f = data.frame
    treatment = f["compound"].astype(str) + "@" + f["concentration"].astype(str)
    treatment = treatment.to_numpy()
    X, plate, batch, c = data.X, data.groups, data.batches, data.controls
    rng = np.random.default_rng(0)
    rows, results, failures = [], {}, []
    with threadpool_limits(1):
        for name, method in METHODS.items():
            try:
                Z = method(X, plate, batch, c)
            except ImportError as error:
                failures.append(f"{name}: not run ({error}).")
                continue
            except Exception as error:  # noqa: BLE001  (reported, not hidden)
                message = str(error).splitlines()[0][:160]
                failures.append(f"{name}: fails with {type(error).__name__}: {message}")
                rows.append([name, "fails", "fails", "fails", "-"])
                continue
            r = results[name] = scores(np.asarray(Z, dtype=float), data, treatment)
            rows.append(
                [name]
                + [fmt(r[k], rng, args.boot) for k in ("NSC", "NSCB", "mAP")]
                + [f"{r['mix'].score:.3f}"]
            )
            print(" | ".join(rows[-1]), flush=True)
    paired = []
    tvn = results["TVN() defaults, groups=plate"]
    for other in [
        "per-plate control standardisation",
        "global whitening on controls (StandardScaler + whiten_reg=1)",
        "TVN, center='global' (no per-plate centring)",
    ]:
        cells = [f"TVN() - {other}"]
        for key in ("NSC", "NSCB", "mAP"):
            diff = tvn[key].astype(float) - results[other][key].astype(float)
            mean, low, high = interval(diff, rng, args.boot)
            verdict = "win" if low > 0 else "loss" if high < 0 else "no difference"
            cells.append(f"{mean:+.3f} [{low:+.3f}, {high:+.3f}] {verdict}")
        paired.append(cells)
        print(" | ".join(cells), flush=True)
    seconds = time.time() - start
    chance = results["raw features"]["mix"].chance
    body = "\n".join(
        [
            "Real BBBC021 per-well CellProfiler profiles (632 wells, 55 plates, "
            "10 batches, 12 MoAs, 6 DMSO wells per plate). Treated wells "
            "aggregated to one median profile per compound-concentration. "
            f"Mean [95% bootstrap interval over treatments, {args.boot} "
            "resamples, neighbours not recomputed]. Batch mixing: share of DMSO "
            "wells whose cosine nearest DMSO well is from the same batch "
            f"(chance {chance:.3f}; lower is better mixed).",
            "",
            markdown_table(
                ["method", "NSC", "NSCB", "mAP (MoA, other compounds)", "mixing"],
                rows,
            ),
            "",
            "## TVN defaults against the alternatives, paired",
            "",
            "Difference TVN() minus the other method on the same treatments, "
            "paired bootstrap; a win or loss only when the interval excludes 0.",
            "",
            markdown_table(["comparison", "NSC", "NSCB", "mAP"], paired),
        ]
    )
    notes = [
        "TVN() defaults: center='group' (each plate centred on its DMSO "
        "wells), scale=True (one global scale), whiten_reg='ledoit-wolf' "
        "(shrinkage from the DMSO wells alone), coral=True, coral_reg=1.0. "
        "They were set from the issue's analysis and the control data, not "
        "by maximising these scores; the 'each step off' rows are reported "
        "in full, including where a variant scores higher.",
        "pycytominer's normalize is global (one set of statistics from all "
        "DMSO wells); its spherize is ZCA on the DMSO wells.",
        "Harmony runs on 50 principal components of globally standardised "
        "features with plate as the batch variable (default settings).",
        "mAP: copairs' definition, queries are treatments, positives are "
        "treatments of the same MoA and another compound, negatives are "
        "treatments of another MoA (sklearn_ben.metrics.average_precision).",
        "Batch mixing is measured on the DMSO wells the methods were fitted "
        "on, which flatters fitted alignments.",
        *failures,
    ]
    path = write_results(
        RESULTS / "profiles_tvn.md",
        title="Profile normalisation on real BBBC021 profiles: NSC, NSCB, mAP",
        cmd=command("bench_profiles_tvn.py", argv),
        seeds=["bootstrap seed 0; Harmony and PCA random_state=0"],
        seconds=seconds,
        body=body,
        notes=notes,
    )
    print(f"wrote {path} in {seconds:.0f} s")


if __name__ == "__main__":
    main()
