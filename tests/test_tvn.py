"""PlateControlScaler and TVN: hand-computed cases, invariants, routing, checks."""

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn import config_context
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from sklearn_ben._tvn import MAD_TO_STD, TVN, PlateControlScaler
from sklearn_ben.exceptions import ControlsError, GroupError, MissingMetadataWarning


@pytest.fixture(scope="module")
def plates():
    """Three plates of 12 samples, 5 features; 6 controls per plate."""
    rng = np.random.default_rng(0)
    groups = np.repeat(["P1", "P2", "P3"], 12)
    controls = np.tile(np.arange(12) < 6, 3)
    gain = np.repeat([1.0, 3.0, 0.5], 12)[:, None]
    offset = np.repeat([0.0, 10.0, -4.0], 12)[:, None]
    X = rng.normal(size=(36, 5)) * gain + offset
    y = np.tile(np.arange(12) % 2, 3)
    return X, y, groups, controls


# ----------------------------------------------------------- PlateControlScaler


def test_plate_control_scaler_matches_hand_computed_mean_std():
    X = np.array([[1.0], [3.0], [7.0], [10.0], [20.0], [0.0]])
    groups = np.array([0, 0, 0, 1, 1, 1])
    controls = np.array([True, True, False, True, True, False])
    out = PlateControlScaler().fit_transform(X, groups=groups, controls=controls)
    # P0: controls 1, 3 -> mean 2, std 1; P1: controls 10, 20 -> mean 15, std 5.
    np.testing.assert_allclose(out.ravel(), [-1, 1, 5, -1, 1, -3])


def test_plate_control_scaler_robust_uses_median_and_scaled_mad():
    X = np.array([[1.0], [2.0], [10.0], [4.0]])
    controls = np.array([True, True, True, False])
    out = PlateControlScaler(robust=True).fit_transform(
        X, groups=np.zeros(4), controls=controls
    )
    # median 2, absolute deviations 1, 0, 8 -> MAD 1.
    np.testing.assert_allclose(out.ravel(), np.array([-1, 0, 8, 2]) / MAD_TO_STD)


@pytest.mark.parametrize("robust", [False, True])
def test_plate_control_scaler_constant_feature_is_only_centred(robust):
    X = np.array([[5.0, 1.0], [5.0, 2.0], [5.0, 3.0], [8.0, 9.0]])
    controls = np.array([True, True, True, False])
    out = PlateControlScaler(robust=robust).fit_transform(
        X, groups=np.zeros(4), controls=controls
    )
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[:, 0], [0, 0, 0, 3])


def test_plate_control_scaler_without_controls_uses_all_samples(plates):
    X, _, groups, _ = plates
    out = PlateControlScaler().fit_transform(X, groups=groups)
    for_plate = pd.DataFrame(out).groupby(groups)
    np.testing.assert_allclose(for_plate.mean(), 0, atol=1e-12)
    np.testing.assert_allclose(for_plate.std(ddof=0), 1)


def test_plate_control_scaler_controls_have_zero_mean_unit_std(plates):
    X, _, groups, controls = plates
    out = PlateControlScaler().fit_transform(X, groups=groups, controls=controls)
    for_plate = pd.DataFrame(out[controls]).groupby(groups[controls])
    np.testing.assert_allclose(for_plate.mean(), 0, atol=1e-12)
    np.testing.assert_allclose(for_plate.std(ddof=0), 1)


def test_plate_control_scaler_with_std_false_only_centres():
    X = np.array([[1.0], [3.0], [7.0]])
    out = PlateControlScaler(with_std=False).fit_transform(
        X, groups=np.zeros(3), controls=np.array([True, True, False])
    )
    np.testing.assert_allclose(out.ravel(), [-1, 1, 5])


