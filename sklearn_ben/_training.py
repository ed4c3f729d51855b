"""Training glue: the one module that imports skorch.

:func:`train_network` gets a module, a dataset, a batch sampler and settings,
and returns a trained skorch ``NeuralNet``. Held-out plates are scored by
:class:`GroupValidation`, a callback that owns its data and calls the torch
engine (:func:`sklearn_ben.inference.predict_by_group`); nothing here calls
back into an estimator.
"""

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import Callback, EarlyStopping, LRScheduler, ProgressBar
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader

from sklearn_ben.inference import autocast, predict_by_group

__all__ = [
    "GroupValidation",
    "TrainSettings",
    "restore_slim",
    "slim_copy",
    "train_network",
]


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


class _AutocastNet(NeuralNet):
    """skorch's NeuralNet, with the forward pass under ``torch.autocast``.

    ``autocast_dtype`` (set after construction) is None for float32 training.
    The loss is computed in float32.
    """

    autocast_dtype = None

    def infer(self, x, **fit_params):
        with autocast(self.device, self.autocast_dtype):
            return super().infer(x, **fit_params)

    def get_loss(self, y_pred, y_true, *args, **kwargs):
        return super().get_loss(y_pred.float(), y_true, *args, **kwargs)


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
    """

    def __init__(self, X, y, groups, controls, *, source, chunk_size=None):
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
        )
        y = torch.from_numpy(np.asarray(self.y))
        net.history.record("valid_loss", nn.functional.cross_entropy(logits, y).item())
        net.history.record("valid_acc", (logits.argmax(1) == y).double().mean().item())

    def on_train_end(self, net, **kwargs):
        self.X = self.y = self.groups = self.controls = None


def train_network(
    module: nn.Module,
    dataset,
    sampler,
    settings: TrainSettings,
    *,
    criterion=nn.CrossEntropyLoss,
    criterion_params=None,
    validation: GroupValidation | None = None,
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
        Optimiser, schedule, device and logging settings.
    criterion : type, default=torch.nn.CrossEntropyLoss
        Loss class.
    criterion_params : dict, default=None
        Keyword arguments of the loss.
    validation : GroupValidation, default=None
        Held-out groups scored after each epoch; with
        ``settings.n_iter_no_change`` also early stopping on ``valid_loss``.

    Returns
    -------
    net : skorch.NeuralNet
        The trained net, its module in eval mode.
    """
    steps = len(sampler)
    schedule = _WarmupCosine(
        settings.warmup_epochs * steps, steps * settings.max_epochs
    )
    callbacks = []
    if validation is not None:
        callbacks.append(("group_validation", validation))
        if settings.n_iter_no_change is not None:
            stopper = EarlyStopping(
                monitor="valid_loss",
                patience=settings.n_iter_no_change,
                load_best=True,
            )
            callbacks.append(("early_stopping", stopper))
    scheduler = LRScheduler(LambdaLR, lr_lambda=schedule, step_every="batch")
    callbacks.append(("lr_schedule", scheduler))
    if settings.verbose >= 2:
        callbacks.append(("progress_bar", ProgressBar(batches_per_epoch=steps)))
    net = _AutocastNet(
        module=module,
        criterion=criterion,
        **{f"criterion__{k}": v for k, v in (criterion_params or {}).items()},
        optimizer=torch.optim.Adam,
        lr=settings.lr,
        optimizer__weight_decay=settings.weight_decay,
        max_epochs=settings.max_epochs,
        batch_size=settings.batch_size,  # batches come from the sampler
        iterator_train=DataLoader,
        iterator_train__sampler=sampler,
        iterator_train__batch_size=None,
        iterator_train__num_workers=settings.num_workers,
        iterator_train__pin_memory=settings.device == "cuda",
        train_split=None,
        callbacks=callbacks,
        device=settings.device,
        verbose=int(settings.verbose > 0),
    )
    net.autocast_dtype = settings.dtype
    net.fit(dataset, None)
    # The sampler holds the training groups; it is not needed any more.
    net.iterator_train__sampler = None
    net.module_.eval()  # once; inference never flips it
    return net


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
