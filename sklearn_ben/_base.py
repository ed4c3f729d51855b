"""What BENClassifier and BENEmbedder share: contract, checks, fitted state.

The scikit-learn side of the estimators. Training goes through
:mod:`sklearn_ben._training` (the only skorch code) and inference through
:func:`sklearn_ben.inference.predict_by_group` (torch only); ``groups`` walk
estimator -> glue -> sampler once at fit, and estimator -> engine once at
predict.
"""

from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_array, check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from sklearn_ben._adapt import AdaptMixin
from sklearn_ben._data import BatchDataset, _item_image, is_dataset
from sklearn_ben._metadata import PlateMetadataMixin
from sklearn_ben._sklearn_compat import HasMethods, Interval, StrOptions
from sklearn_ben._training import (
    GroupValidation,
    TrainSettings,
    restore_slim,
    slim_copy,
    train_network,
)
from sklearn_ben._validation import (
    check_controls,
    check_controls_per_group,
    check_group_sizes,
    check_groups,
)
from sklearn_ben.backbones import BACKBONES, feature_dim, resolve_backbone
from sklearn_ben.batchnorm import convert_batchnorm, group_layers
from sklearn_ben.exceptions import ControlsError
from sklearn_ben.inference import predict_by_group
from sklearn_ben.samplers import GroupBatchSampler

_REQUEST = {"groups": True, "controls": True}

_PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class _Norm:
    """What a value of the ``norm`` parameter means, in one place."""

    source: str  # batch-norm statistics at inference (see sklearn_ben.batchnorm)
    per_group: bool  # inference statistics come from each predicted plate
    controls: bool  # statistics from control samples only (training too)


NORMS = {
    "group": _Norm(source="batch", per_group=True, controls=False),
    "controls": _Norm(source="controls", per_group=True, controls=True),
    "frozen": _Norm(source="running", per_group=False, controls=False),
}


