"""Inference by plate: every group through the network with its own statistics.

This is the inference half of the engine. It imports numpy and torch only (no
scikit-learn, no skorch), so a plain PyTorch user can call
:func:`predict_by_group` on any network converted with
:func:`~sklearn_ben.batchnorm.convert_batchnorm`. The network is only read:
its train/eval mode is not changed, no buffer is written, and all per-call
state lives in the call, so several threads may predict with one network at
once.
"""

import warnings
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from sklearn_ben._data import BatchDataset
from sklearn_ben.batchnorm import (
    bn_statistics,
    check_source,
    fixed_statistics,
    gather_statistics,
    group_forward,
    watch_degenerate,
)
from sklearn_ben.exceptions import DegenerateStatisticsWarning

__all__ = ["autocast", "group_indices", "group_statistics", "predict_by_group"]

#: ``{layer: (mean, var)}``: the statistics of every batch-norm layer for one group
LayerStats = Mapping[nn.Module, tuple[Tensor, Tensor]]


def autocast(device, dtype: torch.dtype | None):
    """``torch.autocast`` for ``dtype`` on ``device``, a no-op for ``None``."""
    device_type = torch.device(device).type
    return torch.autocast(device_type, dtype=dtype, enabled=dtype is not None)


def group_indices(groups) -> list[np.ndarray]:
    """Indices of each group, groups in order of first appearance."""
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    order = np.argsort(first)
    return [np.flatnonzero(inverse == k) for k in order]


def predict_by_group(
    module: nn.Module,
    X,
    groups=None,
    controls=None,
    *,
    source: str = "batch",
    chunk_size: int | None = None,
    device="cpu",
    dtype: torch.dtype | None = None,
    intensity="dtype",
    inputs: Callable[[np.ndarray], Tensor] | None = None,
    stored: Mapping[object, LayerStats] | None = None,
) -> Tensor:
    """Outputs of ``module`` for every row, each group with its own BN statistics.

    Parameters
    ----------
    module : torch.nn.Module
        A network converted by :func:`~sklearn_ben.batchnorm.convert_batchnorm`,
        normally in eval mode (for dropout and friends); it is not modified.
    X : ndarray of shape (n_samples, ...) or torch Dataset
        Inputs; integer images are scaled to float32 chunk by chunk.
    groups : array-like of shape (n_samples,), default=None
        Group (plate) of each row; None is one group. Ignored for
        ``source="running"``.
    controls : ndarray of bool, shape (n_samples,), default=None
        Control mask, needed for ``source="controls"``.
    source : {"batch", "controls", "running"}, default="batch"
        Statistics of each whole group, of its controls, or the running
        averages of training (then rows go through in independent chunks).
    chunk_size : int or None, default=None
        Largest number of rows per forward pass; None sends each group at
        once (``source="running"``: chunks of 256). Outputs do not depend on
        it beyond float rounding.
    device : str or torch.device, default="cpu"
        Where the network runs.
    dtype : torch.dtype or None, default=None
        Autocast dtype (e.g. ``torch.bfloat16``); None runs in float32.
    intensity : str or tuple, default="dtype"
        How raw values become float32 inputs (see
        :func:`sklearn_ben._scaling.check_intensity`).
    inputs : callable, default=None
        ``inputs(indices) -> float32 tensor``; by default the rows of ``X``
        scaled by :class:`~sklearn_ben._data.BatchDataset` under ``intensity``.
    stored : mapping, default=None
        ``{group: {layer: (mean, var)}}``, statistics kept from an earlier
        call of :func:`group_statistics`. The rows of these groups are
        normalised with them (any number of rows, even one, and whatever else
        is in the call); the other groups as ``source`` says. Ignored for
        ``source="running"``.

    Returns
    -------
    out : torch.Tensor of shape (n_samples, ...)
        Float32 outputs on the CPU, in the order of ``X``.
    """
    check_source(source)
    get = inputs or BatchDataset(X, intensity=intensity).get_inputs
    n = len(X)
    outputs = None
    with torch.no_grad(), autocast(device, dtype):
        if source == "running":
            size = chunk_size or 256
            parts = (np.arange(i, min(i + size, n)) for i in range(0, n, size))
            results = (
                (idx, _forward_running(module, get, idx, device)) for idx in parts
            )
        else:
            groups = np.zeros(n, dtype=int) if groups is None else np.asarray(groups)
            stored = stored or {}
            results = (
                (
                    idx,
                    _forward_stored(module, get, idx, stats, chunk_size, device)
                    if (stats := stored.get(groups[idx[0]])) is not None
                    else _watched_group(
                        module, get, idx, groups, controls, source, chunk_size, device
                    ),
                )
                for idx in group_indices(groups)
            )
        for idx, out in results:
            if outputs is None:
                outputs = torch.empty((n, *out.shape[1:]))
            outputs[torch.from_numpy(idx)] = out.float().cpu()
    return outputs


