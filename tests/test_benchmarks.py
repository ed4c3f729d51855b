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
    rows = _table_rows(text)
    assert [r for r in rows if r != "row"] == [r[0] for r in bench.ROWS]
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
    assert [r for r in rows if r in names] == names * 2  # summary + per plate
    assert "ROC AUC" in text


def test_bench_bbbc021_crops_downsample_halves_and_scales():
    bench = _load("bench_bbbc021_crops")
    X = np.full((2, 3, 68, 68), 65535, dtype=np.uint16)
    out = bench.downsample(X)
    assert out.shape == (2, 3, 34, 34) and out.dtype == np.float32
    np.testing.assert_allclose(out, 1.0)


def test_bench_ssl_smoke_writes_every_row(tmp_path):
    bench = _load("bench_ssl")
    text = bench.main(["--smoke", "--out", str(tmp_path)]).read_text()
    rows = _table_rows(text)
    assert [r for r in rows if r != "embedder"] == [r[0] for r in bench.ROWS]
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
    assert len(rows) == 3
    reads = [float(row.split("|")[5]) for row in rows]
    diffs = [float(row.split("|")[6]) for row in rows]
    assert reads[:2] == [1.0, 1.0] and reads[2] > 1.0  # block cache: read once
    assert max(diffs) <= 1e-4
