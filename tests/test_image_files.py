"""ImageFiles on generated files and on the real raw files of ../shared/data.

Every real file in ``raw_images`` is compared bit for bit with what tifffile
or Pillow decode; those tests skip, with the reason, when the folder is absent.
"""

import os
from pathlib import Path

import imagecodecs
import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from PIL import Image
from torch.utils.data import DataLoader

from sklearn_ben._data import BatchDataset
from sklearn_ben.io import ImageFileError, ImageFiles
from tests.conftest import tiny_classifier

RAW = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "raw_images"
needs_raw = pytest.mark.skipif(
    not RAW.is_dir(), reason=f"real raw images not found at {RAW} (see data README)"
)
RAW_FILES = (
    sorted(p for p in RAW.rglob("*") if p.suffix.lower() in (".tif", ".tiff", ".png"))
    if RAW.is_dir()
    else []
)
PEDIATRIC = RAW / "cytodataframe" / "pediatric_cancer_atlas_profiling"
JUMP = RAW / "cytodataframe" / "JUMP_plate_BR00117006"
BBBC022 = RAW / "bbbc022_20585"
RNG = np.random.default_rng(0)


def uint16(*shape):
    return RNG.integers(0, 65536, shape, dtype=np.uint16)


@pytest.fixture
def sites(tmp_path):
    """Three 16-bit sites, one TIFF per channel (DNA, ER), and their pixels."""
    pixels = uint16(3, 2, 6, 7)
    rows = []
    for i in range(3):
        row = []
        for c, stain in enumerate(["DNA", "ER"]):
            name = f"s{i}_{stain}.tif"
            tifffile.imwrite(tmp_path / name, pixels[i, c])
            row.append(name)
        rows.append(row)
    return tmp_path, rows, pixels


# ------------------------------------------------------------ one file, exact
@pytest.mark.parametrize(
    ("kwargs", "axes_out"),
    [
        ({"photometric": "rgb"}, "YXS"),
        ({"photometric": "minisblack", "planarconfig": "separate"}, "SYX"),
        ({"photometric": "minisblack"}, "IYX"),
    ],
)
def test_image_files_tiff_channels_stay_uint16(tmp_path, kwargs, axes_out):
    chw = uint16(3, 5, 4)
    data = chw.transpose(1, 2, 0) if axes_out == "YXS" else chw
    tifffile.imwrite(tmp_path / "x.tif", data, **kwargs)
    image = ImageFiles(["x.tif"], root=tmp_path)[0]
    assert image.dtype == torch.uint16
    np.testing.assert_array_equal(image.numpy(), chw)


def test_image_files_multi_page_tiff_reads_every_page(tmp_path):
    pages = uint16(4, 3, 3)
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tif:
        for page in pages:
            tif.write(page, photometric="minisblack")
    np.testing.assert_array_equal(ImageFiles([tmp_path / "pages.tif"])[0], pages)


@pytest.mark.parametrize("compression", ["lzw", "zlib", "zstd", "packbits"])
def test_image_files_compressed_tiff_is_exact(tmp_path, compression):
    plane = uint16(40, 30)
    tifffile.imwrite(tmp_path / "c.tif", plane, compression=compression, rowsperstrip=8)
    np.testing.assert_array_equal(ImageFiles([tmp_path / "c.tif"])[0][0], plane)


def test_image_files_big_endian_tiff_is_native_and_exact(tmp_path):
    plane = uint16(5, 6)
    tifffile.imwrite(tmp_path / "be.tif", plane, byteorder=">")
    image = ImageFiles([tmp_path / "be.tif"])[0]
    assert image.dtype == torch.uint16
    np.testing.assert_array_equal(image[0].numpy(), plane)


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.uint8, np.int16])
def test_image_files_tiff_keeps_any_dtype(tmp_path, dtype):
    plane = RNG.normal(100, 50, (4, 4)).astype(dtype)
    tifffile.imwrite(tmp_path / "d.tif", plane)
    image = ImageFiles([tmp_path / "d.tif"])[0]
    np.testing.assert_array_equal(image.numpy(), plane[None])


