from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, cross_val_score

from sklearn_ben.datasets import (
    get_data_home,
    load_bbbc021_crops,
    load_bbbc021_profiles,
    make_plates,
)

SMALL = {"n_plates": 4, "n_samples_per_plate": 30, "image_size": 16}


def _real_data_home():
    try:
        return get_data_home()
    except FileNotFoundError:
        return None


DATA_HOME = _real_data_home()
needs_crops = pytest.mark.skipif(
    DATA_HOME is None or not (DATA_HOME / "bbbc021_crops").is_dir(),
    reason="real BBBC021 crops not found (set SKLEARN_BEN_DATA to ../shared/data)",
)
needs_profiles = pytest.mark.skipif(
    DATA_HOME is None or not (DATA_HOME / "bbbc021_profiles").is_dir(),
    reason="real BBBC021 profiles not found (set SKLEARN_BEN_DATA to ../shared/data)",
)


def _control_channel_means(data):
    """Per-image, per-channel mean intensity of the controls, with plate ids."""
    means = data.X[data.controls].mean(axis=(2, 3))
    return means, data.groups[data.controls]


# --------------------------------------------------------------- make_plates


@pytest.mark.parametrize("dtype", ["float32", "float64", "uint16"])
@pytest.mark.parametrize("n_channels", [1, 3, 5])
def test_make_plates_shapes_and_dtypes(n_channels, dtype):
    data = make_plates(**SMALL, n_channels=n_channels, dtype=dtype, random_state=0)
    n = SMALL["n_plates"] * SMALL["n_samples_per_plate"]
    assert data.X.shape == (n, n_channels, 16, 16)
    assert data.X.dtype == np.dtype(dtype)
    for name in ("y", "controls", "groups", "experiments", "bags"):
        assert data[name].shape == (n,)
    assert data.y.dtype.kind == "i"
    assert data.controls.dtype == bool
    np.testing.assert_array_equal(data.controls, data.y == 0)
    assert list(data.target_names) == ["DMSO", "treatment1", "treatment2"]
    assert isinstance(data.DESCR, str)


def test_make_plates_float_range_is_image_like():
    data = make_plates(**SMALL, random_state=0)
    assert data.X.min() >= 0
    assert 0.05 < data.X.mean() < 1.5
    assert data.X.max() < 6


def test_make_plates_uint16_is_camera_counts_of_float():
    as_float = make_plates(**SMALL, random_state=0)
    counts = make_plates(**SMALL, dtype="uint16", random_state=0)
    np.testing.assert_allclose(counts.X / 4096, as_float.X, atol=1 / 4096)


@pytest.mark.parametrize("cells_per_image", [1, 3])
def test_make_plates_same_seed_same_data(cells_per_image):
    params = {**SMALL, "cells_per_image": cells_per_image, "random_state": 3}
    first, second = make_plates(**params), make_plates(**params)
    np.testing.assert_array_equal(first.X, second.X)
    np.testing.assert_array_equal(first.y, second.y)
    np.testing.assert_array_equal(first.bags, second.bags)
    pd.testing.assert_frame_equal(first.plate_effects, second.plate_effects)


def test_make_plates_different_seeds_differ():
    first = make_plates(**SMALL, random_state=0)
    second = make_plates(**SMALL, random_state=1)
    assert not np.allclose(first.X, second.X)


def test_make_plates_accepts_random_state_instance():
    data = make_plates(**SMALL, random_state=np.random.RandomState(0))
    np.testing.assert_array_equal(data.X, make_plates(**SMALL, random_state=0).X)


def test_make_plates_is_fast():
    import time

    start = time.perf_counter()
    make_plates(n_plates=4, n_samples_per_plate=60, image_size=32, random_state=0)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("composition", ["balanced", "varied"])
def test_make_plates_controls_on_every_plate(composition):
    data = make_plates(
        n_plates=6,
        n_samples_per_plate=30,
        image_size=16,
        composition=composition,
        random_state=0,
    )
    plates = np.unique(data.groups)
    assert len(plates) == 6
    assert set(data.groups[data.controls]) == set(plates)
    assert (data.plate_effects["n_controls"] >= 2).all()


def test_make_plates_balanced_plates_hold_every_class_equally():
    data = make_plates(
        n_plates=3, n_samples_per_plate=36, n_classes=4, image_size=16, random_state=0
    )
    counts = pd.crosstab(data.groups, data.y)
    np.testing.assert_array_equal(counts.to_numpy(), np.full((3, 4), 9))