def test_plate_control_scaler_warns_and_uses_one_plate_without_groups(plates):
    X, _, _, controls = plates
    scaler = PlateControlScaler().fit(X)
    with pytest.warns(MissingMetadataWarning, match="got no groups"):
        out = scaler.transform(X, controls=controls)
    expected = (X - X[controls].mean(0)) / X[controls].std(0)
    np.testing.assert_allclose(out, expected)


@pytest.mark.parametrize("robust", [False, True])
def test_plate_control_scaler_raises_for_plate_with_too_few_controls(robust, plates):
    X, _, groups, controls = plates
    controls = controls & ~((groups == "P2") & (np.arange(36) > 12))
    with pytest.raises(ControlsError, match=r"at least 2 control samples.*'P2' \(1\)"):
        PlateControlScaler(robust=robust).fit_transform(
            X, groups=groups, controls=controls
        )


def test_plate_control_scaler_raises_for_one_sample_without_groups():
    scaler = PlateControlScaler().fit(np.ones((3, 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingMetadataWarning)
        with pytest.raises(ControlsError, match="treats all 1 samples as one plate"):
            scaler.transform(np.ones((1, 2)))


@pytest.mark.parametrize("Estimator", [PlateControlScaler, TVN])
def test_estimators_reject_groups_of_wrong_length(Estimator, plates):
    X, _, groups, _ = plates
    with pytest.raises(GroupError, match="groups has 35 entries but X has 36"):
        Estimator().fit(X, groups=groups[:-1])


@pytest.mark.parametrize("Estimator", [PlateControlScaler, TVN])
def test_estimators_reject_non_boolean_controls(Estimator, plates):
    X, _, groups, controls = plates
    with pytest.raises(ControlsError, match="controls must be a boolean mask"):
        Estimator().fit(X, groups=groups, controls=controls.astype(int))


# ----------------------------------------------------------------------- TVN


@pytest.mark.parametrize("n_features", [1, 3, 8])
def test_tvn_whitening_gives_identity_covariance_on_controls(n_features):
    rng = np.random.default_rng(n_features)
    mixing = rng.normal(size=(n_features, n_features))
    X = rng.normal(size=(60, n_features)) @ mixing + 5.0
    controls = np.arange(60) < 40
    tvn = TVN(center="global", whiten_reg=0.0, coral=False)
    Z = tvn.fit(X, controls=controls).transform(X)
    covariance = np.atleast_2d(np.cov(Z[controls], rowvar=False))
    np.testing.assert_allclose(covariance, np.eye(n_features), atol=1e-10)
    np.testing.assert_allclose(Z[controls].mean(0), 0, atol=1e-10)


def test_tvn_whiten_reg_shrinks_variances_by_hand_formula():
    X = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0], [2.0, 1.0]])
    tvn = TVN(center="global", scale=False, whiten_reg=1.0, coral=False).fit(X)
    # variances 4/3 and 1/3, mean 5/6: scales 1/sqrt(4/3 + 5/6), 1/sqrt(1/3 + 5/6)
    np.testing.assert_allclose(tvn.explained_variance_, [4 / 3, 1 / 3])
    np.testing.assert_allclose(tvn.scale_, 1 / np.sqrt([13 / 6, 7 / 6]))


@pytest.mark.parametrize(
    ("n_components", "whiten_reg", "expected"),
    [(None, 0.0, 2), (None, "ledoit-wolf", 4), (1, 0.0, 1), (0.5, 0.0, 1)],
)
def test_tvn_n_components(n_components, whiten_reg, expected):
    rng = np.random.default_rng(0)
    # Rank 2 in 4 features: None keeps the rank, or all with shrinkage.
    X = rng.normal(size=(30, 2)) @ np.array([[3.0, 0, 1, 0], [0, 1.0, 0, 1]])
    tvn = TVN(n_components=n_components, whiten_reg=whiten_reg, center="global").fit(X)
    assert tvn.n_components_ == expected
    assert tvn.transform(X).shape == (30, expected)


