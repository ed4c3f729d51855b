"""Self-supervised BEN: linear probes, batch mixing and t-SNE on held-out plates.

Single-cell crops from ``make_plates(cells_per_image=4)`` (four cells of one
field share a bag). Each embedder is trained on the first plates without
labels (SimCLR: augmented views of one crop; MinCLR: different crops of one
field) or with them (supervised single-cell baseline), with and without BEN.
A random network is the floor. Then:

- linear probe: ``StandardScaler + LogisticRegression`` fitted on the
  embeddings of the training plates, scored on the held-out plates (whose
  embeddings are computed with their own plate statistics);
- batch mixing on the held-out embeddings: the share of crops whose cosine
  nearest neighbour is on the same plate (lower is better mixed), with the
  chance level;
- t-SNE of the held-out embeddings, coloured by plate and by treatment, for
  SimCLR vanilla vs BEN (``ssl_tsne.png``).

Usage::

    python benchmarks/bench_ssl.py --quick    # a few minutes on 2 CPU cores
    python benchmarks/bench_ssl.py            # more plates, seeds, epochs
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    RESULTS,
    batch_mixing_score,
    batch_mixing_source,
    command,
    markdown_table,
    mean_std,
    setup_torch,
    standardise_inputs,
    write_results,
)

from sklearn_ben import BENEmbedder  # noqa: E402
from sklearn_ben.backbones import SmallCNN  # noqa: E402
from sklearn_ben.datasets import make_plates  # noqa: E402

CONFIGS = {
    "smoke": dict(n_plates=4, per_plate=16, n_test=2, size=16, epochs=1,
                  n_views=2, seeds=[0], width=4, tsne=False),
    "quick": dict(n_plates=8, per_plate=96, n_test=3, size=24, epochs=10,
                  n_views=3, seeds=[0, 1, 2], width=16, tsne=True),
    # CPU-sized: the quick plates with more epochs and 5 seeds (129 s here);
    # on a GPU raise per_plate, size, epochs and n_views
    "full": dict(n_plates=8, per_plate=96, n_test=3, size=24, epochs=15,
                 n_views=3, seeds=[0, 1, 2, 3, 4], width=16, tsne=True),
}  # fmt: skip

#: A random network: one epoch at a learning rate of 1e-12 leaves the weights
#: at their seeded initialisation (BatchNorm running averages do move).
RANDOM = dict(max_epochs=1, lr=1e-12)

#: (row, method, sampling, norm, is random network, inputs standardised per
#: plate with its controls first: the cheap alternative to BEN)
ROWS = [
    ("random network, frozen BN", "simclr", "random", "frozen", True, False),
    ("random network, plate BN", "simclr", "group", "group", True, False),
    ("SimCLR, vanilla", "simclr", "random", "frozen", False, False),
    ("SimCLR + BEN", "simclr", "group", "group", False, False),
    ("MinCLR, vanilla", "minclr", "random", "frozen", False, False),
    ("MinCLR + BEN", "minclr", "group", "group", False, False),
    ("supervised, vanilla", "supervised", "random", "frozen", False, False),
    ("supervised + BEN", "supervised", "group", "group", False, False),
    ("random network, frozen BN, std inputs", "simclr", "random", "frozen", True,
     True),
    ("SimCLR, vanilla, std inputs", "simclr", "random", "frozen", False, True),
    ("MinCLR, vanilla, std inputs", "minclr", "random", "frozen", False, True),
    ("supervised, vanilla, std inputs", "supervised", "random", "frozen", False,
     True),
]  # fmt: skip

#: Each BEN row against its own method's vanilla network on standardised inputs
PAIRS = {
    "SimCLR + BEN": "SimCLR, vanilla, std inputs",
    "MinCLR + BEN": "MinCLR, vanilla, std inputs",
    "supervised + BEN": "supervised, vanilla, std inputs",
    "random network, plate BN": "random network, frozen BN, std inputs",
}


def _data(cfg, seed):
    data = make_plates(
        n_plates=cfg["n_plates"],
        n_samples_per_plate=cfg["per_plate"],
        image_size=cfg["size"],
        cells_per_image=4,
        random_state=seed,
    )
    plates = np.unique(data.groups)
    test = np.isin(data.groups, plates[-cfg["n_test"] :])
    return data, test


def embed(cfg, seed, data, test, method, sampling, norm, random_net, X=None):
    """Fit one embedder on the training plates; embeddings of train and test."""
    train = ~test
    X = data.X if X is None else X
    params = dict(
        module=SmallCNN(width=cfg["width"]),
        method=method,
        n_views=cfg["n_views"],
        sampling=sampling,
        norm=norm,
        max_epochs=cfg["epochs"],
        batch_size=75 if method == "supervised" else 32,
        random_state=seed,
    )
    if random_net:
        params.update(RANDOM)
    emb = BENEmbedder(**params).fit(
        X[train],
        data.y[train] if method == "supervised" else None,
        groups=data.groups[train],
        controls=data.controls[train],
        bags=data.bags[train],
    )
    Z_train = emb.transform(X[train], groups=data.groups[train])
    Z_test = emb.transform(X[test], groups=data.groups[test])
    return Z_train, Z_test


def run_seed(cfg, seed):
    data, test = _data(cfg, seed)
    # per plate, with its own controls: no statistic crosses plates
    X_std = standardise_inputs(data.X, data.groups, data.controls)
    scores, tsne = {}, {}
    for name, method, sampling, norm, random_net, std in ROWS:
        Z_train, Z_test = embed(
            cfg,
            seed,
            data,
            test,
            method,
            sampling,
            norm,
            random_net,
            X_std if std else None,
        )
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        probe.fit(Z_train, data.y[~test])
        mixing, chance = batch_mixing_score(Z_test, data.groups[test])
        scores[name] = {
            "probe": probe.score(Z_test, data.y[test]),
            "mixing": mixing,
            "chance": chance,
        }
        if name in ("SimCLR, vanilla", "SimCLR + BEN"):
            tsne[name] = Z_test
    return scores, tsne, data.groups[test], data.y[test]


def plot_tsne(embeddings, plates, y, path, seed=0):
    """2x2 t-SNE: rows vanilla / BEN, columns coloured by plate / treatment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    fig, axes = plt.subplots(2, 2, figsize=(9, 8.5))
    for r, (name, Z) in enumerate(embeddings.items()):
        Z = StandardScaler().fit_transform(Z)
        xy = TSNE(
            n_components=2, perplexity=30, init="pca", random_state=seed
        ).fit_transform(Z)
        for c, (labels, what) in enumerate([(plates, "plate"), (y, "treatment")]):
            ax = axes[r, c]
            for k, value in enumerate(np.unique(labels)):
                m = labels == value
                label = (
                    value
                    if what == "plate"
                    else ("DMSO" if value == 0 else f"treatment {value}")
                )
                ax.scatter(*xy[m].T, s=9, alpha=0.8, color=f"C{k}", label=label)
            ax.set_title(f"{name}: coloured by {what}")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.legend(fontsize=8, markerscale=1.5, loc="best")
    fig.suptitle("t-SNE of held-out-plate embeddings (seed 0)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def format_comparison(per_seed):
    """BEN rows against the same method on control-standardised inputs."""
    from _stats import format_difference, paired_difference, verdict

    rows = []
    for name, baseline in PAIRS.items():
        diff = paired_difference(
            [s[name]["probe"] for s in per_seed],
            [s[baseline]["probe"] for s in per_seed],
        )
        rows.append([name, baseline, format_difference(diff, 3), verdict(diff)])
    header = [
        "embedder",
        "against (vanilla on control-standardised inputs)",
        "linear probe: paired difference [95% t-interval]",
        "verdict",
    ]
    return markdown_table(header, rows)


def format_results(per_seed):
    rows = []
    for name, method, sampling, norm, _, _ in ROWS:
        rows.append(
            [
                name,
                method,
                sampling,
                norm,
                mean_std([s[name]["probe"] for s in per_seed]),
                mean_std([s[name]["mixing"] for s in per_seed]),
                mean_std([s[name]["chance"] for s in per_seed]),
            ]
        )
    header = [
        "embedder",
        "method",
        "sampling",
        "norm",
        "linear probe accuracy (held-out plates)",
        "same-plate nearest neighbour (lower = better mixed)",
        "chance",
    ]
    return markdown_table(header, rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="minutes on 2 CPU cores")
    mode.add_argument("--smoke", action="store_true", help="seconds; for the tests")
    parser.add_argument("--out", default=str(RESULTS), help="results folder")
    args = parser.parse_args(argv)
    setup_torch(2)
    cfg = CONFIGS["smoke" if args.smoke else "quick" if args.quick else "full"]
    out = Path(args.out)
    start = time.perf_counter()
    per_seed, tsne = [], None
    for seed in cfg["seeds"]:
        scores, emb, plates, y = run_seed(cfg, seed)
        per_seed.append(scores)
        if tsne is None:
            tsne = (emb, plates, y)
    png = None
    if cfg["tsne"]:
        out.mkdir(parents=True, exist_ok=True)
        png = plot_tsne(*tsne, out / "ssl_tsne.png")
    seconds = time.perf_counter() - start
    n_train = cfg["n_plates"] - cfg["n_test"]
    body = (
        f"Single-cell crops from `make_plates(n_plates={cfg['n_plates']}, "
        f"n_samples_per_plate={cfg['per_plate']}, cells_per_image=4, "
        f"image_size={cfg['size']}, n_classes=3)`; embedders (SmallCNN("
        f"width={cfg['width']}), {cfg['epochs']} epochs, n_views={cfg['n_views']}) "
        f"trained on the first {n_train} plates, probes scored on the last "
        f"{cfg['n_test']} (chance accuracy 0.333).\n\n"
        + format_results(per_seed)
        + "\n\n## BEN against the cheap alternative, paired over seeds\n\n"
        + format_comparison(per_seed)
        + "\n"
    )
    if png is not None:
        body += f"\n![t-SNE of held-out-plate embeddings]({png.name})\n"
    notes = [
        "Random network: `BENEmbedder(max_epochs=1, lr=1e-12)`, i.e. the seeded "
        "initial weights (Adam steps of ~1e-12); with frozen BN its running "
        "averages come from that one epoch of data.",
        "Contrastive batches hold 32 samples (SimCLR) or 32 bags (MinCLR) x "
        "n_views views; the supervised baseline uses batches of 75.",
        "std inputs: each plate's images standardised per channel with the "
        "statistics of its own control crops (`PlateControlScaler`) before a "
        "vanilla embedder (random batches, frozen BN).",
        "Paired table: differences of linear-probe accuracy seed by seed; a "
        "win or loss only when the 95% t-interval excludes zero.",
        "Linear probe: `StandardScaler + LogisticRegression(max_iter=2000)` on "
        "single-crop embeddings, trained on the training plates' embeddings.",
        f"Batch mixing: {batch_mixing_source()}; computed on the held-out "
        "plates' embeddings, by plate.",
    ]
    path = write_results(
        out / "ssl.md",
        title="Self-supervised embeddings with and without BEN",
        cmd=command("bench_ssl.py", argv),
        seeds=cfg["seeds"],
        seconds=seconds,
        body=body,
        notes=notes,
    )
    print(path.read_text())
    return path


if __name__ == "__main__":
    main()
