"""What BENClassifier and BENEmbedder share: input checks, training, inference."""

import math
import warnings
from contextlib import contextmanager
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_array, check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data
from skorch import NeuralNet
from skorch.callbacks import Callback, EarlyStopping, LRScheduler, ProgressBar
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader

from sklearn_ben._data import BatchDataset, _item_image, is_dataset
from sklearn_ben._sklearn_compat import HasMethods, Interval, StrOptions
from sklearn_ben._validation import (
    check_controls,
    check_controls_per_group,
    check_group_sizes,
    check_groups,
)
from sklearn_ben.backbones import BACKBONES, feature_dim, resolve_backbone
from sklearn_ben.batchnorm import (
    bn_mode,
    convert_batchnorm,
    group_forward,
    group_layers,
)
from sklearn_ben.exceptions import ControlsError, MissingMetadataWarning
from sklearn_ben.samplers import GroupBatchSampler

_REQUEST = {"groups": True, "controls": True}


class _HeadNet(nn.Module):
    """Backbone plus a training head; an optional control mask drives BN."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, X: Tensor, controls: Tensor | None = None) -> Tensor:
        # X: (N, C, H, W) or (N, F); controls: (N,) bool; returns head outputs
        if controls is None:
            return self.head(self.backbone(X))
        with bn_mode(self, "controls", mask=controls):
            return self.head(self.backbone(X))


@contextmanager
def _seeded(seed: int):
    """Seed torch for a block of code, leaving the caller's RNG state as it was."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class _AutocastNet(NeuralNet):
    """skorch's NeuralNet, with the forward pass under ``torch.autocast``.

    ``autocast_dtype`` (set after construction) is None for float32 training.
    The loss is computed in float32.
    """

    autocast_dtype = None

    def infer(self, x, **fit_params):
        with _autocast(self.device, self.autocast_dtype):
            return super().infer(x, **fit_params)

    def get_loss(self, y_pred, y_true, *args, **kwargs):
        return super().get_loss(y_pred.float(), y_true, *args, **kwargs)


def _autocast(device, dtype):
    """``torch.autocast`` for ``dtype``, or a no-op context for float32."""
    device_type = torch.device(device).type
    return torch.autocast(device_type, dtype=dtype, enabled=dtype is not None)


_PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16}


