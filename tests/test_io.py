"""ImageFiles, read_rxrx1_metadata and the RxRx1-WILDS runner on a tiny folder.

The tests of ImageFiles on the real raw files of ../shared/data/raw_images and
on generated TIFF and PNG files are in tests/test_image_files.py.
"""

import pickle
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from sklearn_ben._data import BatchDataset
from sklearn_ben.io import ImageFiles, read_rxrx1_metadata
from tests._scripts import load_script
from tests.conftest import tiny_classifier

CELLS = ("HEPG2", "HUVEC")
WELLS = [f"B{c:02d}" for c in range(2, 10)]  # 8 wells per plate
# sirna_id per well: 4 treatments, 2 positive controls, 2 negative controls
SIRNAS = [1, 2, 3, 4, 1108, 1109, 1138, 1138]


def load_runner():
    return load_script("benchmarks/rxrx1_wilds.py")


def make_rxrx1(root, size=32):
    """A WILDS rxrx1_v1.0 folder in miniature: 2 cell types x 2 plates x 8 wells.

    Plate numbers 1 and 2 repeat in both experiments; plates 1 are split
    train, plates 2 split test, so both splits hold both cell types and a
    plate number alone would merge plates. Returns the metadata table written.
    """
    rng = np.random.default_rng(0)
    rows = []
    for cell in CELLS:
        experiment = f"{cell}-01"
        for plate in (1, 2):
            folder = root / "images" / experiment / f"Plate{plate}"
            folder.mkdir(parents=True)
            for well, sirna_id in zip(WELLS, SIRNAS):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels, mode="RGB").save(folder / f"{well}_s1.png")
                well_type = (
                    "negative_control"
                    if sirna_id == 1138
                    else "positive_control"
                    if sirna_id >= 1108
                    else "treatment"
                )
                rows.append(
                    {
                        "site_id": f"{experiment}_{plate}_{well}_1",
                        "well_id": f"{experiment}_{plate}_{well}",
                        "cell_type": cell,
                        "dataset": "train" if plate == 1 else "test",
                        "experiment": experiment,
                        "plate": plate,
                        "well": well,
                        "site": 1,
                        "well_type": well_type,
                        "sirna": "EMPTY" if sirna_id == 1138 else f"s{sirna_id}",
                        "sirna_id": sirna_id,
                    }
                )
    meta = pd.DataFrame(rows)
    meta.to_csv(root / "metadata.csv", index=False)
    return meta


@pytest.fixture(scope="module")
def rxrx1(tmp_path_factory):
    root = tmp_path_factory.mktemp("rxrx1_v1.0")
    make_rxrx1(root)
    return root


@pytest.fixture(scope="module")
def gray_files(tmp_path_factory):
    """Four 8-bit grayscale PNGs and their pixels."""
    folder = tmp_path_factory.mktemp("gray")
    pixels = np.random.default_rng(1).integers(0, 256, (4, 5, 6), dtype=np.uint8)
    names = [f"g{i}.png" for i in range(4)]
    for name, image in zip(names, pixels):
        Image.fromarray(image, mode="L").save(folder / name)
    return folder, names, pixels


# ------------------------------------------------------------------ ImageFiles
def test_image_files_items_equal_png_pixels(rxrx1):
    path = rxrx1 / "images" / "HEPG2-01" / "Plate1" / "B02_s1.png"
    expected = np.asarray(Image.open(path)).transpose(2, 0, 1)
    image = ImageFiles([path])[0]
    assert image.dtype == torch.uint8
    assert image.shape == (3, 32, 32)
    np.testing.assert_array_equal(image.numpy(), expected)


def test_image_files_grayscale_has_one_channel(gray_files):
    folder, names, pixels = gray_files
    images = ImageFiles(names, root=folder)
    assert len(images) == 4
    np.testing.assert_array_equal(images[2].numpy(), pixels[2][None])


def test_image_files_mode_converts(gray_files):
    folder, names, pixels = gray_files
    image = ImageFiles(names, root=folder, mode="RGB")[0]
    np.testing.assert_array_equal(image.numpy(), np.stack([pixels[0]] * 3))


