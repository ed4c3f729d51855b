"""The one place that imports scikit-learn's private API.

scikit-learn moves its private helpers between releases; keeping every
``sklearn.utils._*`` import here means a new release breaks one file, not many.
"""

from sklearn.base import _fit_context
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    Options,
    StrOptions,
    validate_params,
)
from sklearn.utils.metadata_routing import MetadataRequest
from sklearn.utils.validation import _check_sample_weight

__all__ = [
    "HasMethods",
    "Interval",
    "MetadataRequest",
    "Options",
    "StrOptions",
    "_check_sample_weight",
    "_fit_context",
    "validate_params",
]