def test_image_files_16_bit_rgb_png_stays_uint16(tmp_path):
    rgb = uint16(5, 4, 3)
    (tmp_path / "rgb16.png").write_bytes(imagecodecs.png_encode(rgb))
    images = ImageFiles(["rgb16.png"], root=tmp_path, check="header")
    assert images.sample_shape == (3, 5, 4)
    assert images.dtype == np.uint16
    np.testing.assert_array_equal(images[0].numpy(), rgb.transpose(2, 0, 1))


def test_image_files_palette_png_is_refused(tmp_path):
    Image.new("P", (2, 2)).save(tmp_path / "p.png")
    with pytest.raises(
        ImageFileError, match=r"p\.png' \(sample 0\) has Pillow mode 'P'.*mode='RGB'"
    ):
        ImageFiles(["p.png"], root=tmp_path)


def test_image_files_mode_on_16_bit_file_is_refused(tmp_path):
    tifffile.imwrite(tmp_path / "deep.tif", uint16(3, 3))
    with pytest.raises(
        ImageFileError,
        match=r"deep\.tif' \(sample 0\) is uint16, but mode='L'.*clips values to 255; pass mode=None",
    ):
        ImageFiles(["deep.tif"], root=tmp_path, mode="L")


def test_image_files_two_series_tiff_is_refused(tmp_path):
    with tifffile.TiffWriter(tmp_path / "two.tif") as tif:
        tif.write(uint16(4, 4))
        tif.write(uint16(2, 2))
    with pytest.raises(
        ImageFileError,
        match=r"two\.tif' \(sample 0\) holds 2 image series of different shapes",
    ):
        ImageFiles(["two.tif"], root=tmp_path)


# ------------------------------------------------------------ per-channel files
def test_image_files_channel_files_stack_in_column_order(sites):
    folder, rows, pixels = sites
    images = ImageFiles(rows, root=folder)
    assert images.sample_shape == (2, 6, 7)
    for i in range(3):
        assert images[i].dtype == torch.uint16
        np.testing.assert_array_equal(images[i].numpy(), pixels[i])
    swapped = ImageFiles([row[::-1] for row in rows], root=folder)
    np.testing.assert_array_equal(swapped[1].numpy(), pixels[1, ::-1])


def test_image_files_channel_files_without_check_read_the_same(sites):
    folder, rows, pixels = sites
    images = ImageFiles(rows, root=folder, check="none")
    np.testing.assert_array_equal(images[2].numpy(), pixels[2])


def test_image_files_multi_plane_channel_file_is_refused(sites):
    folder, rows, _ = sites
    tifffile.imwrite(folder / "rgb.tif", uint16(6, 7, 3), photometric="rgb")
    with pytest.raises(
        ImageFileError, match=r"rgb\.tif' \(sample 0, channel 1\) holds 3 planes"
    ):
        ImageFiles([[rows[0][0], "rgb.tif"]], root=folder)


def test_image_files_channel_files_of_one_sample_must_match(sites):
    folder, rows, _ = sites
    tifffile.imwrite(folder / "small.tif", uint16(3, 3))
    with pytest.raises(
        ImageFileError,
        match=r"small\.tif' \(sample 0, channel 'ER'\) has size \(1, 3, 3\) uint16, but the sample's first channel file .*s0_DNA\.tif' has \(1, 6, 7\)",
    ):
        ImageFiles([[rows[0][0], "small.tif"]], root=folder, channels=["DNA", "ER"])


def test_image_files_mode_with_channel_files_is_refused(sites):
    folder, rows, _ = sites
    with pytest.raises(
        ValueError, match=r"mode='RGB' converts files that hold a whole sample"
    ):
        ImageFiles(rows, root=folder, mode="RGB")


