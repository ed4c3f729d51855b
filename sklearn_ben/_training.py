"""Training glue: the one module that imports skorch.

:func:`train_network` gets a module, a dataset, a batch sampler and settings,
and returns a trained skorch ``NeuralNet``. Held-out plates are scored by
:class:`GroupValidation`, a callback that owns its data and calls the torch
engine (:func:`sklearn_ben.inference.predict_by_group`); nothing here calls
back into an estimator.
"""

import copy
import inspect
import logging
import math
import re
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import (
    BatchScoring,
    Callback,
    EarlyStopping,
    EpochScoring,
    LRScheduler,
    ProgressBar,
)
from skorch.history import History
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader

from sklearn_ben.exceptions import TrainingDivergedError
from sklearn_ben.inference import autocast, predict_by_group

__all__ = [
    "GroupValidation",
    "TrainSettings",
    "callback_names",
    "check_callbacks",
    "inference_net",
    "join_histories",
    "restore_slim",
    "slim_copy",
    "train_network",
]

logger = logging.getLogger("sklearn_ben")

#: Callback names sklearn-ben gives its own callbacks and skorch its defaults.
RESERVED_CALLBACKS = frozenset(
    {
        "group_validation",
        "early_stopping",
        "lr_schedule",
        "progress_bar",
        "epoch_log",
        "epoch_timer",
        "train_loss",
        "valid_loss",
        "print_log",
    }
)


@dataclass(frozen=True)
class TrainSettings:
    """What :func:`train_network` needs besides the module and the data."""

    lr: float
    weight_decay: float
    max_epochs: int
    warmup_epochs: int
    device: str
    batch_size: int = 128
    num_workers: int = 0
    dtype: torch.dtype | None = None
    n_iter_no_change: int | None = None
    verbose: int = 0
    optimizer: type = torch.optim.Adam
    optimizer_params: dict = field(default_factory=dict)
    iterator_params: dict = field(default_factory=dict)
    callbacks: tuple = ()
    accelerator: object = None  # data-parallel fit (sklearn_ben._accelerate)


class _AutocastNet(NeuralNet):
    """skorch's NeuralNet, with the forward pass under ``torch.autocast``.

    ``autocast_dtype`` (set after construction) is None for float32 training.
    The loss is computed in float32.

    With sample weights, each batch's inputs carry ``sample_weight``, the
    criterion is built with ``reduction="none"``, and the loss is the mean of
    the weighted per-sample losses.
    """

    autocast_dtype = None
    interrupted_at = None  # epoch at which Ctrl-C stopped training

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        # skorch swallows KeyboardInterrupt (its EarlyStopping raises one to
        # stop); note a user's Ctrl-C so that train_network re-raises it.
        try:
            return super().fit_loop(X, y, epochs=epochs, **fit_params)
        except KeyboardInterrupt:
            if not _stopped_early(self):
                self.interrupted_at = len(self.history)
            return self

    def infer(self, x, **fit_params):
        if isinstance(x, dict) and "sample_weight" in x:
            x = {k: v for k, v in x.items() if k != "sample_weight"}
        with autocast(self.device, self.autocast_dtype):
            return super().infer(x, **fit_params)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        loss = super().get_loss(y_pred.float(), y_true, X=X, training=training)
        if loss.dim() == 0:
            return loss
        # reduction="none": (N,) per-sample losses
        if isinstance(X, dict) and "sample_weight" in X:
            weight = X["sample_weight"].to(loss.device, loss.dtype)  # (N,)
            return (loss * weight).mean()
        return loss.mean()


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


class _FiniteLoss(Callback):
    """Stops training at the first batch whose loss is not finite."""

    def on_batch_end(self, net, batch=None, training=True, loss=None, **kwargs):
        if loss is not None and not torch.isfinite(loss).all():
            epoch = len(net.history)
            step = len(net.history[-1, "batches"]) if len(net.history) else 0
            raise TrainingDivergedError(
                f"Training diverged: the loss became {loss.item()} in epoch "
                f"{epoch} (batch {step}) with lr={net.lr}; lower lr (e.g. by "
                "10x), check the inputs' scale (intensity=), or use "
                "precision='float32'. The estimator keeps its previous state."
            )