def test_tvn_raises_for_too_many_components():
    X = np.random.default_rng(0).normal(size=(5, 8))
    with pytest.raises(ValueError, match="n_components=6 is more than the 4"):
        TVN(n_components=6).fit(X)


def test_tvn_raises_for_fewer_than_two_controls():
    X = np.random.default_rng(0).normal(size=(5, 3))
    with pytest.raises(ControlsError, match="controls marks 1 of 5 samples"):
        TVN().fit(X, controls=np.arange(5) == 0)


@pytest.mark.parametrize(
    ("params", "match"),
    [({"whiten_reg": -1.0}, "whiten_reg"), ({"coral_reg": 0.0}, "coral_reg")],
)
def test_tvn_parameter_constraints(params, match):
    with pytest.raises(ValueError, match=match):
        TVN(**params).fit(np.eye(4))


@pytest.fixture(scope="module")
def two_groups():
    """Two groups whose controls differ in covariance, 200 controls each."""
    rng = np.random.default_rng(1)
    a = rng.normal(size=(220, 3)) @ np.diag([1.0, 2.0, 0.5])
    b = rng.normal(size=(220, 3)) @ np.array([[1.0, 0.8, 0], [0, 1.0, 0], [0, 0, 3]])
    X = np.vstack([a, b + 1.0])
    groups = np.repeat(["g1", "g2"], 220)
    controls = np.tile(np.arange(220) < 200, 2)
    return X, groups, controls


def test_tvn_coral_aligns_group_control_covariance_with_pooled(two_groups):
    X, groups, controls = two_groups
    tvn = TVN(whiten_reg=0.0, coral_reg=1e-9)
    Z = tvn.fit_transform(X, groups=groups, controls=controls)
    pooled = tvn.covariance_
    for_group = np.cov(Z[controls & (groups == "g2")], rowvar=False)
    np.testing.assert_allclose(for_group, pooled, atol=1e-6)
    # Whitening alone leaves the groups apart.
    alone = np.cov(tvn.transform(X)[controls & (groups == "g2")], rowvar=False)
    assert np.abs(alone - pooled).max() > 0.5


def test_tvn_coral_keeps_each_group_control_mean(two_groups):
    X, groups, controls = two_groups
    tvn = TVN(center="global").fit(X, controls=controls)
    whitened = tvn.set_params(coral=False).transform(X)
    Z = tvn.set_params(coral=True).transform(X, groups=groups, controls=controls)
    mask = controls & (groups == "g2")
    np.testing.assert_allclose(Z[mask].mean(0), whitened[mask].mean(0))


def test_tvn_fit_transform_equals_fit_then_transform(two_groups):
    X, groups, controls = two_groups
    meta = {"groups": groups, "controls": controls}
    once = TVN().fit_transform(X, **meta)
    twice = TVN().fit(X, **meta).transform(X, **meta)
    np.testing.assert_allclose(once, twice)


def test_tvn_raises_for_group_with_too_few_controls(two_groups):
    X, groups, controls = two_groups
    controls = controls & ~((groups == "g1") & (np.arange(440) > 0))
    tvn = TVN().fit(X, controls=controls)
    with pytest.raises(ControlsError, match=r"per group, but 1 group\(s\).*'g1' \(1\)"):
        tvn.transform(X, groups=groups, controls=controls)


def test_tvn_set_output_pandas_names_components(two_groups):
    X, groups, controls = two_groups
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    out = TVN().set_output(transform="pandas").fit_transform(frame, groups=groups)
    assert list(out.columns) == ["tvn0", "tvn1", "tvn2"]


def test_plate_control_scaler_set_output_pandas_keeps_names(plates):
    X, _, groups, controls = plates
    frame = pd.DataFrame(X, columns=list("abcde"))
    scaler = PlateControlScaler().set_output(transform="pandas")
    out = scaler.fit_transform(frame, groups=groups, controls=controls)
    assert list(out.columns) == list("abcde")


# ------------------------------------------------------------------ routing


