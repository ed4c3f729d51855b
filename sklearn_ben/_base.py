"""What BENClassifier and BENEmbedder share: contract, checks, fitted state.

The scikit-learn side of the estimators. Training goes through
:mod:`sklearn_ben._training` (the only skorch code) and inference through
:func:`sklearn_ben.inference.predict_by_group` (torch only); ``groups`` walk
estimator -> glue -> sampler once at fit, and estimator -> engine once at
predict.
"""

import copy
import inspect
import warnings
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_array, check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from sklearn_ben._accelerate import check_accelerator, distribute, plate_parallel
from sklearn_ben._adapt import AdaptMixin
from sklearn_ben._data import BatchDataset, _item_image, is_dataset
from sklearn_ben._metadata import PlateMetadataMixin
from sklearn_ben._params import PrefixedParamsMixin
from sklearn_ben._scaling import check_intensity
from sklearn_ben._sklearn_compat import HasMethods, Interval, StrOptions
from sklearn_ben._training import (
    GroupValidation,
    TrainSettings,
    check_callbacks,
    check_iterator_params,
    join_histories,
    restore_slim,
    slim_copy,
    train_network,
)
from sklearn_ben._validation import (
    _plain,
    check_controls,
    check_controls_per_group,
    check_group_sizes,
    check_groups,
    format_counts,
)
from sklearn_ben.backbones import (
    backbone_names,
    backbone_spec,
    check_backbone,
    feature_dim,
    resolve_backbone,
)
from sklearn_ben.batchnorm import convert_batchnorm, group_layers
from sklearn_ben.exceptions import ControlsError, DegenerateStatisticsWarning
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