@pytest.mark.parametrize("control_fraction", [0.25, 0.5])
def test_make_plates_control_fraction(control_fraction):
    data = make_plates(
        **SMALL, n_classes=2, control_fraction=control_fraction, random_state=0
    )
    assert data.controls.mean() == pytest.approx(control_fraction, abs=0.05)


def test_make_plates_varied_has_control_only_plates():
    data = make_plates(
        n_plates=6,
        n_samples_per_plate=30,
        image_size=16,
        composition="varied",
        random_state=0,
    )
    treated_per_plate = pd.Series(~data.controls).groupby(data.groups).sum()
    assert list(treated_per_plate[treated_per_plate == 0].index) == [
        "plate01",
        "plate04",
    ]
    assert (treated_per_plate[["plate00", "plate02"]] > 0).all()
    assert (data.plate_effects["n_classes_present"] >= 1).all()


def test_make_plates_experiments_group_plates():
    data = make_plates(
        n_plates=5,
        n_samples_per_plate=12,
        image_size=16,
        n_plates_per_experiment=2,
        random_state=0,
    )
    experiment_of_plate = pd.Series(data.experiments).groupby(data.groups).unique()
    assert [list(e) for e in experiment_of_plate] == [
        ["exp00"],
        ["exp00"],
        ["exp01"],
        ["exp01"],
        ["exp02"],
    ]
    assert list(data.plate_effects["experiment"]) == list(experiment_of_plate.str[0])


def test_make_plates_bags_are_samples_for_whole_images():
    data = make_plates(**SMALL, random_state=0)
    np.testing.assert_array_equal(data.bags, np.arange(len(data.X)))


def test_make_plates_bags_group_crops_of_one_image():
    data = make_plates(
        n_plates=2,
        n_samples_per_plate=24,
        cells_per_image=4,
        image_size=16,
        random_state=0,
    )
    assert data.X.shape == (48, 3, 16, 16)
    sizes = np.bincount(data.bags)
    np.testing.assert_array_equal(sizes, np.full(12, 4))
    frame = pd.DataFrame({"bag": data.bags, "plate": data.groups, "y": data.y})
    assert (frame.groupby("bag")[["plate", "y"]].nunique() == 1).all().all()


def test_make_plates_crops_are_centred_on_a_cell():
    data = make_plates(
        n_plates=1,
        n_samples_per_plate=24,
        n_classes=2,
        cells_per_image=4,
        image_size=16,
        plate_effect=0,
        noise=0,
        random_state=0,
    )
    nucleus = data.X[:, 0]
    centre = nucleus[:, 6:10, 6:10].mean(axis=(1, 2))
    border = nucleus[:, [0, -1], :].mean(axis=(1, 2))
    assert (centre > 3 * border).all()


@pytest.mark.parametrize("plate_effect", [0.0, 1.0])
def test_make_plates_plate_effect_is_real(plate_effect):
    # Demonstration, not a benchmark: the spread of control means between
    # plates, relative to the spread within a plate.
    data = make_plates(
        n_plates=6,
        n_samples_per_plate=48,
        image_size=16,
        plate_effect=plate_effect,
        random_state=0,
    )
    means, plates = _control_channel_means(data)
    frame = pd.DataFrame(means)
    between = frame.groupby(plates).mean().std().to_numpy()
    within = frame.groupby(plates).std().mean().to_numpy()
    if plate_effect:
        assert (between > within).all()
        assert between.mean() > 2 * within.mean()
    else:
        assert (between < 0.5 * within).all()


def test_make_plates_treatment_signal_is_real():
    # Per-image channel mean and std, standardised against each plate's own
    # controls, then a linear model scored on held-out plates.
    data = make_plates(
        n_plates=6, n_samples_per_plate=60, image_size=16, random_state=0
    )
    features = np.concatenate(
        [data.X.mean(axis=(2, 3)), data.X.std(axis=(2, 3))], axis=1
    )
    for plate in np.unique(data.groups):
        on_plate = data.groups == plate
        ref = features[on_plate & data.controls]
        features[on_plate] = (features[on_plate] - ref.mean(0)) / ref.std(0)
    scores = cross_val_score(
        LogisticRegression(max_iter=1000),
        features,
        data.y,
        groups=data.groups,
        cv=GroupKFold(n_splits=3),
    )
    assert scores.mean() > 0.6  # chance is 1/3


