"""Data-parallel BEN: sampler invariants, plate assignment, two-process runs."""

import os
import pickle
import socket
import subprocess
import sys

import numpy as np
import pytest
from torch import nn

from sklearn_ben import BENClassifier, BENEmbedder
from sklearn_ben.datasets import make_plates
from sklearn_ben.distributed import (
    DistributedGroupBatchSampler,
    assign_groups,
    check_no_sync_batchnorm,
)
from sklearn_ben.samplers import GroupBatchSampler, KeyedBatchSampler
from tests._scripts import ROOT


def _groups(sizes, seed=0):
    labels = np.concatenate([[f"plate{i}"] * n for i, n in enumerate(sizes)])
    return np.random.default_rng(seed).permutation(labels)


def _ranks(make_sampler, world):
    """One identically seeded sampler per simulated process."""
    return [
        DistributedGroupBatchSampler(make_sampler(), world, r) for r in range(world)
    ]


@pytest.mark.parametrize("sizes", [[10], [2, 3, 4], [75, 76, 151, 20], [5, 80, 3]])
@pytest.mark.parametrize("batch_size", [2, 4, 75])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("epoch", [0, 1])
def test_distributed_sampler_invariants(sizes, batch_size, world, epoch):
    groups = _groups(sizes)
    ranks = _ranks(lambda: GroupBatchSampler(groups, batch_size, random_state=0), world)
    per_rank = [[list(r) for r in ranks] for _ in range(epoch + 1)][-1]
    # every process runs the same number of steps, as DDP needs
    assert {len(b) for b in per_rank} == {len(ranks[0])}
    flat = np.concatenate([np.concatenate(b) for b in per_rank])
    # across processes every sample exactly once per epoch (so: disjoint)
    assert np.array_equal(np.sort(flat), np.arange(len(groups)))
    for batches in per_rank:
        for batch in batches:
            assert len(np.unique(groups[batch])) == 1  # one plate per batch
            assert len(batch) >= 2


def test_distributed_sampler_deals_the_single_process_batches():
    groups = _groups([12, 12, 12, 12])
    single = list(GroupBatchSampler(groups, 6, random_state=5))
    ranks = _ranks(lambda: GroupBatchSampler(groups, 6, random_state=5), 2)
    assert [list(r) for r in ranks] == [single[0::2], single[1::2]]


def test_distributed_sampler_epochs_differ_and_seeds_agree():
    groups = _groups([20, 20])
    a, b = (
        _ranks(lambda: GroupBatchSampler(groups, 4, random_state=1), 2)[0]
        for _ in range(2)
    )
    first = list(a)
    assert first == list(b)  # same seed, same batches on every process
    assert first != list(a)  # the next epoch draws new batches


@pytest.mark.parametrize("world", [2, 3])
def test_distributed_sampler_keeps_min_controls_when_splitting(world):
    groups = _groups([9, 14, 7])
    controls = np.random.default_rng(0).random(len(groups)) < 0.5
    for g in np.unique(groups):  # at least 4 controls per plate
        controls[np.flatnonzero(groups == g)[:4]] = True

    def make():
        return GroupBatchSampler(
            groups, 8, controls=controls, min_controls=2, random_state=0
        )

    single = [i for b in make() for i in b]
    per_rank = [list(r) for r in _ranks(make, world)]
    assert len({len(b) for b in per_rank}) == 1
    # the same multiset of indices as one process (top-up extras included)
    flat = [i for batches in per_rank for b in batches for i in b]
    assert sorted(flat) == sorted(single)
    for batches in per_rank:
        for batch in batches:
            assert len(np.unique(groups[batch])) == 1
            assert controls[batch].sum() >= 2


def test_distributed_sampler_gives_split_halves_their_own_keys():
    groups = _groups([8, 6, 4])  # 3 batches of one plate each for 2 processes
    make = lambda: KeyedBatchSampler(GroupBatchSampler(groups, 8, random_state=0), 7)  # noqa: E731
    items = [item for r in _ranks(make, 2) for item in r]
    keys = [key for key, _ in items]
    assert len(items) == 4
    assert len(set(keys)) == 4
    assert sum(len(key) == 4 for key in keys) == 2  # (seed, epoch, batch, half)
    assert sorted(i for _, b in items for i in b) == list(range(18))


@pytest.mark.parametrize(
    ("num_replicas", "rank", "match"),
    [
        (0, 0, "num_replicas should be a positive"),
        (2, 2, r"rank should be .* \[0, 1\]"),
    ],
)
def test_distributed_sampler_refuses_bad_ranks(num_replicas, rank, match):
    sampler = GroupBatchSampler(_groups([4]), 2, random_state=0)
    with pytest.raises(ValueError, match=match):
        DistributedGroupBatchSampler(sampler, num_replicas, rank)


def test_distributed_sampler_merges_batches_of_one_plate_when_none_splits():
    groups = np.repeat(["a", "b"], [6, 4])  # 5 batches of 2 samples, 2 processes
    ranks = _ranks(lambda: GroupBatchSampler(groups, 2, random_state=0), 2)
    per_rank = [list(r) for r in ranks]
    assert [len(b) for b in per_rank] == [len(ranks[0])] * 2 == [2, 2]
    assert sorted(i for b in per_rank for batch in b for i in batch) == list(range(10))
    assert sorted(len(batch) for b in per_rank for batch in b) == [2, 2, 2, 4]


