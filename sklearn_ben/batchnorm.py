"""Group-wise batch normalisation: the engine under every BEN estimator.

A network's batch-norm layers are swapped for :class:`GroupBatchNorm1d` (2d,
3d, or :class:`GroupBatchNorm` for ``SyncBatchNorm``) by
:func:`convert_batchnorm`, which keeps their weights, buffers and behaviour. A
converted layer holds only what torch's layer holds (weights and running
buffers): where the statistics of one forward pass come from is *call-scoped*,
set by :func:`bn_statistics` in a ``contextvars.ContextVar`` that every layer
reads. Outside such a block a converted layer is exactly the layer it
replaced. Because the choice lives in the caller's context, not in the shared
layers, any number of threads may run one network at once with different
sources, and none of them changes the network.

The sources:

``"running"``
    the running averages of training (plain eval; the vanilla, "frozen"
    baseline), whatever the module's train/eval mode.
``"batch"``
    statistics of the current input; running averages untouched.
``"controls"``
    statistics of the rows flagged by the control mask, applied to every row;
    in training mode the running averages follow the controls' statistics.

:func:`group_forward` computes exact whole-group statistics over several
chunks, and :func:`bn_statistics` also takes precomputed per-layer statistics.

This module imports torch only (no scikit-learn, no skorch), so it can be used
from a plain PyTorch training loop.
"""

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm, _LazyNormBase

__all__ = [
    "GroupBatchNorm",
    "GroupBatchNorm1d",
    "GroupBatchNorm2d",
    "GroupBatchNorm3d",
    "bn_statistics",
    "convert_batchnorm",
    "fixed_statistics",
    "gather_statistics",
    "group_forward",
    "group_layers",
    "named_group_layers",
    "watch_degenerate",
]

SOURCES = ("running", "batch", "controls")


@dataclass
class _Source:
    """Where one call's batch-norm statistics come from (never shared)."""

    kind: str  # "running" | "batch" | "controls" | "gather" | "record" | "fixed"
    mask: Tensor | None = None  # (N,) bool, rows whose statistics are used
    stats: dict = field(default_factory=dict)  # layer -> (mean (C,), var (C,))
    acc: dict = field(default_factory=dict)  # layer -> [n, mean (C,), m2 (C,)]


_SOURCE: ContextVar[_Source | None] = ContextVar("sklearn_ben_bn_source", default=None)
# Per-call collector of layers whose statistics were degenerate (see watch_degenerate)
_WATCH: ContextVar[list | None] = ContextVar("sklearn_ben_bn_watch", default=None)


