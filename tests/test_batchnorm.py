import copy

import pytest
import torch
import torchvision
from torch import nn

from sklearn_ben.batchnorm import (
    GroupBatchNorm1d,
    GroupBatchNorm2d,
    GroupBatchNorm3d,
    bn_statistics,
    convert_batchnorm,
    gather_statistics,
    group_forward,
    group_layers,
)


def _resnet():
    torch.manual_seed(0)
    return convert_batchnorm(torchvision.models.resnet18(num_classes=4)).eval()


def _chunks(x, mask, size):
    def chunks():
        for i in range(0, len(x), size):
            yield x[i : i + size], None if mask is None else mask[i : i + size]

    return chunks


def _plate(n=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=g) * 2.0 + 0.5
    mask = torch.zeros(n, dtype=torch.bool)
    mask[::3] = True
    return x, mask


@pytest.mark.parametrize(
    "layer, shape",
    [
        (nn.BatchNorm1d(4), (6, 4)),
        (nn.BatchNorm1d(4), (6, 4, 5)),
        (nn.BatchNorm2d(4), (6, 4, 3, 3)),
        (nn.BatchNorm3d(4), (6, 4, 2, 3, 3)),
    ],
)
@pytest.mark.parametrize("training", [True, False])
def test_convert_batchnorm_keeps_behaviour(layer, shape, training):
    torch.manual_seed(0)
    with torch.no_grad():
        layer.running_mean.uniform_(-1, 1)
        layer.weight.uniform_(0.5, 2)
    reference = copy.deepcopy(layer)
    converted = convert_batchnorm(layer)
    x = torch.randn(*shape)
    reference.train(training)
    converted.train(training)
    torch.testing.assert_close(converted(x), reference(x))
    torch.testing.assert_close(converted.running_mean, reference.running_mean)


def test_convert_batchnorm_replaces_every_layer_of_a_torchvision_model():
    net = convert_batchnorm(torchvision.models.resnet18())
    n_plain = sum(type(m) is nn.BatchNorm2d for m in net.modules())
    assert n_plain == 0
    assert len(group_layers(net)) == 20
    assert all(isinstance(m, GroupBatchNorm2d) for m in group_layers(net))


def test_convert_batchnorm_classes():
    net = convert_batchnorm(
        nn.Sequential(nn.BatchNorm1d(2), nn.BatchNorm2d(2), nn.BatchNorm3d(2))
    )
    assert [type(m) for m in net] == [
        GroupBatchNorm1d,
        GroupBatchNorm2d,
        GroupBatchNorm3d,
    ]


def test_group_forward_single_chunk_equals_train_mode_batch_stats():
    net = _resnet()
    x, _ = _plate()
    reference = copy.deepcopy(net).train()
    with torch.no_grad():
        expected = reference(x)
        out = group_forward(net, _chunks(x, None, len(x)), use_controls=False)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", [1, 2, 7, 29])
@pytest.mark.parametrize("use_controls", [False, True])
def test_group_forward_chunked_equals_whole_group(size, use_controls):
    net = _resnet()
    x, mask = _plate()
    mask = mask if use_controls else None
    with torch.no_grad():
        whole = group_forward(net, _chunks(x, mask, len(x)), use_controls=use_controls)
        chunked = group_forward(net, _chunks(x, mask, size), use_controls=use_controls)
    assert (whole - chunked).abs().max().item() <= 1e-4


def test_group_forward_does_not_depend_on_order():
    net = _resnet()
    x, _ = _plate()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = group_forward(net, _chunks(x, None, len(x)), use_controls=False)
        out_perm = group_forward(net, _chunks(x[perm], None, 8), use_controls=False)
    assert (out[perm] - out_perm).abs().max().item() <= 1e-4


def test_group_forward_controls_ignore_non_control_samples():
    net = _resnet()
    x, mask = _plate()
    other = x.clone()
    other[~mask] = torch.randn(int((~mask).sum()), 3, 32, 32) * 5 - 3
    with torch.no_grad():
        out = group_forward(net, _chunks(x, mask, len(x)), use_controls=True)
        out_other = group_forward(net, _chunks(other, mask, 11), use_controls=True)
    assert (out[mask] - out_other[mask]).abs().max().item() <= 1e-4
    # ... while with whole-group statistics the controls' outputs do move
    with torch.no_grad():
        grp = group_forward(net, _chunks(x, None, len(x)), use_controls=False)
        grp_other = group_forward(net, _chunks(other, None, len(x)), use_controls=False)
    assert (grp[mask] - grp_other[mask]).abs().max().item() > 1e-2