def test_make_plates_no_treatment_effect_means_chance():
    data = make_plates(
        n_plates=4,
        n_samples_per_plate=60,
        image_size=16,
        treatment_effect=0,
        plate_effect=0,
        random_state=0,
    )
    features = np.concatenate(
        [data.X.mean(axis=(2, 3)), data.X.std(axis=(2, 3))], axis=1
    )
    scores = cross_val_score(
        LogisticRegression(max_iter=1000),
        features,
        data.y,
        groups=data.groups,
        cv=GroupKFold(n_splits=2),
    )
    assert scores.mean() < 0.5


def test_make_plates_plate_effects_frame():
    data = make_plates(**SMALL, n_channels=2, random_state=0)
    effects = data.plate_effects
    assert list(effects["plate"]) == ["plate00", "plate01", "plate02", "plate03"]
    assert {
        "gain_0",
        "gain_1",
        "offset_0",
        "offset_1",
        "gradient",
        "blur",
        "noise",
        "n_samples",
        "n_controls",
    } <= set(effects.columns)
    assert (effects["n_samples"] == 30).all()


def test_make_plates_zero_plate_effect_has_unit_gains():
    effects = make_plates(**SMALL, plate_effect=0, random_state=0).plate_effects
    np.testing.assert_array_equal(effects.filter(like="gain_").to_numpy(), 1.0)
    np.testing.assert_array_equal(effects.filter(like="offset_").to_numpy(), 0.0)
    assert (effects["blur"] == 0).all()


@pytest.mark.parametrize(
    "params, match",
    [
        ({"n_plates": 0}, r"n_plates to be an integer >= 1, but got n_plates=0"),
        ({"n_plates": 2.5}, r"n_plates to be an integer >= 1, but got n_plates=2.5"),
        ({"n_samples_per_plate": 1}, r"n_samples_per_plate to be an integer >= 2"),
        ({"n_classes": 1}, r"n_classes to be an integer >= 2, but got n_classes=1"),
        ({"n_channels": 0}, r"n_channels to be an integer >= 1"),
        ({"image_size": 4}, r"image_size to be an integer >= 8"),
        ({"cells_per_image": 0}, r"cells_per_image to be an integer >= 1"),
        ({"n_plates_per_experiment": 0}, r"n_plates_per_experiment to be an int"),
        ({"plate_effect": -1}, r"plate_effect to be a finite number >= 0"),
        ({"treatment_effect": np.nan}, r"treatment_effect to be a finite number"),
        ({"noise": "big"}, r"noise to be a finite number >= 0, but got noise='big'"),
        ({"control_fraction": 1.0}, r"control_fraction strictly between 0 and 1"),
        ({"control_fraction": 0}, r"but got control_fraction=0\."),
        ({"composition": "mixed"}, r"'balanced' or 'varied', but got composition="),
        ({"dtype": "int8"}, r"'float32', 'float64' or 'uint16', but got dtype="),
        (
            {"n_samples_per_plate": 30, "cells_per_image": 4},
            r"n_samples_per_plate=30 is not a multiple of cells_per_image=4; "
            r"pass a multiple such as 28 or 32",
        ),
        (
            {"n_samples_per_plate": 4, "n_classes": 4, "control_fraction": 0.5},
            r"A balanced plate of 4 source images with 2 controls has 2 left for "
            r"treatments, but needs 3 for n_classes=4; increase n_samples_per_plate",
        ),
        (
            {
                "n_samples_per_plate": 2,
                "composition": "varied",
                "n_classes": 2,
                "control_fraction": 0.9,
            },
            r"A varied plate of 2 source images with 2 controls has 0 left for "
            r"treatments, but needs 1",
        ),
        (
            {"n_samples_per_plate": 3, "n_classes": 2, "control_fraction": 0.2},
            r"put 1 control sample on each plate, but control statistics need "
            r"at least 2",
        ),
    ],
)
def test_make_plates_rejects_bad_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        make_plates(**{**SMALL, **params})


# ------------------------------------------------------------- get_data_home


def test_get_data_home_argument_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("SKLEARN_BEN_DATA", "/does/not/exist")
    assert get_data_home(tmp_path) == tmp_path


def test_get_data_home_reads_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SKLEARN_BEN_DATA", str(tmp_path))
    assert get_data_home() == tmp_path


