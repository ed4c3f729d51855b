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


# ------------------------------------------------- make_plates, non-affine effects

# No plate effect and no noise: the only change is the non-affine kind tested,
# plus the constant background of 0.05.
CLEAN = {**SMALL, "plate_effect": 0.0, "noise": 0.0, "random_state": 0}
BACKGROUND = 0.05


def _plate_index(data):
    return np.searchsorted(data.plate_effects["plate"].to_numpy(), data.groups)


def _laplacian_energy(X):
    lap = (
        X[..., 1:-1, :-2] + X[..., 1:-1, 2:] + X[..., :-2, 1:-1] + X[..., 2:, 1:-1]
    ) - 4 * X[..., 1:-1, 1:-1]
    return np.mean(lap**2, axis=(-2, -1))


def test_make_plates_default_output_is_pinned():
    # The sum of the default data of seed 0, as before nonaffine_effects existed.
    X = make_plates(**SMALL, random_state=0).X
    assert float(X.astype(np.float64).sum()) == pytest.approx(23704.164523828775)


@pytest.mark.parametrize("kind", ["gamma", "texture", "defocus", "size", "all"])
def test_make_plates_nonaffine_keeps_labels_and_affine_parameters(kind):
    plain = make_plates(**SMALL, random_state=0)
    data = make_plates(**SMALL, nonaffine_effects=kind, random_state=0)
    np.testing.assert_array_equal(data.y, plain.y)
    np.testing.assert_array_equal(data.groups, plain.groups)
    pd.testing.assert_frame_equal(
        data.plate_effects[plain.plate_effects.columns], plain.plate_effects
    )
    assert not np.allclose(data.X, plain.X)


def test_make_plates_nonaffine_kinds_are_drawn_independently():
    one = make_plates(**SMALL, nonaffine_effects=["gamma"], random_state=0)
    two = make_plates(**SMALL, nonaffine_effects=["gamma", "defocus"], random_state=0)
    gammas = one.plate_effects.filter(like="gamma_")
    pd.testing.assert_frame_equal(two.plate_effects[gammas.columns], gammas)


@pytest.mark.parametrize(
    ("value", "same_as"),
    [
        ({"gamma": 0.0}, None),
        ([], None),
        ("all", list(("size", "density", "texture", "gamma"))
         + ["illumination", "defocus", "saturation"]),
        ({"gamma": 1.0}, "gamma"),
    ],
)  # fmt: skip
def test_make_plates_nonaffine_spellings(value, same_as):
    data = make_plates(**SMALL, nonaffine_effects=value, random_state=0)
    expected = make_plates(**SMALL, nonaffine_effects=same_as, random_state=0)
    np.testing.assert_array_equal(data.X, expected.X)


def test_make_plates_gamma_is_a_power_of_the_stain():
    plain = make_plates(**CLEAN)
    data = make_plates(**CLEAN, nonaffine_effects=["gamma"])
    gamma = data.plate_effects.filter(like="gamma_").to_numpy()[_plate_index(data)]
    expected = (plain.X - BACKGROUND) ** gamma[:, :, None, None]
    np.testing.assert_allclose(data.X - BACKGROUND, expected, rtol=1e-4, atol=1e-5)
    assert (np.abs(np.log(gamma)) > 0.01).any()


def test_make_plates_saturation_caps_bright_pixels():
    plain = make_plates(**CLEAN)
    data = make_plates(**CLEAN, nonaffine_effects={"saturation": 2.0})
    level = data.plate_effects["saturation_level"].to_numpy()[_plate_index(data)]
    level = level[:, None, None, None]
    np.testing.assert_allclose(data.X, level * np.tanh(plain.X / level), rtol=1e-5)
    assert (data.X < level).all()
    # compression grows with intensity: bright pixels lose a larger share
    ratio = data.X / plain.X
    bright = plain.X > np.quantile(plain.X, 0.9)
    dim = plain.X < np.quantile(plain.X, 0.5)
    assert ratio[bright].mean() < ratio[dim].mean() - 0.05


def test_make_plates_illumination_is_a_fixed_vignette_per_plate():
    plain = make_plates(**CLEAN)
    data = make_plates(**CLEAN, nonaffine_effects=["illumination"])
    effects = data.plate_effects
    coords = np.linspace(-1, 1, SMALL["image_size"])
    for _, row in effects.iterrows():
        on = data.groups == row["plate"]
        r2 = (coords[:, None] - row["vignette_row"]) ** 2 + (
            coords[None, :] - row["vignette_col"]
        ) ** 2
        field = 1 - row["vignette"] * np.minimum(r2 / 2, 1)
        np.testing.assert_allclose(
            data.X[on] - BACKGROUND,
            (plain.X[on] - BACKGROUND) * field,
            rtol=1e-4,
            atol=1e-6,
        )
        assert field.min() < 1 - 0.1 and field.max() > 0.95


