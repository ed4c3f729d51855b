import copy
import pickle
import tracemalloc
import warnings

import joblib
import numpy as np
import pytest
import torch
from sklearn.model_selection import GridSearchCV, GroupKFold
from torch import nn

from sklearn_ben import (
    BENClassifier,
    ControlsError,
    GroupError,
    MissingMetadataError,
    MissingMetadataWarning,
    config_context,
)
from sklearn_ben.backbones import MLP, ResNet, SmallCNN
from sklearn_ben.batchnorm import group_layers
from tests.conftest import tiny_classifier


def _plate(plates, split):
    _, test = split
    return plates.X[test], plates.y[test], plates.groups[test], plates.controls[test]


def test_ben_classifier_fit_sets_fitted_attributes(fitted_ben, plates):
    assert list(fitted_ben.classes_) == sorted(np.unique(plates.y))
    assert fitted_ben.n_features_in_ == 3
    assert fitted_ben.input_shape_ == (3, 16, 16)
    assert fitted_ben.device_ == "cpu"
    assert len(fitted_ben.net_.history) == 2


def test_ben_classifier_string_labels(plates, split):
    train, _ = split
    labels = np.array(["dmso", "drug_a", "drug_b"])[plates.y[train]]
    clf = tiny_classifier(max_epochs=1).fit(
        plates.X[train], labels, groups=plates.groups[train]
    )
    pred = clf.predict(plates.X[train][:10], groups=plates.groups[train][:10])
    assert set(pred) <= set(labels)


def test_ben_classifier_predict_is_one_whole_plate_forward(fitted_ben, plates, split):
    X, _, groups, _ = _plate(plates, split)
    proba = fitted_ben.predict_proba(X, groups=groups)
    module = copy.deepcopy(fitted_ben.net_.module_).train()  # batch statistics
    with torch.no_grad():
        expected = torch.softmax(module(torch.from_numpy(X)), dim=1).numpy()
    np.testing.assert_allclose(proba, expected, atol=1e-5)


def test_ben_classifier_predict_does_not_depend_on_order(fitted_ben, plates, split):
    X, _, groups, _ = _plate(plates, split)
    perm = np.random.default_rng(0).permutation(len(X))
    proba = fitted_ben.predict_proba(X, groups=groups)
    proba_perm = fitted_ben.predict_proba(X[perm], groups=groups[perm])
    np.testing.assert_allclose(proba[perm], proba_perm, atol=1e-5)


def test_ben_classifier_group_prediction_depends_on_plate_mates(fitted_ben, plates):
    X, groups = plates.X, plates.groups
    on_plate = groups == groups[0]
    mates = plates.X[~on_plate][: on_plate.sum()]
    alone = fitted_ben.predict_proba(X[on_plate], groups=groups[on_plate])
    mixed_X = np.concatenate([X[on_plate][:5], mates])
    mixed = fitted_ben.predict_proba(mixed_X, groups=np.zeros(len(mixed_X)))
    assert np.abs(alone[:5] - mixed[:5]).max() > 1e-3


def test_ben_classifier_frozen_prediction_ignores_plate_mates(plates, split):
    train, _ = split
    clf = tiny_classifier(norm="frozen", sampling="random").fit(
        plates.X[train], plates.y[train]
    )
    X = plates.X
    one = clf.predict_proba(X[:5])
    many = clf.predict_proba(X[:40])[:5]
    np.testing.assert_allclose(one, many, atol=1e-6)


def test_ben_classifier_controls_ignore_non_controls(fitted_controls, plates, split):
    X, _, groups, controls = _plate(plates, split)
    other = X.copy()
    donors = plates.X[plates.groups != groups[0]]
    other[~controls] = donors[: (~controls).sum()] * 3.0
    a = fitted_controls.predict_proba(X, groups=groups, controls=controls)
    b = fitted_controls.predict_proba(other, groups=groups, controls=controls)
    assert np.abs(a - b)[controls].max() <= 1e-5
    assert np.abs(a - b)[~controls].max() > 1e-3  # the replaced samples did change


