"""Group-wise batch normalisation: the engine under every BEN estimator.

A network's ``BatchNorm1d/2d/3d`` layers are swapped for :class:`GroupBatchNorm1d`
(2d, 3d) by :func:`convert_batchnorm`, which keeps their weights, buffers and
behaviour: until a mode is set, a converted layer is the layer it replaced. The
modes say where the normalisation statistics come from:

``"default"``
    plain PyTorch: batch statistics in training (running averages updated),
    running averages in eval. This is the vanilla ("frozen") baseline.
``"batch"``
    statistics of the current input, running averages untouched.
``"controls"``
    statistics of the rows flagged by the control mask, applied to every row;
    in training the running averages follow the controls' statistics.
``"pending"``
    used by :func:`group_forward` to compute exact whole-group statistics over
    several chunks, one layer at a time (see its Notes).
"""

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "GroupBatchNorm1d",
    "GroupBatchNorm2d",
    "GroupBatchNorm3d",
    "convert_batchnorm",
    "group_forward",
    "bn_mode",
]

_MODES = ("default", "batch", "controls", "pending")


def _wide(x: Tensor) -> Tensor:
    """Half-precision activations as float32, so statistics are summed in fp32."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class _StopForward(Exception):
    """Raised by a layer that has gathered its statistics; ends the pass early."""


class _GroupBatchNormMixin:
    """Forward of a batch-norm layer whose statistics source can be switched."""

    ben_mode: str = "default"
    ben_mask: Tensor | None = None
    ben_stats: tuple[Tensor, Tensor] | None = None
    ben_acc: list | None = None

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
        mode = self.ben_mode
        if mode == "default":
            return super().forward(x)
        self._check_input_dim(x)
        if mode == "batch":
            return F.batch_norm(
                x, None, None, self.weight, self.bias, True, 0.0, self.eps
            )
        if mode == "controls":
            return self._forward_controls(x)
        if mode == "pending":
            return self._forward_pending(x)
        raise ValueError(f"Unknown batch-norm mode {mode!r}; expected one of {_MODES}.")

    def _control_rows(self, x: Tensor) -> Tensor:
        mask = self.ben_mask
        if mask is None or mask.shape[0] != x.shape[0]:
            raise RuntimeError(
                "GroupBatchNorm in mode 'controls' needs a control mask with one "
                f"entry per row, but got {None if mask is None else mask.shape[0]} "
                f"for a batch of {x.shape[0]}."
            )
        return x[mask]

    def _forward_controls(self, x: Tensor) -> Tensor:
        xc = _wide(self._control_rows(x))  # (n_controls, C, *)
        dims = self._reduce_dims(xc)
        mean = xc.mean(dim=dims)  # (C,)
        var = xc.var(dim=dims, unbiased=False)  # (C,)
        if self.training and self.track_running_stats:
            n = xc.numel() / xc.shape[1]
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 0.1
                unbiased = var * n / max(n - 1, 1)
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(unbiased.detach(), m)
        return self._normalize(x, mean, var)

    def _forward_pending(self, x: Tensor) -> Tensor:
        if self.ben_stats is not None:
            mean, var = self.ben_stats
            return self._normalize(x, mean, var)
        rows = x if self.ben_mask is None else self._control_rows(x)
        if rows.shape[0] > 0:
            _accumulate(self, rows)
        raise _StopForward


def _accumulate(layer: _GroupBatchNormMixin, rows: Tensor) -> None:
    """Merge the per-channel mean and M2 of ``rows`` into ``layer.ben_acc``.

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
    if layer.ben_acc is None:
        layer.ben_acc = [n_b, mean_b, m2_b]
        return
    n_a, mean_a, m2_a = layer.ben_acc
    n = n_a + n_b
    delta = mean_b - mean_a
    layer.ben_acc = [
        n,
        mean_a + delta * (n_b / n),
        m2_a + m2_b + delta**2 * (n_a * n_b / n),
    ]


class GroupBatchNorm1d(_GroupBatchNormMixin, nn.BatchNorm1d):
    """``BatchNorm1d`` whose statistics can come from a group or its controls.

    Behaves exactly as :class:`torch.nn.BatchNorm1d` until its mode is changed
    with :func:`bn_mode`. Create it with :func:`convert_batchnorm`.
    """


class GroupBatchNorm2d(_GroupBatchNormMixin, nn.BatchNorm2d):
    """``BatchNorm2d`` whose statistics can come from a group or its controls.

    Behaves exactly as :class:`torch.nn.BatchNorm2d` until its mode is changed
    with :func:`bn_mode`. Create it with :func:`convert_batchnorm`.
    """


class GroupBatchNorm3d(_GroupBatchNormMixin, nn.BatchNorm3d):
    """``BatchNorm3d`` whose statistics can come from a group or its controls.

    Behaves exactly as :class:`torch.nn.BatchNorm3d` until its mode is changed
    with :func:`bn_mode`. Create it with :func:`convert_batchnorm`.
    """


