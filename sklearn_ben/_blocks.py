"""Exact group statistics over chunks, at a bounded cost (engine, torch only).

The statistics of a batch-norm layer depend on those of every layer before
it, so a group seen in chunks cannot be normalised in one pass. Three exact
methods, tried in this order:

1. **Staged graph.** The network is traced with ``torch.fx`` (batch-norm
   layers kept whole) and run node by node over the chunks, stopping each
   chunk at the first batch-norm layer whose statistics are still unknown.
   The values the rest of the graph needs at that cut (the layer's input, a
   residual branch, ...) are kept on the host; once every chunk has reached
   the cut, the layer's statistics are merged over the chunks and the next
   stage resumes from the kept values. Each node runs once per chunk, and
   each input is read once. Used for any graph ``torch.fx`` can trace
   (torchvision ResNets, the built-in networks, most feed-forward models);
   a module with forward hooks outside its leaf layers is not traced (the
   trace would drop them).
2. **Block chain.** For networks that are chains of blocks but cannot be
   traced (an ``nn.Sequential``, a torchvision ResNet, a
   :class:`~sklearn_ben._nets.HeadNet`, or any module with a
   ``sklearn_ben_blocks()`` method listing modules whose composition is its
   forward), the chain is cut into *segments*, each starting at a block that
   holds batch-norm layers, and the group's activations are kept (on the
   host) at segment boundaries. Each segment is gathered layer by layer from
   its cached input and run once more to give the next boundary: a segment
   with ``k`` batch-norm layers runs about ``k + 1`` times.
3. **Layer by layer.** Other graphs: pass ``k`` runs the chunks through the
   whole network up to the ``k``-th batch-norm layer, from inputs read once.

Kept activations (two stages at a time, the inputs included) are bounded by
``cache_bytes``. Past it the staged method gives way to the block chain
(whose boundaries are fewer and smaller), which reads the inputs once more;
past it there, the block chain keeps fewer boundaries, and past it for the
inputs alone, they are read again for each pass. Results are equal in every
case.

Tracing patches ``torch.nn.Module.__call__`` for its duration (that is how
``torch.fx`` works); the tracer here lets every other thread's modules run
untouched, and traces one at a time, so predictions from several threads
stay exact.
"""

import inspect
import logging
import threading
from collections.abc import Iterator

import torch
from torch import Tensor, fx, nn

from sklearn_ben import batchnorm as bn

__all__ = ["CACHE_BYTES", "gather_chunked", "sequential_blocks", "staged_graph"]

#: Default host memory for boundary activations of one group: 8 GiB.
CACHE_BYTES = 8 * 2**30

_HOST = torch.device("cpu")
_LOG = logging.getLogger("sklearn_ben")
_TRACE_LOCK = threading.Lock()


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


def gather_chunked(
    module: nn.Module,
    chunks,
    use_controls: bool,
    source,
    *,
    outputs: bool = True,
    cache_bytes: int = CACHE_BYTES,
    method: str = "auto",
):
    """Gather whole-group statistics into ``source.stats``; outputs if asked.

    ``chunks`` is the callable of :func:`~sklearn_ben.batchnorm.group_forward`;
    it is called once (each image read once) unless the kept activations
    exceed ``cache_bytes``. ``method`` is "auto" (the staged graph when the
    network can be traced, else the block chain), or one of "graph",
    "blocks", "layers" to force a method (for benchmarks and tests). Returns
    the group's outputs (``outputs=True``) or None.
    """
    if method in ("auto", "graph"):
        traced = staged_graph(module)
        if traced is None and method == "graph":
            raise ValueError(f"torch.fx cannot trace {type(module).__name__}.")
        if traced is not None:
            done = _run_staged(
                *traced, chunks, use_controls, source, outputs, cache_bytes
            )
            if done is not _OVER_BUDGET:
                return done
            # Past the budget: the statistics found so far are exact and kept;
            # the block chain (smaller boundaries) reads the inputs again.
    if method == "layers":
        return _gather(module, chunks, use_controls, source, outputs)
    return gather_by_blocks(
        module, chunks, use_controls, source, outputs=outputs, cache_bytes=cache_bytes
    )


class _Tracer(fx.Tracer):
    """A ``torch.fx`` tracer that keeps batch-norm layers whole.

    While it traces, ``torch.fx`` patches ``nn.Module.__call__`` and
    ``__getattr__`` for the whole process; modules run by other threads then
    reach this tracer, which lets them run as if nothing were patched.
    """

    def __init__(self):
        super().__init__()
        self._thread = threading.get_ident()

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, bn._GroupBatchNormMixin):
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m, forward, args, kwargs):
        if threading.get_ident() != self._thread:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        if threading.get_ident() != self._thread:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)


