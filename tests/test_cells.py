"""Tests of cell cropping and nuclei finding (aggregation: test_profiles.py)."""

import builtins

import numpy as np
import pandas as pd
import pytest

from sklearn_ben import profiles
from sklearn_ben.cells import crop_cells, find_nuclei


def _stack(n_images=2, n_channels=3, height=20, width=30):
    """Every pixel value unique: 10000 * image + 1000 * channel + 100 * y + x."""
    image, channel, y, x = np.meshgrid(
        np.arange(n_images),
        np.arange(n_channels),
        np.arange(height),
        np.arange(width),
        indexing="ij",
    )
    return 10000 * image + 1000 * channel + 100 * y + x


def _disks(centres, shape=(64, 64), radius=4, value=1000.0):
    image = np.full(shape, 100.0)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for y, x in centres:
        image[(yy - y) ** 2 + (xx - x) ** 2 <= radius**2] = value
    return image


@pytest.mark.parametrize("size", [4, 5])
@pytest.mark.parametrize("channels_last", [False, True])
def test_crop_cells_copies_the_right_pixels(size, channels_last):
    images = _stack()
    given = np.moveaxis(images, 1, -1) if channels_last else images
    centers = pd.DataFrame({"image": [1, 0], "y": [10, 7], "x": [3, 20]})
    cells = crop_cells(given, centers, size=size, channels_last=channels_last)
    assert cells.crops.shape == (2, 3, size, size)
    assert cells.crops.dtype == images.dtype
    top, left = 10 - size // 2, 3 - size // 2
    expected = images[1, :, top : top + size, left : left + size]
    np.testing.assert_array_equal(cells.crops[0], expected)
    # pixel (c, i, j) of the second crop is image 0, row 7 - size//2 + i, ...
    c, i, j = 2, 1, size - 1
    assert cells.crops[1, c, i, j] == 1000 * c + 100 * (7 - size // 2 + i) + (
        20 - size // 2 + j
    )


def test_crop_cells_centre_pixel_of_odd_crop_is_the_centre():
    images = _stack(n_images=1, n_channels=1)
    cells = crop_cells(images, [np.array([[9, 14]])], size=7)
    assert cells.crops[0, 0, 3, 3] == 100 * 9 + 14


def test_crop_cells_drops_border_crops_and_reports_bags():
    images = _stack(n_images=3, n_channels=1, height=20, width=20)
    centers = [
        np.array([[10, 10], [1, 10], [10, 18]]),  # 2nd and 3rd leave the image
        np.zeros((0, 2)),  # no cells
        np.array([[4, 4], [15, 16], [17, 10]]),  # last leaves at the bottom
    ]
    cells = crop_cells(images, centers, size=8, groups=["P1", "P1", "P2"])
    assert cells.kept.tolist() == [True, False, False, True, True, False]
    assert cells.bags.tolist() == [0, 2, 2]
    assert cells.groups.tolist() == ["P1", "P2", "P2"]
    assert cells.centers[["image", "y", "x"]].values.tolist() == [
        [0, 10, 10],
        [2, 4, 4],
        [2, 15, 16],
    ]
    # every kept crop's top-left pixel is image, y - 4, x - 4
    top_left = cells.crops[:, 0, 0, 0]
    assert top_left.tolist() == [10000 * 0 + 606, 20000 + 0, 20000 + 1112]


def test_crop_cells_keeps_crops_touching_the_border():
    images = _stack(n_images=1, n_channels=1, height=10, width=10)
    cells = crop_cells(images, [np.array([[2, 2], [8, 8], [9, 8]])], size=4)
    assert cells.kept.tolist() == [True, True, False]


def test_crop_cells_accepts_points_with_image_index_and_rounds():
    images = _stack()
    cells = crop_cells(
        images, np.array([[10.4, 3.6], [7.0, 20.0]]), image_index=[1, 0], size=4
    )
    assert cells.bags.tolist() == [1, 0]
    np.testing.assert_array_equal(cells.crops[0], images[1, :, 8:12, 2:6])