class BENBase(
    AdaptMixin, PlateMetadataMixin, PrefixedParamsMixin, TransformerMixin, BaseEstimator
):
    """Shared machinery of the BEN estimators (not public)."""

    _parameter_constraints = {
        "module": [
            StrOptions(set(backbone_names())),
            HasMethods(["build"]),
            nn.Module,
        ],
        "optimizer": [callable],
        "optimizer_params": [None, dict],
        "criterion": [None, callable],
        "criterion_params": [None, dict],
        "callbacks": [None, list, dict],
        "iterator_train_params": [None, dict],
        "warm_start": ["boolean"],
        "train_split": [None, callable],
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
        "intensity": [StrOptions({"dtype", "none"}), tuple, list],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "accelerator": [None, HasMethods(["prepare", "unwrap_model"])],
    }

    #: criterion_params keys that are estimator parameters (embedder: temperature)
    _criterion_aliases: dict = {}

    def set_params(self, **params):
        """Set parameters; ``module__<name>`` also works when module is a name.

        ``set_params(module__width=32)`` on ``module="cnn"`` first replaces the
        name by the backbone it stands for (``SmallCNN()``), so that built-in
        backbones can be tuned by ``GridSearchCV`` without spelling them out.

        skorch's prefixed keys work too: ``optimizer__<name>``,
        ``criterion__<name>``, ``iterator_train__<name>`` (stored in
        ``optimizer_params``, ``criterion_params``, ``iterator_train_params``),
        ``callbacks__<callback>`` and ``callbacks__<callback>__<name>``;
        ``optimizer__lr``, ``optimizer__weight_decay`` and
        ``iterator_train__num_workers`` are ``lr``, ``weight_decay`` and
        ``num_workers``.

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
        if nested and isinstance(module, str) and module in backbone_names():
            params["module"] = backbone_spec(module)
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
        self._check_training_params()
        held_out = self.validation_fraction is not None or self.train_split is not None
        if self.n_iter_no_change is not None and not held_out:
            raise ValueError(
                "n_iter_no_change needs held-out groups to watch; set "
                "validation_fraction (e.g. 0.2) or train_split, or "
                "n_iter_no_change=None."
            )
        self._resolve_device()  # refuses an unavailable device before any work
        check_accelerator(self)  # data-parallel settings (issue 14)
        X, y = self._check_X(X, y, fitting=True)
        check_intensity(self.intensity, n_channels=self._input_shape(X)[0])
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
        _check_float32_range(X)
        _check_channels_first(X.shape[1:])
        return X, y

    def _input_shape(self, X):
        if is_dataset(X):
            shape = tuple(_item_image(X[0]).shape)
            _check_channels_first(shape)
            return shape
        return tuple(X.shape[1:])

    def _input_dtype(self, X):
        if is_dataset(X):
            return str(_item_image(X[0]).numpy().dtype)
        return str(X.dtype)

    def _check_predict_inputs(self, X, groups, controls, method, *, use_stored=True):
        """Checks of every inference call; returns inputs, the norm to use and
        the stored statistics of the adapted plates among ``groups``.

        Rows of adapted plates need neither plate-mates nor controls, so the
        plate checks apply to the other rows only.
        """
        check_is_fitted(self)
        norm = self._norm()
        X_in = X  # feature names are read from X as passed (e.g. a DataFrame)
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
            validate_data(self, X_in, reset=False, skip_check_array=True)
        if shape[1:] != tuple(self.input_shape_[1:]):
            warnings.warn(
                f"X has images of size {shape[1:]}, but {name} was fitted on "
                f"{tuple(self.input_shape_[1:])}; the network accepts them, but "
                "features learnt at one scale may not hold at another. Crop or "
                "resize to the training size unless this is intended.",
                UserWarning,
                stacklevel=3,
            )
        self._check_input_dtype(X)
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
            _warn_small_groups(
                groups[pending],
                None if not norm.controls or controls is None else controls[pending],
            )
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

    def _check_training_params(self):
        """Check the skorch pass-through parameters; nothing is changed."""
        check_backbone(self.module, needs_batchnorm=NORMS[self.norm].per_group)
        check_callbacks(self.callbacks)
        check_iterator_params(self.iterator_train_params)
        if self.validation_fraction is not None and self.train_split is not None:
            raise ValueError(
                "validation_fraction and train_split both choose held-out "
                "samples; set one of them to None."
            )
        taken = {"lr": "lr", "weight_decay": "weight_decay", "params": "module"}
        for key in self.optimizer_params or {}:
            if key in taken:
                raise ValueError(
                    f"optimizer_params sets {key!r}, which the estimator's "
                    f"{taken[key]!r} parameter sets; use {taken[key]}= instead."
                )
        for key in self.criterion_params or {}:
            if self.criterion is None and key in self._criterion_aliases:
                name = self._criterion_aliases[key]
                raise ValueError(
                    f"criterion_params sets {key!r}, which the estimator's {name!r} "
                    f"parameter sets; use {name}= instead."
                )
        accepted = inspect.signature(self.optimizer).parameters
        if "weight_decay" not in accepted and self.weight_decay != 0:
            raise ValueError(
                f"optimizer {getattr(self.optimizer, '__name__', self.optimizer)} "
                f"takes no weight_decay, but weight_decay={self.weight_decay}; "
                "set weight_decay=0."
            )

    def _warm_module(self, X, classes=None):
        """A copy of the fitted network to continue from, or None.

        With ``warm_start=True`` and a fitted estimator; refused when the data
        no longer fit the network.
        """
        if not (self.warm_start and hasattr(self, "net_")):
            return None
        shape = self._input_shape(X)
        if shape != self.input_shape_:
            raise ValueError(
                f"warm_start=True continues the fitted network, but X has sample "
                f"shape {shape} while the network was fitted on "
                f"{self.input_shape_}; pass data of the fitted shape, or set "
                "warm_start=False to train a new network."
            )
        fitted = getattr(self, "classes_", None)
        if classes is not None and (
            fitted is None or not np.array_equal(classes, fitted)
        ):
            raise ValueError(
                f"warm_start=True continues the fitted network, but y has classes "
                f"{[_plain(c) for c in classes]} while the network was fitted on "
                f"{None if fitted is None else [_plain(c) for c in fitted]}; pass "
                "the same "
                "classes, or set warm_start=False to train a new network."
            )
        module = copy.deepcopy(self.net_.module_)
        return module.train()

    # ----------------------------------------------------------------- training
    def _resolve_device(self):
        device = str(self.device)
        if device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        try:
            kind = torch.device(device).type
        except (RuntimeError, ValueError):
            raise ValueError(
                f"device={device!r} is not a device torch knows; use 'auto', "
                "'cpu', 'cuda' or 'cuda:<index>'."
            ) from None
        if kind == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} but no CUDA GPU is available on this machine; "
                "use device='auto' (CUDA when present, else CPU) or device='cpu'."
            )
        return device

    def _check_input_dtype(self, X):
        """Refuse a dtype change that the intensity spec would turn into a rescale."""
        dtype, fitted = self._input_dtype(X), getattr(self, "input_dtype_", None)
        if fitted is None or dtype == fitted or self.intensity != "dtype":
            return
        if np.dtype(dtype).kind in "ui" or np.dtype(fitted).kind in "ui":
            raise ValueError(
                f"X has dtype {dtype}, but {type(self).__name__} was fitted on "
                f"{fitted} inputs; with intensity='dtype' integers are divided by "
                "their dtype's maximum, so the same images would reach the "
                f"network rescaled. Pass X.astype({fitted!r}) as in fit, or fit "
                "with an intensity= that does not depend on the dtype."
            )

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
        probe = BatchDataset(X, intensity=self.intensity).get_inputs(
            np.arange(min(2, len(X)))
        )
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
        optimizer_params = dict(self.optimizer_params or {})
        if "weight_decay" in inspect.signature(self.optimizer).parameters:
            optimizer_params["weight_decay"] = self.weight_decay
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
            optimizer=self.optimizer,
            optimizer_params=optimizer_params,
            iterator_params=check_iterator_params(self.iterator_train_params),
            callbacks=tuple(check_callbacks(self.callbacks)),
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
        sample_weight=None,
    ):
        """Train ``module`` with skorch on the sampler's batches; return the net.

        ``criterion`` and ``criterion_params`` are the method's loss; the
        ``criterion`` parameter, when set, replaces it, and ``criterion_params``
        are added to it.
        """
        if self.criterion is not None:
            criterion, criterion_params = self.criterion, {}
        settings = self._train_settings()
        if getattr(self, "accelerator", None) is not None:  # data-parallel
            sampler, settings = distribute(self.accelerator, sampler, settings)
        return train_network(
            module,
            dataset,
            sampler,
            settings,
            criterion=criterion,
            criterion_params={
                **(criterion_params or {}),
                **(self.criterion_params or {}),
            },
            validation=validation,
            sample_weight=sample_weight,
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
            intensity=self.intensity,
        )

    # ---------------------------------------------------------------- inference
    def _predict_outputs(self, module, X, groups, controls, norm, stored=None):
        """Outputs of ``module`` (part of the fitted net) for every row of ``X``.

        Reads the fitted network only: the train/eval mode was set once at the
        end of fit, and statistics live in the call. Rows of the plates in
        ``stored`` are normalised with their stored statistics.
        """
        predict = plate_parallel(getattr(self, "accelerator", None), predict_by_group)
        return predict(
            module,
            X,
            groups,
            controls if norm.controls else None,
            source=norm.source,
            stored=self._stored_layers(stored) if stored else None,
            **self._engine_settings(),
        )

    def _engine_settings(self):
        """Keyword arguments every inference-side engine call shares.

        ``predict`` and ``adapt`` both read the network through the engine;
        taking chunking, device, precision and input scaling from one place
        keeps the statistics ``adapt`` stores identical to what ``predict``
        computes. Also puts a network restored in train mode into eval mode
        (idempotent, so safe from several threads).
        """
        if self.net_.module_.training:
            self.net_.module_.eval()
        return {
            "chunk_size": self.predict_batch_size,
            "device": self.net_.device,
            "dtype": _PRECISIONS[self.precision],
            "intensity": self.intensity,
        }

    def _set_fitted(self, X_in, X, shape, n_out, net):
        """Record the fitted state; called once every check and training passed.

        ``X_in`` is ``X`` as the user passed it (feature names are read from a
        DataFrame), ``X`` the validated array or dataset.
        """
        if not is_dataset(X):
            validate_data(self, X_in, reset=True, skip_check_array=True)
        else:
            self.n_features_in_ = shape[0]
        stopper = dict(net.callbacks_).get("early_stopping")
        best = None if stopper is None else stopper.best_epoch_
        if self.warm_start and hasattr(self, "net_"):
            offset = len(self.net_.history)
            net.history_ = join_histories(self.net_.history, net.history)
            best = None if best is None else best + offset
        self.input_shape_ = shape
        self.input_dtype_ = self._input_dtype(X)
        self.n_features_out_ = n_out
        self.net_ = net
        self.n_iter_ = len(net.history)
        self.loss_curve_ = [float(row["train_loss"]) for row in net.history]
        self.best_epoch_ = best
        self.plate_statistics_ = {}  # statistics of the old network are void
        self.adapted_norm_ = None

    @property
    def device_(self):
        """Device of the fitted network now (CPU after loading a GPU model here)."""
        check_is_fitted(self)
        return str(self.net_.device)

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
        # about the size of the state dict (tests/test_pickles.py).
        state = dict(super().__getstate__())  # may be self.__dict__ itself
        if state.get("net_") is not None:
            state["net_"] = slim_copy(state["net_"])
        # An Accelerator belongs to the processes of one launch: a pickled
        # estimator drops it and predicts in a single process (issue 14).
        if state.get("accelerator") is not None:
            state["accelerator"] = None
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


#: Plates (or control sets) smaller than this get a warning at predict.
MIN_RELIABLE_ROWS = 5


def _warn_small_groups(groups, controls):
    """Warn about plates whose statistics come from fewer than 5 rows."""
    labels, counts = np.unique(
        groups if controls is None else groups[controls], return_counts=True
    )
    small = {g: int(n) for g, n in zip(labels, counts) if n < MIN_RELIABLE_ROWS}
    if small:
        rows = "samples" if controls is None else "controls"
        warnings.warn(
            f"{len(small)} predicted plate(s) have fewer than {MIN_RELIABLE_ROWS} "
            f"{rows} to compute batch-norm statistics from: {format_counts(small)}; "
            "statistics of so few rows are noisy and their predictions can "
            "differ from those made with the whole plate. Predict whole plates, "
            "or adapt the model to the plate first.",
            DegenerateStatisticsWarning,
            stacklevel=4,
        )


def _check_float32_range(X):
    """Refuse float values that would become inf when converted to float32."""
    if X.dtype.kind == "f" and X.dtype.itemsize > 4 and X.size:
        limit = np.finfo(np.float32).max
        low, high = float(X.min()), float(X.max())
        if high > limit or low < -limit:
            raise ValueError(
                f"X holds values up to {max(abs(low), abs(high)):.3g}, beyond "
                f"float32's range (+-{limit:.3g}), in which the network computes; "
                "rescale X (e.g. divide by a constant) before fit and predict."
            )


def _check_channels_first(shape):
    """Refuse images that look channels-last: (H, W, C) instead of (C, H, W)."""
    if len(shape) == 3 and shape[2] <= 8 < shape[0] and shape[0] == shape[1]:
        raise ValueError(
            f"Images must be channels-first (channels, height, width), but one "
            f"sample has shape {shape}, which looks channels-last ({shape[2]} "
            "channels last); pass X.transpose(0, 3, 1, 2) (numpy) or "
            "X.permute(0, 3, 1, 2) (torch)."
        )