@pytest.mark.parametrize("predict_batch_size", [2, 5, 17])
@pytest.mark.parametrize("norm", ["group", "controls"])
def test_ben_classifier_predict_batch_size_gives_whole_plate_outputs(
    fitted_ben, fitted_controls, plates, split, predict_batch_size, norm
):
    clf = fitted_ben if norm == "group" else fitted_controls
    X, _, groups, controls = plates.X, None, plates.groups, plates.controls
    whole = clf.predict_proba(X, groups=groups, controls=controls)
    features = clf.transform(X, groups=groups, controls=controls)
    chunked = clone_fitted(clf, predict_batch_size=predict_batch_size)
    assert (
        np.abs(chunked.predict_proba(X, groups=groups, controls=controls) - whole).max()
        <= 1e-4
    )
    assert (
        np.abs(chunked.transform(X, groups=groups, controls=controls) - features).max()
        <= 1e-4
    )


def clone_fitted(clf, **params):
    """A fitted copy with other inference parameters."""
    return copy.deepcopy(clf).set_params(**params)


@pytest.mark.parametrize("norm", ["group", "controls", "frozen"])
def test_ben_classifier_predict_never_modifies_running_stats(
    fitted_ben, fitted_controls, plates, norm
):
    clf = clone_fitted(fitted_controls if norm == "controls" else fitted_ben, norm=norm)
    clf.set_params(predict_batch_size=7)
    before = copy.deepcopy(clf.net_.module_.state_dict())
    clf.predict(plates.X, groups=plates.groups, controls=plates.controls)
    for key, value in clf.net_.module_.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("sampling", ["group", "random"])
@pytest.mark.parametrize("norm", ["group", "controls", "frozen"])
def test_ben_classifier_every_ablation_fits_and_predicts(plates, split, sampling, norm):
    train, test = split
    clf = tiny_classifier(sampling=sampling, norm=norm, max_epochs=1)
    clf.fit(
        plates.X[train],
        plates.y[train],
        groups=plates.groups[train],
        controls=plates.controls[train],
    )
    proba = clf.predict_proba(
        plates.X[test], groups=plates.groups[test], controls=plates.controls[test]
    )
    assert proba.shape == (test.sum(), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-5)


def test_ben_classifier_same_seed_same_predictions(plates, split):
    train, test = split
    args = (plates.X[train], plates.y[train])
    kwargs = {"groups": plates.groups[train]}
    p = [
        tiny_classifier(random_state=s)
        .fit(*args, **kwargs)
        .predict_proba(plates.X[test], groups=plates.groups[test])
        for s in (1, 1, 2)
    ]
    np.testing.assert_array_equal(p[0], p[1])
    assert np.abs(p[0] - p[2]).max() > 1e-4


def test_ben_classifier_fit_does_not_change_global_torch_rng(plates, split):
    train, _ = split
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny_classifier(max_epochs=1).fit(
        plates.X[train], plates.y[train], groups=plates.groups[train]
    )
    torch.testing.assert_close(torch.rand(3), expected)


