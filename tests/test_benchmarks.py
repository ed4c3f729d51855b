"""The accuracy benchmarks run end to end on tiny configurations."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sklearn_ben.datasets import get_data_home
from tests._scripts import load_script


def _load(name):
    return load_script(f"benchmarks/{name}.py")


def _has_crops():
    try:
        return (Path(get_data_home()) / "bbbc021_crops").is_dir()
    except Exception:
        return False


def _table_rows(text):
    return [
        line.split("|")[1].strip()
        for line in text.splitlines()
        if line.startswith("| ")
    ]


def test_bench_ablation_smoke_writes_every_row(tmp_path):
    bench = _load("bench_ablation")
    path = bench.main(["--smoke", "--out", str(tmp_path)])
    text = path.read_text()
    rows = [r for r in _table_rows(text) if r != "row"]
    names = [r[0] for r in bench.ROWS]
    affine = names
    nonaffine = [n for n in names if n not in bench.AFFINE_ONLY]
    # the summary, then one paired-comparison table per plate set
    assert rows == names + affine * 2 + nonaffine * 2
    assert text.count("(baseline)") == len(bench.PLATES)
    assert "- Command: `python benchmarks/bench_ablation.py --smoke" in text
    assert "- Seeds: 0" in text


def test_bench_ablation_minibatch_groups_split_plates_into_chunks():
    bench = _load("bench_ablation")
    groups = np.repeat(["a", "b"], [64, 40])
    chunks = bench.minibatch_groups(groups, 32, seed=0)
    assert sorted(set(chunks)) == ["a/0", "a/1", "b/0"]
    assert all(c.split("/")[0] == g for c, g in zip(chunks, groups))


@pytest.mark.skipif(not _has_crops(), reason="BBBC021 crops not in the data folder")
def test_bench_bbbc021_crops_smoke_writes_every_row(tmp_path):
    bench = _load("bench_bbbc021_crops")
    text = bench.main(["--smoke", "--out", str(tmp_path)]).read_text()
    rows = _table_rows(text)
    names = [r[0] for r in bench.ROWS]
    # summary, paired differences over seeds, per held-out plate
    assert [r for r in rows if r in names] == names * 3
    assert "ROC AUC" in text and "(baseline)" in text


def test_bench_bbbc021_crops_downsample_halves_and_scales():
    bench = _load("bench_bbbc021_crops")
    X = np.full((2, 3, 68, 68), 65535, dtype=np.uint16)
    out = bench.downsample(X)
    assert out.shape == (2, 3, 34, 34) and out.dtype == np.float32
    np.testing.assert_allclose(out, 1.0)


def test_bench_bbbc021_crops_downsample_pools_blocks():
    bench = _load("bench_bbbc021_crops")
    X = np.arange(36, dtype=np.uint16).reshape(1, 1, 6, 6) * 65535 // 35
    out = bench.downsample(X, pool=3)
    assert out.shape == (1, 1, 2, 2)
    expected = X.reshape(2, 3, 2, 3).mean(axis=(1, 3)) / 65535
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-6)


def test_common_standardise_inputs_uses_each_plates_controls():
    common = _load("_common")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(8, 2, 3, 3)).astype(np.float32)
    X[4:] = 10 * X[4:] + 5
    groups = np.repeat(["p0", "p1"], 4)
    controls = np.array([True, True, False, False] * 2)
    out = common.standardise_inputs(X, groups, controls)
    assert out.dtype == np.float32 and out.shape == X.shape
    for plate in ("p0", "p1"):
        ref = X[(groups == plate) & controls]
        expected = (X[groups == plate] - ref.mean(axis=(0, 2, 3), keepdims=True)) / (
            ref.std(axis=(0, 2, 3), keepdims=True)
        )
        np.testing.assert_allclose(out[groups == plate], expected, rtol=1e-4, atol=1e-5)


def test_common_comparison_table_pairs_rows_with_the_baseline():
    common = _load("_common")
    scores = {"base": [0.7, 0.7, 0.6], "new": [0.8, 0.9, 0.7]}
    rows = common.comparison_table(scores, ["base", "new"], "base")
    assert rows[0] == ["base", "0.667 ± 0.143", "(baseline)", ""]
    assert rows[1] == ["new", "0.800 ± 0.248", "+0.133 [-0.010, +0.277]", "tie"]
    assert common.strongest(scores, ["base", "new"]) == "new"


def test_bench_ssl_smoke_writes_every_row(tmp_path):
    bench = _load("bench_ssl")
    text = bench.main(["--smoke", "--out", str(tmp_path)]).read_text()
    rows = [r for r in _table_rows(text) if r != "embedder"]
    names = [r[0] for r in bench.ROWS]
    assert rows[: len(names)] == names
    assert rows[len(names) :] == list(bench.PAIRS)  # the paired comparison
    assert all(baseline in names for baseline in bench.PAIRS.values())
    assert "chance" in text


def test_common_batch_mixing_score_matches_separated_batches():
    common = _load("_common")
    X = np.r_[np.tile([1.0, 0.0], (5, 1)), np.tile([0.0, 1.0], (5, 1))]
    X += np.random.default_rng(0).normal(scale=0.01, size=X.shape)
    score, chance = common.batch_mixing_score(X, np.repeat(["p0", "p1"], 5))
    assert score == pytest.approx(1.0)
    assert chance == pytest.approx(4 / 9)


@pytest.mark.parametrize(
    ("values", "expected"),
    [([0.5], "0.500"), ([0.4, 0.6], "0.500 ± 0.141"), ([], "n/a")],
)
def test_common_mean_std_formats(values, expected):
    assert _load("_common").mean_std(values) == expected


def test_bench_speed_smoke_writes_ratios(tmp_path):
    out = tmp_path / "speed.md"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_speed.py"
    subprocess.run(
        [sys.executable, str(script), "--smoke", "--repeats", "1", "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    text = out.read_text()
    assert "| `BENClassifier.fit` (skorch) |" in text
    assert "| BENClassifier norm='group' | 20 |" in text


def test_bench_speed_chunks_smoke_writes_ratio_and_reads(tmp_path):
    bench = _load("bench_speed")
    path = bench.main(
        ["--chunks", "--smoke", "--repeats", "1", "--out", str(tmp_path / "c.md")]
    )
    rows = [line for line in path.read_text().splitlines() if line.startswith("| R")]
    methods = ["whole", "frozen", "graph", "blocks", "layers"]
    assert len(rows) == len(methods)
    reads = dict(zip(methods, (float(row.split("|")[5]) for row in rows)))
    diffs = dict(zip(methods, (float(row.split("|")[6]) for row in rows)))
    # staged graph and block chain read once; layer by layer once per pass
    assert reads["graph"] == reads["blocks"] == 1.0 and reads["layers"] > 1.0
    assert max(diffs[m] for m in ("graph", "blocks", "layers")) <= 1e-4
    assert "nan" in rows[1]  # frozen BN: no plate statistics to compare


# ------------------------------------------------------------ paired statistics


def _stats():
    return _load("_stats")


def test_stats_t_interval_matches_hand_computation():
    # mean 2, sd 1, n 3: half-width t(0.975, 2) / sqrt(3) = 4.302653 / 1.732051
    interval = _stats().t_interval([1.0, 2.0, 3.0])
    assert interval.mean == pytest.approx(2.0)
    assert interval.high - 2.0 == pytest.approx(2.484138, abs=1e-6)
    assert interval.low == pytest.approx(2.0 - 2.484138, abs=1e-6)
    assert interval.n == 3


def test_stats_paired_difference_is_the_interval_of_differences():
    # differences 0.1, 0.2, 0.1: mean 0.13333, sd 0.057735, se 0.033333,
    # half-width 4.302653 * 0.033333 = 0.143422
    s = _stats()
    interval = s.paired_difference([0.8, 0.9, 0.7], [0.7, 0.7, 0.6])
    assert interval.mean == pytest.approx(0.133333, abs=1e-6)
    assert interval.low == pytest.approx(-0.010088, abs=1e-6)
    assert interval.high == pytest.approx(0.276755, abs=1e-6)
    assert s.verdict(interval) == "tie"
    assert s.format_difference(interval) == "+0.133 [-0.010, +0.277]"


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([0.9, 0.91, 0.92], [0.8, 0.8, 0.8], "win"),
        ([0.8, 0.8, 0.8], [0.9, 0.91, 0.92], "loss"),
        ([0.9, 0.7, 0.8], [0.8, 0.8, 0.8], "tie"),
        ([0.9], [0.8], "n/a"),
    ],
)
def test_stats_verdict_needs_the_interval_to_exclude_zero(a, b, expected):
    s = _stats()
    assert s.verdict(s.paired_difference(a, b)) == expected


def test_stats_format_mean_shows_the_half_width():
    s = _stats()
    assert s.format_mean(s.t_interval([1.0, 2.0, 3.0])) == "2.000 ± 2.484"
    assert s.format_mean(s.t_interval([0.5])) == "0.500"


def test_stats_bootstrap_interval_is_seeded_and_brackets_the_mean():
    s = _stats()
    values = [0.1, 0.3, 0.2, 0.5, 0.4]
    first, second = s.bootstrap_interval(values), s.bootstrap_interval(values)
    assert first == second
    assert first.low < 0.3 < first.high
    assert 0.1 <= first.low and first.high <= 0.5
    constant = s.bootstrap_interval([0.2, 0.2, 0.2])
    assert constant.low == pytest.approx(0.2) and constant.high == pytest.approx(0.2)


def test_stats_mcnemar_exact_matches_the_binomial():
    # a alone right on 1 item, b alone on 6: p = 2 * (1 + 7) / 2**7 = 0.125
    a = [1, 1, 1, 0, 0, 0, 0, 0, 0, 1]
    b = [1, 1, 0, 1, 1, 1, 1, 1, 1, 1]
    assert _stats().mcnemar_exact(a, b) == (1, 6, pytest.approx(0.125))
    assert _stats().mcnemar_exact([1, 0], [1, 0]) == (0, 0, 1.0)


def test_stats_paired_bootstrap_accuracy_difference():
    a = np.array([1] * 8 + [0] * 2)
    b = np.array([1] * 5 + [0] * 5)
    interval = _stats().paired_bootstrap_accuracy(a, b)
    assert interval.mean == pytest.approx(0.3)
    # only 3 discordant items, all for a: the difference lies in [0, 0.6]
    assert 0 <= interval.low < 0.3 < interval.high <= 0.6


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda s: s.t_interval([]), r"non-empty 1-d array of finite numbers"),
        (lambda s: s.paired_difference([1, 2], [1]), r"got 2 and 1\."),
        (lambda s: s.paired_difference([1], [1], method="z"), r"but got 'z'\."),
    ],
)
def test_stats_reject_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call(_stats())
