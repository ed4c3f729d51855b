"""Exceptions and warnings raised by sklearn-ben.

Every exception also derives from the built-in class that callers would catch
without knowing this library (``ValueError``), as ``skorch.exceptions`` does.
"""

__all__ = [
    "BENError",
    "GroupError",
    "ControlsError",
    "MissingMetadataError",
    "MissingMetadataWarning",
    "TrainingDivergedError",
    "PersistError",
    "DegenerateStatisticsWarning",
]


class BENError(Exception):
    """Base class of every sklearn-ben exception."""


class GroupError(BENError, ValueError):
    """``groups`` (the plate of each sample) cannot be used as given."""


class ControlsError(BENError, ValueError):
    """``controls`` (the control mask) cannot be used as given."""


class PersistError(BENError, ValueError):
    """A model cannot be saved, or a file cannot be loaded, as asked."""


class TrainingDivergedError(BENError, FloatingPointError):
    """The training loss (or the weights) stopped being finite numbers."""


class DegenerateStatisticsWarning(UserWarning):
    """A plate's batch-norm statistics are unreliable (too few or identical rows)."""


class MissingMetadataWarning(UserWarning):
    """Group-wise normalisation was asked for but no ``groups`` arrived.

    This happens when metadata routing is off and the estimator sits inside a
    ``Pipeline``, ``GridSearchCV`` or ``cross_validate``: scikit-learn then
    drops ``groups`` and ``controls`` before they reach the estimator.
    """


class MissingMetadataError(BENError, ValueError):
    """``groups`` (or ``controls``) did not arrive and the configuration says raise.

    Raised instead of :class:`MissingMetadataWarning` inside
    ``sklearn_ben.config_context(on_missing_metadata="raise")``.
    """