class GroupValidation(Callback):
    """Scores held-out groups after each epoch with group-wise inference.

    Records ``valid_loss`` (cross-entropy) and ``valid_acc`` in the history.
    The callback owns its data, and drops it when training ends so that the
    fitted net does not carry it into pickles.

    Parameters
    ----------
    X : ndarray or torch Dataset
        Held-out inputs.
    y : ndarray of int
        Encoded classes.
    groups, controls : ndarray
        Plates and control mask of the held-out rows.
    source : {"batch", "controls", "running"}
        Statistics source at inference.
    chunk_size : int or None
        Rows per forward pass.
    intensity : str or tuple, default="dtype"
        Intensity spec of the inputs.
    """

    def __init__(
        self, X, y, groups, controls, *, source, chunk_size=None, intensity="dtype"
    ):
        self.intensity = intensity
        self.X = X
        self.y = y
        self.groups = groups
        self.controls = controls
        self.source = source
        self.chunk_size = chunk_size

    def on_epoch_end(self, net, **kwargs):
        module = net.module_
        module.eval()  # skorch puts it back in train mode at the next step
        logits = predict_by_group(
            module,
            self.X,
            self.groups,
            self.controls,
            source=self.source,
            chunk_size=self.chunk_size,
            device=net.device,
            dtype=net.autocast_dtype,
            intensity=self.intensity,
        )
        y = torch.from_numpy(np.asarray(self.y))
        net.history.record("valid_loss", nn.functional.cross_entropy(logits, y).item())
        net.history.record("valid_acc", (logits.argmax(1) == y).double().mean().item())

    def on_train_end(self, net, **kwargs):
        self.X = self.y = self.groups = self.controls = None


class _WeightedDataset(torch.utils.data.Dataset):
    """A batch dataset whose batches also carry each sample's weight."""

    def __init__(self, dataset, sample_weight: np.ndarray):
        self.dataset = dataset
        self.sample_weight = sample_weight  # (n_samples,) float32

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices):
        inputs, target = self.dataset[indices]
        weight = self.sample_weight[np.asarray(indices)]
        return {**inputs, "sample_weight": torch.from_numpy(weight)}, target


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _PlainSink:
    """``print`` that drops ANSI colour codes when stdout is not a terminal.

    skorch's ``PrintLog`` colours the best scores; in a redirected log file
    those codes are noise. A class, not a closure, so nets can be pickled.
    """

    def __call__(self, text: str) -> None:
        stream = sys.stdout
        if not (hasattr(stream, "isatty") and stream.isatty()):
            text = _ANSI.sub("", text)
        print(text, file=stream, flush=True)


class _EpochLog(Callback):
    """Logs each epoch's scores at INFO on the ``sklearn_ben`` logger."""

    def __init__(self, max_epochs: int):
        self.max_epochs = max_epochs

    def on_epoch_end(self, net, **kwargs):
        row = net.history[-1]
        scores = ", ".join(
            f"{key}={row[key]:.4g}"
            for key in sorted(row)
            if isinstance(row[key], float) and not key.endswith("_best")
        )
        logger.info("epoch %d/%d: %s", row["epoch"], self.max_epochs, scores)


class _StopSink:
    """EarlyStopping's sink: log, and print when verbose."""

    def __init__(self, verbose: bool):
        self.verbose = verbose

    def __call__(self, text: str) -> None:
        logger.info(text)
        if self.verbose:
            _PlainSink()(text)


