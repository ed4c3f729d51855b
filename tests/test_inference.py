"""Inference by plate: the engine function and concurrent use of fitted models."""

import copy
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from torch import nn

from sklearn_ben.batchnorm import convert_batchnorm
from sklearn_ben.inference import group_indices, group_statistics, predict_by_group
from tests.conftest import tiny_classifier

N_THREADS = 4


def _state_bytes(estimator):
    """The serialised state dict of the fitted network, every buffer included."""
    buffer = io.BytesIO()
    torch.save(estimator.net_.module_.state_dict(), buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def fitted_models(plates, split):
    """One tiny fitted classifier per norm, trained on three plates."""
    train, _ = split
    kwargs = {"groups": plates.groups[train], "controls": plates.controls[train]}
    return {
        norm: tiny_classifier(norm=norm).fit(plates.X[train], plates.y[train], **kwargs)
        for norm in ("group", "controls", "frozen")
    }


def _calls(plates):
    """Several predict calls on different plates and plate subsets."""
    labels = np.unique(plates.groups)
    calls = []
    for k, label in enumerate(labels):
        rows = np.flatnonzero(plates.groups == label)
        calls.append(rows)
        calls.append(rows[k % 2 :: 2])  # half a plate: other statistics
    calls.append(np.arange(len(plates.groups)))  # every plate at once
    return calls


def _assert_threads_give_sequential_outputs(run, calls):
    """``run`` over ``calls`` from N_THREADS threads equals ``run`` in turn."""
    sequential = [run(rows) for rows in calls]
    with ThreadPoolExecutor(N_THREADS) as pool:
        concurrent = list(pool.map(run, calls))
    for expected, got in zip(sequential, concurrent):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("norm", ["group", "controls", "frozen"])
@pytest.mark.parametrize("predict_batch_size", [None, 5])
@pytest.mark.parametrize("method", ["predict_proba", "transform"])
def test_predict_concurrent_threads_equal_sequential(
    fitted_models, plates, norm, predict_batch_size, method
):
    clf = copy.deepcopy(fitted_models[norm]).set_params(
        predict_batch_size=predict_batch_size
    )
    before = _state_bytes(clf)
    calls = _calls(plates) * 3

    def run(rows):
        return getattr(clf, method)(
            plates.X[rows], groups=plates.groups[rows], controls=plates.controls[rows]
        )

    _assert_threads_give_sequential_outputs(run, calls)
    assert _state_bytes(clf) == before
    assert not clf.net_.module_.training


@pytest.mark.parametrize("norm", ["group", "controls"])
def test_predict_concurrent_threads_with_adapted_plates(fitted_models, plates, norm):
    clf = copy.deepcopy(fitted_models[norm])
    last = plates.groups == np.unique(plates.groups)[-1]
    clf.adapt(
        plates.X[last], groups=plates.groups[last], controls=plates.controls[last]
    )
    stored = copy.deepcopy(clf.plate_statistics_)
    before = _state_bytes(clf)
    rows = np.flatnonzero(last)
    # single images of the adapted plate, and calls mixing it with other plates
    calls = [rows[i : i + 1] for i in range(0, len(rows), 3)] + _calls(plates)
    calls = calls * 2

    def run(idx):
        return clf.predict_proba(
            plates.X[idx], groups=plates.groups[idx], controls=plates.controls[idx]
        )

    _assert_threads_give_sequential_outputs(run, calls)
    assert _state_bytes(clf) == before
    assert clf.plate_statistics_.keys() == stored.keys()
    for plate, stats in stored.items():
        for name, (mean, var) in stats.items():
            assert torch.equal(clf.plate_statistics_[plate][name][0], mean)
            assert torch.equal(clf.plate_statistics_[plate][name][1], var)


def test_predict_leaves_fitted_state_byte_identical(fitted_models, plates):
    clf = fitted_models["controls"]
    before = _state_bytes(clf)
    clf.predict(plates.X, groups=plates.groups, controls=plates.controls)
    clf.score(plates.X, plates.y, groups=plates.groups, controls=plates.controls)
    assert _state_bytes(clf) == before


def _net():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(4, 8),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        nn.Linear(8, 8),
        nn.BatchNorm1d(8),
    )
    net = convert_batchnorm(net).train()
    with torch.no_grad():  # running statistics away from the plates' own
        net(torch.randn(64, 4) * 3 + 1)
    return net.eval()


def test_predict_by_group_equals_one_forward_per_group():
    net = _net()
    X = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    groups = np.array(["b"] * 8 + ["a"] * 12)
    out = predict_by_group(net, X, groups)
    for g in ("a", "b"):
        rows = groups == g
        whole = net.train()(torch.from_numpy(X[rows]))  # batch statistics
        net.eval()
        torch.testing.assert_close(out[rows], whole.detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("source", ["batch", "controls"])
def test_predict_by_group_chunks_equal_whole(source):
    net = _net()
    X = np.random.default_rng(1).normal(size=(30, 4)).astype(np.float32)
    groups = np.repeat([0, 1, 2], 10)
    controls = np.tile(np.arange(10) < 4, 3)
    whole = predict_by_group(net, X, groups, controls, source=source)
    chunked = predict_by_group(net, X, groups, controls, source=source, chunk_size=3)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)


def test_predict_by_group_running_ignores_groups_and_train_mode():
    net = _net()
    X = np.random.default_rng(2).normal(size=(10, 4)).astype(np.float32)
    expected = net(torch.from_numpy(X)).detach()
    net.train()  # "running" does not depend on the module's mode
    out = predict_by_group(net, X, np.arange(10) % 2, source="running", chunk_size=3)
    torch.testing.assert_close(out, expected)
    assert net.training


def test_predict_by_group_rejects_unknown_source():
    with pytest.raises(ValueError, match="Unknown batch-norm statistics source 'x'"):
        predict_by_group(_net(), np.zeros((4, 4), np.float32), source="x")


@pytest.mark.parametrize("source", ["batch", "controls"])
@pytest.mark.parametrize("chunk_size", [None, 3])
def test_predict_by_group_stored_statistics_serve_single_rows(source, chunk_size):
    net = _net()
    X = np.random.default_rng(3).normal(size=(24, 4)).astype(np.float32)
    groups = np.repeat(["a", "b"], 12)
    controls = np.tile(np.arange(12) < 5, 2)
    whole = predict_by_group(net, X, groups, controls, source=source)
    stats = group_statistics(
        net,
        X,
        groups,
        controls,
        use_controls=source == "controls",
        chunk_size=chunk_size,
    )
    assert list(stats) == ["a", "b"]
    singles = torch.cat(
        [
            predict_by_group(net, X[i : i + 1], groups[i : i + 1], stored=stats)
            for i in range(len(X))
        ]
    )
    torch.testing.assert_close(singles, whole, rtol=1e-5, atol=1e-5)


def test_fixed_statistics_refuse_a_layer_without_statistics():
    net = _net()
    stats = group_statistics(net, np.ones((4, 4), np.float32) * np.arange(4)[:, None])
    first = dict(list(stats[0].items())[:1])  # the first layer only
    with pytest.raises(RuntimeError, match="No stored statistics for the batch-norm"):
        predict_by_group(net, np.zeros((1, 4), np.float32), [0], stored={0: first})


def test_group_indices_in_order_of_first_appearance():
    idx = group_indices(np.array(["b", "a", "b", "c", "a"]))
    assert [i.tolist() for i in idx] == [[0, 2], [1, 4], [3]]