@pytest.mark.parametrize("size", [5, 30])
@pytest.mark.parametrize("use_controls", [False, True])
def test_group_forward_never_touches_running_stats(size, use_controls):
    net = _resnet()
    before = copy.deepcopy(net.state_dict())
    x, mask = _plate()
    with torch.no_grad():
        group_forward(net, _chunks(x, mask, size), use_controls=use_controls)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert not any(
        vars(layer).keys() - vars(nn.BatchNorm2d(1)).keys()
        for layer in group_layers(net)
    )


def test_bn_statistics_controls_normalises_with_control_statistics():
    layer = convert_batchnorm(nn.BatchNorm1d(1, affine=False, eps=0.0)).eval()
    x = torch.tensor([[1.0], [3.0], [100.0], [-50.0]])
    mask = torch.tensor([True, True, False, False])
    with bn_statistics("controls", mask=mask):
        out = layer(x)
    # controls: mean 2, biased std 1
    torch.testing.assert_close(out[:, 0], torch.tensor([-1.0, 1.0, 98.0, -52.0]))


def test_bn_statistics_controls_training_has_gradients_and_updates_running_stats():
    layer = convert_batchnorm(nn.BatchNorm1d(3)).train()
    x = torch.randn(8, 3, requires_grad=True)
    mask = torch.tensor([True] * 4 + [False] * 4)
    with bn_statistics("controls", mask=mask):
        out = layer(x)
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    expected = 0.9 * torch.zeros(3) + 0.1 * x[:4].detach().mean(0)
    torch.testing.assert_close(layer.running_mean, expected)


def test_bn_statistics_rejects_unknown_source():
    with pytest.raises(
        ValueError, match="Unknown batch-norm statistics source 'plate'"
    ):
        with bn_statistics("plate"):
            pass


def test_bn_statistics_controls_needs_a_mask():
    layer = convert_batchnorm(nn.BatchNorm1d(2))
    with pytest.raises(RuntimeError, match="need a control mask"):
        with bn_statistics("controls"):
            layer(torch.randn(4, 2))


def test_group_forward_without_any_control_rows_raises():
    net = convert_batchnorm(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))).eval()
    x = torch.randn(6, 2)
    mask = torch.zeros(6, dtype=torch.bool)
    with pytest.raises(RuntimeError, match="saw no rows"):
        group_forward(net, _chunks(x, mask, 3), use_controls=True)


def test_bn_statistics_controls_sums_bfloat16_activations_in_float32():
    layer = convert_batchnorm(nn.BatchNorm1d(3)).eval()
    x = (torch.randn(64, 3) * 3 + 100).to(torch.bfloat16)
    mask = torch.arange(64) % 2 == 0
    with bn_statistics("controls", mask=mask):
        out = layer(x)
        expected = layer(x.float())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, atol=0.05, rtol=0.02)


class _PlainSubclassBN(nn.BatchNorm2d):
    """A user's subclass that keeps torch's forward (e.g. adds an attribute)."""

    tag = "mine"


def test_convert_batchnorm_converts_subclasses_and_syncbatchnorm():
    from sklearn_ben.batchnorm import GroupBatchNorm

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), _PlainSubclassBN(4), nn.Conv2d(4, 4, 1), nn.SyncBatchNorm(4)
    ).eval()
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
        net[3].running_var.uniform_(0.5, 2)
    x = torch.randn(5, 3, 8, 8)
    before = net(x)
    converted = convert_batchnorm(copy.deepcopy(net))
    assert isinstance(converted[1], GroupBatchNorm2d)
    assert isinstance(converted[3], GroupBatchNorm)
    torch.testing.assert_close(converted(x), before)
    # each converted layer now follows the call's statistics source
    with bn_statistics("batch"):
        out = converted(x)
    assert not torch.allclose(out, before)


def test_convert_batchnorm_materialised_lazy_layers_convert():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.LazyBatchNorm2d())
    net(torch.randn(2, 3, 8, 8))  # a forward pass materialises it
    converted = convert_batchnorm(net)
    assert isinstance(converted[1], GroupBatchNorm2d)


