"""Stored plate statistics: adapt once, then predict any rows of the plate."""

import copy
import io

import joblib
import numpy as np
import pytest
from sklearn.base import clone

from sklearn_ben import BENEmbedder
from sklearn_ben.exceptions import ControlsError, GroupError
from tests.conftest import tiny_classifier, tiny_embedder


@pytest.fixture(scope="module")
def fitted(plates, split):
    """Tiny fitted models, by (estimator, norm), trained on three plates."""
    train, _ = split
    kwargs = {"groups": plates.groups[train], "controls": plates.controls[train]}
    models = {}
    for norm in ("group", "controls"):
        models["classifier", norm] = tiny_classifier(norm=norm).fit(
            plates.X[train], plates.y[train], **kwargs
        )
        models["embedder", norm] = tiny_embedder(norm=norm).fit(
            plates.X[train], **kwargs
        )
    return models


def _outputs(model, X, groups, controls=None):
    if isinstance(model, BENEmbedder):
        return model.transform(X, groups=groups, controls=controls)
    return model.predict_proba(X, groups=groups, controls=controls)


def _roundtrip_joblib(model):
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    buffer.seek(0)
    return joblib.load(buffer)


def _test_plate(plates, split):
    _, test = split
    return plates.X[test], plates.groups[test], plates.controls[test]


@pytest.mark.parametrize("estimator", ["classifier", "embedder"])
@pytest.mark.parametrize("norm", ["group", "controls"])
@pytest.mark.parametrize("predict_batch_size", [None, 7])
@pytest.mark.parametrize("store", ["memory", "joblib"])
def test_adapt_single_images_equal_whole_plate(
    fitted, plates, split, estimator, norm, predict_batch_size, store
):
    model = copy.deepcopy(fitted[estimator, norm])
    X, groups, controls = _test_plate(plates, split)
    whole = _outputs(model, X, groups, controls)  # not adapted: today's path
    model.set_params(predict_batch_size=predict_batch_size)
    model.adapt(X, groups=groups, controls=controls)
    if store == "joblib":
        model = _roundtrip_joblib(model)
    singles = np.concatenate(
        [_outputs(model, X[[i]], groups[[i]]) for i in range(len(X))]
    )
    np.testing.assert_allclose(singles, whole, rtol=0, atol=1e-5)


@pytest.mark.parametrize("norm", ["group", "controls"])
def test_adapt_in_chunks_equals_adapt_on_whole_plate(fitted, plates, split, norm):
    whole = copy.deepcopy(fitted["classifier", norm])
    chunked = copy.deepcopy(whole).set_params(predict_batch_size=4)
    X, groups, controls = _test_plate(plates, split)
    whole.adapt(X, groups=groups, controls=controls)
    chunked.adapt(X, groups=groups, controls=controls)
    (plate,) = whole.adapted_groups_
    expected, got = whole.plate_statistics_[plate], chunked.plate_statistics_[plate]
    assert got.keys() == expected.keys() and len(got) == 2  # the two BN layers
    for name, (mean, var) in expected.items():
        np.testing.assert_allclose(got[name][0], mean, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got[name][1], var, rtol=1e-5, atol=1e-5)


def test_adapt_stored_statistics_win_over_plate_mates(fitted, plates, split):
    model = copy.deepcopy(fitted["classifier", "group"])
    X, groups, _ = _test_plate(plates, split)
    whole = model.predict_proba(X, groups=groups)
    half = model.predict_proba(X[::2], groups=groups[::2])
    assert np.abs(half - whole[::2]).max() > 1e-4  # half a plate: other stats
    model.adapt(X, groups=groups)
    np.testing.assert_allclose(
        model.predict_proba(X[::2], groups=groups[::2]), whole[::2], atol=1e-5
    )


def test_adapt_leaves_other_plates_as_before(fitted, plates, split):
    model = copy.deepcopy(fitted["classifier", "group"])
    train, test = split
    other = plates.groups == plates.groups[0]
    rows = np.flatnonzero(other | test)
    before = model.predict_proba(plates.X[rows], groups=plates.groups[rows])
    model.adapt(plates.X[test], groups=plates.groups[test])
    after = model.predict_proba(plates.X[rows], groups=plates.groups[rows])
    np.testing.assert_allclose(after, before, atol=1e-5)
    # one sample of a plate not adapted is still refused
    first = np.flatnonzero(other)[:1]
    with pytest.raises(GroupError, match="1 predicted group"):
        model.predict(plates.X[first], groups=plates.groups[first])