def staged_graph(module: nn.Module) -> tuple[nn.Module, fx.Graph] | None:
    """``(module, graph)`` traced with batch-norm layers whole, None if untraceable.

    Only the first argument of ``forward`` is traced; the others take their
    defaults. A module with forward hooks on a module the trace would go
    through (and so drop) is not traced.
    """
    tracer = _Tracer()
    if _hooks_outside_leaves(module, tracer):
        return None
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    if not params or any(p.default is inspect.Parameter.empty for p in params[1:]):
        return None
    concrete = {p.name: p.default for p in params[1:]}
    try:
        with _TRACE_LOCK:
            graph = tracer.trace(module, concrete_args=concrete or None)
    except Exception as exc:  # any graph fx cannot trace: an exact fallback
        _LOG.info(
            "chunked plate statistics: torch.fx cannot trace %s (%s); using the "
            "slower block-chain or layer-by-layer method, with equal results",
            type(module).__name__,
            exc,
        )
        return None
    return module, graph


def _hooks_outside_leaves(module: nn.Module, tracer: fx.Tracer) -> bool:
    from torch.nn.modules import module as torch_module

    for name in ("_global_forward_hooks", "_global_forward_pre_hooks"):
        if getattr(torch_module, name, None):
            return True

    def walk(m: nn.Module, name: str) -> bool:
        if name and tracer.is_leaf_module(m, name):
            return False
        if m._forward_hooks or m._forward_pre_hooks:
            return True
        return any(walk(c, f"{name}.{n}".lstrip(".")) for n, c in m.named_children())

    return walk(module, "")


_OVER_BUDGET = object()


def _run_staged(root, graph, chunks, use_controls, source, outputs, budget):
    """Run ``graph`` over the chunks stage by stage; see the module docstring.

    Returns the outputs (or None), or ``_OVER_BUDGET`` when the kept values
    would exceed ``budget`` bytes (statistics found so far stay in ``source``).
    """
    nodes = list(graph.nodes)
    where = {node: i for i, node in enumerate(nodes)}
    last = {node: max((where[u] for u in node.users), default=-1) for node in nodes}
    dies: dict[int, list] = {}
    for node, i in last.items():
        dies.setdefault(i, []).append(node)
    placeholders = [node for node in nodes if node.op == "placeholder"]
    defaults = {node: node.args[0] if node.args else None for node in placeholders}
    interp = fx.Interpreter(root, garbage_collect_values=False, graph=graph)
    layers = bn.group_layers(root)
    start, kept, kept_size, device = 0, None, 0, None
    with bn._scoped(source):
        while True:
            if kept is None:
                feed = (({**defaults, placeholders[0]: x}, m, 0) for x, m in chunks())
            else:
                feed = _consume(kept, device)
            fresh, results, cut, size, stops = [], [], None, 0, set()
            for env, mask, freed in feed:
                if device is None:
                    device = env[placeholders[0]].device
                source.mask = mask if use_controls else None
                interp.env = env
                stop, out = _run_stage(interp, nodes, start, dies)
                if stops and stop not in stops:
                    raise RuntimeError(
                        "Chunks of one group stopped at different nodes of the "
                        f"traced graph ({_names(nodes, stops)} and "
                        f"{_names(nodes, [stop])}); the graph must not depend "
                        "on the data."
                    )
                stops.add(stop)
                if stop is None:
                    if outputs:
                        results.append(out)
                    continue
                cut = stop
                live = _move({n: v for n, v in env.items() if last[n] >= stop}, _HOST)
                size += _size(live)
                kept_size -= freed
                if size + kept_size > budget:
                    source.acc.clear()  # this stage's partial sums
                    return _OVER_BUDGET
                fresh.append((live, mask))
            if cut is None:  # ran to the output
                return torch.cat(results) if outputs else None
            bn._freeze_gathered(source, list(source.acc))
            if not outputs and all(layer in source.stats for layer in layers):
                return None
            start, kept, kept_size = cut, fresh, size


def _names(nodes, stops) -> str:
    return ", ".join("the output" if i is None else str(nodes[i]) for i in stops)


def _consume(kept: list, device):
    """The kept values chunk by chunk, back on ``device``, released as they go.

    Yields ``(env, mask, host bytes released)``.
    """
    for j, (env, mask) in enumerate(kept):
        kept[j] = None
        yield _move(env, device), mask, _size(env)


def _run_stage(interp, nodes, start, dies):
    """``(cut, None)`` at an unknown batch-norm layer, else ``(None, output)``."""
    env = interp.env
    for i in range(start, len(nodes)):
        node = nodes[i]
        if node.op == "placeholder":
            continue
        try:
            value = interp.run_node(node)
        except bn._StopForward:
            return i, None
        if node.op == "output":
            return None, value
        env[node] = value
        for dead in dies.get(i, ()):
            env.pop(dead, None)
    raise RuntimeError("The traced graph has no output.")


def _move(value, device):
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _move(v, device) for k, v in value.items()}
    if isinstance(value, torch.Size):
        return value
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_move(v, device) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(_move(v, device) for v in value)
    return value


def _size(value) -> int:
    if isinstance(value, Tensor):
        return _nbytes(value)
    if isinstance(value, dict):
        return sum(_size(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_size(v) for v in value)
    return 0


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