class BENBase(AdaptMixin, PlateMetadataMixin, TransformerMixin, BaseEstimator):
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

    # ------------------------------------------------------------------ checks
    def _norm(self) -> _Norm:
        """The meaning of ``self.norm``; parameters are checked again first.

        Called at predict too, so that ``set_params`` after fit cannot slip an
        invalid value past validation (the check only reads).
        """
        self._validate_params()
        return NORMS[self.norm]

    def _check_fit_inputs(self, X, y, groups, controls):
        """Validate everything ``fit`` needs, without changing ``self``."""
        norm = NORMS[self.norm]
        if self.n_iter_no_change is not None and self.validation_fraction is None:
            raise ValueError(
                "n_iter_no_change needs held-out groups to watch; set "
                "validation_fraction (e.g. 0.2) or n_iter_no_change=None."
            )
        X, y = self._check_X(X, y, fitting=True)
        n = len(X)
        groups, controls = check_groups(groups, n), check_controls(controls, n)
        if groups is None and (self.sampling == "group" or norm.per_group):
            self._warn_missing_metadata("fit", self._one_plate_message("fit"))
        fit_groups = np.zeros(n, dtype=int) if groups is None else groups
        if norm.controls:
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

    def _check_predict_inputs(self, X, groups, controls, method, *, use_stored=True):
        """Checks of every inference call; returns inputs, the norm to use and
        the stored statistics of the adapted plates among ``groups``.

        Rows of adapted plates need neither plate-mates nor controls, so the
        plate checks apply to the other rows only.
        """
        check_is_fitted(self)
        norm = self._norm()
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
        stored, pending = {}, np.ones(n, dtype=bool)
        if use_stored and groups is not None:
            stored, pending = self._stored_statistics(groups, norm)
        if norm.per_group and groups is None:
            self._warn_missing_metadata(method, self._one_plate_message(method))
        groups = np.zeros(n, dtype=int) if groups is None else groups
        what = "adapted" if method == "adapt" else "predicted"
        if norm.per_group:
            check_group_sizes(groups[pending], 2, what=what)
        if norm.controls and pending.any():
            if controls is None:
                self._warn_missing_metadata(
                    method,
                    "with norm='controls' each group is normalised with all of "
                    "its samples instead (norm='group')",
                    what="controls",
                )
                norm = NORMS["group"]
            else:
                check_controls_per_group(
                    groups[pending],
                    controls[pending],
                    2,
                    where="adapt" if method == "adapt" else "predict",
                )
        return X, groups, controls, norm, stored

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
        if NORMS[self.norm].per_group and not group_layers(backbone):
            raise ValueError(
                f"module has no BatchNorm layers, so norm={self.norm!r} would "
                "change nothing; add BatchNorm layers to the network or use "
                "norm='frozen'."
            )
        probe = BatchDataset(X).get_inputs(np.arange(min(2, len(X))))
        return backbone, feature_dim(backbone, probe), shape

    def _split_validation(self, groups, random_state):
        labels = np.unique(groups)
        n_val = max(1, int(round(self.validation_fraction * len(labels))))
        n_val = min(n_val, len(labels) - 1)
        held_out = random_state.choice(labels, n_val, replace=False)
        return np.isin(groups, held_out)

    def _sampler(self, groups, controls):
        """The plate sampler of training (one group per batch unless random).

        Its seed is the first draw of ``random_state``, as the weights' is.
        """
        norm = NORMS[self.norm]
        rng = check_random_state(self.random_state)
        return GroupBatchSampler(
            groups if self.sampling == "group" else np.zeros(len(groups), int),
            self.batch_size,
            controls=controls,
            min_controls=self.min_controls if norm.controls else 0,
            random_state=rng.randint(np.iinfo(np.int32).max),
        )

    def _train_settings(self):
        warmup = self.warmup_epochs
        if warmup == "auto":
            warmup = self.max_epochs // 9
        return TrainSettings(
            lr=self.lr,
            weight_decay=self.weight_decay,
            max_epochs=self.max_epochs,
            warmup_epochs=warmup,
            device=self._resolve_device(),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            dtype=_PRECISIONS[self.precision],
            n_iter_no_change=getattr(self, "n_iter_no_change", None),
            verbose=self.verbose,
        )

    def _train(
        self,
        module,
        dataset,
        sampler,
        *,
        criterion=nn.CrossEntropyLoss,
        criterion_params=None,
        validation=None,
    ):
        """Train ``module`` with skorch on the sampler's batches; return the net."""
        return train_network(
            module,
            dataset,
            sampler,
            self._train_settings(),
            criterion=criterion,
            criterion_params=criterion_params,
            validation=validation,
        )

    def _validation(self, X, y, groups, controls):
        """A callback scoring held-out plates (X, y, ... already held out)."""
        norm = NORMS[self.norm]
        return GroupValidation(
            X,
            y,
            groups,
            controls if norm.controls else None,
            source=norm.source,
            chunk_size=self.predict_batch_size,
        )

    # ---------------------------------------------------------------- inference
    def _predict_outputs(self, module, X, groups, controls, norm, stored=None):
        """Outputs of ``module`` (part of the fitted net) for every row of ``X``.

        Reads the fitted network only: the train/eval mode was set once at the
        end of fit, and statistics live in the call. Rows of the plates in
        ``stored`` are normalised with their stored statistics.
        """
        if module.training:  # a network restored in train mode; idempotent
            self.net_.module_.eval()
        return predict_by_group(
            module,
            X,
            groups,
            controls if norm.controls else None,
            source=norm.source,
            chunk_size=self.predict_batch_size,
            device=self.net_.device,
            dtype=_PRECISIONS[self.precision],
            stored=self._stored_layers(stored) if stored else None,
        )

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
        self.plate_statistics_ = {}  # statistics of the old network are void
        self.adapted_norm_ = None

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
        X, groups, controls, norm, stored = self._check_predict_inputs(
            X, groups, controls, "transform"
        )
        backbone = self.net_.module_.backbone
        return self._predict_outputs(
            backbone, X, groups, controls, norm, stored
        ).numpy()

    def _one_plate_message(self, method):
        samples = "samples" if method == "fit" else "its samples"
        return (
            f"all {samples} are treated as one plate (sampling={self.sampling!r}, "
            f"norm={self.norm!r}); score with sklearn_ben.metrics.make_ben_scorer() "
            "so that plates reach predict"
        )

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

    def __getstate__(self):
        # The network once, without optimiser moments or schedulers: a pickle
        # about the size of the state dict (tests/test_persist.py).
        state = dict(super().__getstate__())  # may be self.__dict__ itself
        if state.get("net_") is not None:
            state["net_"] = slim_copy(state["net_"])
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        if getattr(self, "net_", None) is not None:
            restore_slim(self.net_)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        tags.input_tags.allow_nan = False
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags
