"""Save and load fitted estimators in a file format that cannot run code.

A model is one safetensors file: the network's weights and the stored plate
statistics are tensors, everything else (parameters, classes, input shape and
scaling, the backbone's specification, versions) is JSON in the file's
metadata header. Loading reads tensors and JSON only: it never calls pickle
or ``torch.load``, so a file from an untrusted source cannot execute code.
(A joblib or pickle file runs code when it is loaded; load those only from
sources you trust.)

Only values this module knows how to rebuild are written: plain JSON values,
tuples, numpy arrays, sklearn-ben's backbone and augmentation specifications,
and torch optimiser and loss classes by name. A user's own network class
cannot be rebuilt from JSON, so :func:`load` takes it as ``module=``.
"""

import importlib
import inspect
import json
import warnings
from pathlib import Path

import numpy as np
import sklearn
import torch
from sklearn.utils.validation import check_is_fitted
from torch import nn

from sklearn_ben.exceptions import PersistError

__all__ = ["save", "load"]

FORMAT = "sklearn-ben"
FORMAT_VERSION = 1
_META_KEY = "sklearn_ben"

#: Fitted attributes written as JSON (net_ and plate_statistics_ are tensors).
_FITTED = (
    "classes_",
    "input_shape_",
    "input_dtype_",
    "n_features_in_",
    "feature_names_in_",
    "n_features_out_",
    "n_iter_",
    "loss_curve_",
    "best_epoch_",
    "adapted_norm_",
)

#: Modules whose classes may be named in a file (imported by name at load).
_TORCH_PREFIXES = ("torch.optim.", "torch.nn.")
#: Specification classes rebuilt from their parameters.
_SPEC_MODULES = ("sklearn_ben.backbones", "sklearn_ben.augment")


def _estimator_classes():
    from sklearn_ben._classifier import BENClassifier
    from sklearn_ben._embedder import BENEmbedder

    return {"BENClassifier": BENClassifier, "BENEmbedder": BENEmbedder}


# --------------------------------------------------------------------- encoding
def _dotted(obj) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def _spec_params(spec) -> dict:
    if hasattr(spec, "get_params"):
        return spec.get_params(deep=False)
    names = inspect.signature(type(spec).__init__).parameters
    return {n: getattr(spec, n) for n in names if n != "self"}


def _encode(value, name: str):
    """``value`` as JSON-safe data, or PersistError naming the parameter."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, name) for v in value]}
    if isinstance(value, list):
        return [_encode(v, name) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode(v, name) for k, v in value.items()}
        return {
            "__items__": [
                [_encode(k, name), _encode(v, name)] for k, v in value.items()
            ]
        }
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, torch.device):
        return str(value)
    if isinstance(value, type) and _dotted(value).startswith(_TORCH_PREFIXES):
        return {"__class__": _dotted(value)}
    if type(value).__module__ in _SPEC_MODULES:
        params = {k: _encode(v, name) for k, v in _spec_params(value).items()}
        return {"__spec__": _dotted(type(value)), "params": params}
    raise PersistError(
        f"Parameter {name}={value!r} cannot be written to a file that runs no "
        "code when loaded (only JSON values, sklearn-ben specifications and "
        "torch.optim/torch.nn classes can); it only matters for training, so "
        f"set_params({name}=None) (or its default) before save, or use joblib "
        "for a trusted copy."
    )


def _resolve(dotted: str):
    """A class under torch.optim/torch.nn or sklearn-ben's specs, by name."""
    allowed = _TORCH_PREFIXES + tuple(m + "." for m in _SPEC_MODULES)
    module, _, qualname = dotted.rpartition(".")
    if not dotted.startswith(allowed) or "." in qualname:
        raise PersistError(
            f"The file names class {dotted!r}, which load does not import; only "
            "torch.optim, torch.nn and sklearn-ben specification classes are "
            "rebuilt. The file was not written by sklearn_ben.save."
        )
    try:
        obj = getattr(importlib.import_module(module), qualname, None)
    except ImportError:
        obj = None
    if not isinstance(obj, type):
        raise PersistError(
            f"The file names class {dotted!r}, which this torch/sklearn-ben does "
            "not have; install the versions listed in the file's metadata."
        )
    return obj


def _decode(data):
    if isinstance(data, list):
        return [_decode(v) for v in data]
    if not isinstance(data, dict):
        return data
    if "__tuple__" in data:
        return tuple(_decode(v) for v in data["__tuple__"])
    if "__items__" in data:
        return {_decode(k): _decode(v) for k, v in data["__items__"]}
    if "__ndarray__" in data:
        dtype = np.dtype(data["dtype"])
        return np.asarray(_decode(data["__ndarray__"]), dtype=dtype)
    if "__class__" in data:
        return _resolve(data["__class__"])
    if "__spec__" in data:
        return _resolve(data["__spec__"])(**_decode(data["params"]))
    return {k: _decode(v) for k, v in data.items()}


def _encode_params(estimator) -> tuple[dict, str | None]:
    """JSON of ``get_params(deep=False)``, and the user module's class name."""
    params = dict(estimator.get_params(deep=False))
    params["accelerator"] = None  # belongs to one launch's processes, as in pickles
    module, user_module = params.pop("module"), None
    if isinstance(module, str):
        encoded_module = module
    elif type(module).__module__ in _SPEC_MODULES:
        encoded_module = _encode(module, "module")
    else:  # a user's nn.Module (or specification): rebuilt from module= at load
        user_module = _dotted(type(module))
        encoded_module = {"__user_module__": user_module}
    encoded = {k: _encode(v, k) for k, v in params.items()}
    encoded["module"] = encoded_module
    return encoded, user_module


# ------------------------------------------------------------------------ save
def save(estimator, path) -> Path:
    """Save a fitted estimator to one safetensors file that runs no code on load.

    The network's weights and the plates' stored statistics (:meth:`adapt`)
    are written as tensors; parameters, classes, the input shape and scaling,
    the backbone's specification and the library versions as JSON in the
    file's header. :func:`load` reads it back without pickle or
    ``torch.load``, on any machine (a model saved on a GPU loads on a CPU).

    Parameters
    ----------
    estimator : BENClassifier or BENEmbedder
        A fitted estimator.
    path : str or path-like
        File to write (conventionally ``*.safetensors``); replaced if it exists.

    Returns
    -------
    path : pathlib.Path
        The file written.

    Raises
    ------
    PersistError
        For a parameter that cannot be represented without code (a custom
        callback, ``train_split``, augmentation or optimiser class): such
        parameters only matter for training; set them to None first.

    See Also
    --------
    load : Read the file back.

    Notes
    -----
    ``net_.history`` (the skorch training log) is not saved; ``loss_curve_``,
    ``n_iter_`` and ``best_epoch_`` are. The ``accelerator`` parameter is
    saved as None, as in pickles. A network of your own (``module=<your
    nn.Module>``) is saved as weights only: pass an instance of its class to
    :func:`load` as ``module=``.

    joblib and pickle files run code when they are loaded: load them only
    from sources you trust. Files written by ``save`` do not.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import sklearn_ben
    >>> from sklearn_ben import BENClassifier
    >>> from sklearn_ben.datasets import make_plates
    >>> data = make_plates(n_plates=3, n_samples_per_plate=24, image_size=16,
    ...                    random_state=0)
    >>> clf = BENClassifier(max_epochs=1, random_state=0)
    >>> clf = clf.fit(data.X, data.y, groups=data.groups)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = sklearn_ben.save(clf, pathlib.Path(tmp) / "model.safetensors")
    ...     same = sklearn_ben.load(path)
    >>> bool((same.predict(data.X, groups=data.groups)
    ...       == clf.predict(data.X, groups=data.groups)).all())
    True
    """
    from safetensors.torch import save_file

    name = type(estimator).__name__
    classes = _estimator_classes()
    if type(estimator) is not classes.get(name):
        raise PersistError(
            f"save writes BENClassifier and BENEmbedder, but got {name}; use "
            "joblib for other objects (and load such files only if trusted)."
        )
    check_is_fitted(estimator)
    params, user_module = _encode_params(estimator)
    fitted = {
        key: _encode(getattr(estimator, key), key)
        for key in _FITTED
        if hasattr(estimator, key)
    }
    tensors = {
        f"module.{k}": v.detach().cpu().contiguous().clone()
        for k, v in estimator.net_.module_.state_dict().items()
    }
    labels = []
    for i, (label, stats) in enumerate(estimator.plate_statistics_.items()):
        labels.append(_encode(label, "plate_statistics_"))
        for layer, (mean, var) in stats.items():
            tensors[f"stats.{i}.{layer}.mean"] = mean.detach().cpu().contiguous()
            tensors[f"stats.{i}.{layer}.var"] = var.detach().cpu().contiguous()
    from sklearn_ben import __version__

    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "estimator": name,
        "versions": {
            "sklearn_ben": __version__,
            "torch": torch.__version__,
            "sklearn": sklearn.__version__,
            "numpy": np.__version__,
        },
        "params": params,
        "user_module": user_module,
        "fitted": fitted,
        "plates": labels,
    }
    path = Path(path)
    save_file(tensors, str(path), metadata={_META_KEY: json.dumps(header)})
    return path


