"""sklearn-ben: batch effects normalization (BEN) for microscopy deep learning.

The estimators train networks on plate-homogeneous minibatches and normalise
each plate with its own batch-norm statistics at inference (Lin & Lu).
"""

from sklearn_ben._classifier import BENClassifier
from sklearn_ben._embedder import BENEmbedder
from sklearn_ben._tvn import TVN, PlateControlScaler
from sklearn_ben.batchnorm import convert_batchnorm
from sklearn_ben.exceptions import (
    BENError,
    ControlsError,
    GroupError,
    MissingMetadataWarning,
)
from sklearn_ben.samplers import GroupBatchSampler

__version__ = "0.1.0"

__all__ = [
    "BENClassifier",
    "BENEmbedder",
    "BENError",
    "ControlsError",
    "GroupBatchSampler",
    "GroupError",
    "MissingMetadataWarning",
    "PlateControlScaler",
    "TVN",
    "convert_batchnorm",
    "__version__",
]