def _manual(X, groups, controls):
    scaled = PlateControlScaler().fit_transform(X, groups=groups, controls=controls)
    return TVN().fit_transform(scaled, groups=groups, controls=controls)


def test_pipeline_routes_groups_and_controls_to_both_steps(plates):
    X, y, groups, controls = plates
    with config_context(enable_metadata_routing=True):
        pipe = Pipeline(
            [
                ("scale", PlateControlScaler()),
                ("tvn", TVN()),
                ("clf", LogisticRegression()),
            ]
        )
        pipe.fit(X, y, groups=groups, controls=controls)
        routed = pipe[:-1].transform(X, groups=groups, controls=controls)
        predicted = pipe.predict(X, groups=groups, controls=controls)
    np.testing.assert_allclose(routed, _manual(X, groups, controls))
    manual_clf = LogisticRegression().fit(_manual(X, groups, controls), y)
    np.testing.assert_array_equal(
        predicted, manual_clf.predict(_manual(X, groups, controls))
    )


def test_pipeline_without_routing_drops_groups_with_a_warning(plates):
    X, y, _, _ = plates
    pipe = Pipeline([("scale", PlateControlScaler()), ("clf", LogisticRegression())])
    with pytest.warns(MissingMetadataWarning, match="got no groups"):
        pipe.fit(X, y)


# ---------------------------------------------------- PlateControlScaler, images


def _images(dtype=np.uint16, n_plates=3, per_plate=8, seed=0):
    """Integer camera-like images (n, 2, 6, 5) whose gain and offset vary by plate."""
    rng = np.random.default_rng(seed)
    n = n_plates * per_plate
    gain = np.repeat(rng.uniform(0.5, 2.0, n_plates), per_plate)[:, None, None, None]
    offset = np.repeat(rng.uniform(0, 500, n_plates), per_plate)[:, None, None, None]
    images = rng.normal(1000, 100, size=(n, 2, 6, 5)) * gain + offset
    groups = np.repeat([f"P{i}" for i in range(n_plates)], per_plate)
    controls = np.tile(np.arange(per_plate) < per_plate // 2, n_plates)
    return np.rint(images).astype(dtype), groups, controls


def _per_channel_reference(images, groups, controls, robust):
    """Slow reference: every plate and channel on its own, in float64."""
    out = np.empty(images.shape)
    for plate in np.unique(groups):
        rows = groups == plate
        for c in range(images.shape[1]):
            ref = images[rows & controls, c].astype(np.float64).ravel()
            if robust:
                centre = np.median(ref)
                scale = np.median(np.abs(ref - centre)) * MAD_TO_STD
            else:
                centre, scale = ref.mean(), ref.std()
            out[rows, c] = (images[rows, c] - centre) / scale
    return out


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float64])
@pytest.mark.parametrize("robust", [False, True])
def test_plate_control_scaler_images_match_per_channel_reference(dtype, robust):
    images, groups, controls = _images(np.uint16)
    images = (images // 8).astype(dtype)  # fits uint8
    out = PlateControlScaler(robust=robust).fit_transform(
        images, groups=groups, controls=controls
    )
    assert out.dtype == np.float32 and out.shape == images.shape
    expected = _per_channel_reference(images, groups, controls, robust)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_plate_control_scaler_images_hand_computed():
    # One channel, 1 x 2 pixels. Plate a controls: pixels 0, 2, 0, 2 -> mean 1,
    # std 1; plate b controls: 10, 30, 20, 20 -> mean 20, std sqrt(50).
    images = np.array([[0, 2], [0, 2], [5, 9], [10, 30], [20, 20], [90, 20]])
    images = images.astype(np.uint16).reshape(6, 1, 1, 2)
    groups = np.array(["a", "a", "a", "b", "b", "b"])
    controls = np.array([True, True, False, True, True, False])
    out = PlateControlScaler().fit_transform(images, groups=groups, controls=controls)
    b = np.array([-10, 10, 0, 0, 70, 0]) / np.sqrt(50)
    np.testing.assert_allclose(
        out.ravel(), [-1, 1, -1, 1, 4, 8, *b], rtol=1e-6, atol=1e-6
    )


def test_plate_control_scaler_images_without_controls_use_all_samples():
    images, groups, _ = _images()
    out = PlateControlScaler().fit_transform(images, groups=groups)
    for plate in np.unique(groups):
        block = out[groups == plate].astype(np.float64)
        np.testing.assert_allclose(block.mean(axis=(0, 2, 3)), 0, atol=1e-5)
        np.testing.assert_allclose(block.std(axis=(0, 2, 3)), 1, rtol=1e-5)


def test_plate_control_scaler_images_unseen_plate_uses_own_statistics():
    images, groups, controls = _images()
    scaler = PlateControlScaler().fit(images[:16], groups=groups[:16])
    new = groups == "P2"
    out = scaler.transform(images[new], groups=groups[new], controls=controls[new])
    expected = _per_channel_reference(images[new], groups[new], controls[new], False)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_plate_control_scaler_images_constant_channel_is_only_centred():
    images = np.zeros((4, 2, 3, 3), dtype=np.uint8)
    images[:, 1] = np.arange(4)[:, None, None]
    images[3, 0] = 7
    controls = np.array([True, True, True, False])
    out = PlateControlScaler().fit_transform(
        images, groups=np.zeros(4), controls=controls
    )
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[:, 0, 0, 0], [0, 0, 0, 7])