def _wide(x: Tensor) -> Tensor:
    """Half-precision activations as float32, so statistics are summed in fp32."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class _StopForward(Exception):
    """Raised by a layer that has gathered its statistics; ends the pass early."""


class _GroupBatchNormMixin:
    """Forward of a batch-norm layer that reads its statistics source per call."""

    def _reduce_dims(self, x: Tensor) -> list[int]:
        return [0] + list(range(2, x.dim()))

    def _shape(self, x: Tensor) -> list[int]:
        return [1, -1] + [1] * (x.dim() - 2)

    def _normalize(self, x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
        # x: (N, C, *); mean, var: (C,) biased statistics, may carry gradients.
        # Computed in float32 (or wider) whatever x's dtype, as torch's own BN.
        shape = self._shape(x)
        out = (_wide(x) - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        source = _SOURCE.get()
        if source is None:
            return super().forward(x)
        self._check_input_dim(x)
        stats = source.stats.get(self)
        if stats is not None:
            return self._normalize(x, *stats)
        if source.kind == "fixed":
            raise RuntimeError(
                f"No stored statistics for the batch-norm layer {self!r}; "
                "fixed_statistics needs (mean, var) for every layer the network "
                "runs. Gather them with gather_statistics on the same network."
            )
        if source.kind == "record":
            return self._forward_record(x, source)
        if source.kind == "running":
            return self._forward_running(x)
        if source.kind == "batch":
            if _WATCH.get() is not None:
                _watch(self, torch.var(_wide(x), self._reduce_dims(x), unbiased=False))
            return F.batch_norm(
                x, None, None, self.weight, self.bias, True, 0.0, self.eps
            )
        if source.kind == "controls":
            return self._forward_controls(x, source.mask)
        # "gather": merge this chunk's statistics, then stop the pass here.
        rows = x if source.mask is None else self._control_rows(x, source.mask)
        if rows.shape[0] > 0:
            _accumulate(source.acc, self, rows)
        raise _StopForward

    def _forward_running(self, x: Tensor) -> Tensor:
        if self.running_mean is None:
            raise RuntimeError(
                "This batch-norm layer keeps no running statistics "
                "(track_running_stats=False), so source 'running' cannot be "
                "used; use 'batch' or 'controls'."
            )
        return F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            False,
            0.0,
            self.eps,
        )

    def _control_rows(self, x: Tensor, mask: Tensor | None) -> Tensor:
        if mask is None or mask.shape[0] != x.shape[0]:
            raise RuntimeError(
                "Batch-norm statistics from 'controls' need a control mask with "
                f"one entry per row, but got {None if mask is None else mask.shape[0]}"
                f" for a batch of {x.shape[0]}."
            )
        return x[mask]

    def _forward_record(self, x: Tensor, source: _Source) -> Tensor:
        # One pass over a whole group: normalise with its statistics, keep them.
        rows = x if source.mask is None else self._control_rows(x, source.mask)
        if rows.shape[0] == 0:
            raise RuntimeError(
                "A batch-norm layer saw no rows to compute statistics from (no "
                "control rows in the group)."
            )
        var, mean = torch.var_mean(
            _wide(rows), dim=self._reduce_dims(rows), unbiased=False
        )
        dtype = self.weight.dtype if self.weight is not None else torch.float32
        source.stats[self] = (mean.to(dtype), var.to(dtype))
        return self._normalize(x, *source.stats[self])

    def _forward_controls(self, x: Tensor, mask: Tensor | None) -> Tensor:
        xc = _wide(self._control_rows(x, mask))  # (n_controls, C, *)
        dims = self._reduce_dims(xc)
        var, mean = torch.var_mean(xc, dim=dims, unbiased=False)  # (C,), (C,)
        _watch(self, var)
        if self.training and self.track_running_stats:
            n = xc.numel() / xc.shape[1]
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 0.1
                unbiased = var * n / max(n - 1, 1)
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(unbiased.detach(), m)
        return self._normalize(x, mean, var)


def _accumulate(acc: dict, layer: nn.Module, rows: Tensor) -> None:
    """Merge the per-channel mean and M2 of ``rows`` into ``acc[layer]``.

    Each chunk's statistics come from one fused reduction in the input's
    dtype (no float64 copy of the activations); chunks are merged with Chan
    et al.'s pairwise update in float64, so that the statistics of a group
    seen in chunks equal those of the group seen at once.
    """
    dims = layer._reduce_dims(rows)
    rows = _wide(rows.detach())
    var_b, mean_b = torch.var_mean(rows, dim=dims, unbiased=False)  # (C,)
    n_b = rows.numel() // rows.shape[1]
    mean_b, m2_b = mean_b.double(), var_b.double() * n_b
    if layer not in acc:
        acc[layer] = [n_b, mean_b, m2_b]
        return
    n_a, mean_a, m2_a = acc[layer]
    n = n_a + n_b
    delta = mean_b - mean_a
    acc[layer] = [
        n,
        mean_a + delta * (n_b / n),
        m2_a + m2_b + delta**2 * (n_a * n_b / n),
    ]


class GroupBatchNorm1d(_GroupBatchNormMixin, nn.BatchNorm1d):
    """``BatchNorm1d`` whose statistics can come from a group or its controls.

    Behaves exactly as :class:`torch.nn.BatchNorm1d` outside a
    :func:`bn_statistics` block. Create it with :func:`convert_batchnorm`.
    """


class GroupBatchNorm2d(_GroupBatchNormMixin, nn.BatchNorm2d):
    """``BatchNorm2d`` whose statistics can come from a group or its controls.

    Behaves exactly as :class:`torch.nn.BatchNorm2d` outside a
    :func:`bn_statistics` block. Create it with :func:`convert_batchnorm`.
    """


class GroupBatchNorm3d(_GroupBatchNormMixin, nn.BatchNorm3d):
    """``BatchNorm3d`` whose statistics can come from a group or its controls.

    Behaves exactly as :class:`torch.nn.BatchNorm3d` outside a
    :func:`bn_statistics` block. Create it with :func:`convert_batchnorm`.
    """


class GroupBatchNorm(_GroupBatchNormMixin, _BatchNorm):
    """Batch norm over inputs of any rank ``(N, C, *)``: the twin of ``SyncBatchNorm``.

    A converted ``torch.nn.SyncBatchNorm`` becomes this layer and normalises
    each process's batch on its own: in BEN every batch is one plate, and
    syncing statistics across devices would mix plates.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")


