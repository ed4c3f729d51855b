import numpy as np
import pytest
from torch.utils.data import DataLoader

from sklearn_ben import ControlsError, GroupError
from sklearn_ben.samplers import GroupBatchSampler


def _groups(sizes, seed=0):
    labels = np.concatenate([[f"plate{i}"] * n for i, n in enumerate(sizes)])
    return np.random.default_rng(seed).permutation(labels)


@pytest.mark.parametrize("sizes", [[10], [2, 3], [75, 76, 151, 20], [5, 80, 3]])
@pytest.mark.parametrize("batch_size", [2, 4, 75])
def test_group_batch_sampler_invariants(sizes, batch_size):
    groups = _groups(sizes)
    sampler = GroupBatchSampler(groups, batch_size, random_state=0)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    flat = np.concatenate(batches)
    # every sample exactly once per epoch
    assert np.array_equal(np.sort(flat), np.arange(len(groups)))
    for batch in batches:
        assert len(np.unique(groups[batch])) == 1  # one group per batch
        assert len(batch) >= 2  # never a batch of size 1
        # at most batch_size, but for an odd group with batch_size=2 (one of 3)
        assert len(batch) <= batch_size or (batch_size, len(batch)) == (2, 3)


def test_group_batch_sampler_shuffles_across_groups_and_epochs():
    groups = _groups([20, 20, 20])
    sampler = GroupBatchSampler(groups, 5, random_state=0)
    first, second = list(sampler), list(sampler)
    assert first != second
    order = [groups[b[0]] for b in first]
    # batches of different plates interleave, not plate after plate
    assert sum(a != b for a, b in zip(order, order[1:])) > 3


def test_group_batch_sampler_is_seeded():
    groups = _groups([13, 9])
    a = [list(GroupBatchSampler(groups, 4, random_state=3)) for _ in range(2)]
    b = [list(GroupBatchSampler(groups, 4, random_state=3)) for _ in range(2)]
    assert a == b


def test_group_batch_sampler_without_shuffle_is_ordered():
    sampler = GroupBatchSampler(["a", "a", "b", "b", "b"], 2, shuffle=False)
    assert list(sampler) == [[0, 1], [2, 3, 4]]


@pytest.mark.parametrize("min_controls", [1, 2, 3])
def test_group_batch_sampler_min_controls_in_every_batch(min_controls):
    rng = np.random.default_rng(0)
    groups = _groups([40, 33, 25])
    controls = np.zeros(len(groups), dtype=bool)
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        controls[rng.choice(members, 3, replace=False)] = True
    sampler = GroupBatchSampler(
        groups, 8, controls=controls, min_controls=min_controls, random_state=0
    )
    batches = list(sampler)
    for batch in batches:
        assert len(np.unique(groups[batch])) == 1
        assert controls[batch].sum() >= min_controls
    flat = np.concatenate(batches)
    # every sample at least once; only controls are repeated
    assert set(flat) == set(range(len(groups)))
    values, counts = np.unique(flat, return_counts=True)
    assert controls[values[counts > 1]].all()
    assert np.all(counts[~controls[values]] == 1)


def test_group_batch_sampler_works_with_dataloader():
    groups = _groups([6, 4])
    loader = DataLoader(np.arange(10), batch_sampler=GroupBatchSampler(groups, 3))
    seen = np.concatenate([b.numpy() for b in loader])
    assert np.array_equal(np.sort(seen), np.arange(10))


def test_group_batch_sampler_none_groups_is_one_group():
    sampler = GroupBatchSampler(None, 4, controls=np.ones(10, bool), random_state=0)
    assert len(sampler) == 3


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (
            {"batch_size": 1},
            ValueError,
            "batch_size should be at least 2.*got batch_size=1",
        ),
        (
            {"batch_size": 2.5},
            TypeError,
            "batch_size should be an integer, but got float",
        ),
        ({"batch_size": 4, "min_controls": -1}, ValueError, "min_controls=-1"),
        ({"batch_size": 4, "min_controls": 4}, ValueError, "must be smaller than"),
        ({"batch_size": 4, "min_controls": 2}, ValueError, "needs the controls mask"),
    ],
)
def test_group_batch_sampler_bad_parameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        GroupBatchSampler(["a", "a", "b", "b"], **kwargs)


def test_group_batch_sampler_single_sample_group():
    with pytest.raises(GroupError, match=r"fewer than 2 samples: 'b' \(1\)"):
        GroupBatchSampler(["a", "a", "b"], 2)


def test_group_batch_sampler_too_few_controls():
    with pytest.raises(ControlsError, match=r"'b' \(1\).*use norm='group'"):
        GroupBatchSampler(
            ["a", "a", "b", "b"],
            3,
            controls=np.array([True, True, True, False]),
            min_controls=2,
        )