@pytest.mark.parametrize(
    "module, shape",
    [
        ("mlp", (40, 6)),
        (MLP(hidden_units=8, n_layers=1), (40, 6)),
        ("cnn", (40, 2, 16, 16)),
        ("resnet18", (40, 4, 32, 32)),
        (ResNet(depth=50), (16, 2, 32, 32)),
    ],
)
def test_ben_classifier_builtin_modules(module, shape):
    rng = np.random.default_rng(0)
    X = rng.normal(size=shape).astype(np.float32)
    y = np.arange(shape[0]) % 2
    groups = np.repeat(["a", "b"], shape[0] // 2)
    clf = BENClassifier(module=module, max_epochs=1, batch_size=8, random_state=0)
    clf.fit(X, y, groups=groups)
    assert clf.predict(X, groups=groups).shape == (shape[0],)
    assert clf.transform(X, groups=groups).shape == (shape[0], clf.n_features_out_)


def test_ben_classifier_user_module_gets_a_head_and_is_not_mutated():
    user = nn.Sequential(nn.Linear(6, 10), nn.BatchNorm1d(10), nn.ReLU())
    before = copy.deepcopy(user.state_dict())
    X = np.random.default_rng(0).normal(size=(30, 6)).astype(np.float32)
    y, groups = np.arange(30) % 3, np.repeat(["a", "b", "c"], 10)
    clf = BENClassifier(module=user, max_epochs=2, batch_size=10, random_state=0)
    clf.fit(X, y, groups=groups)
    assert clf.predict_proba(X, groups=groups).shape == (30, 3)
    assert clf.n_features_out_ == 10
    assert type(user[1]) is nn.BatchNorm1d  # the parameter itself is untouched
    for key, value in user.state_dict().items():
        assert torch.equal(value, before[key])
    assert len(group_layers(clf.net_.module_)) == 1


@pytest.mark.parametrize(
    "name, param, expected",
    [
        ("cnn", "width", SmallCNN),
        ("mlp", "hidden_units", MLP),
        ("resnet18", "zero_init_residual", ResNet),
    ],
)
def test_ben_classifier_set_params_on_backbone_names(name, param, expected):
    clf = BENClassifier(module=name).set_params(**{f"module__{param}": 7})
    assert isinstance(clf.module, expected)
    assert getattr(clf.module, param) == 7
    if name == "resnet18":
        assert clf.module.depth == 18


def test_ben_classifier_backbone_params_reachable_by_grid_search(plates):
    clf = tiny_classifier(max_epochs=1)
    assert clf.set_params(module__width=6).module.width == 6
    search = GridSearchCV(clf, {"module__width": [2, 4]}, cv=GroupKFold(n_splits=2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingMetadataWarning)
        search.fit(plates.X, plates.y, groups=plates.groups)
    assert search.best_params_["module__width"] in (2, 4)
    assert search.best_estimator_.module.width == search.best_params_["module__width"]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_ben_classifier_integer_images_are_scaled_batch_by_batch(dtype):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype)
    X = rng.integers(0, info.max, size=(600, 3, 24, 24), dtype=dtype)
    y, groups = np.arange(600) % 2, np.repeat(["a", "b"], 300)
    clf = tiny_classifier(max_epochs=1, batch_size=50, predict_batch_size=50)
    tracemalloc.start()
    clf.fit(X, y, groups=groups)
    clf.predict(X, groups=groups)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    float_copy = X.size * 4
    assert peak < float_copy / 4  # never a float32 copy of the whole array
    X_float = X.astype(np.float32) / info.max  # what the network saw
    with pytest.raises(
        ValueError,
        match=f"X has dtype float32, but BENClassifier was fitted on {np.dtype(dtype).name} inputs",
    ):
        clf.predict_proba(X_float, groups=groups)
    scaled = tiny_classifier(max_epochs=1, batch_size=50, intensity=(0, info.max))
    scaled.fit(X, y, groups=groups)  # a fixed range: any dtype may follow
    np.testing.assert_allclose(
        scaled.predict_proba(X, groups=groups),
        scaled.predict_proba(X.astype(np.float64), groups=groups),
        atol=1e-5,
    )


def test_ben_classifier_validation_and_early_stopping(plates):
    clf = tiny_classifier(
        max_epochs=20, lr=1e-9, validation_fraction=0.25, n_iter_no_change=2
    )
    clf.fit(plates.X, plates.y, groups=plates.groups)
    history = clf.net_.history
    assert "valid_loss" in history[-1] and "valid_acc" in history[-1]
    assert len(history) < 20  # stopped early: nothing improves at lr=1e-9


def test_ben_classifier_verbose_prints_epoch_table(plates, split, capsys):
    train, _ = split
    tiny_classifier(verbose=1).fit(
        plates.X[train], plates.y[train], groups=plates.groups[train]
    )
    out = capsys.readouterr().out
    assert "epoch" in out and "train_loss" in out


def test_ben_classifier_verbose_2_fits_and_logs_plain_text(plates, split, capsys):
    # verbose=2 used to crash every fit (skorch's ProgressBar divided by
    # batch_size=None); redirected output gets the plain epoch table only
    train, _ = split
    tiny_classifier(verbose=2).fit(
        plates.X[train], plates.y[train], groups=plates.groups[train]
    )
    captured = capsys.readouterr()
    assert "train_loss" in captured.out
    assert "\x1b[" not in captured.out + captured.err


def test_ben_classifier_diverged_fit_keeps_the_previous_model(fitted_ben, plates):
    clf = copy.deepcopy(fitted_ben)
    before = clf.predict_proba(plates.X, groups=plates.groups)
    with pytest.raises(FloatingPointError, match=r"Training diverged: .*lower lr"):
        clf.set_params(lr=1e30, max_epochs=2).fit(
            plates.X, plates.y, groups=plates.groups
        )
    np.testing.assert_array_equal(
        clf.predict_proba(plates.X, groups=plates.groups), before
    )


def test_ben_classifier_ctrl_c_is_re_raised_and_keeps_the_previous_model(
    fitted_ben, plates, monkeypatch
):
    from sklearn_ben import _training

    calls = []

    def interrupt(self, net, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(_training._FiniteLoss, "on_batch_end", interrupt)
    clf = copy.deepcopy(fitted_ben)
    before = clf.predict_proba(plates.X, groups=plates.groups)
    with pytest.raises(KeyboardInterrupt, match="fit was interrupted in epoch 1 of 5"):
        clf.set_params(max_epochs=5).fit(plates.X, plates.y, groups=plates.groups)
    np.testing.assert_array_equal(
        clf.predict_proba(plates.X, groups=plates.groups), before
    )


def test_ben_classifier_silent_by_default(plates, split, capsys):
    train, _ = split
    tiny_classifier(max_epochs=1).fit(
        plates.X[train], plates.y[train], groups=plates.groups[train]
    )
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("dump", ["joblib", "pickle"])
def test_ben_classifier_persistence_round_trip(fitted_ben, plates, tmp_path, dump):
    path = tmp_path / "model.bin"
    if dump == "joblib":
        joblib.dump(fitted_ben, path)
        loaded = joblib.load(path)
    else:
        path.write_bytes(pickle.dumps(fitted_ben))
        loaded = pickle.loads(path.read_bytes())
    kwargs = {"groups": plates.groups}
    np.testing.assert_array_equal(
        loaded.predict_proba(plates.X, **kwargs),
        fitted_ben.predict_proba(plates.X, **kwargs),
    )


def test_ben_classifier_model_saved_on_cuda_loads_without_gpu(fitted_ben, plates):
    # A model fitted on a GPU records device="cuda"; skorch maps it to the CPU
    # when no GPU is present, with a warning.
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    model = copy.deepcopy(fitted_ben)
    model.net_.device = "cuda"
    with pytest.warns(UserWarning, match="CUDA"):
        loaded = pickle.loads(pickle.dumps(model))
    assert str(loaded.net_.device) == "cpu"
    assert loaded.device_ == "cpu"  # the truth, not where it was trained
    np.testing.assert_array_equal(
        loaded.predict(plates.X, groups=plates.groups),
        fitted_ben.predict(plates.X, groups=plates.groups),
    )


def test_ben_classifier_transform_and_feature_names(fitted_ben, plates):
    features = fitted_ben.transform(plates.X, groups=plates.groups)
    names = fitted_ben.get_feature_names_out()
    assert features.shape == (len(plates.X), len(names))
    assert names[0] == "benclassifier0"


def test_ben_classifier_score_uses_groups(fitted_ben, plates, split):
    X, y, groups, _ = _plate(plates, split)
    expected = np.mean(fitted_ben.predict(X, groups=groups) == y)
    assert fitted_ben.score(X, y, groups=groups) == pytest.approx(expected)


# --------------------------------------------------------------- bad input
def _fit_args(plates):
    return plates.X, plates.y, plates.groups, plates.controls


@pytest.mark.parametrize(
    "change, error, match",
    [
        (
            lambda a: {**a, "groups": a["groups"][:-1]},
            GroupError,
            "groups has 143 entries but X has 144 samples",
        ),
        (
            lambda a: {**a, "controls": a["controls"][:-1]},
            ControlsError,
            "controls has 143 entries but X has 144",
        ),
        (
            lambda a: {**a, "controls": a["controls"].astype(int)},
            ControlsError,
            "controls must be a boolean mask, but got dtype int64",
        ),
        (
            lambda a: {**a, "controls": None},
            ControlsError,
            "norm='controls'.*fit got controls=None",
        ),
        (
            lambda a: {**a, "controls": _one_control(a)},
            ControlsError,
            r"at least 2 control samples on every plate, but in fit 1 plate\(s\) "
            r"have fewer: 'plate00' \(1\)",
        ),
        (
            lambda a: {**a, "y": np.zeros_like(a["y"])},
            ValueError,
            "at least two classes in y, but got 1 class: 0",
        ),
        (
            lambda a: {**a, "X": _with(a["X"], np.nan)},
            ValueError,
            "Input X contains NaN",
        ),
        (
            lambda a: {**a, "X": _with(a["X"], np.inf)},
            ValueError,
            "Input X contains infinity",
        ),
    ],
)
def test_ben_classifier_fit_bad_input(plates, change, error, match):
    X, y, groups, controls = _fit_args(plates)
    args = change({"X": X, "y": y, "groups": groups, "controls": controls})
    clf = tiny_classifier(norm="controls")
    with pytest.raises(error, match=match):
        clf.fit(args["X"], args["y"], groups=args["groups"], controls=args["controls"])
    assert not hasattr(clf, "net_")


def _one_control(a):
    controls = a["controls"].copy()
    first = np.flatnonzero((a["groups"] == "plate00") & controls)
    controls[first[1:]] = False
    return controls


def _with(X, value):
    X = X.copy()
    X[3, 0, 0, 0] = value
    return X


def test_ben_classifier_single_sample_training_group(plates):
    groups = plates.groups.copy()
    groups[0] = "lonely"
    with pytest.raises(GroupError, match=r"'lonely' \(1\); batch normalisation needs"):
        tiny_classifier().fit(plates.X, plates.y, groups=groups)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"module": "vgg"}, "module"),
        ({"sampling": "plate"}, "sampling"),
        ({"norm": "batch"}, "norm"),
        ({"batch_size": 1}, "batch_size"),
    ],
)
def test_ben_classifier_unknown_names(plates, params, match):
    with pytest.raises(ValueError, match=f"The '{match}' parameter of BENClassifier"):
        tiny_classifier(**params).fit(plates.X, plates.y, groups=plates.groups)