def test_distributed_sampler_refuses_too_few_batches_before_training():
    sampler = GroupBatchSampler(_groups([3, 2]), 4, random_state=0)
    with pytest.raises(ValueError, match="too few to give each of 4 processes"):
        DistributedGroupBatchSampler(sampler, 4, 0)


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_assign_groups_gives_whole_plates_once(world):
    groups = _groups([30, 5, 12, 12, 7, 2])
    parts = assign_groups(groups, world)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(groups)))
    plates = [set(groups[p]) for p in parts]
    for a in range(world):  # a plate never straddles two processes
        for b in range(a + 1, world):
            assert not plates[a] & plates[b]


def test_check_no_sync_batchnorm_refuses_synced_layers():
    net = nn.Sequential(nn.Linear(3, 4), nn.SyncBatchNorm(4))
    with pytest.raises(ValueError, match="SyncBatchNorm layer.*'1'.*mix"):
        check_no_sync_batchnorm(net)
    check_no_sync_batchnorm(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)))


# ------------------------------------------------ the estimators, one process
@pytest.fixture(scope="module")
def accelerator():
    accelerate = pytest.importorskip("accelerate")
    return accelerate.Accelerator(cpu=True)


@pytest.fixture(scope="module")
def plates():
    return make_plates(
        n_plates=3, n_samples_per_plate=12, image_size=8, n_channels=2, random_state=0
    )


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"random_state": None}, "pass an int random_state"),
        ({"random_state": 0, "device": "cpu"}, "device='cpu' conflicts"),
    ],
)
def test_accelerator_refuses_settings_before_work(accelerator, plates, params, match):
    clf = BENClassifier(max_epochs=1, accelerator=accelerator, **params)
    with pytest.raises(ValueError, match=match):
        clf.fit(plates.X, plates.y, groups=plates.groups)
    assert not hasattr(clf, "net_")


def test_accelerator_one_process_trains_as_without(accelerator, plates):
    kwargs = {"max_epochs": 2, "batch_size": 8, "random_state": 0}
    plain = BENClassifier(**kwargs).fit(plates.X, plates.y, groups=plates.groups)
    accel = BENClassifier(accelerator=accelerator, **kwargs).fit(
        plates.X, plates.y, groups=plates.groups
    )
    np.testing.assert_allclose(
        accel.predict_proba(plates.X, groups=plates.groups),
        plain.predict_proba(plates.X, groups=plates.groups),
        atol=1e-6,
    )
    # unwrapped and plain: it pickles without the accelerator
    restored = pickle.loads(pickle.dumps(accel))
    assert restored.accelerator is None
    assert type(restored.net_).__name__ == "_AutocastNet"


def test_embedder_accepts_accelerator(accelerator, plates):
    emb = BENEmbedder(n_views=2, max_epochs=1, random_state=0, accelerator=accelerator)
    features = emb.fit(plates.X, groups=plates.groups).transform(
        plates.X, groups=plates.groups
    )
    assert features.shape == (len(plates.X), emb.n_features_out_)


# ----------------------------------------------------- two processes (gloo)
@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    pytest.importorskip("accelerate")
    out = tmp_path_factory.mktemp("two_processes")
    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
        str(ROOT / "tests" / "_distributed_run.py"),
        str(out),
    ]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [pickle.loads((out / f"rank{r}.pkl").read_bytes()) for r in range(2)]
    return out, ranks


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("epoch", [0, 1])
def test_two_processes_sampler_invariants(two_processes, epoch):
    _, ranks = two_processes
    groups = make_plates(
        n_plates=4, n_samples_per_plate=14, image_size=8, n_channels=2, random_state=0
    ).groups
    per_rank = [r["batches"][epoch] for r in ranks]
    assert [r["world"] for r in ranks] == [2, 2]
    assert len(per_rank[0]) == len(per_rank[1])
    flat = [i for batches in per_rank for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(groups)))  # once each, so disjoint
    assert all(len(set(groups[b])) == 1 for batches in per_rank for b in batches)


@pytest.mark.parametrize("norm", ["group", "controls"])
def test_two_processes_end_with_identical_weights(two_processes, norm):
    _, (first, second) = two_processes
    assert first[norm]["state"].keys() == second[norm]["state"].keys()
    for name, value in first[norm]["state"].items():
        np.testing.assert_array_equal(value, second[norm]["state"][name], err_msg=name)
    n_batches = len(GroupBatchSampler(np.repeat([0, 1, 2], 14), 8))
    assert first[norm]["steps"] == second[norm]["steps"] == -(-n_batches // 2)


@pytest.mark.parametrize("norm", ["group", "controls"])
def test_two_processes_predict_all_rows_on_every_process(two_processes, norm):
    _, (first, second) = two_processes
    np.testing.assert_array_equal(first[norm]["proba"], second[norm]["proba"])
    assert first[norm]["proba"].shape == (56, 3)


@pytest.mark.parametrize("norm", ["group", "controls"])
def test_two_processes_pickle_predicts_in_one_process_as_distributed(
    two_processes, norm
):
    out, (first, _) = two_processes
    clf = pickle.loads((out / f"clf_{norm}.pkl").read_bytes())
    assert clf.accelerator is None
    data = make_plates(
        n_plates=4, n_samples_per_plate=14, image_size=8, n_channels=2, random_state=0
    )
    proba = clf.predict_proba(data.X, groups=data.groups, controls=data.controls)
    np.testing.assert_allclose(proba, first[norm]["proba"], rtol=0, atol=1e-6)
