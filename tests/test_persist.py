"""save/load: one safetensors file, read back without pickle or torch.load."""

import json
import pickle

import joblib
import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from torch import nn

import sklearn_ben
from sklearn_ben import BENEmbedder, PersistError
from sklearn_ben.backbones import SmallCNN
from tests.conftest import tiny_classifier


def _fit(kind, norm, plates, split):
    train, _ = split
    params = {"max_epochs": 1, "norm": norm}
    if kind == "classifier":
        est = tiny_classifier(**params)
    else:
        est = BENEmbedder(
            module=SmallCNN(width=4, n_blocks=2),
            batch_size=16,
            n_views=2,
            projection_dim=8,
            random_state=0,
            **params,
        )
    controls = plates.controls[train] if norm == "controls" else None
    return est.fit(
        plates.X[train], plates.y[train], groups=plates.groups[train], controls=controls
    )


def _outputs(est, X, groups, controls=None):
    if hasattr(est, "predict_proba"):
        return est.predict_proba(X, groups=groups, controls=controls)
    return est.transform(X, groups=groups, controls=controls)


@pytest.fixture(scope="module", params=["classifier", "embedder"])
def kind(request):
    return request.param


@pytest.fixture(scope="module", params=["group", "controls"])
def adapted(request, kind, plates, split, tmp_path_factory):
    """(estimator, loaded copy) with the test plate adapted before saving."""
    norm = request.param
    est = _fit(kind, norm, plates, split)
    _, test = split
    controls = plates.controls[test] if norm == "controls" else None
    est.adapt(plates.X[test], groups=plates.groups[test], controls=controls)
    path = tmp_path_factory.mktemp("persist") / "model.safetensors"
    sklearn_ben.save(est, path)
    return est, sklearn_ben.load(path), path


def test_load_predicts_as_saved(adapted, plates):
    est, loaded, _ = adapted
    controls = plates.controls if est.norm == "controls" else None
    before = _outputs(est, plates.X, plates.groups, controls)
    after = _outputs(loaded, plates.X, plates.groups, controls)
    np.testing.assert_allclose(after, before, atol=1e-6, rtol=0)
    assert type(loaded) is type(est)
    assert loaded.get_params(deep=False).keys() == est.get_params(deep=False).keys()
    assert repr(loaded) == repr(est)


def test_load_keeps_fitted_attributes(adapted):
    est, loaded, _ = adapted
    for key in ("input_shape_", "input_dtype_", "n_features_in_", "n_features_out_"):
        assert getattr(loaded, key) == getattr(est, key)
    assert loaded.loss_curve_ == est.loss_curve_
    assert loaded.adapted_norm_ == est.adapted_norm_
    if hasattr(est, "classes_"):
        np.testing.assert_array_equal(loaded.classes_, est.classes_)
        assert loaded.classes_.dtype == est.classes_.dtype
    assert not loaded.net_.module_.training
    assert str(loaded.net_.device) == ("cuda" if torch.cuda.is_available() else "cpu")


def test_load_single_images_of_adapted_plates_equal_whole_plate(adapted, plates, split):
    est, loaded, _ = adapted
    _, test = split
    controls = plates.controls[test] if est.norm == "controls" else None
    whole = _outputs(est, plates.X[test], plates.groups[test], controls)
    np.testing.assert_array_equal(loaded.adapted_groups_, est.adapted_groups_)
    for i in (0, 7):
        one = _outputs(
            loaded, plates.X[test][i : i + 1], plates.groups[test][i : i + 1]
        )
        np.testing.assert_allclose(one, whole[i : i + 1], atol=1e-5, rtol=0)


def _refuse(*args, **kwargs):
    raise AssertionError("load must not unpickle")


def test_load_calls_no_pickle_or_torch_load(adapted, plates, monkeypatch):
    est, _, path = adapted
    for target, name in [
        (pickle, "load"),
        (pickle, "loads"),
        (pickle, "Unpickler"),
        (torch, "load"),
        (joblib, "load"),
    ]:
        monkeypatch.setattr(target, name, _refuse)
    loaded = sklearn_ben.load(path)
    controls = plates.controls if est.norm == "controls" else None
    np.testing.assert_allclose(
        _outputs(loaded, plates.X, plates.groups, controls),
        _outputs(est, plates.X, plates.groups, controls),
        atol=1e-6,
        rtol=0,
    )


def test_save_writes_one_file_with_json_header(adapted):
    from safetensors import safe_open

    est, _, path = adapted
    with safe_open(str(path), framework="pt") as f:
        header = json.loads(f.metadata()["sklearn_ben"])
        keys = list(f.keys())
    assert header["estimator"] == type(est).__name__
    assert header["params"]["module"]["__spec__"].endswith("SmallCNN")
    assert header["params"]["optimizer"] == {"__class__": "torch.optim.adam.Adam"}
    assert any(k.startswith("stats.0.") for k in keys)
    assert "torch" in header["versions"]