def test_ben_classifier_early_stopping_needs_validation(plates):
    with pytest.raises(ValueError, match="n_iter_no_change needs held-out groups"):
        tiny_classifier(n_iter_no_change=3).fit(
            plates.X, plates.y, groups=plates.groups
        )


def test_ben_classifier_module_without_batchnorm(plates):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(
        ValueError, match="module has no BatchNorm layers, so norm='group'"
    ):
        tiny_classifier(module=net).fit(plates.X, plates.y, groups=plates.groups)


def test_ben_classifier_wrong_input_kind(plates):
    with pytest.raises(ValueError, match="module MLP expects a feature table"):
        tiny_classifier(module="mlp").fit(plates.X, plates.y, groups=plates.groups)


@pytest.mark.parametrize(
    "X, match",
    [
        (
            np.zeros((6, 4, 16, 16), np.float32),
            "X has 4 channels, but BENClassifier is expecting 3 channels",
        ),
        (
            np.zeros((6, 3), np.float32),
            r"X holds a feature table \(sample shape \(3,\)\), but BENClassifier "
            "was fitted on images",
        ),
    ],
)
def test_ben_classifier_predict_wrong_shape(fitted_ben, X, match):
    with pytest.raises(ValueError, match=match):
        fitted_ben.predict(X, groups=np.zeros(6))


