"""Exact group statistics over chunks, block by block (engine, torch only).

The statistics of a batch-norm layer depend on those of every layer before
it, so a group seen in chunks is gathered layer by layer: pass ``k`` runs the
chunks up to the ``k``-th layer. Run over the whole network, that re-runs the
early layers once per later batch-norm layer. When the network is a chain of
blocks (an ``nn.Sequential``, a torchvision ResNet, a
:class:`~sklearn_ben._nets.HeadNet`, or any module with a
``sklearn_ben_blocks()`` method listing modules whose composition is its
forward), the chain is cut into *segments*, each starting at a block that
holds batch-norm layers and running on to the next such block, and the
group's activations are kept (on the host) at segment boundaries. Each
segment is then gathered layer by layer from its cached input, and run once
more to give the next boundary: a segment with ``k`` batch-norm layers runs
about ``k + 1`` times, whatever comes before it. Other graphs are one
segment: the layer-by-layer method over the whole network, from inputs read
once.

The boundary activations (two boundaries at a time, the inputs included)
are kept within ``cache_bytes``; past it the rest of the network becomes one
segment, and past it for the inputs themselves they are read again for each
pass (the method before block caching). Results are equal in every case.
"""

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from sklearn_ben import batchnorm as bn

__all__ = ["CACHE_BYTES", "gather_by_blocks", "sequential_blocks"]

#: Default host memory for boundary activations of one group: 8 GiB.
CACHE_BYTES = 8 * 2**30

_HOST = torch.device("cpu")


def _is_torchvision_resnet(module: nn.Module) -> bool:
    kind = type(module)
    return kind.__name__ == "ResNet" and kind.__module__ == "torchvision.models.resnet"


def sequential_blocks(module: nn.Module) -> list[nn.Module] | None:
    """Modules whose composition computes ``module(x)``, or None if unknown.

    Nested chains are flattened, so a torchvision ResNet gives its stem
    layers, its residual blocks one by one, and its pooling and classifier.
    """
    if type(module).forward is nn.Sequential.forward:
        children = list(module)
    elif callable(getattr(module, "sklearn_ben_blocks", None)):
        children = list(module.sklearn_ben_blocks())
    elif _is_torchvision_resnet(module):
        m = module
        children = [m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2]
        children += [m.layer3, m.layer4, m.avgpool, nn.Flatten(1), m.fc]
    else:
        return None
    blocks = []
    for child in children:
        blocks.extend(sequential_blocks(child) or [child])
    return blocks


def _segments(module: nn.Module) -> list[nn.Module]:
    """Cut the chain before each block that holds batch-norm layers."""
    blocks = sequential_blocks(module)
    if blocks is None:
        return [module]
    segments: list[list[nn.Module]] = [[]]
    for block in blocks:
        if bn.group_layers(block) and segments[-1]:
            segments.append([])
        segments[-1].append(block)
    return [seg[0] if len(seg) == 1 else nn.Sequential(*seg) for seg in segments]


def _nbytes(x: Tensor) -> int:
    return x.numel() * x.element_size()


def _read_once(chunks: Iterator, budget: int):
    """The group's chunks on the host, or None when they exceed ``budget``."""
    cached, size = [], 0
    for x, mask in chunks:
        size += _nbytes(x)
        if size > budget:
            return None
        cached.append((x.to(_HOST), mask))
    return cached


def gather_by_blocks(
    module: nn.Module,
    chunks,
    use_controls: bool,
    source,
    *,
    outputs: bool = True,
    cache_bytes: int = CACHE_BYTES,
):
    """Gather whole-group statistics into ``source.stats``; outputs if asked.

    ``chunks`` is the callable of :func:`~sklearn_ben.batchnorm.group_forward`;
    it is called once (each image read once) unless the inputs alone exceed
    ``cache_bytes``. Returns the group's outputs (``outputs=True``) or None.
    """
    boundary = _read_once(iter(chunks()), cache_bytes)
    if boundary is None:  # inputs past the budget: read them again per pass
        return _gather(module, chunks, use_controls, source, outputs)
    device = _device(module, boundary)
    segments = _segments(module)
    for i, segment in enumerate(segments):
        if i == len(segments) - 1:
            feed = _feed(boundary, device)
            return _gather(segment, feed, use_controls, source, outputs, final=outputs)
        _gather(
            segment, _feed(boundary, device), use_controls, source, False, final=False
        )
        nxt = _advance(segment, boundary, device, source, cache_bytes)
        if nxt is None:  # past the budget: the rest is one segment
            rest = nn.Sequential(*segments[i + 1 :])
            feed = _feed_through(segment, boundary, device, source)
            return _gather(rest, feed, use_controls, source, outputs, final=outputs)
        boundary = nxt
    return None


def _device(module: nn.Module, boundary) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    return boundary[0][0].device


def _feed(boundary, device):
    def feed():
        for x, mask in boundary:
            yield x.to(device), mask

    return feed


def _advance(segment, boundary, device, source, budget):
    """``segment``'s output for every chunk, on the host; None past ``budget``."""
    nxt, size = [], sum(_nbytes(x) for x, _ in boundary)
    with bn._scoped(bn._Source("fixed", stats=source.stats)):
        for x, mask in boundary:
            y = segment(x.to(device))
            size += _nbytes(y)
            if size > budget:
                return None
            nxt.append((y.to(_HOST), mask))
    return nxt


def _feed_through(segment, boundary, device, source):
    """Chunks of ``segment``'s output, computed again at each call."""

    def feed():
        for x, mask in boundary:
            with bn._scoped(bn._Source("fixed", stats=source.stats)):
                y = segment(x.to(device))
            yield y, mask

    return feed


def _gather(module, chunks, use_controls, source, outputs=True, *, final=True):
    """Layer by layer over ``module``'s batch-norm layers, from ``chunks``.

    With ``final`` False, stops once every layer of ``module`` has its
    statistics (no output pass).
    """
    layers = bn.group_layers(module)
    with bn._scoped(source):
        while True:
            if not final and all(layer in source.stats for layer in layers):
                return None
            results, stopped = [], False
            for x, mask in chunks():
                source.mask = mask if use_controls else None
                try:
                    out = module(x)
                except bn._StopForward:
                    stopped = True
                else:
                    if outputs:
                        results.append(out)
            if not stopped:
                return torch.cat(results) if outputs else None
            bn._freeze_gathered(source, layers)
