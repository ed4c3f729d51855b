"""What every plate-aware estimator shares about ``groups`` and ``controls``.

:class:`PlateMetadataMixin` plays the part of scikit-learn's
``GroupsConsumerMixin``: default metadata requests, a ``fit_transform`` that
passes the metadata on to ``transform``, and one missing-metadata warning that
names the method it comes from.
"""

import warnings

from sklearn_ben._config import get_config
from sklearn_ben.exceptions import MissingMetadataError, MissingMetadataWarning

__all__ = ["PlateMetadataMixin"]

_REQUEST = {"groups": True, "controls": True}


class PlateMetadataMixin:
    """Mixin for estimators that take ``groups`` and ``controls`` per sample.

    Put it first among the bases, before ``TransformerMixin``, so that its
    :meth:`fit_transform` wins::

        class MyScaler(PlateMetadataMixin, TransformerMixin, BaseEstimator): ...

    ``groups`` and ``controls`` are requested by default by ``fit`` and
    ``transform`` (``__metadata_request__fit``), so that with
    ``sklearn.set_config(enable_metadata_routing=True)`` a ``Pipeline`` routes
    them without ``set_fit_request`` calls. A subclass that also predicts
    adds ``__metadata_request__predict`` (and so on) itself.
    """

    __metadata_request__fit = _REQUEST
    __metadata_request__transform = _REQUEST

    def fit_transform(self, X, y=None, *, groups=None, controls=None, **fit_params):
        """Fit, then transform the same samples, passing the metadata to both.

        scikit-learn's ``TransformerMixin.fit_transform`` would drop ``groups``
        and ``controls`` before ``transform``.

        Parameters
        ----------
        X : array-like
            Training samples.
        y : array-like of shape (n_samples,), default=None
            Targets, where the estimator uses them.
        groups : array-like of shape (n_samples,), default=None
            Plate (or batch) of each sample.
        controls : array-like of bool, shape (n_samples,), default=None
            True for control samples.
        **fit_params : dict
            Further metadata for ``fit`` only.

        Returns
        -------
        X_new : ndarray or DataFrame
            The transformed samples.
        """
        self.fit(X, y, groups=groups, controls=controls, **fit_params)
        return self.transform(X, groups=groups, controls=controls)

    def _warn_missing_metadata(self, method, message, *, what="groups"):
        """Warn (or raise, per the config) that ``method`` got no ``what``.

        Parameters
        ----------
        method : str
            The public method that noticed, e.g. ``"transform"``.
        message : str
            What happens instead, e.g. ``"all its samples are standardised as
            one plate"``.
        what : {"groups", "controls"}, default="groups"
            The missing metadata.

        Raises
        ------
        MissingMetadataError
            Inside ``config_context(on_missing_metadata="raise")``.
        """
        hint = "<plate of each sample>" if what == "groups" else "<boolean mask>"
        text = (
            f"{type(self).__name__}.{method} got no {what}, so {message}. Pass "
            f"{what}={hint}; inside a Pipeline, GridSearchCV or cross_validate, "
            "turn on sklearn.set_config(enable_metadata_routing=True) so that "
            f"{what} reach the estimator."
        )
        if get_config()["on_missing_metadata"] == "raise":
            raise MissingMetadataError(text)
        warnings.warn(text, MissingMetadataWarning, stacklevel=3)
