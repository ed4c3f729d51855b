"""Validation of per-sample metadata: ``groups`` (plates) and ``controls``.

Every check runs before any work is done and raises one sentence that names
the problem, the values seen and the fix.
"""

import numpy as np
import pandas as pd

from sklearn_ben.exceptions import ControlsError, GroupError

__all__ = [
    "check_labels",
    "check_groups",
    "check_controls",
    "check_group_sizes",
    "check_controls_per_group",
    "format_counts",
]


def format_counts(counts, limit=5):
    """Return ``"'P1' (1), 'P7' (0)"`` for a ``{group: count}`` mapping."""
    items = [f"{_plain(g)!r} ({n})" for g, n in list(counts.items())[:limit]]
    more = len(counts) - limit
    if more > 0:
        items.append(f"and {more} more")
    return ", ".join(items)


def _plain(value):
    """A numpy scalar as the Python value it holds, for readable messages."""
    return value.item() if hasattr(value, "item") else value


def check_labels(values, name, n_samples, *, error=ValueError, what="label"):
    """A 1-D array with one entry per sample and none missing (NaN or None).

    Parameters
    ----------
    values : array-like
        The per-sample metadata.
    name : str
        Its name in messages (``"groups"``, ``"moa"``, ...).
    n_samples : int
        Number of rows of ``X``.
    error : type, default=ValueError
        Exception raised for a wrong length.
    what : str, default="label"
        What one entry is, in messages.

    Returns
    -------
    array : ndarray of shape (n_samples,)
    """
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(
            f"{name} must be one-dimensional (one {what} per sample), but got an "
            f"array of shape {array.shape}."
        )
    if array.shape[0] != n_samples:
        raise error(
            f"{name} has {array.shape[0]} entries but X has {n_samples} samples; "
            f"pass one {what} per row of X."
        )
    if array.dtype.kind in "fO":
        missing = pd.isna(array)
        if missing.any():
            raise error(
                f"{name} has {int(missing.sum())} missing entries (NaN or None); "
                f"every sample needs a {what}."
            )
    if array.dtype.kind == "O":
        kinds = {_kind(v) for v in array}
        if len(kinds) > 1:
            raise error(
                f"{name} mixes {' and '.join(sorted(kinds))} {what}s, which cannot "
                f"be compared or sorted; pass {what}s of one type, e.g. "
                f"{name}.astype(str)."
            )
    return array


def _kind(value) -> str:
    """'number', 'string' or the type's name, for the mixed-types check."""
    if isinstance(value, (str, np.str_, bytes)):
        return "string"
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return "number"
    return type(value).__name__


def check_groups(groups, n_samples):
    """Validate ``groups`` against the number of samples.

    Parameters
    ----------
    groups : array-like of shape (n_samples,) or None
        Group (plate) label of each sample: strings or integers.
    n_samples : int
        Number of rows of ``X``.

    Returns
    -------
    groups : ndarray of shape (n_samples,) or None
    """
    if groups is None:
        return None
    return check_labels(groups, "groups", n_samples, error=GroupError, what="plate")


def check_controls(controls, n_samples):
    """Validate the boolean control mask.

    Parameters
    ----------
    controls : array-like of bool, shape (n_samples,) or None
        True where a sample is a negative control (e.g. DMSO).
    n_samples : int
        Number of rows of ``X``.

    Returns
    -------
    controls : ndarray of bool, shape (n_samples,) or None
    """
    if controls is None:
        return None
    controls = check_labels(
        controls, "controls", n_samples, error=ControlsError, what="control flag"
    )
    if controls.dtype != np.bool_:
        raise ControlsError(
            f"controls must be a boolean mask, but got dtype {controls.dtype}; "
            "pass e.g. controls=(compound == 'DMSO') or controls.astype(bool)."
        )
    return controls


def check_group_sizes(groups, min_size=2, *, what="training"):
    """Raise if a group has fewer than ``min_size`` samples."""
    labels, counts = np.unique(groups, return_counts=True)
    small = {g: int(n) for g, n in zip(labels, counts) if n < min_size}
    if small:
        raise GroupError(
            f"{len(small)} {what} group(s) have fewer than {min_size} samples: "
            f"{format_counts(small)}; batch normalisation needs at least "
            f"{min_size} samples per batch. Remove these samples or merge "
            "their plates."
        )
    return labels


def check_controls_per_group(groups, controls, min_controls=2, *, where="fit"):
    """Raise if a group holds fewer than ``min_controls`` control samples."""
    labels = np.unique(groups)
    counts = {g: int(controls[groups == g].sum()) for g in labels}
    short = {g: n for g, n in counts.items() if n < min_controls}
    if short:
        raise ControlsError(
            f"norm='controls' needs at least {min_controls} control samples on "
            f"every plate, but in {where} {len(short)} plate(s) have fewer: "
            f"{format_counts(short)}. Add controls to these plates, drop them, "
            "or use norm='group'."
        )
    return counts