class _Residual(nn.Module):
    """A graph that is no chain of blocks: two branches, BN in each."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4))
        self.b = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU())
        self.out = nn.Sequential(nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1))

    def forward(self, x):
        return self.out(self.a(x) + self.b(x)).flatten(1)


class _Untraceable(nn.Module):
    """A forward that branches on the data: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.body = _Residual()

    def forward(self, x):
        if x.sum() > -1e30:  # data-dependent control flow
            return self.body(x)
        return x


def _network(kind):
    torch.manual_seed(0)
    if kind == "resnet":
        return _resnet()
    if kind == "headnet":
        from sklearn_ben._nets import HeadNet
        from sklearn_ben.backbones import SmallCNN

        backbone = SmallCNN(width=4, n_blocks=3).build(3)
        head = nn.Sequential(nn.Linear(16, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
        return convert_batchnorm(HeadNet(backbone, head)).eval()
    if kind == "untraceable":
        return convert_batchnorm(_Untraceable()).eval()
    if kind == "untraceable-chain":
        return convert_batchnorm(nn.Sequential(_Untraceable(), nn.ReLU())).eval()
    return convert_batchnorm(_Residual()).eval()


def _counting(x, mask, size, reads):
    def chunks():
        for i in range(0, len(x), size):
            reads.append(min(size, len(x) - i))
            yield x[i : i + size], None if mask is None else mask[i : i + size]

    return chunks


_KINDS = ["resnet", "headnet", "graph", "untraceable", "untraceable-chain"]


@pytest.mark.parametrize("kind", _KINDS)
@pytest.mark.parametrize("use_controls", [False, True])
@pytest.mark.parametrize("cache_bytes", [None, 10])
def test_group_forward_chunked_reads_each_image_once_and_equals_whole(
    kind, use_controls, cache_bytes
):
    net = _network(kind)
    x, mask = _plate()
    mask = mask if use_controls else None
    reads = []
    with torch.no_grad():
        whole = group_forward(net, _chunks(x, mask, len(x)), use_controls=use_controls)
        chunks = _counting(x, mask, 7, reads)
        out = group_forward(
            net, chunks, use_controls=use_controls, cache_bytes=cache_bytes
        )
    assert (whole - out).abs().max().item() <= 1e-4
    if cache_bytes is None:
        assert sum(reads) == len(x)
    else:  # a budget below the inputs reads them again per pass
        assert sum(reads) > len(x)


@pytest.mark.parametrize("method", ["graph", "blocks", "layers"])
@pytest.mark.parametrize("kind", ["resnet", "headnet", "graph"])
def test_every_chunked_method_equals_the_whole_group(method, kind):
    from sklearn_ben import _blocks
    from sklearn_ben.batchnorm import _Source

    net = _network(kind)
    x, mask = _plate()
    with torch.no_grad():
        whole = gather_statistics(net, _chunks(x, mask, len(x)), use_controls=True)
        ref = group_forward(net, _chunks(x, mask, len(x)), use_controls=True)
        source = _Source("gather")
        out = _blocks.gather_chunked(
            net, _chunks(x, mask, 4), True, source, method=method
        )
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-4)
    assert source.stats.keys() == whole.keys()
    for layer, (mean, var) in whole.items():
        torch.testing.assert_close(source.stats[layer][0], mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(source.stats[layer][1], var, rtol=1e-4, atol=1e-5)


def test_staged_graph_runs_every_layer_once_per_chunk():
    net = _resnet()
    x, mask = _plate()
    calls = {}
    leaves = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for leaf in leaves:  # hooks on leaf layers keep the staged method
        leaf.register_forward_pre_hook(
            lambda m, args: calls.__setitem__(m, calls.get(m, 0) + 1)
        )
    reads = []
    with torch.no_grad():
        group_forward(net, _counting(x, mask, 6, reads), use_controls=True)
    assert sum(reads) == len(x)
    assert {calls[leaf] for leaf in leaves} == {5}  # 30 rows in chunks of 6


def test_staged_graph_over_budget_falls_back_to_block_chain():
    # Inputs fit the budget, the stem's output (64 channels at half size) not.
    net = _resnet()
    x, mask = _plate()
    reads = []
    budget = int(1.5 * x.numel() * x.element_size())
    with torch.no_grad():
        whole = group_forward(net, _chunks(x, mask, len(x)), use_controls=True)
        out = group_forward(
            net, _counting(x, mask, 7, reads), use_controls=True, cache_bytes=budget
        )
    assert (whole - out).abs().max().item() <= 1e-4
    # The staged graph stops reading when it passes the budget; blocks read all.
    assert len(x) < sum(reads) <= 2 * len(x)


def test_staged_graph_not_used_when_hooks_would_be_dropped():
    from sklearn_ben._blocks import staged_graph

    net = _resnet()
    assert staged_graph(net) is not None
    handle = net.layer1[0].register_forward_hook(lambda m, args, out: None)
    assert staged_graph(net) is None  # the trace would go through layer1[0]
    handle.remove()
    net.layer1[0].conv1.register_forward_hook(lambda m, args, out: None)
    assert staged_graph(net) is not None  # a leaf's hooks still run
    assert staged_graph(_network("untraceable")) is None


def test_tracing_leaves_other_threads_forward_untouched():
    # torch.fx patches nn.Module.__call__ while it traces; forwards running in
    # other threads meanwhile must be plain ones, and traces must not collide.
    import sys
    import threading

    net = _resnet()
    x, mask = _plate(n=12)
    with torch.no_grad(), bn_statistics("running"):
        expected = net(x[:4])
    with torch.no_grad():  # the same call, alone: threads must give it exactly
        alone = group_forward(net, _chunks(x, mask, 5), use_controls=True)
    errors, outs = [], []
    call, getattr_ = nn.Module.__call__, nn.Module.__getattr__

    def tracing():
        try:
            for _ in range(15):
                with torch.no_grad():
                    out = group_forward(net, _chunks(x, mask, 5), use_controls=True)
                outs.append(torch.equal(out, alone))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def plain():
        try:
            for _ in range(40):
                with torch.no_grad(), bn_statistics("running"):
                    out = net(x[:4])
                assert isinstance(out, torch.Tensor)
                assert torch.equal(out, expected)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=f) for f in (tracing, tracing, plain)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors
    assert len(outs) == 30 and all(outs)
    assert nn.Module.__call__ is call and nn.Module.__getattr__ is getattr_


def test_group_forward_chunked_runs_each_resnet_block_a_few_times():
    net = _resnet()
    x, _ = _plate()
    calls = {}
    blocks = [net.conv1] + [b for layer in (net.layer1, net.layer4) for b in layer]
    for block in blocks:
        block.register_forward_pre_hook(
            lambda m, args: calls.__setitem__(m, calls.get(m, 0) + 1)
        )
    n_chunks = 5
    with torch.no_grad():
        group_forward(net, _chunks(x, None, 6), use_controls=False)
    assert calls[net.conv1] == n_chunks  # before the first BN: once
    for block in blocks[1:]:
        n_bn = len(group_layers(block))
        assert calls[block] <= (n_bn + 1) * n_chunks


def test_gather_statistics_chunked_equal_whole():
    net = _resnet()
    x, mask = _plate()
    with torch.no_grad():
        whole = gather_statistics(net, _chunks(x, mask, len(x)), use_controls=True)
        chunked = gather_statistics(net, _chunks(x, mask, 4), use_controls=True)
    assert whole.keys() == chunked.keys() and len(whole) == 20
    for layer, (mean, var) in whole.items():
        torch.testing.assert_close(chunked[layer][0], mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(chunked[layer][1], var, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "name", ["mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2_x0_5"]
)
def test_staged_graph_traces_torchvision_models_and_equals_whole(name):
    # Squeeze-excitation, stochastic depth, channel shuffle: all traced and
    # staged, outputs equal to the whole plate's.
    from sklearn_ben._blocks import staged_graph

    torch.manual_seed(0)
    factory = getattr(torchvision.models, name)
    net = convert_batchnorm(factory(weights=None, num_classes=3)).eval()
    assert staged_graph(net) is not None
    x, mask = _plate(n=16)
    reads = []
    with torch.no_grad():
        whole = group_forward(net, _chunks(x, mask, len(x)), use_controls=False)
        out = group_forward(net, _counting(x, None, 5, reads), use_controls=False)
    assert sum(reads) == len(x)
    torch.testing.assert_close(out, whole, rtol=1e-4, atol=1e-4)