def test_crop_cells_keeps_extra_center_columns():
    centers = pd.DataFrame(
        {"image": [0, 0], "y": [1, 10], "x": [10, 10], "area": [50, 60]},
        index=[7, 9],
    )
    cells = crop_cells(_stack(), centers, size=4)
    assert cells.centers.to_dict("list") == {
        "image": [0],
        "y": [10],
        "x": [10],
        "area": [60],
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"images": np.zeros((2, 20, 30))},
            r"images must be a 4-d array .*\(2, 20, 30\)",
        ),
        (
            {"centers": [np.zeros((1, 2))]},
            "centers has 1 arrays but there are 2 images",
        ),
        (
            {"centers": pd.DataFrame({"image": [0], "row": [1], "x": [1]})},
            r"centers names columns \['y'\]",
        ),
        (
            {"centers": pd.DataFrame({"image": [2], "y": [1], "x": [1]})},
            r"1 centres name images outside 0\.\.1, e\.g\. image 2",
        ),
        (
            {"centers": pd.DataFrame({"image": [0.5], "y": [1], "x": [1]})},
            "centre image indices must be integers",
        ),
        (
            {"centers": np.zeros((3, 2)), "image_index": [0, 1]},
            "image_index has 2 entries but there are 3 centres",
        ),
        ({"groups": ["P1"]}, r"groups has shape \(1,\) but there are 2 images"),
        ({"size": 0}, "size should be a positive integer, but got size=0"),
    ],
)
def test_crop_cells_rejects_bad_input(kwargs, message):
    params = {"images": _stack(), "centers": [np.zeros((0, 2))] * 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        crop_cells(params.pop("images"), params.pop("centers"), **params)


@pytest.mark.parametrize("channels_last", [False, True])
def test_find_nuclei_finds_hand_placed_disks(channels_last):
    first = [(10, 12), (30, 45), (50, 20)]
    second = [(20.5, 40.5)]  # a disk centred between pixels: 2x2 core
    dna = np.stack([_disks(first), _disks(second, radius=5)])
    images = np.stack([np.zeros_like(dna), dna], axis=1)  # DNA is channel 1
    if channels_last:
        images = np.moveaxis(images, 1, -1)
    found = find_nuclei(images, channel=1, channels_last=channels_last)
    assert found["image"].tolist() == [0, 0, 0, 1]
    expected = np.array(first + [(20.5, 40.5)])
    got = found[["y", "x"]].to_numpy()
    order = np.lexsort((got[:, 1], got[:, 0], found["image"]))
    assert np.abs(got[order] - expected).max() <= 1


def test_find_nuclei_drops_small_objects():
    image = _disks([(20, 20)], radius=5)
    image[50, 50] = 1000.0  # a single bright pixel
    found = find_nuclei(image[None, None], sigma=0, min_area=10)
    assert found[["y", "x"]].values.tolist() == [[20, 20]]


def test_find_nuclei_without_contrast_finds_nothing():
    found = find_nuclei(np.ones((2, 1, 16, 16)))
    assert len(found) == 0
    assert list(found.columns) == ["image", "y", "x", "area"]


def test_find_nuclei_output_feeds_crop_cells():
    images = np.stack([_disks([(10, 12), (32, 32)])])[:, None]
    cells = crop_cells(images, find_nuclei(images), size=24)
    assert cells.kept.tolist() == [False, True]
    assert cells.crops[0, 0, 12, 12] == 1000.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"channel": 3}, "channel=3 is not a channel of images with 2 channels"),
        ({"min_area": 0}, "min_area should be a positive integer"),
    ],
)
def test_find_nuclei_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        find_nuclei(np.zeros((1, 2, 8, 8)), **kwargs)


def test_find_nuclei_without_scikit_image_says_how_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_skimage(name, *args, **kwargs):
        if name.startswith("skimage"):
            raise ImportError("No module named 'skimage'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_skimage)
    with pytest.raises(ImportError, match=r"pip install sklearn-ben\[cells\]"):
        find_nuclei(np.zeros((1, 1, 8, 8)))


def _bbbc021_crops():
    from sklearn_ben.datasets import get_data_home

    try:
        folder = get_data_home() / "bbbc021_crops"
    except FileNotFoundError as error:
        pytest.skip(f"real BBBC021 crops not available: {error}")
    files = sorted(folder.glob("*.npz"))
    if not files:
        pytest.skip(f"real BBBC021 crops not available: no .npz files in {folder}")
    return files[0]


def test_find_nuclei_on_real_bbbc021_crops_finds_the_centre_cell():
    with np.load(_bbbc021_crops()) as data:
        images = data["images"][:40]  # (40, 68, 68, 3) uint16, DNA first
    assert images.shape[1:] == (68, 68, 3)
    found = find_nuclei(images, channel=0, channels_last=True)
    distance = np.hypot(found["y"] - 34, found["x"] - 34)
    centred = set(found["image"][distance <= 8])
    assert len(centred) >= 0.9 * len(images)


def test_cells_reexports_the_one_aggregation():
    from sklearn_ben import cells

    assert cells.aggregate_profiles is profiles.aggregate_profiles
    assert cells.treatment_profiles is profiles.treatment_profiles