_CONVERSIONS = {
    nn.BatchNorm1d: GroupBatchNorm1d,
    nn.BatchNorm2d: GroupBatchNorm2d,
    nn.BatchNorm3d: GroupBatchNorm3d,
}


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm1d/2d/3d`` in ``module`` by its group-wise twin.

    Parameters, buffers (running statistics) and hyper-parameters are kept, so
    the converted network computes exactly what it did before. Works on any
    network (torchvision models included) without changing its class.

    Parameters
    ----------
    module : torch.nn.Module
        The network; converted in place (a bare batch-norm layer is returned
        converted).

    Returns
    -------
    module : torch.nn.Module
        The same network, with group-wise batch-norm layers.

    Examples
    --------
    >>> from torch import nn
    >>> from sklearn_ben.batchnorm import convert_batchnorm
    >>> net = convert_batchnorm(nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8)))
    >>> type(net[1]).__name__
    'GroupBatchNorm1d'
    """
    new = _CONVERSIONS.get(type(module))
    if new is not None:
        converted = new(
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
    for name, child in module.named_children():
        setattr(module, name, convert_batchnorm(child))
    return module


def _device_of(module: nn.Module) -> torch.device | None:
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return None


def group_layers(module: nn.Module) -> list[_GroupBatchNormMixin]:
    """Return the group-wise batch-norm layers of ``module``."""
    return [m for m in module.modules() if isinstance(m, _GroupBatchNormMixin)]


@contextmanager
def bn_mode(module: nn.Module, mode: str, mask: Tensor | None = None) -> Iterator:
    """Set the statistics source of every group-wise layer for a block of code.

    Parameters
    ----------
    module : torch.nn.Module
        A network converted by :func:`convert_batchnorm`.
    mode : {"default", "batch", "controls", "pending"}
        Where the statistics come from (see the module docstring).
    mask : torch.Tensor of bool, shape (n_rows,), default=None
        The control rows, for ``mode="controls"``.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from sklearn_ben.batchnorm import bn_mode, convert_batchnorm
    >>> net = convert_batchnorm(nn.Sequential(nn.BatchNorm1d(2))).eval()
    >>> x = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 11.0]])
    >>> with bn_mode(net, "controls", mask=torch.tensor([True, True, False])):
    ...     out = net(x)
    >>> out[:, 0]  # normalised with the mean and std of the two controls
    tensor([-1.0000,  1.0000,  3.0000], grad_fn=<SelectBackward0>)
    """
    if mode not in _MODES:
        raise ValueError(f"Unknown batch-norm mode {mode!r}; expected one of {_MODES}.")
    layers = group_layers(module)
    for layer in layers:
        layer.ben_mode, layer.ben_mask = mode, mask
        layer.ben_stats = layer.ben_acc = None
    try:
        yield layers
    finally:
        for layer in layers:
            layer.ben_mode, layer.ben_mask = "default", None
            layer.ben_stats = layer.ben_acc = None


Chunks = Callable[[], Iterable[tuple[Tensor, Tensor | None]]]


def group_forward(module: nn.Module, chunks: Chunks, *, use_controls: bool) -> Tensor:
    """Forward one group (plate) with its own batch-norm statistics.

    Parameters
    ----------
    module : torch.nn.Module
        A converted network, in eval mode.
    chunks : callable
        Returns, each time it is called, an iterable over the group's samples
        in chunks ``(x, mask)``: inputs and the boolean control mask of the
        chunk (``None`` when ``use_controls`` is False). Called once when the
        group comes as one chunk, once per batch-norm layer plus once otherwise.
    use_controls : bool
        Statistics from the control rows only (True) or from all rows (False).

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
    rounding, with memory bounded by the chunk size. A layer called twice in
    one forward pass gets the statistics of its first call.
    """
    if not callable(chunks):
        raise TypeError("chunks must be a callable returning (x, mask) pairs.")
    first = list(_take(chunks(), 2))
    if len(first) == 1:
        x, mask = first[0]
        mode = "controls" if use_controls else "batch"
        with bn_mode(module, mode, mask=mask):
            return module(x)
    with bn_mode(module, "pending") as layers:
        while True:
            outputs, stopped = [], False
            for x, mask in chunks():
                for layer in layers:
                    layer.ben_mask = mask if use_controls else None
                try:
                    outputs.append(module(x))
                except _StopForward:
                    stopped = True
            if not stopped:
                return torch.cat(outputs)
            _freeze_gathered(layers)


def _freeze_gathered(layers: list[_GroupBatchNormMixin]) -> None:
    gathered = [layer for layer in layers if layer.ben_acc is not None]
    if not gathered:
        raise RuntimeError(
            "A batch-norm layer saw no rows to compute statistics from (no "
            "control rows in any chunk)."
        )
    for layer in gathered:
        n, mean, m2 = layer.ben_acc
        dtype = layer.weight.dtype if layer.weight is not None else torch.float32
        layer.ben_stats = (mean.to(dtype), (m2 / n).to(dtype))
        layer.ben_acc = None


def _take(iterable: Iterable, n: int) -> Iterator:
    for i, item in enumerate(iterable):
        if i >= n:
            return
        yield item
