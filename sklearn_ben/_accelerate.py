"""Training glue for data-parallel fits on Hugging Face Accelerate (issue 14).

With ``accelerator=Accelerator()``, every process started by ``accelerate
launch`` (or ``torchrun``) runs the same ``fit``; this module is what changes:

- the plate sampler is wrapped in
  :class:`~sklearn_ben.distributed.DistributedGroupBatchSampler`, so each
  process trains on its own whole-plate batches and all run the same number of
  steps (Accelerate's own DataLoader sharding is not used: it deals items, and
  with ``even_batches`` repeats samples);
- the network and optimiser go through ``accelerator.prepare`` (skorch's
  ``AccelerateMixin``): DDP averages gradients; batch normalisation stays per
  process (no ``SyncBatchNorm``, and DDP's buffer broadcast is switched off so
  that no process's running statistics overwrite another's);
- after training the network is unwrapped, running statistics are averaged
  over processes (every process then holds identical weights), and the net
  becomes a plain single-process skorch net that pickles without the
  accelerator;
- inference with a fitted estimator whose ``accelerator`` spans several
  processes is split by plate
  (:func:`~sklearn_ben.distributed.predict_by_group_distributed`).
"""

import dataclasses
from functools import partial
from numbers import Integral

import torch
from skorch.hf import AccelerateMixin
from skorch.net import NeuralNet

from sklearn_ben._training import _AutocastNet
from sklearn_ben.distributed import (
    DistributedGroupBatchSampler,
    check_no_sync_batchnorm,
    predict_by_group_distributed,
)

__all__ = ["AcceleratedNet", "check_accelerator", "distribute", "plate_parallel"]


def check_accelerator(estimator) -> None:
    """Refuse, before any work, settings a data-parallel fit cannot honour."""
    if getattr(estimator, "accelerator", None) is None:
        return
    seed = estimator.random_state
    if not isinstance(seed, Integral) or isinstance(seed, bool):
        raise ValueError(
            "accelerator=... trains one copy of the network per process, and "
            "every process must draw the same plate batches, held-out plates "
            f"and initial weights, but random_state={seed!r}; pass an int "
            "random_state (e.g. random_state=0)."
        )
    if str(estimator.device) != "auto":
        raise ValueError(
            f"device={estimator.device!r} conflicts with accelerator=..., which "
            f"places each process's network itself (here on "
            f"{estimator.accelerator.device}); leave device='auto'."
        )


def distribute(accelerator, sampler, settings):
    """This process's share of the plate batches, and settings naming its device."""
    sampler = DistributedGroupBatchSampler(
        sampler, accelerator.num_processes, accelerator.process_index
    )
    settings = dataclasses.replace(
        settings, device=_device_name(accelerator.device), accelerator=accelerator
    )
    return sampler, settings


def plate_parallel(accelerator, predict):
    """``predict`` (``predict_by_group``), split by plate over the processes."""
    if accelerator is None or accelerator.num_processes < 2:
        return predict
    return partial(
        predict_by_group_distributed,
        rank=accelerator.process_index,
        num_replicas=accelerator.num_processes,
    )


def _device_name(device) -> str:
    device = torch.device(device)
    return "cpu" if device.type == "cpu" else str(device)


class _PrintOnMain:
    """The epoch table's sink: printed by the main process only (picklable)."""

    def __init__(self, sink=print):
        self.sink = sink

    def __call__(self, *args, **kwargs) -> None:
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0:
            self.sink(*args, **kwargs)


class AcceleratedNet(AccelerateMixin, _AutocastNet):
    """The training net of a data-parallel fit; :meth:`finish` makes it plain.

    The net keeps ``device`` (this process's device, given by the
    accelerator) so that callbacks and autocast see a real device; skorch moves
    batches there (from pinned memory on CUDA: the DataLoader's
    ``pin_memory``).
    """

    def __init__(self, *args, accelerator, **kwargs):
        sink = kwargs.pop("callbacks__print_log__sink", print)
        super().__init__(
            *args,
            accelerator=accelerator,
            unwrap_after_train=False,  # finish() unwraps, after early stopping
            # skorch's PrintLog prints to any sink but ``print`` even when
            # verbose=0, so the main-process sink is for verbose runs only.
            callbacks__print_log__sink=_PrintOnMain(sink)
            if kwargs.get("verbose")
            else print,
            **kwargs,
        )

    def _validate_params(self):
        # AccelerateMixin wants device=None; the device here is the accelerator's.
        NeuralNet._validate_params(self)

    def _initialize_accelerator(self):
        # As AccelerateMixin's, but a criterion without parameters is left
        # alone (DDP refuses to wrap it); the LR schedule steps once per step.
        if self._wrapped_with_accelerator:
            return self
        prepare = self.accelerator.prepare
        for name in self._criteria + self._modules:
            part = getattr(self, name + "_")
            if isinstance(part, torch.nn.Module) and any(
                p.requires_grad for p in part.parameters()
            ):
                setattr(self, name + "_", prepare(part))
        for name in self._optimizers:
            setattr(self, name + "_", prepare(getattr(self, name + "_")))
        self._wrapped_with_accelerator = True
        check_no_sync_batchnorm(self.module_)
        if isinstance(self.module_, torch.nn.parallel.DistributedDataParallel):
            self.module_.broadcast_buffers = False  # each process keeps its own BN
        return self

    def get_iterator(self, dataset, training=False):
        # The sampler already deals whole plates to this process.
        return NeuralNet.get_iterator(self, dataset, training=training)

    def finish(self) -> _AutocastNet:
        """Unwrap, average running statistics, and become a plain net."""
        accelerator = self.accelerator
        accelerator.wait_for_everyone()
        self._unwrap_accelerator()
        _average_buffers(self.module_, accelerator.num_processes)
        wrapped = self.optimizer_
        self.optimizer_ = getattr(wrapped, "optimizer", wrapped)
        for _, callback in self.callbacks_:  # the LR schedule held the wrapper
            scheduler = getattr(callback, "lr_scheduler_", None)
            if getattr(scheduler, "optimizer", None) is wrapped:
                scheduler.optimizer = self.optimizer_
        for name in ("accelerator", "unwrap_after_train", "_wrapped_with_accelerator"):
            del self.__dict__[name]
        self.__class__ = _AutocastNet
        return self


def _average_buffers(module: torch.nn.Module, num_processes: int) -> None:
    """Mean of every floating buffer (BN running statistics) over processes."""
    dist = torch.distributed
    if num_processes < 2 or not dist.is_initialized():
        return
    with torch.no_grad():
        for buffer in module.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
                buffer.div_(num_processes)