def callback_names(callbacks) -> list[str]:
    """Names of ``callbacks`` (a list of callbacks or ``(name, callback)``).

    Named as skorch names them: the given name, else the class name, with
    ``_1``, ``_2``... appended to repeated unnamed classes (repeated given
    names are kept, for :func:`check_callbacks` to refuse).
    """
    names, named = [], []
    for item in callbacks or ():
        named.append(isinstance(item, tuple))
        if isinstance(item, tuple):
            names.append(item[0])
        elif isinstance(item, type):
            names.append(item.__name__)
        else:
            names.append(type(item).__name__)
    counts = {n: names.count(n) for n in names}
    seen: dict[str, int] = {}
    unique = []
    for name, by_user in zip(names, named):
        if counts[name] > 1 and not by_user:  # a repeated user name is an error
            seen[name] = seen.get(name, 0) + 1
            name = f"{name}_{seen[name]}"
        unique.append(name)
    return unique


def check_callbacks(callbacks) -> list[tuple[str, Callback]]:
    """Validate user callbacks; return them as ``(name, callback)`` pairs.

    Raises
    ------
    ValueError
        For a name sklearn-ben or skorch already uses, a repeated name, or a
        scoring callback that would score skorch's (empty) validation set.
    TypeError
        For an item that is not a skorch callback.
    """
    if callbacks is None:
        return []
    items = list(callbacks.items()) if isinstance(callbacks, dict) else callbacks
    pairs = []
    for item, name in zip(items, callback_names(items)):
        cb = item[1] if isinstance(item, tuple) else item
        is_cb = isinstance(cb, Callback) or (
            isinstance(cb, type) and issubclass(cb, Callback)
        )
        if isinstance(item, tuple) and len(item) != 2 or not is_cb:
            raise TypeError(
                "callbacks must be a list of skorch callbacks or (name, callback) "
                f"pairs, but got {item!r}; see skorch.callbacks."
            )
        if name in RESERVED_CALLBACKS:
            raise ValueError(
                f"callbacks has a callback named {name!r}, a name sklearn-ben or "
                f"skorch uses for its own; pass it as (other_name, callback)."
            )
        on_valid = isinstance(cb, EpochScoring | BatchScoring) and not cb.on_train
        if on_valid:
            raise ValueError(
                f"callback {name!r} scores skorch's validation set, which is empty: "
                "held-out plates are scored by sklearn-ben itself (valid_loss, "
                "valid_acc in net_.history). Use on_train=True, or a callback "
                "that reads net.history."
            )
        pairs.append((name, cb))
    names = [n for n, _ in pairs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(
            f"callbacks has several callbacks named {repeated[0]!r}; give each "
            "a unique name with (name, callback) pairs."
        )
    return pairs


#: DataLoader arguments that would break one-plate batches.
REFUSED_ITERATOR_PARAMS = {
    "batch_size": "batches are drawn by sklearn-ben's plate sampler; set the "
    "estimator's batch_size instead",
    "sampler": "the plate sampler draws each batch from one plate",
    "batch_sampler": "the plate sampler draws each batch from one plate",
    "shuffle": "the plate sampler already shuffles, within plates",
    "drop_last": "the plate sampler sizes batches itself (at least 2 samples "
    "of one plate each)",
    "dataset": "the dataset is built from X by the estimator",
    "num_workers": "use the estimator's num_workers parameter",
}


def check_iterator_params(params) -> dict:
    """Validate ``iterator_train__*`` keys: DataLoader arguments, plate-safe."""
    params = dict(params or {})
    accepted = set(inspect.signature(DataLoader).parameters)
    for key in params:
        if key in REFUSED_ITERATOR_PARAMS:
            raise ValueError(
                f"iterator_train__{key} is refused: {REFUSED_ITERATOR_PARAMS[key]}."
            )
        if key not in accepted:
            raise ValueError(
                f"iterator_train__{key} is not an argument of "
                "torch.utils.data.DataLoader; expected one of "
                f"{sorted(accepted - set(REFUSED_ITERATOR_PARAMS))}."
            )
    return params


def join_histories(before: History, after: History) -> History:
    """``after`` appended to ``before``, its epochs numbered on (warm starts)."""
    offset = len(before)
    joined = History(copy.deepcopy(list(before)))
    for row in after:
        row = dict(row)
        row["epoch"] = row["epoch"] + offset
        joined.append(row)
    return joined


def train_network(
    module: nn.Module,
    dataset,
    sampler,
    settings: TrainSettings,
    *,
    criterion=nn.CrossEntropyLoss,
    criterion_params=None,
    validation: GroupValidation | None = None,
    sample_weight: np.ndarray | None = None,
) -> NeuralNet:
    """Train ``module`` on the batches of ``sampler``; return the skorch net.

    Parameters
    ----------
    module : torch.nn.Module
        The network (backbone and head); its forward takes ``X`` and optionally
        ``controls``.
    dataset : torch Dataset
        Indexed by what ``sampler`` yields (a whole batch at a time); returns
        ``(inputs_dict, target)``.
    sampler : iterable
        Yields one batch (index list, or ``(key, indices)``) at a time.
    settings : TrainSettings
        Optimiser, schedule, device, DataLoader, callbacks and logging.
    criterion : type, default=torch.nn.CrossEntropyLoss
        Loss class.
    criterion_params : dict, default=None
        Keyword arguments of the loss.
    validation : GroupValidation, default=None
        Held-out groups scored after each epoch; with
        ``settings.n_iter_no_change`` also early stopping on ``valid_loss``.
    sample_weight : ndarray of shape (len(dataset),), default=None
        Weight of each sample in the loss: the criterion is built with
        ``reduction="none"`` and each batch's loss is the mean of the weighted
        per-sample losses.

    Returns
    -------
    net : skorch.NeuralNet
        The trained net, its module in eval mode.
    """
    steps = len(sampler)
    schedule = _WarmupCosine(
        settings.warmup_epochs * steps, steps * settings.max_epochs
    )
    verbose = settings.verbose > 0
    callbacks = [("finite_loss", _FiniteLoss())]
    if validation is not None:
        callbacks.append(("group_validation", validation))
        if settings.n_iter_no_change is not None:
            stopper = EarlyStopping(
                monitor="valid_loss",
                patience=settings.n_iter_no_change,
                load_best=True,
                sink=_StopSink(verbose),
            )
            callbacks.append(("early_stopping", stopper))
    scheduler = LRScheduler(LambdaLR, lr_lambda=schedule, step_every="batch")
    callbacks.append(("lr_schedule", scheduler))
    callbacks.append(("epoch_log", _EpochLog(settings.max_epochs)))
    if settings.verbose >= 2 and sys.stderr.isatty():
        callbacks.append(("progress_bar", ProgressBar(batches_per_epoch=steps)))
    # The user's callbacks run after the validation, so they see valid_loss;
    # copies, so that the estimator's parameters stay as they were given.
    callbacks += copy.deepcopy(list(settings.callbacks))
    criterion_params = dict(criterion_params or {})
    if sample_weight is not None:
        criterion_params["reduction"] = "none"
        dataset = _WeightedDataset(dataset, sample_weight.astype(np.float32))
    loader = {
        "num_workers": settings.num_workers,
        "pin_memory": settings.device.startswith("cuda"),
        **settings.iterator_params,
    }
    net_class, extra = _AutocastNet, {}
    if settings.accelerator is not None:  # data-parallel (issue 14)
        from sklearn_ben._accelerate import AcceleratedNet

        net_class, extra = AcceleratedNet, {"accelerator": settings.accelerator}
    net = net_class(
        module=module,
        criterion=criterion,
        **{f"criterion__{k}": v for k, v in criterion_params.items()},
        optimizer=settings.optimizer,
        lr=settings.lr,
        **{f"optimizer__{k}": v for k, v in settings.optimizer_params.items()},
        max_epochs=settings.max_epochs,
        batch_size=settings.batch_size,  # batches come from the sampler
        iterator_train=DataLoader,
        iterator_train__sampler=sampler,
        iterator_train__batch_size=None,
        **{f"iterator_train__{k}": v for k, v in loader.items()},
        train_split=None,
        callbacks=callbacks,
        callbacks__print_log__sink=_PlainSink() if verbose else print,
        device=settings.device,
        verbose=int(verbose),
        **extra,
    )
    net.autocast_dtype = settings.dtype
    net.fit(dataset, None)
    if settings.accelerator is not None:
        net = net.finish()  # unwrapped, plain and picklable
    if net.interrupted_at is not None:
        raise KeyboardInterrupt(
            f"fit was interrupted in epoch {net.interrupted_at} of "
            f"{settings.max_epochs}; nothing was fitted and the estimator keeps "
            "its previous state."
        )
    _check_finite_weights(net.module_)
    # The sampler holds the training groups; it is not needed any more.
    net.iterator_train__sampler = None
    net.module_.eval()  # once; inference never flips it
    return net


def inference_net(
    module: nn.Module, device: str, dtype: torch.dtype | None = None
) -> NeuralNet:
    """A skorch net around an already trained ``module``, for inference.

    Used by :func:`sklearn_ben.load`: nothing is trained; the net is
    initialised (``module_`` is ``module`` on ``device``) and in eval mode.
    """
    net = _AutocastNet(module=module, criterion=nn.CrossEntropyLoss, device=device)
    net.initialize()
    net.autocast_dtype = dtype
    net.module_.eval()  # once; inference never flips it
    return net


def _stopped_early(net) -> bool:
    return any(
        isinstance(cb, EarlyStopping) and cb.misses_ >= cb.patience
        for _, cb in net.callbacks_
    )


def _check_finite_weights(module: nn.Module) -> None:
    bad = [
        name
        for name, p in module.state_dict().items()
        if p.is_floating_point() and not torch.isfinite(p).all()
    ]
    if bad:
        raise TrainingDivergedError(
            f"Training ended with non-finite values in {len(bad)} tensor(s) of the "
            f"network, e.g. {bad[0]!r}; lower lr or check the inputs' scale. The "
            "estimator keeps its previous state."
        )


def _training_only(value) -> bool:
    """Optimisers, LR schedulers and saved weight dicts: training state only."""
    if isinstance(value, torch.optim.Optimizer):
        return True
    if isinstance(getattr(value, "optimizer", None), torch.optim.Optimizer):
        return True  # an LR scheduler
    return isinstance(value, dict) and any(
        isinstance(v, torch.Tensor) for v in value.values()
    )


def slim_copy(net: NeuralNet) -> NeuralNet:
    """A shallow copy of a trained net that pickles the network once.

    skorch pickles the ``module`` argument and the initialised ``module_``
    separately, the optimiser with its moments (Adam: twice the weights), and
    the callbacks with the LR scheduler that holds the optimiser again: a
    ResNet-18 pickled to six times its state dict. The copy keeps
    ``module_`` (its ``module`` argument is restored from it by
    :func:`restore_slim`), an optimiser without state, and callbacks without
    schedulers or saved weights. ``net`` itself is not changed.
    """
    slim = copy.copy(net)
    slim.__dict__ = dict(net.__dict__)
    if slim.__dict__.get("module") is net.__dict__.get("module_"):
        slim.module = None
    optimizer = net.__dict__.get("optimizer_")
    if optimizer is not None:
        empty = copy.copy(optimizer)
        empty.__dict__ = dict(optimizer.__dict__)
        empty.state = type(optimizer.state)()
        slim.optimizer_ = empty
    copies = {}

    def slim_callback(cb):
        if id(cb) not in copies:
            twin = copy.copy(cb)
            twin.__dict__ = {
                k: (None if _training_only(v) else v) for k, v in vars(cb).items()
            }
            copies[id(cb)] = twin
        return copies[id(cb)]

    for name in ("callbacks", "callbacks_"):
        items = net.__dict__.get(name)
        if isinstance(items, list):
            setattr(
                slim,
                name,
                [
                    (i[0], slim_callback(i[1]))
                    if isinstance(i, tuple)
                    else slim_callback(i)
                    for i in items
                ],
            )
    return slim


def restore_slim(net: NeuralNet) -> NeuralNet:
    """Undo what :func:`slim_copy` left out that inference needs (in place)."""
    if net.__dict__.get("module") is None and "module_" in net.__dict__:
        net.module = net.module_
    return net
