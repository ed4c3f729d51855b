import numpy as np
import pytest

from sklearn_ben import ControlsError, GroupError
from sklearn_ben._validation import (
    check_controls,
    check_controls_per_group,
    check_group_sizes,
    check_groups,
    check_labels,
)


@pytest.mark.parametrize(
    "groups, match",
    [
        (np.array([1.0, np.nan, 2.0]), r"groups has 1 missing entries \(NaN or None\)"),
        (np.array(["a", None, "b"], dtype=object), "groups has 1 missing entries"),
        (["a", "b"], "groups has 2 entries but X has 3 samples; pass one plate"),
    ],
)
def test_check_groups_bad_input(groups, match):
    with pytest.raises(GroupError, match=match):
        check_groups(groups, 3)


def test_check_labels_two_dimensional():
    with pytest.raises(
        ValueError, match=r"moa must be one-dimensional .* shape \(2, 2\)"
    ):
        check_labels(np.ones((2, 2)), "moa", 2)


@pytest.mark.parametrize("groups", [None, ["p1", "p1", "p2"], np.array([3, 3, 4])])
def test_check_groups_accepts_labels(groups):
    out = check_groups(groups, 3)
    assert out is None if groups is None else list(out) == list(groups)


def test_check_controls_needs_booleans():
    with pytest.raises(
        ControlsError, match="controls must be a boolean mask, but got dtype int64"
    ):
        check_controls(np.array([0, 1, 1]), 3)
    assert check_controls(np.array([False, True, True]), 3).dtype == bool


def test_check_group_sizes_and_controls_per_group_name_the_plates():
    groups = np.array(["a", "a", "b", "c", "c"])
    with pytest.raises(
        GroupError, match=r"1 training group\(s\) have fewer than 2 samples: 'b' \(1\)"
    ):
        check_group_sizes(groups, 2)
    controls = np.array([True, True, False, True, False])
    with pytest.raises(
        ControlsError, match=r"2 plate\(s\) have fewer: 'b' \(0\), 'c' \(1\)"
    ):
        check_controls_per_group(groups, controls, 2)