class _UserNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )

    def forward(self, x):
        return self.body(x)


@pytest.fixture(scope="module")
def user_saved(plates, split, tmp_path_factory):
    train, _ = split
    est = tiny_classifier(module=_UserNet(), max_epochs=1).fit(
        plates.X[train], plates.y[train], groups=plates.groups[train]
    )
    path = tmp_path_factory.mktemp("user") / "user.safetensors"
    sklearn_ben.save(est, path)
    return est, path


def test_load_user_module_needs_module_argument(user_saved):
    _, path = user_saved
    with pytest.raises(PersistError, match="your own network class .*_UserNet"):
        sklearn_ben.load(path)


def test_load_user_module_with_module_argument(user_saved, plates):
    est, path = user_saved
    loaded = sklearn_ben.load(path, module=_UserNet())
    np.testing.assert_allclose(
        loaded.predict_proba(plates.X, groups=plates.groups),
        est.predict_proba(plates.X, groups=plates.groups),
        atol=1e-6,
        rtol=0,
    )


def test_load_user_module_of_other_architecture_is_refused(user_saved):
    _, path = user_saved
    wrong = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(PersistError, match="do not fit the network"):
        sklearn_ben.load(path, module=wrong)


def test_load_module_argument_for_builtin_backbone_is_refused(adapted):
    _, _, path = adapted
    with pytest.raises(PersistError, match="without module="):
        sklearn_ben.load(path, module=_UserNet())


def test_load_refuses_foreign_files(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(PersistError, match="is not a safetensors file"):
        sklearn_ben.load(junk)


def test_load_refuses_safetensors_without_model(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(PersistError, match="holds no sklearn-ben model"):
        sklearn_ben.load(path)


def test_load_refuses_classes_outside_torch(tmp_path, adapted):
    from safetensors import safe_open
    from safetensors.torch import save_file

    _, _, path = adapted
    with safe_open(str(path), framework="pt") as f:
        header = json.loads(f.metadata()["sklearn_ben"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    header["params"]["optimizer"] = {"__class__": "os.system"}
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata={"sklearn_ben": json.dumps(header)})
    with pytest.raises(PersistError, match="'os.system', which load does not import"):
        sklearn_ben.load(bad)


def test_save_refuses_unfitted_estimator(tmp_path):
    with pytest.raises(NotFittedError):
        sklearn_ben.save(tiny_classifier(), tmp_path / "m.safetensors")


def test_save_refuses_parameters_that_need_code(fitted_ben, tmp_path):
    from sklearn.base import clone

    est = clone(fitted_ben)
    est.__dict__.update({k: v for k, v in vars(fitted_ben).items() if k.endswith("_")})
    est.set_params(train_split=lambda *a: None)
    with pytest.raises(PersistError, match="Parameter train_split=.*set_params"):
        sklearn_ben.save(est, tmp_path / "m.safetensors")


def test_save_refuses_other_objects(tmp_path):
    with pytest.raises(PersistError, match="save writes BENClassifier"):
        sklearn_ben.save(nn.Linear(2, 2), tmp_path / "m.safetensors")


@pytest.mark.parametrize(
    "value",
    [
        ("percentile", 1.0, 99.0),
        {"betas": (0.9, 0.99), "eps": 1e-8},
        {0: 1.0, 1: 2.5},
        {"__tuple__": [1]},
        np.array(["a", "b"], dtype=object),
        np.array([3, 1], dtype=np.int16),
        torch.optim.SGD,
        nn.CrossEntropyLoss,
        SmallCNN(width=3),
    ],
)
def test_encode_decode_round_trip(value):
    from sklearn_ben._persist import _decode, _encode

    back = _decode(json.loads(json.dumps(_encode(value, "p"))))
    if isinstance(value, np.ndarray):
        np.testing.assert_array_equal(back, value)
        assert back.dtype == value.dtype
    elif isinstance(value, SmallCNN):
        assert back.get_params() == value.get_params()
    else:
        assert back == value
        assert type(back) is type(value)


def test_load_unknown_torch_name_is_refused():
    from sklearn_ben._persist import _resolve

    with pytest.raises(PersistError, match="which this torch/sklearn-ben does not"):
        _resolve("torch.nn.nowhere.Missing")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_load_cuda_model_on_cpu_machine_warns_and_predicts(
    fitted_ben, plates, tmp_path
):
    path = tmp_path / "gpu.safetensors"
    fitted_ben.set_params(device="cuda")
    try:
        sklearn_ben.save(fitted_ben, path)
    finally:
        fitted_ben.set_params(device="auto")
    with pytest.warns(UserWarning, match="no CUDA GPU is available here"):
        loaded = sklearn_ben.load(path)
    assert loaded.device == "cuda" and loaded.device_ == "cpu"
    np.testing.assert_allclose(
        loaded.predict_proba(plates.X, groups=plates.groups),
        fitted_ben.predict_proba(plates.X, groups=plates.groups),
        atol=1e-6,
        rtol=0,
    )