def test_ben_classifier_predict_controls_errors(fitted_controls, plates, split):
    X, _, groups, controls = _plate(plates, split)
    few = np.zeros_like(controls)
    few[0] = True
    with pytest.raises(ControlsError, match=r"in predict 1 plate\(s\) have fewer"):
        fitted_controls.predict(X, groups=groups, controls=few)
    with pytest.warns(
        MissingMetadataWarning,
        match=r"BENClassifier\.predict got no controls, so with norm='controls'",
    ):
        fitted_controls.predict(X, groups=groups)


def test_ben_classifier_predict_single_sample_plate(fitted_ben, plates):
    with pytest.raises(GroupError, match="predicted group"):
        fitted_ben.predict(plates.X[:3], groups=np.array(["a", "a", "b"]))


@pytest.mark.parametrize("method", ["predict", "predict_proba", "transform"])
def test_ben_classifier_missing_groups_warning_names_the_method(
    fitted_ben, plates, method
):
    with pytest.warns(
        MissingMetadataWarning, match=rf"BENClassifier\.{method} got no groups"
    ):
        getattr(fitted_ben, method)(plates.X[:10])


@pytest.mark.parametrize("method", ["predict", "transform"])
def test_ben_classifier_missing_groups_raises_in_strict_mode(
    fitted_ben, plates, method
):
    with config_context(on_missing_metadata="raise"):
        with pytest.raises(MissingMetadataError, match=rf"{method} got no groups"):
            getattr(fitted_ben, method)(plates.X[:10])
    with pytest.warns(MissingMetadataWarning):  # the default again outside
        getattr(fitted_ben, method)(plates.X[:10])