def test_plate_control_scaler_images_make_no_float64_copy():
    tracemalloc = pytest.importorskip("tracemalloc")
    images, groups, controls = _images(per_plate=100, n_plates=6)
    images = np.ascontiguousarray(np.tile(images, (1, 1, 8, 8)))
    scaler = PlateControlScaler()
    tracemalloc.start()
    out = scaler.fit_transform(images, groups=groups, controls=controls)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert out.dtype == np.float32
    # The output takes 4 bytes a pixel, a plate's temporaries about 1 more; a
    # float64 copy of the images would add 8, for at least 12.
    assert peak < 8 * images.size


@pytest.mark.parametrize(
    ("fit_shape", "transform_shape", "match"),
    [
        ((6, 2, 4, 4), (6, 2), "X holds a profile table, but PlateControlScaler"),
        ((6, 2), (6, 2, 4, 4), "X holds images, but PlateControlScaler was fitted"),
        ((6, 2, 4, 4), (6, 3, 4, 4), "X has 3 features, but PlateControlScaler"),
        ((6, 2, 4), None, "but got a 3-d array of shape"),
    ],
)
def test_plate_control_scaler_images_reject_other_shapes(
    fit_shape, transform_shape, match
):
    groups = np.repeat(["a", "b"], 3)
    X = np.ones(fit_shape)
    with pytest.raises(ValueError, match=match):
        scaler = PlateControlScaler().fit(X, groups=groups)
        scaler.transform(np.ones(transform_shape), groups=groups)


def test_plate_control_scaler_images_other_height_and_width_at_transform():
    images, groups, controls = _images()
    scaler = PlateControlScaler().fit(images, groups=groups)
    crops = images[:, :, :4, :4]
    out = scaler.transform(crops, groups=groups, controls=controls)
    expected = _per_channel_reference(crops, groups, controls, False)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def image_plates():
    images, groups, controls = _images(per_plate=12, n_plates=3, seed=1)
    y = np.tile(np.arange(12) % 2, 3)
    return images, y, groups, controls


