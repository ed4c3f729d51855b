"""Training glue: the one module that imports skorch.

:func:`train_network` gets a module, a dataset, a batch sampler and settings,
and returns a trained skorch ``NeuralNet``. Held-out plates are scored by
:class:`GroupValidation`, a callback that owns its data and calls the torch
engine (:func:`sklearn_ben.inference.predict_by_group`); nothing here calls
back into an estimator.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import Callback, EarlyStopping, LRScheduler, ProgressBar
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader

from sklearn_ben.exceptions import TrainingDivergedError
from sklearn_ben.inference import autocast, predict_by_group

__all__ = ["GroupValidation", "TrainSettings", "train_network"]


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
    accelerator: object = None  # data-parallel fit (sklearn_ben._accelerate)


class _AutocastNet(NeuralNet):
    """skorch's NeuralNet, with the forward pass under ``torch.autocast``.

    ``autocast_dtype`` (set after construction) is None for float32 training.
    The loss is computed in float32.
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
    callbacks = [("finite_loss", _FiniteLoss())]
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
    net_class, extra = _AutocastNet, {}
    if settings.accelerator is not None:  # data-parallel (issue 14)
        from sklearn_ben._accelerate import AcceleratedNet

        net_class, extra = AcceleratedNet, {"accelerator": settings.accelerator}
    net = net_class(
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
        iterator_train__pin_memory=settings.device.startswith("cuda"),
        train_split=None,
        callbacks=callbacks,
        device=settings.device,
        verbose=int(settings.verbose > 0),
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