def test_make_plates_defocus_removes_fine_detail():
    plain = make_plates(**CLEAN)
    data = make_plates(**CLEAN, nonaffine_effects=["defocus"])
    defocus = data.plate_effects["defocus"].to_numpy()
    ratio = np.array(
        [
            _laplacian_energy(data.X[data.groups == p]).mean()
            / _laplacian_energy(plain.X[plain.groups == p]).mean()
            for p in data.plate_effects["plate"]
        ]
    )
    np.testing.assert_allclose(ratio[defocus <= 0.05], 1.0)
    assert (ratio[defocus > 0.3] < 0.8).all()
    assert np.corrcoef(defocus, ratio)[0, 1] < -0.8


def test_make_plates_size_scales_cell_area():
    plain = make_plates(**CLEAN, treatment_effect=0)
    data = make_plates(**CLEAN, treatment_effect=0, nonaffine_effects=["size"])
    factor = data.plate_effects["size_factor"].to_numpy()
    assert factor.std() > 0.05
    for p, f in zip(data.plate_effects["plate"], factor):
        on = data.groups == p
        area = (data.X[on, 1] > 0.3).sum() / (plain.X[on, 1] > 0.3).sum()
        assert area == pytest.approx(f**2, rel=0.2)


def test_make_plates_density_changes_cells_per_image():
    params = {**CLEAN, "n_plates": 6, "n_samples_per_plate": 60}
    data = make_plates(**params, treatment_effect=0, nonaffine_effects=["density"])
    density = data.plate_effects["density"].to_numpy()
    # the nucleus channel's total is about proportional to the number of cells
    nuclei = pd.Series(data.X[:, 0].sum(axis=(1, 2))).groupby(data.groups).mean()
    assert np.corrcoef(density, nuclei.to_numpy())[0, 1] > 0.8


def test_make_plates_density_packs_crops_closer():
    params = {
        **CLEAN,
        "n_plates": 6,
        "n_samples_per_plate": 48,
        "cells_per_image": 4,
        "treatment_effect": 0,
    }
    plain = make_plates(**params)
    data = make_plates(**params, nonaffine_effects={"density": 2.0})
    density = data.plate_effects["density"].to_numpy()
    assert (density > 0.3).any()
    for p, d in zip(data.plate_effects["plate"], density):
        on = data.groups == p
        border = [X[on][:, 1, [0, -1], :].mean() for X in (data.X, plain.X)]
        if d > 0.3:  # neighbours enter the crop's border
            assert border[0] > 1.2 * border[1]


def test_make_plates_texture_keeps_means_and_changes_fine_structure():
    plain = make_plates(**CLEAN)
    data = make_plates(**CLEAN, nonaffine_effects=["texture"])
    for p in data.plate_effects["plate"]:
        on = data.groups == p
        means = [X[on].mean(axis=(0, 2, 3)) for X in (data.X, plain.X)]
        np.testing.assert_allclose(means[0], means[1], rtol=0.1)
        energy = [_laplacian_energy(X[on]).mean() for X in (data.X, plain.X)]
        assert energy[0] > 1.15 * energy[1]


@pytest.mark.parametrize("cells_per_image", [1, 4])
def test_make_plates_nonaffine_all_is_seeded_and_finite(cells_per_image):
    params = {
        **SMALL,
        "n_samples_per_plate": 32,
        "cells_per_image": cells_per_image,
        "nonaffine_effects": "all",
        "random_state": 5,
    }
    first, second = make_plates(**params), make_plates(**params)
    np.testing.assert_array_equal(first.X, second.X)
    assert np.isfinite(first.X).all() and first.X.min() >= 0


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("blurr", r"unknown nonaffine_effects \['blurr'\]; the kinds are 'size'"),
        ({"gamma": -1.0}, r"nonaffine_effects\['gamma'\] to be a finite number >= 0"),
        ({"gamma": True}, r"but got True\."),
    ],
)
def test_make_plates_nonaffine_rejects_bad_values(value, match):
    with pytest.raises(ValueError, match=match):
        make_plates(**SMALL, nonaffine_effects=value)


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