@pytest.mark.parametrize("step", ["classifier", "embedder"])
def test_pipeline_routes_groups_and_controls_to_scaler_and_ben(step, image_plates):
    from sklearn_ben import BENClassifier, BENEmbedder

    images, y, groups, controls = image_plates
    settings = {"module": "cnn", "max_epochs": 1, "batch_size": 12, "random_state": 0}
    if step == "classifier":
        make = lambda: BENClassifier(norm="controls", **settings)  # noqa: E731
    else:
        make = lambda: BENEmbedder(norm="controls", n_views=2, **settings)  # noqa: E731
    meta = {"groups": groups, "controls": controls}
    with config_context(enable_metadata_routing=True):
        with warnings.catch_warnings():
            warnings.simplefilter("error", MissingMetadataWarning)
            pipe = Pipeline([("scale", PlateControlScaler()), ("ben", make())])
            pipe.fit(images, y, **meta)
            routed = pipe.transform(images, **meta)
            scaled = PlateControlScaler().fit_transform(images, **meta)
            direct = make().fit(scaled, y, **meta).transform(scaled, **meta)
    np.testing.assert_allclose(routed, direct, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------ TVN, new steps


def _hand_table():
    """Two plates, offsets (0, 0) and (10, -5); the same centred controls."""
    centred = np.array([[2.0, 2.0], [-2.0, -2.0], [1.0, -1.0], [-1.0, 1.0]])
    treated = np.array([[3.0, 1.0]])
    plate = np.vstack([centred, treated])
    X = np.vstack([plate, plate + [10.0, -5.0]])
    groups = np.repeat(["A", "B"], 5)
    controls = np.tile([True, True, True, True, False], 2)
    return X, groups, controls


def test_tvn_hand_computed_on_a_small_table():
    X, groups, controls = _hand_table()
    tvn = TVN(whiten_reg=0.0, coral=False)
    Z = tvn.fit_transform(X, groups=groups, controls=controls)
    # Centred controls: variance 2.5 per feature (ddof=0), covariance 1.5, so
    # scaled by sqrt(2.5) their correlation is 0.6; over 8 controls (ddof=1)
    # the eigenvalues are 8/7 * 1.6 and 8/7 * 0.4, axes (1, 1) and (1, -1).
    np.testing.assert_allclose(tvn.feature_scale_, np.sqrt([2.5, 2.5]))
    np.testing.assert_allclose(tvn.explained_variance_, [8 / 7 * 1.6, 8 / 7 * 0.4])
    np.testing.assert_allclose(np.abs(tvn.components_), np.full((2, 2), 0.5**0.5))
    # treated (3, 1) on each plate: projections 4 / sqrt(5) and 2 / sqrt(5)
    expected = [4 / np.sqrt(5 * 8 / 7 * 1.6), 2 / np.sqrt(5 * 8 / 7 * 0.4)]
    np.testing.assert_allclose(np.abs(Z[~controls]), [expected, expected])
    np.testing.assert_allclose(np.cov(Z[controls], rowvar=False), np.eye(2), atol=1e-12)


def test_tvn_centres_each_group_on_its_own_controls():
    X, groups, controls = _hand_table()
    Z = TVN(coral=False).fit_transform(X, groups=groups, controls=controls)
    np.testing.assert_allclose(Z[:5], Z[5:], atol=1e-12)  # offsets removed
    Z = TVN(center="global", coral=False).fit_transform(
        X, groups=groups, controls=controls
    )
    assert np.abs(Z[:5] - Z[5:]).max() > 1  # not with center="global"


def test_tvn_whiten_reg_from_ledoit_wolf_shrinkage(two_groups):
    from sklearn.covariance import LedoitWolf

    X, groups, controls = two_groups
    tvn = TVN(scale=False).fit(X, groups=groups, controls=controls)
    ref = X[controls] - X[controls].reshape(2, 200, 3).mean(axis=1).repeat(200, 0)
    shrinkage = LedoitWolf(assume_centered=True).fit(ref).shrinkage_
    assert tvn.shrinkage_ == pytest.approx(shrinkage)
    assert tvn.whiten_reg_ == pytest.approx(shrinkage / (1 - shrinkage))


@pytest.mark.parametrize("whiten_reg", [0.0, 0.5, "ledoit-wolf", "oas"])
def test_tvn_spectrum_of_whitened_controls(whiten_reg):
    # 60 controls in 20 correlated features: a spread-out spectrum.
    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 20)) @ rng.normal(size=(20, 20))
    tvn = TVN(center="global", whiten_reg=whiten_reg, coral=False)
    Z = tvn.fit_transform(X)
    spectrum = np.sort(np.linalg.eigvalsh(np.cov(Z, rowvar=False)))[::-1]
    # variance v / (v + whiten_reg * mean_variance) on each component
    v, reg = tvn.explained_variance_, tvn.whiten_reg_
    expected = v / (v + reg * v.sum() / 20)
    np.testing.assert_allclose(spectrum, expected, atol=1e-9)
    np.testing.assert_allclose(np.diag(tvn.covariance_), expected, atol=1e-9)
    if whiten_reg == 0.0:
        np.testing.assert_allclose(spectrum, 1.0)
    else:  # shrinkage: strong components near 1, weak ones well below
        assert spectrum[0] > 0.5 > spectrum[-1] >= 0


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({}, r"TVN\.fit got no groups, so every sample is centred"),
        ({"center": "global"}, r"TVN\.transform got no groups, so no group"),
    ],
)
def test_tvn_warns_without_groups_naming_the_method(params, match, two_groups):
    X, _, controls = two_groups
    with pytest.warns(MissingMetadataWarning, match=match):
        TVN(**params).fit_transform(X, controls=controls)