_CONVERSIONS = {
    nn.BatchNorm1d: GroupBatchNorm1d,
    nn.BatchNorm2d: GroupBatchNorm2d,
    nn.BatchNorm3d: GroupBatchNorm3d,
    nn.SyncBatchNorm: GroupBatchNorm,
}
_PLAIN_FORWARDS = {_BatchNorm.forward, nn.SyncBatchNorm.forward}


def _twin_class(layer: nn.Module, name: str) -> type | None:
    """The group-wise class replacing ``layer``, None if it is no batch norm."""
    if isinstance(layer, _GroupBatchNormMixin) or not isinstance(layer, _BatchNorm):
        return None
    where = f"{type(layer).__name__} at {name!r}" if name else type(layer).__name__
    if isinstance(layer, _LazyNormBase) and layer.has_uninitialized_params():
        raise TypeError(
            f"{where} is a lazy batch-norm layer that has not seen data yet, so "
            "it cannot be converted; run one forward pass on a sample batch "
            "first (that materialises it), then convert."
        )
    for base, twin in _CONVERSIONS.items():
        if isinstance(layer, base):
            if type(layer).forward not in _PLAIN_FORWARDS:
                raise TypeError(
                    f"{where} subclasses {base.__name__} with its own forward "
                    "(e.g. a fused activation), so its statistics source cannot "
                    "be switched without changing what it computes; replace it "
                    f"by {base.__name__} followed by its extra operations."
                )
            return twin
    raise TypeError(
        f"{where} is a batch-norm layer of a kind sklearn-ben cannot convert; "
        "use torch.nn.BatchNorm1d/2d/3d or SyncBatchNorm."
    )


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every batch-norm layer of ``module`` by its group-wise twin.

    ``BatchNorm1d/2d/3d``, their subclasses that keep torch's forward, and
    ``SyncBatchNorm`` (which becomes a per-process :class:`GroupBatchNorm`)
    are converted; parameters, buffers (running statistics) and
    hyper-parameters are kept, so the converted network computes exactly what
    it did before. Works on any network (torchvision models included) without
    changing its class.

    Parameters
    ----------
    module : torch.nn.Module
        The network; converted in place (a bare batch-norm layer is returned
        converted).

    Returns
    -------
    module : torch.nn.Module
        The same network, with group-wise batch-norm layers.

    Raises
    ------
    TypeError
        For a batch-norm layer that cannot be converted faithfully: a lazy
        layer that has not seen data, or a subclass with its own ``forward``.

    Examples
    --------
    >>> from torch import nn
    >>> from sklearn_ben.batchnorm import convert_batchnorm
    >>> net = convert_batchnorm(nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8)))
    >>> type(net[1]).__name__
    'GroupBatchNorm1d'
    """
    return _convert(module, "")


def _convert(module: nn.Module, name: str) -> nn.Module:
    twin = _twin_class(module, name)
    if twin is not None:
        converted = twin(
            module.num_features,
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            track_running_stats=module.track_running_stats,
            device=_device_of(module),
        )
        converted.load_state_dict(module.state_dict())
        converted.train(module.training)
        return converted
    for child_name, child in module.named_children():
        path = f"{name}.{child_name}" if name else child_name
        setattr(module, child_name, _convert(child, path))
    return module


def _device_of(module: nn.Module) -> torch.device | None:
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return None


def group_layers(module: nn.Module) -> list[nn.Module]:
    """Return the group-wise batch-norm layers of ``module``, in order."""
    return [m for m in module.modules() if isinstance(m, _GroupBatchNormMixin)]


def named_group_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """Return ``(name, layer)`` for the group-wise batch-norm layers of ``module``."""
    return [
        (name, m)
        for name, m in module.named_modules()
        if isinstance(m, _GroupBatchNormMixin)
    ]


def check_source(source: str) -> str:
    """Return ``source`` if it names a statistics source, else raise ValueError."""
    if source not in SOURCES:
        raise ValueError(
            f"Unknown batch-norm statistics source {source!r}; expected one of "
            f"{SOURCES}."
        )
    return source


@contextmanager
def bn_statistics(
    source: str,
    *,
    mask: Tensor | None = None,
    stats: Mapping[nn.Module, tuple[Tensor, Tensor]] | None = None,
) -> Iterator[None]:
    """Choose, for the calls made inside the block, where BN statistics come from.

    The choice is held in a ``contextvars.ContextVar``: it applies to every
    group-wise batch-norm layer run by this thread (or asyncio task) inside
    the block, and to no other thread. Layers are not modified.

    Parameters
    ----------
    source : {"running", "batch", "controls"}
        Where the statistics come from (see the module docstring).
    mask : torch.Tensor of bool, shape (n_rows,), default=None
        The control rows, for ``source="controls"``.
    stats : mapping, default=None
        ``{layer: (mean, var)}``: fixed per-channel statistics (biased
        variance) for some layers; they take precedence over ``source``.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from sklearn_ben.batchnorm import bn_statistics, convert_batchnorm
    >>> net = convert_batchnorm(nn.Sequential(nn.BatchNorm1d(2))).eval()
    >>> x = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 11.0]])
    >>> with bn_statistics("controls", mask=torch.tensor([True, True, False])):
    ...     out = net(x)
    >>> out[:, 0]  # normalised with the mean and std of the two controls
    tensor([-1.0000,  1.0000,  3.0000], grad_fn=<SelectBackward0>)
    """
    check_source(source)
    with _scoped(_Source(source, mask, dict(stats or {}))):
        yield


@contextmanager
def fixed_statistics(
    stats: Mapping[nn.Module, tuple[Tensor, Tensor]],
) -> Iterator[None]:
    """Normalise every batch-norm layer with stored statistics, whatever the batch.

    Inside the block each group-wise batch-norm layer normalises with its
    ``(mean, var)`` from ``stats`` (as gathered by :func:`gather_statistics`),
    so the output of a row does not depend on the other rows of the batch: a
    single image gets exactly the output it gets inside its whole group. A
    layer missing from ``stats`` raises ``RuntimeError`` rather than falling
    back to any other source. Thread-safe as :func:`bn_statistics`.

    Parameters
    ----------
    stats : mapping
        ``{layer: (mean, var)}``, per-channel statistics (biased variance) of
        every group-wise batch-norm layer the forward pass runs.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from sklearn_ben.batchnorm import (
    ...     bn_statistics, convert_batchnorm, fixed_statistics, gather_statistics)
    >>> net = convert_batchnorm(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)))
    >>> plate = torch.randn(10, 3)
    >>> with torch.no_grad():
    ...     stats = gather_statistics(net, lambda: [(plate, None)], use_controls=False)
    ...     with fixed_statistics(stats):
    ...         one = net(plate[:1])  # a single row, normalised as in its plate
    ...     with bn_statistics("batch"):  # the whole plate at once
    ...         whole = net(plate)
    >>> torch.allclose(one, whole[:1], atol=1e-5)
    True
    """
    with _scoped(_Source("fixed", stats=dict(stats))):
        yield


@contextmanager
def _scoped(source: _Source) -> Iterator[_Source]:
    token = _SOURCE.set(source)
    try:
        yield source
    finally:
        _SOURCE.reset(token)


Chunks = Callable[[], Iterable[tuple[Tensor, Tensor | None]]]


def group_forward(
    module: nn.Module,
    chunks: Chunks,
    *,
    use_controls: bool,
    cache_bytes: int | None = None,
) -> Tensor:
    """Forward one group (plate) with its own batch-norm statistics.

    Parameters
    ----------
    module : torch.nn.Module
        A converted network, normally in eval mode (its train/eval mode is
        neither read nor changed for batch norm).
    chunks : callable
        Returns, each time it is called, an iterable over the group's samples
        in chunks ``(x, mask)``: inputs and the boolean control mask of the
        chunk (``None`` when ``use_controls`` is False). Called once, so each
        input is read once, unless the inputs exceed ``cache_bytes``.
    use_controls : bool
        Statistics from the control rows only (True) or from all rows (False).
    cache_bytes : int or None, default=None
        Host memory for the group's values kept between stages (two stages
        at a time); None is 8 GiB. Past it the method falls back to block
        caching (the inputs are read once more), then to fewer cached
        boundaries, then to reading the inputs again for each pass, with the
        same results.

    Returns
    -------
    out : torch.Tensor
        The outputs of the group's rows, in the order of the chunks.

    Notes
    -----
    With one chunk this is one forward pass with batch statistics. With
    several, the statistics of each layer depend on those of the layers before
    it, so they are gathered layer by layer: pass ``k`` runs every chunk up to
    the ``k``-th batch-norm layer (the earlier ones normalising with the
    group's statistics found so far), merges its statistics over the chunks,
    and stops there. The last pass normalises every layer with whole-group
    statistics, so the outputs equal those of the single pass up to float
    rounding, with device memory bounded by the chunk size. A layer called
    twice in one forward pass gets the statistics of its first call. All of
    this state lives in the call, so concurrent calls do not interfere.

    Each input is read once, and the passes cost about one forward pass of
    the network in chunks: the network is traced with ``torch.fx`` and run
    in stages, each chunk stopping at the next batch-norm layer whose
    statistics are unknown, with the values still needed kept on the host
    between stages, so every layer runs once per chunk. Networks that
    ``torch.fx`` cannot trace (data-dependent control flow, forward hooks
    on modules the trace would go through) fall back to block caching when
    they are chains of blocks (``nn.Sequential``, torchvision ResNets, the
    built-in networks, modules defining ``sklearn_ben_blocks()``; each block
    runs about once per batch-norm layer inside it, plus once), and to one
    partial pass over the whole network per batch-norm layer otherwise.
    Results are equal whichever method runs.
    """
    first, resumed = _first_two(chunks)
    if len(first) == 1:
        x, mask = first[0]
        source = "controls" if use_controls else "batch"
        with bn_statistics(source, mask=mask):
            return module(x)
    return _blocks().gather_chunked(
        module, resumed, use_controls, _Source("gather"), **_budget(cache_bytes)
    )


def gather_statistics(
    module: nn.Module,
    chunks: Chunks,
    *,
    use_controls: bool,
    cache_bytes: int | None = None,
) -> dict[nn.Module, tuple[Tensor, Tensor]]:
    """Exact whole-group statistics ``{layer: (mean, var)}`` of every BN layer.

    Same arguments as :func:`group_forward`; the statistics are those that
    :func:`group_forward` normalises with (biased variance, in the layers'
    dtype), so ``bn_statistics("batch", stats=...)`` reproduces its outputs
    for any subset of the group.
    """
    first, resumed = _first_two(chunks)
    if len(first) == 1:  # the whole group at once: one recording pass
        x, mask = first[0]
        source = _Source("record", mask if use_controls else None)
        with _scoped(source):
            module(x)
        return dict(source.stats)
    source = _Source("gather")
    _blocks().gather_chunked(
        module, resumed, use_controls, source, outputs=False, **_budget(cache_bytes)
    )
    return dict(source.stats)


def _blocks():
    from sklearn_ben import _blocks  # block caching builds on this module

    return _blocks


def _budget(cache_bytes: int | None) -> dict:
    return {} if cache_bytes is None else {"cache_bytes": cache_bytes}


def _first_two(chunks: Chunks) -> tuple[list, Chunks]:
    """The first two chunks, and a callable replaying them then the rest once.

    So the chunks are read once; later calls (if any) call ``chunks`` again.
    """
    if not callable(chunks):
        raise TypeError("chunks must be a callable returning (x, mask) pairs.")
    rest = iter(chunks())
    first = list(itertools.islice(rest, 2))
    pending = [itertools.chain(first, rest)]

    def resumed():
        return pending.pop() if pending else chunks()

    return first, resumed


def _freeze_gathered(source: _Source, layers: list) -> None:
    if not source.acc:
        raise RuntimeError(
            "A batch-norm layer saw no rows to compute statistics from (no "
            "control rows in any chunk)."
        )
    for layer in layers:
        if layer in source.acc:
            n, mean, m2 = source.acc.pop(layer)
            dtype = layer.weight.dtype if layer.weight is not None else torch.float32
            source.stats[layer] = (mean.to(dtype), (m2 / n).to(dtype))
            _watch(layer, source.stats[layer][1])


@contextmanager
def watch_degenerate() -> Iterator[list]:
    """Collect, for the calls inside the block, layers with degenerate statistics.

    A layer's statistics are degenerate when some channel has (near) zero
    variance in the rows it normalises with (e.g. identical control wells)
    while training saw that channel vary: normalising then divides by
    ``sqrt(eps)`` and amplifies that channel about 300-fold. The collector is
    call-scoped, like :func:`bn_statistics`.

    Yields
    ------
    found : list
        The layers found, appended as they run.
    """
    found: list = []
    token = _WATCH.set(found)
    try:
        yield found
    finally:
        _WATCH.reset(token)


def _watch(layer, var: Tensor) -> None:
    found = _WATCH.get()
    if found is None:
        return
    tiny = var.detach().float() < layer.eps  # (C,)
    if layer.running_var is not None:
        tiny &= layer.running_var.float() > 100 * layer.eps
    if bool(tiny.any()):
        found.append(layer)


def _take(iterable: Iterable, n: int) -> Iterator:
    for i, item in enumerate(iterable):
        if i >= n:
            return
        yield item