def test_image_files_reads_16_bit_as_uint16(tmp_path):
    pixels = np.array([[0, 1000], [40000, 65535]], dtype=np.uint16)
    Image.fromarray(pixels).save(tmp_path / "deep.png")
    image = ImageFiles(["deep.png"], root=tmp_path)[0]
    assert image.dtype == torch.uint16
    np.testing.assert_array_equal(image.numpy(), pixels[None])


def test_image_files_is_picklable(gray_files):
    folder, names, pixels = gray_files
    images = pickle.loads(pickle.dumps(ImageFiles(names, root=folder)))
    np.testing.assert_array_equal(images[3].numpy(), pixels[3][None])


def test_image_files_work_in_dataloader_workers(gray_files):
    folder, names, pixels = gray_files
    loader = DataLoader(
        BatchDataset(ImageFiles(names, root=folder)),
        sampler=[[0, 1], [2, 3]],
        batch_size=None,
        num_workers=2,
    )
    batches = [inputs["X"] for inputs, _ in loader]
    expected = torch.from_numpy(pixels[:, None].astype(np.float32) / 255)
    torch.testing.assert_close(torch.cat(batches), expected)


def test_image_files_missing_file_is_named(gray_files):
    folder, names, _ = gray_files
    with pytest.raises(FileNotFoundError, match=r"1 of 5 .* first being .*nope\.png"):
        ImageFiles([*names, "nope.png"], root=folder)


def test_image_files_check_false_defers_missing_file(gray_files):
    folder, _, _ = gray_files
    images = ImageFiles(["nope.png"], root=folder, check=False)
    with pytest.raises(FileNotFoundError):
        images[0]


def test_image_files_single_path_is_refused(gray_files):
    folder, names, _ = gray_files
    with pytest.raises(TypeError, match="one path .*g0.png.*wrap it in a list"):
        ImageFiles(str(folder / names[0]))


def test_image_files_predict_equals_in_memory_array(rxrx1):
    meta = read_rxrx1_metadata(rxrx1)
    X = np.stack([ImageFiles(meta.path)[i].numpy() for i in range(len(meta))])
    y, groups = meta.label.to_numpy(), meta.plate_key.to_numpy()
    lazy = tiny_classifier(batch_size=4).fit(ImageFiles(meta.path), y, groups=groups)
    eager = tiny_classifier(batch_size=4).fit(X, y, groups=groups)
    np.testing.assert_allclose(
        lazy.predict_proba(ImageFiles(meta.path), groups=groups),
        eager.predict_proba(X, groups=groups),
        rtol=1e-5,
        atol=1e-6,
    )


# ---------------------------------------------------------- read_rxrx1_metadata
def test_read_rxrx1_metadata_plate_key_separates_experiments(rxrx1):
    meta = read_rxrx1_metadata(rxrx1)
    assert meta.plate.nunique() == 2
    assert sorted(meta.plate_key.unique()) == [
        "HEPG2-01_1",
        "HEPG2-01_2",
        "HUVEC-01_1",
        "HUVEC-01_2",
    ]


def test_read_rxrx1_metadata_paths_exist_in_wilds_layout(rxrx1):
    meta = read_rxrx1_metadata(rxrx1)
    assert meta.path[0] == str(rxrx1 / "images/HEPG2-01/Plate1/B02_s1.png")
    assert all(Path(p).is_file() for p in meta.path)


@pytest.mark.parametrize(("positive_controls", "n_per_plate"), [(False, 2), (True, 4)])
def test_read_rxrx1_metadata_control_flags(rxrx1, positive_controls, n_per_plate):
    meta = read_rxrx1_metadata(rxrx1, positive_controls=positive_controls)
    assert meta.is_control.dtype == bool
    assert (meta.groupby("plate_key").is_control.sum() == n_per_plate).all()
    assert meta.is_control[meta.label == 1138].all()
    assert not meta.is_control[meta.label < 1108].any()