def test_tvn_without_group_steps_needs_no_groups(two_groups):
    X, _, controls = two_groups
    with warnings.catch_warnings():
        warnings.simplefilter("error", MissingMetadataWarning)
        TVN(center="global", coral=False).fit_transform(X, controls=controls)


def test_tvn_raises_for_group_without_enough_controls_to_centre(two_groups):
    X, groups, controls = two_groups
    controls = controls & ~((groups == "g1") & (np.arange(440) > 0))
    with pytest.raises(ControlsError, match=r"centres and aligns each group"):
        TVN().fit(X, groups=groups, controls=controls)


@pytest.mark.parametrize(
    ("params", "match"),
    [({"whiten_reg": "auto"}, "whiten_reg"), ({"center": "plate"}, "center")],
)
def test_tvn_rejects_unknown_options(params, match):
    with pytest.raises(ValueError, match=match):
        TVN(**params).fit(np.eye(4))


# ------------------------------------------------------------ real profiles


def _real_profiles():
    from sklearn_ben.datasets import get_data_home, load_bbbc021_profiles

    try:
        home = get_data_home()
    except FileNotFoundError as error:  # no data folder at all
        pytest.skip(f"real BBBC021 profiles not found: {error}")
    if not (home / "bbbc021_profiles").exists():
        pytest.skip(f"real BBBC021 profiles not found under {home}")
    return load_bbbc021_profiles(data_home=home)


def test_tvn_defaults_reach_the_documented_scores_on_real_profiles():
    from sklearn_ben.metrics import moa_accuracy

    data = _real_profiles()
    f, c = data.frame, data.controls
    treatment = f["compound"].astype(str) + "@" + f["concentration"].astype(str)
    tvn = TVN()
    Z = tvn.fit_transform(data.X, groups=data.groups, controls=c)
    args = (Z[~c], f["moa"][~c], f["compound"][~c], data.batches[~c])
    nsc = moa_accuracy(*args, treatment=treatment[~c])
    nscb = moa_accuracy(*args, treatment=treatment[~c], exclude="compound_batch")
    # docs/profiling.md: 0.903 / 0.728 (one treatment is 0.010 NSC, 0.011 NSCB)
    assert nsc.accuracy >= 0.90 and nscb.accuracy >= 0.72
    # the whitened spectrum is far from identity: few components near 1
    assert 20 < (np.diag(tvn.covariance_) > 0.5).sum() < 100