def _forward_running(module, get, idx, device):
    with bn_statistics("running"):
        return module(get(idx).to(device))


def _watched_group(module, get, idx, groups, controls, source, chunk_size, device):
    with watch_degenerate() as found:
        out = _forward_group(module, get, idx, controls, source, chunk_size, device)
    if found:
        label = groups[idx[0]]
        label = label.item() if hasattr(label, "item") else label
        rows = "controls" if source == "controls" else "samples"
        warnings.warn(
            f"Plate {label!r}: {len(set(found))} batch-norm layer(s) got (near) "
            f"zero variance in some channel from the plate's {rows}, so those "
            "channels are amplified about 300-fold and its predictions are "
            f"unreliable. Check the plate for identical or constant {rows}, add "
            "more, or use norm='frozen' for it.",
            DegenerateStatisticsWarning,
            stacklevel=4,
        )
    return out


def _forward_group(module, get, idx, controls, source, chunk_size, device):
    use_controls = source == "controls"
    batches = _batches(get, idx, controls, use_controls, chunk_size, device)
    return group_forward(module, batches, use_controls=use_controls)


def _forward_stored(module, get, idx, stats, chunk_size, device):
    stats = {layer: (m.to(device), v.to(device)) for layer, (m, v) in stats.items()}
    size = chunk_size or len(idx)
    with fixed_statistics(stats):
        return torch.cat(
            [
                module(get(idx[i : i + size]).to(device))
                for i in range(0, len(idx), size)
            ]
        )


def group_statistics(
    module: nn.Module,
    X,
    groups=None,
    controls=None,
    *,
    use_controls: bool = False,
    chunk_size: int | None = None,
    device="cpu",
    dtype: torch.dtype | None = None,
    intensity="dtype",
    inputs: Callable[[np.ndarray], Tensor] | None = None,
) -> dict[object, dict[nn.Module, tuple[Tensor, Tensor]]]:
    """Exact batch-norm statistics of each group, to keep and reuse.

    Parameters
    ----------
    module : torch.nn.Module
        A converted network (see :func:`predict_by_group`); not modified.
    X : ndarray of shape (n_samples, ...) or torch Dataset
        Inputs.
    groups : array-like of shape (n_samples,), default=None
        Group (plate) of each row; None is one group.
    controls : ndarray of bool, shape (n_samples,), default=None
        Control mask, needed for ``use_controls=True``.
    use_controls : bool, default=False
        Statistics of each group's control rows (True) or of all its rows.
    chunk_size, device, dtype, intensity, inputs
        As in :func:`predict_by_group` (use the same ``intensity`` there); the
        statistics do not depend on ``chunk_size`` beyond float rounding.

    Returns
    -------
    stats : dict
        ``{group: {layer: (mean, var)}}`` on ``device``, groups in order of
        first appearance, ready for ``predict_by_group(..., stored=stats)``.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from torch import nn
    >>> from sklearn_ben.batchnorm import convert_batchnorm
    >>> from sklearn_ben.inference import group_statistics, predict_by_group
    >>> net = convert_batchnorm(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)))
    >>> X = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    >>> plates = np.repeat(["p1", "p2"], 10)
    >>> stats = group_statistics(net, X, plates)
    >>> whole = predict_by_group(net, X, plates)
    >>> one = predict_by_group(net, X[:1], plates[:1], stored=stats)
    >>> torch.allclose(one, whole[:1], atol=1e-5)
    True
    """
    if use_controls and controls is None:
        raise ValueError("use_controls=True needs a control mask; got controls=None.")
    get = inputs or BatchDataset(X, intensity=intensity).get_inputs
    n = len(X)
    groups = np.zeros(n, dtype=int) if groups is None else np.asarray(groups)
    out = {}
    with torch.no_grad(), autocast(device, dtype):
        for idx in group_indices(groups):
            batches = _batches(get, idx, controls, use_controls, chunk_size, device)
            stats = gather_statistics(module, batches, use_controls=use_controls)
            out[groups[idx[0]]] = stats
    return out


def _batches(get, idx, controls, use_controls, chunk_size, device):
    size = chunk_size or len(idx)
    chunks = [idx[i : i + size] for i in range(0, len(idx), size)]

    def batches():
        for c in chunks:
            mask = torch.from_numpy(controls[c]).to(device) if use_controls else None
            yield get(c).to(device), mask

    return batches