class _WarmupCosine:
    """Linear warm-up for ``warmup`` steps, then cosine annealing to 0.

    A class, not a closure, so that fitted estimators can be pickled.
    """

    def __init__(self, warmup: int, total: int):
        self.warmup = warmup
        self.total = max(total, 1)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = (step - self.warmup) / max(self.total - self.warmup, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


class _GroupValidation(Callback):
    """Scores held-out groups after each epoch with group-wise inference."""

    def __init__(self, evaluate):
        self.evaluate = evaluate

    def on_epoch_end(self, net, **kwargs):
        for key, value in self.evaluate(net).items():
            net.history.record(key, value)

    def on_train_end(self, net, **kwargs):
        self.evaluate = None  # drop the validation data before pickling


class BENBase(TransformerMixin, BaseEstimator):
    """Shared machinery of the BEN estimators (not public)."""

    _parameter_constraints = {
        "module": [
            StrOptions({"mlp", "cnn", "resnet18", "resnet50"}),
            HasMethods(["build"]),
            nn.Module,
        ],
        "sampling": [StrOptions({"group", "random"})],
        "norm": [StrOptions({"group", "controls", "frozen"})],
        "batch_size": [Interval(Integral, 2, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "warmup_epochs": [
            StrOptions({"auto"}),
            Interval(Integral, 0, None, closed="left"),
        ],
        "min_controls": [Interval(Integral, 2, None, closed="left")],
        "predict_batch_size": [None, Interval(Integral, 2, None, closed="left")],
        "validation_fraction": [None, Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [None, Interval(Integral, 1, None, closed="left")],
        "device": [StrOptions({"auto", "cpu", "cuda"}), str, torch.device],
        "num_workers": [Interval(Integral, 0, None, closed="left")],
        "precision": [StrOptions(set(_PRECISIONS))],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    __metadata_request__fit = _REQUEST
    __metadata_request__transform = _REQUEST

    def set_params(self, **params):
        """Set parameters; ``module__<name>`` also works when module is a name.

        ``set_params(module__width=32)`` on ``module="cnn"`` first replaces the
        name by the backbone it stands for (``SmallCNN()``), so that built-in
        backbones can be tuned by ``GridSearchCV`` without spelling them out.

        Parameters
        ----------
        **params : dict
            Estimator parameters.

        Returns
        -------
        self : estimator instance
        """
        nested = any(key.startswith("module__") for key in params)
        module = params.get("module", getattr(self, "module", None))
        if nested and isinstance(module, str) and module in BACKBONES:
            params["module"] = BACKBONES[module]()
        return super().set_params(**params)

    def fit_transform(self, X, y=None, *, groups=None, controls=None, **fit_params):
        """Fit, then transform the same samples, passing the plates to both.

        scikit-learn's default ``fit_transform`` would drop ``groups`` and
        ``controls`` before ``transform``.

        Parameters
        ----------
        X : array-like or torch Dataset
            Training samples.
        y : array-like of shape (n_samples,), default=None
            Targets, where the estimator uses them.
        groups : array-like of shape (n_samples,), default=None
            Plate of each sample.
        controls : array-like of bool, shape (n_samples,), default=None
            Control mask.
        **fit_params : dict
            Further metadata for ``fit``.

        Returns
        -------
        features : ndarray of shape (n_samples, n_features_out_)
        """
        self.fit(X, y, groups=groups, controls=controls, **fit_params)
        return self.transform(X, groups=groups, controls=controls)

    # ------------------------------------------------------------------ checks
    def _check_fit_inputs(self, X, y, groups, controls):
        """Validate everything ``fit`` needs, without changing ``self``."""
        if self.n_iter_no_change is not None and self.validation_fraction is None:
            raise ValueError(
                "n_iter_no_change needs held-out groups to watch; set "
                "validation_fraction (e.g. 0.2) or n_iter_no_change=None."
            )
        X, y = self._check_X(X, y, fitting=True)
        n = len(X)
        groups, controls = check_groups(groups, n), check_controls(controls, n)
        if groups is None and (self.sampling == "group" or self.norm != "frozen"):
            warnings.warn(
                _missing_groups_message(self, "fit"),
                MissingMetadataWarning,
                stacklevel=3,
            )
        fit_groups = np.zeros(n, dtype=int) if groups is None else groups
        if self.norm == "controls":
            if controls is None:
                raise ControlsError(
                    "norm='controls' takes batch-norm statistics from control "
                    "samples, but fit got controls=None; pass controls=<boolean "
                    "mask> or use norm='group'."
                )
            sampled = fit_groups if self.sampling == "group" else np.zeros(n, int)
            check_controls_per_group(sampled, controls, self.min_controls, where="fit")
        if self.sampling == "group":
            check_group_sizes(fit_groups, 2)
        if self.validation_fraction is not None:
            n_groups = len(np.unique(fit_groups))
            if n_groups < 2:
                raise ValueError(
                    "validation_fraction holds out whole groups, but fit got "
                    f"{n_groups} group; pass groups= with several plates or set "
                    "validation_fraction=None."
                )
        return X, y, fit_groups, controls

    def _check_X(self, X, y=None, *, fitting=False):
        if is_dataset(X):
            return X, (None if y is None else np.asarray(y))
        if fitting and y is not None:
            X = check_array(
                X, dtype=None, allow_nd=True, ensure_min_samples=2, input_name="X"
            )
            y = check_array(y, ensure_2d=False, dtype=None, ensure_min_samples=2)
            if len(y) != len(X):
                raise ValueError(
                    f"y has {len(y)} entries but X has {len(X)} samples; pass one "
                    "label per row of X."
                )
        else:
            X = check_array(
                X,
                dtype=None,
                allow_nd=True,
                ensure_min_samples=2 if fitting else 1,
                input_name="X",
            )
        if X.dtype.kind not in "biuf":
            X = X.astype(np.float32)
        if X.ndim not in (2, 4):
            raise ValueError(
                f"X must be a feature table (n_samples, n_features) or images "
                f"(n_samples, channels, height, width), but got shape {X.shape}."
            )
        return X, y

    def _input_shape(self, X):
        if is_dataset(X):
            return tuple(_item_image(X[0]).shape)
        return tuple(X.shape[1:])

    def _check_predict_inputs(self, X, groups, controls):
        check_is_fitted(self)
        X, _ = self._check_X(X)
        shape = self._input_shape(X)
        name = type(self).__name__
        if len(shape) != len(self.input_shape_):
            kinds = {1: "a feature table", 3: "images"}
            raise ValueError(
                f"X holds {kinds.get(len(shape), 'arrays')} (sample shape {shape}), "
                f"but {name} was fitted on {kinds[len(self.input_shape_)]} (sample "
                f"shape {self.input_shape_}); pass the same kind of data as in fit."
            )
        if shape[0] != self.input_shape_[0]:
            what = "channels" if len(self.input_shape_) == 3 else "features"
            raise ValueError(
                f"X has {shape[0]} {what}, but {name} is expecting "
                f"{self.input_shape_[0]} {what} as input; pass data with the same "
                f"{what} in the same order as in fit."
            )
        if not is_dataset(X):
            validate_data(self, X, reset=False, skip_check_array=True)
        n = len(X)
        groups, controls = check_groups(groups, n), check_controls(controls, n)
        norm = self.norm
        if norm != "frozen" and groups is None:
            warnings.warn(
                _missing_groups_message(self, "predict"),
                MissingMetadataWarning,
                stacklevel=3,
            )
        groups = np.zeros(n, dtype=int) if groups is None else groups
        if norm != "frozen":
            check_group_sizes(groups, 2, what="predicted")
        if norm == "controls":
            if controls is None:
                warnings.warn(
                    "norm='controls' but no controls reached this call, so each "
                    "group is normalised with all of its samples (norm='group'); "
                    "pass controls=<boolean mask>, or enable metadata routing "
                    "inside Pipeline/GridSearchCV.",
                    MissingMetadataWarning,
                    stacklevel=3,
                )
                norm = "group"
            else:
                check_controls_per_group(groups, controls, 2, where="predict")
        return X, groups, controls, norm

    # ----------------------------------------------------------------- training
    def _resolve_device(self):
        device = str(self.device)
        if device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return device

    def _build_backbone(self, X):
        shape = self._input_shape(X)
        backbone, _ = resolve_backbone(self.module, shape[0], ndim=len(shape) + 1)
        backbone = convert_batchnorm(backbone)
        if self.norm != "frozen" and not group_layers(backbone):
            raise ValueError(
                f"module has no BatchNorm layers, so norm={self.norm!r} would "
                "change nothing; add BatchNorm layers to the network or use "
                "norm='frozen'."
            )
        probe = BatchDataset(X).get_inputs(np.arange(min(2, len(X))))
        return backbone, feature_dim(backbone, probe), shape

    def _warmup_steps(self, steps_per_epoch):
        warmup = self.warmup_epochs
        if warmup == "auto":
            warmup = self.max_epochs // 9
        return warmup * steps_per_epoch

    def _split_validation(self, groups, random_state):
        labels = np.unique(groups)
        n_val = max(1, int(round(self.validation_fraction * len(labels))))
        n_val = min(n_val, len(labels) - 1)
        held_out = random_state.choice(labels, n_val, replace=False)
        return np.isin(groups, held_out)

    def _train(
        self,
        module,
        criterion,
        X,
        y,
        groups,
        controls,
        evaluate=None,
        *,
        dataset=None,
        criterion_params=None,
    ):
        """Train ``module`` with skorch on group-homogeneous batches; return net.

        ``groups`` and ``controls`` describe the units the sampler draws
        (samples, or bags for MinCLR); ``dataset`` turns a list of units into
        a batch (default: the rows of ``X``, ``y``).
        """
        rng = check_random_state(self.random_state)
        sampler = GroupBatchSampler(
            groups if self.sampling == "group" else np.zeros(len(groups), int),
            self.batch_size,
            controls=controls,
            min_controls=self.min_controls if self.norm == "controls" else 0,
            random_state=rng.randint(np.iinfo(np.int32).max),
        )
        if dataset is None:
            use = controls if self.norm == "controls" else None
            dataset = BatchDataset(X, y, use)
        steps = len(sampler)
        schedule = _WarmupCosine(self._warmup_steps(steps), steps * self.max_epochs)
        callbacks = []
        if evaluate is not None:
            callbacks.append(("group_validation", _GroupValidation(evaluate)))
            if self.n_iter_no_change is not None:
                callbacks.append(
                    (
                        "early_stopping",
                        EarlyStopping(
                            monitor="valid_loss",
                            patience=self.n_iter_no_change,
                            load_best=True,
                        ),
                    )
                )
        callbacks.append(
            (
                "lr_schedule",
                LRScheduler(LambdaLR, lr_lambda=schedule, step_every="batch"),
            )
        )
        if self.verbose >= 2:
            callbacks.append(("progress_bar", ProgressBar()))
        device = self._resolve_device()
        net = _AutocastNet(
            module=module,
            criterion=criterion,
            **{f"criterion__{k}": v for k, v in (criterion_params or {}).items()},
            optimizer=torch.optim.Adam,
            lr=self.lr,
            optimizer__weight_decay=self.weight_decay,
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            iterator_train=DataLoader,
            iterator_train__sampler=sampler,
            iterator_train__batch_size=None,
            iterator_train__num_workers=self.num_workers,
            iterator_train__pin_memory=device == "cuda",
            train_split=None,
            callbacks=callbacks,
            device=device,
            verbose=int(self.verbose > 0),
        )
        net.autocast_dtype = _PRECISIONS[self.precision]
        net.fit(dataset, None)
        # The sampler holds the training groups; it is not needed any more.
        net.iterator_train__sampler = None
        return net

    # ---------------------------------------------------------------- inference
    def _forward(self, module, X, groups, controls, norm, *, device=None):
        """Outputs of ``module`` for every row, with group-wise batch norm."""
        device = device or self.net_.device
        data = BatchDataset(X)
        n = len(data)
        was_training = module.training
        module.eval()
        outputs = None
        precision = _PRECISIONS[getattr(self, "precision", "float32")]
        try:
            with torch.no_grad(), _autocast(device, precision):
                if norm == "frozen":
                    size = self.predict_batch_size or max(self.batch_size, 256)
                    chunks = [np.arange(i, min(i + size, n)) for i in range(0, n, size)]
                    parts = [(c, module(data.get_inputs(c).to(device))) for c in chunks]
                else:
                    parts = [
                        (
                            idx,
                            self._forward_group(
                                module, data, idx, controls, norm, device
                            ),
                        )
                        for idx in _group_indices(groups)
                    ]
                for idx, out in parts:
                    if outputs is None:
                        outputs = torch.empty((n, *out.shape[1:]))
                    outputs[torch.from_numpy(idx)] = out.float().cpu()
        finally:
            module.train(was_training)
        return outputs

    def _forward_group(self, module, data, idx, controls, norm, device):
        size = self.predict_batch_size or len(idx)
        chunks = [idx[i : i + size] for i in range(0, len(idx), size)]
        use_controls = norm == "controls"

        def batches():
            for c in chunks:
                mask = (
                    torch.from_numpy(controls[c]).to(device) if use_controls else None
                )
                yield data.get_inputs(c).to(device), mask

        return group_forward(module, batches, use_controls=use_controls)

    def _set_fitted(self, X, shape, n_out, net):
        """Record the fitted state; called once every check and training passed."""
        if not is_dataset(X):
            validate_data(self, X, reset=True, skip_check_array=True)
        else:
            self.n_features_in_ = shape[0]
        self.input_shape_ = shape
        self.n_features_out_ = n_out
        self.net_ = net
        self.device_ = str(net.device)

    def transform(self, X, *, groups=None, controls=None):
        """Backbone features (embeddings), each plate with its own BN statistics.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W) or (n_samples, n_features)
            Samples (or a torch ``Dataset`` of images).
        groups : array-like of shape (n_samples,), default=None
            Plate of each sample.
        controls : array-like of bool, shape (n_samples,), default=None
            Control mask, used with ``norm="controls"``.

        Returns
        -------
        features : ndarray of shape (n_samples, n_features_out_)
            Backbone features, before any training head.
        """
        X, groups, controls, norm = self._check_predict_inputs(X, groups, controls)
        backbone = self.net_.module_.backbone
        return self._forward(backbone, X, groups, controls, norm).numpy()

    def get_feature_names_out(self, input_features=None):
        """Names of the ``transform`` outputs: ``<classname>0``, ``<classname>1``...

        Parameters
        ----------
        input_features : None
            Ignored.

        Returns
        -------
        names : ndarray of str
        """
        check_is_fitted(self)
        prefix = type(self).__name__.lower()
        return np.asarray([f"{prefix}{i}" for i in range(self.n_features_out_)], object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        tags.input_tags.allow_nan = False
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags


def _group_indices(groups):
    """Indices of each group, groups in order of first appearance."""
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    order = np.argsort(first)
    return [np.flatnonzero(inverse == k) for k in order]


def _missing_groups_message(estimator, method):
    name = type(estimator).__name__
    return (
        f"{name}.{method} got no groups, so all {'' if method == 'fit' else 'its '}"
        f"samples are treated as one plate (sampling={estimator.sampling!r}, "
        f"norm={estimator.norm!r}). Pass groups=<plate of each sample>; inside "
        "Pipeline, GridSearchCV or cross_validate, turn on "
        "sklearn.set_config(enable_metadata_routing=True) so that groups reach "
        "the estimator, and score with sklearn_ben.metrics.make_ben_scorer()."
    )