@pytest.mark.parametrize("source", ["argument", "environment"])
def test_get_data_home_missing_names_path_and_fix(tmp_path, monkeypatch, source):
    missing = tmp_path / "nowhere"
    if source == "argument":
        monkeypatch.setenv("SKLEARN_BEN_DATA", str(tmp_path))
        call = {"data_home": missing}
    else:
        monkeypatch.setenv("SKLEARN_BEN_DATA", str(missing))
        call = {}
    with pytest.raises(FileNotFoundError, match=r"set SKLEARN_BEN_DATA") as info:
        get_data_home(**call)
    assert f"{missing} (from the {source})" in str(info.value)


def test_get_data_home_default_is_beside_repository(monkeypatch):
    monkeypatch.delenv("SKLEARN_BEN_DATA", raising=False)
    expected = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not expected.is_dir():
        pytest.skip(f"no shared data folder at {expected}")
    assert get_data_home() == expected


# ------------------------------------------------------------- real loaders


@needs_crops
def test_load_bbbc021_crops_one_plate():
    data = load_bbbc021_crops(plates=["Week4_27481"])
    assert data.X.shape == (842, 3, 68, 68)
    assert data.X.dtype == np.uint16
    assert (data.y == 0).all()
    assert data.controls.all()
    assert set(data.groups) == {"Week4_27481"}
    assert len(data.frame) == 842
    assert (data.frame["plate"] == data.groups).all()


@needs_crops
def test_load_bbbc021_crops_all_plates_match_readme():
    data = load_bbbc021_crops()
    assert len(data.X) == 7774
    counts = pd.crosstab(data.groups, data.y)
    assert counts.loc["Week4_27801"].tolist() == [1088, 878]
    assert counts.loc["Week4_27542"].tolist() == [534, 0]
    np.testing.assert_array_equal(data.controls, data.y == 0)
    assert list(data.target_names) == ["DMSO", "cycloheximide"]


@needs_crops
def test_load_bbbc021_crops_rows_align_with_metadata():
    data = load_bbbc021_crops(plates="Week4_27542")
    np.testing.assert_array_equal(data.frame["crop_id"].to_numpy(), data.crop_id)
    # Every crop's pixel values are 12-bit camera data shifted by 4 bits.
    assert (data.X[:5] % 16 == 0).all()


@needs_crops
def test_load_bbbc021_crops_bags_are_source_images():
    data = load_bbbc021_crops(plates=["Week4_27542"])
    frame = data.frame.assign(bag=data.bags)
    per_bag = frame.groupby("bag")[["well", "site"]].nunique()
    assert (per_bag == 1).all().all()
    assert frame.groupby(["well", "site"])["bag"].nunique().eq(1).all()
    assert data.bags.max() + 1 == len(np.unique(data.bags))


@needs_crops
@pytest.mark.parametrize(
    "channels_first, shape", [(True, (3, 68, 68)), (False, (68, 68, 3))]
)
def test_load_bbbc021_crops_channel_order(channels_first, shape):
    data = load_bbbc021_crops(plates=["Week4_27542"], channels_first=channels_first)
    assert data.X.shape[1:] == shape


@needs_crops
def test_load_bbbc021_crops_float_dtype_and_return_X_y():
    X, y = load_bbbc021_crops(plates=["Week4_27542"], dtype="float32", return_X_y=True)
    assert X.dtype == np.float32
    assert X.shape == (534, 3, 68, 68)
    assert y.shape == (534,)


@needs_crops
def test_load_bbbc021_crops_rejects_unknown_plate():
    with pytest.raises(ValueError, match=r"Unknown plate 'Week9_1'.*Week4_27481"):
        load_bbbc021_crops(plates=["Week9_1"])


def test_load_bbbc021_crops_missing_folder_says_where(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"bbbc021_crops.*SKLEARN_BEN_DATA"):
        load_bbbc021_crops(data_home=tmp_path)


@needs_profiles
def test_load_bbbc021_profiles_match_readme():
    data = load_bbbc021_profiles()
    assert data.X.shape == (632, 516)
    assert data.X.dtype == np.float64
    assert len(data.feature_names) == 516
    assert len(np.unique(data.groups)) == 55
    assert data.controls.sum() == 330
    assert data.controls.dtype == bool
    assert len(np.unique(data.batches)) == 10
    assert {
        "plate",
        "well",
        "batch",
        "compound",
        "concentration",
        "moa",
        "is_control",
    } <= set(data.frame.columns)
    np.testing.assert_array_equal(data.frame["is_control"], data.controls)


def test_load_bbbc021_profiles_missing_file_says_where(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"bbbc021_profiles.*SKLEARN_BEN"):
        load_bbbc021_profiles(data_home=tmp_path)