# ------------------------------------------------------------------------ load
def _read(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        raise
    except Exception as exc:  # safetensors' own error types vary by version
        raise PersistError(
            f"{str(path)!r} is not a safetensors file ({exc}); pass a file "
            "written by sklearn_ben.save."
        ) from None
    if _META_KEY not in meta:
        raise PersistError(
            f"{str(path)!r} is a safetensors file but holds no sklearn-ben "
            "model (no 'sklearn_ben' metadata); pass a file written by "
            "sklearn_ben.save."
        )
    header = json.loads(meta[_META_KEY])
    if (
        header.get("format") != FORMAT
        or header.get("format_version", 0) > FORMAT_VERSION
    ):
        raise PersistError(
            f"{str(path)!r} has format version {header.get('format_version')}, but "
            f"this sklearn-ben reads up to {FORMAT_VERSION}; upgrade sklearn-ben "
            f"(the file was written by {header.get('versions')})."
        )
    return header, tensors


def _head(weights: dict) -> nn.Module:
    """The training head, shaped from its saved weights."""
    if "head.weight" in weights:  # a Linear (classifier, supervised embedder)
        out, n_in = weights["head.weight"].shape
        return nn.Linear(n_in, out)
    from sklearn_ben._embedder import _projection_head

    return _projection_head(
        weights["head.0.weight"].shape[1], weights["head.2.weight"].shape[0]
    )


def _module_param(header: dict, module):
    user = header["user_module"]
    if user is None:
        if module is not None:
            raise PersistError(
                "load got module=, but this model was saved with the built-in "
                f"backbone {header['params']['module']!r}, which the file "
                "describes; call load(path) without module=."
            )
        return _decode(header["params"]["module"])
    if module is None:
        raise PersistError(
            f"This model was saved with your own network class {user!r}, which "
            "a file cannot rebuild without running code; pass an instance of it "
            "(weights are replaced): load(path, module=MyNet(...))."
        )
    return module


def _device(estimator) -> str:
    """The estimator's device here; CPU (with a warning) when CUDA is absent."""
    wanted = str(estimator.device)
    if wanted != "auto" and torch.device(wanted).type == "cuda":
        if not torch.cuda.is_available():
            warnings.warn(
                f"The model was saved with device={wanted!r}, but no CUDA GPU "
                "is available here; it predicts on the CPU. Set device='cpu' "
                "or 'auto' before fitting it again.",
                UserWarning,
                stacklevel=3,
            )
            return "cpu"
    return estimator._resolve_device()


def load(path, *, module=None):
    """Load an estimator written by :func:`save`, without running code.

    Reads tensors and JSON only: neither pickle nor ``torch.load`` is called.
    The network is rebuilt as ``fit`` builds it (backbone, batch-norm
    conversion, head), its weights loaded exactly, and the stored plate
    statistics restored, so predictions equal those of the saved estimator.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save`.
    module : torch.nn.Module, default=None
        Needed, and only accepted, when the model was fitted with your own
        network (``module=<your nn.Module>``): an instance of the same
        architecture; its weights are replaced by the saved ones.

    Returns
    -------
    estimator : BENClassifier or BENEmbedder
        The fitted estimator, on CUDA when available and its ``device``
        allows, else on the CPU.

    Raises
    ------
    PersistError
        For a file that is not an sklearn-ben model, a user network without
        ``module=``, or a ``module=`` whose weights do not match the file's.

    See Also
    --------
    save : Write the file.
    """
    from sklearn_ben._base import _PRECISIONS
    from sklearn_ben._training import inference_net
    from sklearn_ben.backbones import resolve_backbone
    from sklearn_ben.batchnorm import convert_batchnorm

    header, tensors = _read(Path(path))
    classes = _estimator_classes()
    if header["estimator"] not in classes:
        raise PersistError(
            f"{str(path)!r} holds a {header['estimator']!r}, which this "
            "sklearn-ben cannot build; expected BENClassifier or BENEmbedder."
        )
    params = {k: _decode(v) for k, v in header["params"].items() if k != "module"}
    params["module"] = _module_param(header, module)
    estimator = classes[header["estimator"]](**params)
    for key, value in header["fitted"].items():
        setattr(estimator, key, _decode(value))
    estimator.input_shape_ = tuple(estimator.input_shape_)
    shape = estimator.input_shape_
    backbone, _ = resolve_backbone(params["module"], shape[0], ndim=len(shape) + 1)
    weights = {
        k[len("module.") :]: v for k, v in tensors.items() if k.startswith("module.")
    }
    network = _build_head_net(convert_batchnorm(backbone), weights)
    try:
        network.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise PersistError(
            f"The saved weights do not fit the network rebuilt for them ({first}); "
            "pass module= an instance of the architecture the model was fitted "
            "with."
        ) from None
    estimator.net_ = inference_net(
        network, _device(estimator), _PRECISIONS[estimator.precision]
    )
    estimator.plate_statistics_ = _plate_statistics(header, tensors)
    return estimator


def _build_head_net(backbone: nn.Module, weights: dict) -> nn.Module:
    from sklearn_ben._nets import HeadNet

    return HeadNet(backbone, _head(weights))


def _plate_statistics(header: dict, tensors: dict) -> dict:
    stats = {}
    for i, label in enumerate(header["plates"]):
        prefix = f"stats.{i}."
        layers = {}
        for key, value in tensors.items():
            if key.startswith(prefix) and key.endswith(".mean"):
                layer = key[len(prefix) : -len(".mean")]
                layers[layer] = (value, tensors[f"{prefix}{layer}.var"])
        stats[_decode(label)] = layers
    return stats