def test_adapt_again_replaces_and_drop_adapted_forgets(fitted, plates, split):
    model = copy.deepcopy(fitted["classifier", "group"])
    X, groups, _ = _test_plate(plates, split)
    model.adapt(X[:10], groups=groups[:10])
    first = copy.deepcopy(model.plate_statistics_)
    model.adapt(X, groups=groups)
    (plate,) = model.adapted_groups_
    mean_first = next(iter(first[plate].values()))[0]
    mean_now = next(iter(model.plate_statistics_[plate].values()))[0]
    assert not np.allclose(mean_first, mean_now)
    with pytest.raises(GroupError, match="were never adapted, e.g. 'nope'"):
        model.drop_adapted(["nope"])
    assert model.drop_adapted([plate]).adapted_groups_.tolist() == []
    with pytest.raises(GroupError, match="1 predicted group"):
        model.predict(X[:1], groups=groups[:1])


def test_adapt_statistics_are_fitted_state(fitted, plates, split):
    model = copy.deepcopy(fitted["classifier", "group"])
    X, groups, _ = _test_plate(plates, split)
    model.adapt(X, groups=groups)
    assert "plate_statistics_" not in clone(model).__dict__
    assert "plate_statistics_" not in model.get_params()
    train, _ = split
    model.set_params(max_epochs=1).fit(
        plates.X[train], plates.y[train], groups=plates.groups[train]
    )
    assert model.adapted_groups_.tolist() == []  # refit: old statistics void


def test_adapt_refuses_frozen_norm(fitted, plates, split):
    model = copy.deepcopy(fitted["classifier", "group"]).set_params(norm="frozen")
    X, groups, _ = _test_plate(plates, split)
    with pytest.raises(ValueError, match="norm='frozen' .* no plate statistics"):
        model.adapt(X, groups=groups)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"groups": None}, GroupError, "adapt .* got groups=None"),
        ({"controls": None}, ControlsError, "adapt got controls=None"),
        ({"groups_size": 1}, GroupError, "1 adapted group"),
        ({"n_controls": 1}, ControlsError, "in adapt 1 plate"),
    ],
)
def test_adapt_refuses_bad_metadata_before_any_change(
    fitted, plates, split, kwargs, error, match
):
    model = copy.deepcopy(fitted["classifier", "controls"])
    X, groups, controls = _test_plate(plates, split)
    model.adapt(X, groups=groups, controls=controls)
    before = copy.deepcopy(model.plate_statistics_)
    if "groups_size" in kwargs:
        X, groups, controls = X[:1], groups[:1], controls[:1]
    if "n_controls" in kwargs:
        controls = np.zeros(len(X), dtype=bool)
        controls[0] = True
    call = {"groups": groups, "controls": controls}
    call.update({k: v for k, v in kwargs.items() if k in call})
    with pytest.raises(error, match=match):
        model.adapt(X, **call)
    assert model.plate_statistics_.keys() == before.keys()
    for plate, stats in before.items():
        for name, (mean, _) in stats.items():
            np.testing.assert_array_equal(model.plate_statistics_[plate][name][0], mean)


def test_adapt_then_norm_changed_is_refused(fitted, plates, split):
    model = copy.deepcopy(fitted["classifier", "controls"])
    X, groups, controls = _test_plate(plates, split)
    model.adapt(X, groups=groups, controls=controls)
    model.set_params(norm="group")
    with pytest.raises(ValueError, match="statistics for norm='controls'"):
        model.predict(X[:1], groups=groups[:1])
    with pytest.raises(ValueError, match="call drop_adapted\\(\\) first"):
        model.adapt(X, groups=groups)
    model.set_params(norm="frozen")  # running averages: stored ones unused
    assert model.predict(X[:1], groups=groups[:1]).shape == (1,)


def test_adapt_on_unfitted_estimator_raises():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        tiny_classifier().adapt(np.zeros((2, 3, 8, 8)), groups=[0, 0])


def test_adapt_uses_the_estimators_intensity_scaling(plates, split):
    # adapt's statistics must come from the inputs predict sees: with a fixed
    # intensity range, integer images are not divided by their dtype's maximum
    train, test = split
    X = (plates.X * 1000).astype(np.uint16)
    clf = tiny_classifier(intensity=(0, 1000)).fit(
        X[train], plates.y[train], groups=plates.groups[train]
    )
    X_test, groups = X[test], plates.groups[test]
    whole = clf.predict_proba(X_test, groups=groups)
    clf.adapt(X_test, groups=groups)
    singles = np.concatenate(
        [clf.predict_proba(X_test[[i]], groups=groups[[i]]) for i in range(len(X_test))]
    )
    np.testing.assert_allclose(singles, whole, rtol=0, atol=1e-5)
