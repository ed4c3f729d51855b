"""The loader benchmark runs end to end in --quick mode and writes its tables."""

import re

from tests._scripts import load_script


def test_bench_io_quick_writes_ratios(tmp_path):
    bench = load_script("benchmarks/bench_io.py")
    out = tmp_path / "io.md"
    result = bench.main(["--quick", f"--out={out}"])
    text = out.read_text()
    assert set(result["throughput"]) == {0, 2}
    for workers in (0, 2):
        assert re.search(rf"\| {workers} \| \d+ \| \d+ \| \d+\.\d\d \|", text)
    assert re.search(r"\| header \| \d+\.\d\d \| \d+ \|", text)
    assert re.search(r"\| 120 \| \d+\.\d\d \| \d+\.\d\d \| \d+% \|", text)
    assert "- Command: `python benchmarks/bench_io.py --quick" in text
    assert not result["folder"].exists()  # the generated sites are removed


def test_bench_io_sites_are_uint16_tiffs_read_exactly(tmp_path):
    bench = load_script("benchmarks/bench_io.py")
    paths = bench.make_sites(tmp_path, 3, 8)
    plain = bench.PlainTiffDataset(paths)[2]
    ours = bench.ImageFiles(paths, check="header")[2]
    assert paths.shape == (3, 5) and ours.shape == (5, 8, 8)
    assert ours.dtype == plain.dtype
    assert (ours.numpy() == plain.numpy()).all()