# ------------------------------------------------------------------ checks
@pytest.mark.parametrize("check", ["exists", "header"])
def test_image_files_wrong_size_file_is_named_at_read_or_check(sites, check):
    folder, rows, _ = sites
    tifffile.imwrite(folder / rows[2][1], uint16(5, 7))
    match = r"s2_ER\.tif' \(sample 2, channel 1\) has shape \(1, 5, 7\) uint16, but sample 0 has \(1, 6, 7\) uint16 per channel.*crop or resize"
    if check == "header":
        match = r"s2_DNA\.tif' \(sample 2\) has shape|s2_ER\.tif' \(sample 2, channel 1\) has size"
        with pytest.raises(ImageFileError, match=match):
            ImageFiles(rows, root=folder, check=check)
        return
    images = ImageFiles(rows, root=folder, check=check)
    images[1]
    with pytest.raises(ImageFileError, match=match):
        images[2]


def test_image_files_header_check_names_wrong_dtype(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", uint16(4, 4))
    tifffile.imwrite(tmp_path / "b.tif", uint16(4, 4).astype(np.uint8))
    with pytest.raises(
        ImageFileError,
        match=r"b\.tif' \(sample 1\) has shape \(1, 4, 4\) uint8, but sample 0 has \(1, 4, 4\) uint16; all samples must share",
    ):
        ImageFiles(["a.tif", "b.tif"], root=tmp_path, check="header")


def test_image_files_header_check_names_wrong_channel_count(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", uint16(3, 4, 4), photometric="minisblack")
    tifffile.imwrite(tmp_path / "b.tif", uint16(2, 4, 4), photometric="minisblack")
    with pytest.raises(
        ImageFileError,
        match=r"b\.tif' \(sample 1\) has shape \(2, 4, 4\) uint16, but sample 0 has \(3, 4, 4\)",
    ):
        ImageFiles(["a.tif", "b.tif"], root=tmp_path, check="header")


def truncate(path):
    """Cut the end of the pixel data (tifffile writes the IFD before it)."""
    data = path.read_bytes()
    path.write_bytes(data[:-40])


def test_image_files_header_check_refuses_truncated_tiff(sites):
    folder, rows, _ = sites
    truncate(folder / rows[1][0])
    with pytest.raises(
        ImageFileError,
        match=r"s1_DNA\.tif' \(sample 1, channel 0\) is \d+ bytes but its pixel data runs to byte \d+: the file is truncated; copy it again",
    ):
        ImageFiles(rows, root=folder, check="header")


def test_image_files_truncated_file_is_named_in_dataloader_worker(sites):
    folder, rows, _ = sites
    truncate(folder / rows[2][1])
    images = ImageFiles(rows, root=folder)
    loader = DataLoader(
        BatchDataset(images), sampler=[[0, 1], [2]], batch_size=None, num_workers=1
    )
    with pytest.raises(
        ImageFileError,
        match=r"s2_ER\.tif' \(sample 2, channel 1\) could not be decoded \(ValueError: failed to read \d+ bytes, got \d+\); copy the file again",
    ):
        list(loader)


def test_image_files_missing_channel_file_is_named(sites):
    folder, rows, _ = sites
    rows[1][1] = "gone.tif"
    with pytest.raises(
        FileNotFoundError,
        match=r"1 of 6 image files do not exist, the first being .*gone\.tif' \(sample 1, channel 'ER'\)",
    ):
        ImageFiles(rows, root=folder, channels=["DNA", "ER"])


def test_image_files_missing_file_in_big_folder_is_found(tmp_path):
    names = [f"f{i}.tif" for i in range(70)]
    for name in names:
        tifffile.imwrite(tmp_path / name, np.zeros((2, 2), np.uint8))
    with pytest.raises(
        FileNotFoundError, match=r"2 of 72 .* first being .*f70\.tif' \(sample 70\)"
    ):
        ImageFiles([*names, "f70.tif", "f71.tif"], root=tmp_path)


def test_image_files_deleted_file_is_named_at_read(sites):
    folder, rows, _ = sites
    images = ImageFiles(rows, root=folder)
    os.remove(folder / rows[1][0])
    with pytest.raises(
        FileNotFoundError, match=r"s1_DNA\.tif' \(sample 1, channel 0\) does not exist"
    ):
        images[1]


@pytest.mark.parametrize(
    ("paths", "error", "match"),
    [
        (
            [],
            ValueError,
            r"paths is empty \(shape \(0,\)\), but ImageFiles needs at least one file",
        ),
        (
            [["a.tif", "b.tif"], ["c.tif"]],
            ValueError,
            r"paths has rows of different lengths",
        ),
        (
            ["a.tif", float("nan")],
            TypeError,
            r"paths\[1\] is nan \(float\), not a file path",
        ),
        ([[["a.tif"]]], ValueError, r"1-D .* or 2-D .* but has shape \(1, 1, 1\)"),
        ("a.tif", TypeError, r"one path 'a.tif'; wrap it in a list"),
    ],
)
def test_image_files_bad_paths_are_named(paths, error, match):
    with pytest.raises(error, match=match):
        ImageFiles(paths)


def test_image_files_bad_check_is_named(sites):
    folder, rows, _ = sites
    with pytest.raises(
        ValueError,
        match=r"check must be one of \('exists', 'header', 'none'\).*got 'all'",
    ):
        ImageFiles(rows, root=folder, check="all")


def test_image_files_relative_paths_resolve_at_construction(sites, monkeypatch):
    folder, rows, pixels = sites
    monkeypatch.chdir(folder)
    images = ImageFiles(rows)
    monkeypatch.chdir(folder.parent)
    assert Path(images.paths[0, 0]).is_absolute()
    np.testing.assert_array_equal(images[0].numpy(), pixels[0])


# ---------------------------------------------------------------- indexing
@pytest.mark.parametrize(
    "index",
    [np.array([2, 0]), [2, 0], torch.tensor([2, 0]), np.array([True, False, True])],
)
def test_image_files_array_index_gives_subset(sites, index):
    folder, rows, pixels = sites
    subset = ImageFiles(rows, root=folder)[index]
    assert isinstance(subset, ImageFiles)
    expected = [2, 0] if len(index) == 2 else [0, 2]
    assert len(subset) == 2
    np.testing.assert_array_equal(subset[0].numpy(), pixels[expected[0]])
    np.testing.assert_array_equal(subset[1].numpy(), pixels[expected[1]])


def test_image_files_slice_and_negative_index(sites):
    folder, rows, pixels = sites
    images = ImageFiles(rows, root=folder)
    assert len(images[1:]) == 2
    np.testing.assert_array_equal(images[-1].numpy(), pixels[2])
    np.testing.assert_array_equal(images[np.int64(1)].numpy(), pixels[1])


@pytest.mark.parametrize(
    ("index", "error", "match"),
    [
        (3, IndexError, r"index 3 is out of range for ImageFiles of 3 samples"),
        (
            np.array([0, 5]),
            IndexError,
            r"index 5 is out of range for ImageFiles of 3 samples",
        ),
        (
            np.array([True, False]),
            IndexError,
            r"boolean mask has shape \(2,\) but ImageFiles has 3 samples",
        ),
        (
            np.array([0.5]),
            IndexError,
            r"must be 1-D integers or booleans, but got float64",
        ),
        (1.0, TypeError, r"indices must be integers.*but got float"),
    ],
)
def test_image_files_bad_index_is_named(sites, index, error, match):
    folder, rows, _ = sites
    with pytest.raises(error, match=match):
        ImageFiles(rows, root=folder)[index]


def test_image_files_repr_counts(sites):
    folder, rows, _ = sites
    images = ImageFiles(rows, root=folder, channels=["DNA", "ER"])
    assert repr(images) == (
        "ImageFiles(<3 samples x 2 channel files>, (2, 6, 7) uint16, check='exists')"
    )
    assert repr(images[[0]]).startswith("ImageFiles(<1 samples x 2 channel files>")


# ---------------------------------------------------------------- from_table
@pytest.mark.parametrize("prefix", ["", "Image_"])
def test_image_files_from_table_reads_loaddata_columns(sites, prefix):
    folder, rows, pixels = sites
    table = pd.DataFrame(
        {
            f"{prefix}FileName_ER": [r[1] for r in rows],
            f"{prefix}PathName_ER": [str(folder)] * 3,
            f"{prefix}FileName_DNA": [r[0] for r in rows],
            f"{prefix}PathName_DNA": [str(folder)] * 3,
            "Metadata_Plate": ["P1", "P1", "P2"],
        }
    )
    images = ImageFiles.from_table(table, ["DNA", "ER"], check="header")
    assert images.channels == ("DNA", "ER")
    np.testing.assert_array_equal(images[2].numpy(), pixels[2])


def test_image_files_from_table_joins_relative_folders_to_root(sites):
    folder, rows, pixels = sites
    sub = folder / "plate1"
    sub.mkdir()
    for name in rows[0]:
        (folder / name).rename(sub / name)
    table = pd.DataFrame(
        {
            "FileName_DNA": [rows[0][0]],
            "PathName_DNA": ["plate1"],
            "FileName_ER": [rows[0][1]],
        }
    )
    table["PathName_ER"] = "plate1"
    images = ImageFiles.from_table(table, ["DNA", "ER"], root=folder)
    np.testing.assert_array_equal(images[0].numpy(), pixels[0])


def test_image_files_from_table_without_pathname_uses_root(sites):
    folder, rows, pixels = sites
    table = pd.DataFrame({"FileName_DNA": [r[0] for r in rows]})
    images = ImageFiles.from_table(table, ["DNA"], root=folder)
    np.testing.assert_array_equal(images[1].numpy(), pixels[1, :1])


@pytest.mark.parametrize(
    ("channels", "error", "match"),
    [
        (
            ["DNA", "Mito"],
            ValueError,
            r"no column FileName_Mito \(nor Image_FileName_Mito\); its channels are \['DNA', 'ER'\]",
        ),
        (
            "DNA",
            TypeError,
            r"list of channel names, but got the string 'DNA'; pass \['DNA'\]",
        ),
        (["DNA", "DNA"], ValueError, r"names a channel twice"),
        ([], ValueError, r"channels is empty"),
    ],
)
def test_image_files_from_table_bad_channels_are_named(channels, error, match):
    table = pd.DataFrame({"FileName_DNA": ["a.tif"], "Image_FileName_ER": ["b.tif"]})
    with pytest.raises(error, match=match):
        ImageFiles.from_table(table, channels)


def test_image_files_from_table_empty_cell_is_named():
    table = pd.DataFrame({"FileName_DNA": ["a.tif", None]}, index=[10, 11])
    with pytest.raises(
        ValueError, match=r"column FileName_DNA is empty in row 11; drop the rows"
    ):
        ImageFiles.from_table(table, ["DNA"])


# ---------------------------------------------------------------- real files
@needs_raw
@pytest.mark.parametrize(
    "path", RAW_FILES, ids=[p.name[:40] for p in RAW_FILES] or None
)
def test_image_files_real_file_is_bit_exact(path):
    image = ImageFiles([path], check="header")[0].numpy()
    if path.suffix.lower() == ".png":
        reference = np.asarray(Image.open(path))
        reference = (
            reference[None] if reference.ndim == 2 else reference.transpose(2, 0, 1)
        )
    else:
        reference = tifffile.imread(path)
        reference = (
            reference[None] if reference.ndim == 2 else reference.transpose(2, 0, 1)
        )
    assert image.dtype == reference.dtype
    np.testing.assert_array_equal(image, reference)


@needs_raw
@pytest.mark.parametrize(
    "path", [p for p in RAW_FILES if "orig" in p.parts or "bbbc022" in str(p)]
)
def test_image_files_real_raw_tiff_equals_pillow(path):
    with Image.open(path) as im:
        reference = np.asarray(im)
    np.testing.assert_array_equal(ImageFiles([path])[0][0].numpy(), reference)


@needs_raw
def test_image_files_real_16_bit_rgb_tiff_keeps_high_bits():
    path = PEDIATRIC / "images" / "outlines" / "CellsOutlines_BR00143976_C03_3.tiff"
    image = ImageFiles([path])[0]
    assert image.dtype == torch.uint16 and image.shape == (3, 1080, 1080)
    np.testing.assert_array_equal(
        image.numpy(), tifffile.imread(path).transpose(2, 0, 1)
    )


@needs_raw
def test_image_files_from_bbbc021_style_image_table():
    table = pd.read_csv(BBBC022 / "20585_AE_rows_for_included_images.csv")
    # The table's PathName (20585/) is the acquisition folder; move it.
    table["Image_PathName_OrigHoechst"] = "images/BBBC022_v1_images_20585w1"
    images = ImageFiles.from_table(table, ["OrigHoechst"], root=BBBC022, check="header")
    assert len(images) == 7 and images.sample_shape == (1, 520, 696)
    for i in (0, 6):
        name = table["Image_FileName_OrigHoechst"][i]
        expected = tifffile.imread(BBBC022 / "images/BBBC022_v1_images_20585w1" / name)
        np.testing.assert_array_equal(images[i][0].numpy(), expected)


PHENIX_CHANNELS = [
    "OrigBrightfield",
    "OrigER",
    "OrigAGP",
    "OrigMito",
    "OrigDNA",
    "OrigRNA",
]


@needs_raw
def test_image_files_phenix_six_channel_site_from_loaddata():
    table = pd.read_csv(PEDIATRIC / "image_level_columns_from_parquet.csv")
    for ch in PHENIX_CHANNELS:
        table[f"Image_PathName_{ch}"] = str(PEDIATRIC / "images" / "orig")
    images = ImageFiles.from_table(table, PHENIX_CHANNELS, check="header")
    assert images.sample_shape == (6, 1080, 1080) and images.dtype == np.uint16
    site = images[0].numpy()
    for c, ch in enumerate(PHENIX_CHANNELS):
        path = PEDIATRIC / "images" / "orig" / table[f"Image_FileName_{ch}"][0]
        np.testing.assert_array_equal(site[c], tifffile.imread(path))


def phenix_two_plates():
    """A LoadData table of the two real Phenix sites, on their shared channels."""
    rows = []
    for folder, plate in ((JUMP, "BR00117006"), (PEDIATRIC, "BR00143976")):
        meta = pd.read_csv(folder / "image_level_columns_from_parquet.csv")
        row = {"Metadata_Plate": plate}
        for ch in ("AGP", "RNA", "DNA"):
            row[f"FileName_{ch}"] = meta[f"Image_FileName_Orig{ch}"][0]
            row[f"PathName_{ch}"] = str(folder / "images" / "orig")
        rows.append(row)
    return pd.DataFrame(rows)


@needs_raw
def test_image_files_real_phenix_crops_train_classifier_end_to_end():
    table = phenix_two_plates()
    images = ImageFiles.from_table(table, ["AGP", "RNA", "DNA"], check="header")
    rng = np.random.default_rng(0)
    crops, groups = [], []
    for i, plate in enumerate(table["Metadata_Plate"]):
        site = images[i].numpy()  # (3, 1080, 1080) uint16
        for top, left in rng.integers(0, 1080 - 32, (12, 2)):
            crops.append(site[:, top : top + 32, left : left + 32])
            groups.append(plate)
    X, groups = np.stack(crops), np.array(groups)
    y = np.tile([0, 1], len(X) // 2)
    assert X.dtype == np.uint16
    clf = tiny_classifier(max_epochs=1, batch_size=6).fit(X, y, groups=groups)
    proba = clf.predict_proba(X, groups=groups)
    assert proba.shape == (24, 2) and np.isfinite(proba).all()
