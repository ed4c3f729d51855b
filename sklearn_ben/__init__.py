"""sklearn-ben: batch effects normalization (BEN) for microscopy deep learning.

The estimators train networks on plate-homogeneous minibatches and normalise
each plate with its own batch-norm statistics at inference (Lin & Lu).

Names are handed on lazily (PEP 562): ``import sklearn_ben.metrics`` costs
numpy, pandas and scikit-learn only; torch is imported the first time an
estimator or an engine name is used.
"""

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "BENClassifier": "sklearn_ben._classifier",
    "BENEmbedder": "sklearn_ben._embedder",
    "TVN": "sklearn_ben._tvn",
    "PlateControlScaler": "sklearn_ben._plate_scaler",
    "config_context": "sklearn_ben._config",
    "get_config": "sklearn_ben._config",
    "set_config": "sklearn_ben._config",
    "save": "sklearn_ben._persist",
    "load": "sklearn_ben._persist",
    "convert_batchnorm": "sklearn_ben.batchnorm",
    "GroupBatchSampler": "sklearn_ben.samplers",
    "BENError": "sklearn_ben.exceptions",
    "ControlsError": "sklearn_ben.exceptions",
    "GroupError": "sklearn_ben.exceptions",
    "MissingMetadataError": "sklearn_ben.exceptions",
    "MissingMetadataWarning": "sklearn_ben.exceptions",
    "DegenerateStatisticsWarning": "sklearn_ben.exceptions",
    "TrainingDivergedError": "sklearn_ben.exceptions",
    "PersistError": "sklearn_ben.exceptions",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sklearn_ben' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
