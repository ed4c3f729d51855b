"""Per-call configuration of sklearn-ben, safe across threads and async tasks.

The settings live in a :class:`contextvars.ContextVar`, not a module global:
:func:`config_context` changes them for the code it encloses only, and a new
thread starts from the defaults.
"""

from contextlib import contextmanager
from contextvars import ContextVar

from sklearn_ben._sklearn_compat import StrOptions, validate_params

__all__ = ["config_context", "get_config", "set_config"]

_DEFAULTS = {"on_missing_metadata": "warn"}

_CONFIG = ContextVar("sklearn_ben_config", default=_DEFAULTS)


def get_config():
    """The settings in force for the current thread or task.

    Returns
    -------
    config : dict
        ``{"on_missing_metadata": "warn" | "raise"}``.

    See Also
    --------
    config_context : Change the settings for a block of code.
    set_config : Change the settings for the rest of the current context.

    Examples
    --------
    >>> from sklearn_ben._config import get_config
    >>> get_config()
    {'on_missing_metadata': 'warn'}
    """
    return dict(_CONFIG.get())


@validate_params(
    {"on_missing_metadata": [StrOptions({"warn", "raise"}), None]},
    prefer_skip_nested_validation=True,
)
def set_config(on_missing_metadata=None):
    """Change the settings for the rest of the current thread or task.

    Parameters
    ----------
    on_missing_metadata : {"warn", "raise"} or None, default=None
        What a plate-aware estimator does when a method that uses ``groups``
        gets none (e.g. inside a ``Pipeline`` with metadata routing off):
        ``"warn"`` treats all samples as one plate and warns with
        :class:`~sklearn_ben.exceptions.MissingMetadataWarning`; ``"raise"``
        raises :class:`~sklearn_ben.exceptions.MissingMetadataError`. None
        leaves the setting as it is.

    See Also
    --------
    config_context : The same, for a block of code only (preferred).

    Notes
    -----
    The setting does not reach threads started afterwards (each starts from
    the defaults), e.g. joblib's threading backend: set it inside the work
    that runs there, or use the default.
    """
    config = dict(_CONFIG.get())
    if on_missing_metadata is not None:
        config["on_missing_metadata"] = on_missing_metadata
    _CONFIG.set(config)


@contextmanager
def config_context(*, on_missing_metadata=None):
    """Change the settings inside a ``with`` block only.

    Parameters
    ----------
    on_missing_metadata : {"warn", "raise"} or None, default=None
        See :func:`set_config`.

    Yields
    ------
    None

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ben import PlateControlScaler
    >>> from sklearn_ben._config import config_context
    >>> X = np.arange(8.0).reshape(4, 2)
    >>> scaler = PlateControlScaler().fit(X)
    >>> with config_context(on_missing_metadata="raise"):
    ...     scaler.transform(X)
    Traceback (most recent call last):
    ...
    sklearn_ben.exceptions.MissingMetadataError: PlateControlScaler.transform got no groups, ...
    """  # noqa: E501
    token = _CONFIG.set(_CONFIG.get())
    try:
        set_config(on_missing_metadata=on_missing_metadata)
        yield
    finally:
        _CONFIG.reset(token)