def test_read_rxrx1_metadata_label_is_sirna_id(rxrx1):
    meta = read_rxrx1_metadata(rxrx1)
    assert meta.label.dtype.kind == "i"
    np.testing.assert_array_equal(meta.label, meta.sirna_id)


def test_read_rxrx1_metadata_missing_csv_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="No metadata.csv in .*rxrx1_v1.0"):
        read_rxrx1_metadata(tmp_path)


def test_read_rxrx1_metadata_missing_columns_are_named(tmp_path):
    pd.DataFrame({"experiment": ["HEPG2-01"], "plate": [1]}).to_csv(
        tmp_path / "metadata.csv", index=False
    )
    with pytest.raises(ValueError, match=r"lacks the WILDS rxrx1 columns \['site_id'"):
        read_rxrx1_metadata(tmp_path)


# ----------------------------------------------------------------- the runner
@pytest.mark.parametrize(
    ("norm", "extra"), [("group", "--limit=12"), ("controls", "--controls=all")]
)
def test_rxrx1_runner_end_to_end_writes_scores(rxrx1, tmp_path, norm, extra):
    out = tmp_path / "results.md"
    result = load_runner().main(
        [
            f"--root={rxrx1}",
            "--module=cnn",
            "--epochs=1",
            "--warmup=0",
            "--batch-size=4",
            f"--norm={norm}",
            "--num-workers=0",
            extra,
            "--device=cpu",
            "--verbose=0",
            f"--out={out}",
        ]
    )
    text = out.read_text()
    assert 0 <= result["top1"] <= result["top5"] <= 1
    assert set(result["per_cell_type"]) == {"HEPG2", "HUVEC"}
    for metric in ("top-1 (WILDS acc_avg, all test images)", "top-5"):
        assert re.search(rf"\| {re.escape(metric)} \| [01]\.\d{{4}} \|", text)
    assert re.search(r"\| top-1, HUVEC \(\d+ images\) \| [01]\.\d{4} \|", text)
    assert f"--norm={norm}" in text


def test_rxrx1_runner_predicts_by_plate_like_one_call(rxrx1):
    runner = load_runner()
    meta = read_rxrx1_metadata(rxrx1)
    train, test = meta[meta.dataset == "train"], meta[meta.dataset == "test"]
    clf = tiny_classifier(batch_size=4).fit(
        ImageFiles(train.path), train.label, groups=train.plate_key.to_numpy()
    )
    args = runner.parse_args(["--root=x", "--num-workers=0"])
    by_plate = runner.predict_proba_by_plate(clf, test.reset_index(drop=True), args)
    whole = clf.predict_proba(ImageFiles(test.path), groups=test.plate_key.to_numpy())
    np.testing.assert_allclose(by_plate, whole, rtol=1e-5, atol=1e-6)


def test_rxrx1_runner_top_k_hits_counts_label_in_top_k():
    proba = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    classes = np.array([10, 20, 30])
    hits = load_runner().top_k_hits(proba, classes, [30, 30], 2)
    np.testing.assert_array_equal(hits, [True, True])
    top1 = load_runner().top_k_hits(proba, classes, [30, 30], 1)
    np.testing.assert_array_equal(top1, [False, False])


def test_rxrx1_runner_loader_benchmark_writes_ratio(rxrx1, tmp_path):
    out = tmp_path / "loader.md"
    result = load_runner().main(
        [
            f"--root={rxrx1}",
            "--loader-benchmark",
            "--batch-size=4",
            "--num-workers=2",
            "--repeats=1",
            f"--out={out}",
        ]
    )
    assert set(result["loader"]) == {0, 2}
    assert re.search(
        r"\| estimator, num_workers=2 \| \d+ \| \d+\.\d\d \|", out.read_text()
    )


def test_rxrx1_runner_missing_split_is_named(tmp_path):
    meta = make_rxrx1(tmp_path, size=4)
    meta.assign(dataset="val").to_csv(tmp_path / "metadata.csv", index=False)
    with pytest.raises(ValueError, match=r"no rows with dataset == 'train'.*\['val'\]"):
        load_runner().main([f"--root={tmp_path}", "--module=cnn", "--epochs=1"])
