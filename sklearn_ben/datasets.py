"""Synthetic plates and loaders for the real BBBC021 data.

:func:`make_plates` draws seeded, microscopy-like image plates with plate effects
that a plain network does not survive and per-plate normalisation can undo;
with ``nonaffine_effects`` it adds effects (defocus, saturation, vignetting,
size, density, texture) that per-channel input standardisation cannot undo.
:func:`load_bbbc021_crops` and :func:`load_bbbc021_profiles` read the real
BBBC021 subsets that sit beside the project (see :func:`get_data_home`); the
data are never shipped inside the package.
"""

from sklearn_ben._bbbc021 import (
    DATA_ENV,
    get_data_home,
    load_bbbc021_crops,
    load_bbbc021_profiles,
)
from sklearn_ben._synthetic import make_plates

__all__ = [
    "get_data_home",
    "load_bbbc021_crops",
    "load_bbbc021_profiles",
    "make_plates",
    "DATA_ENV",
]