def test_ben_classifier_frozen_predict_without_groups_is_silent(plates, split):
    train, _ = split
    clf = tiny_classifier(sampling="random", norm="frozen", max_epochs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf.fit(plates.X[train], plates.y[train])
        clf.predict(plates.X[:10])


def test_ben_classifier_refused_refit_keeps_working(plates, split):
    train, _ = split
    clf = tiny_classifier(max_epochs=1).fit(
        plates.X[train], plates.y[train], groups=plates.groups[train]
    )
    before = clf.predict_proba(plates.X, groups=plates.groups)
    with pytest.raises(GroupError):
        clf.fit(plates.X[:, :2], plates.y, groups=plates.groups[:-1])
    with pytest.raises(ValueError):
        clf.fit(plates.X[:, :2], np.zeros_like(plates.y), groups=plates.groups)
    assert clf.n_features_in_ == 3
    np.testing.assert_array_equal(
        clf.predict_proba(plates.X, groups=plates.groups), before
    )


@pytest.mark.parametrize("norm", ["group", "controls"])
def test_ben_classifier_bfloat16_precision(plates, split, norm):
    train, test = split
    kwargs = {"groups": plates.groups[test], "controls": plates.controls[test]}
    clf = tiny_classifier(norm=norm, precision="bfloat16").fit(
        plates.X[train],
        plates.y[train],
        groups=plates.groups[train],
        controls=plates.controls[train],
    )
    assert np.isfinite(clf.net_.history[:, "train_loss"]).all()
    proba = clf.predict_proba(plates.X[test], **kwargs)
    assert proba.dtype == np.float32 and np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-5)
    exact = clone_fitted(clf, precision="float32").predict_proba(
        plates.X[test], **kwargs
    )
    assert np.abs(proba - exact).max() < 0.05  # bfloat16 rounding only
    chunked = clone_fitted(clf, predict_batch_size=5).predict_proba(
        plates.X[test], **kwargs
    )
    assert np.abs(chunked - proba).max() < 0.05
