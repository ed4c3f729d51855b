"""Profile normalisation against controls: per-plate scaling and TVN.

:class:`PlateControlScaler` standardises every plate with the statistics of its
own control wells. :class:`TVN` is typical variation normalisation (Ando et al.
2017): PCA whitening fitted on the controls, then, per group, CORAL (Sun et
al. 2016) aligns each group's control covariance with the pooled one. Both
take ``groups`` (plate or batch of each sample) and ``controls`` (boolean mask)
as per-sample metadata, requested by default for metadata routing.
"""

from numbers import Integral, Real

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
)
from sklearn.utils.extmath import svd_flip
from sklearn.utils.validation import check_is_fitted, validate_data

from sklearn_ben._metadata import PlateMetadataMixin
from sklearn_ben._plate_scaler import (
    MAD_TO_STD,
    PlateControlScaler,
    _reference_name,
    _short_groups,
)
from sklearn_ben._sklearn_compat import Interval, _fit_context
from sklearn_ben._validation import check_controls, check_groups, format_counts
from sklearn_ben.exceptions import ControlsError

__all__ = ["MAD_TO_STD", "PlateControlScaler", "TVN"]

_FLOATS = [np.float64, np.float32]


def _rank(variance, n_samples, n_features):
    """Numerical rank of centred data from its component variances.

    The tolerance is numpy's ``matrix_rank`` default on the singular values.
    """
    singular = np.sqrt(variance * (n_samples - 1))
    if singular.size == 0 or singular[0] == 0:
        return 0
    tol = singular[0] * max(n_samples, n_features) * np.finfo(singular.dtype).eps
    return int((singular > tol).sum())


def _sym_power(matrix, power):
    """``matrix ** power`` for a symmetric positive definite matrix."""
    values, vectors = np.linalg.eigh(matrix)
    values = np.clip(values, np.finfo(values.dtype).tiny, None)
    return (vectors * values**power) @ vectors.T


class TVN(
    PlateMetadataMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator
):
    """Typical variation normalisation: whiten on controls, then CORAL per group.

    :meth:`fit` centres the data on the mean of the control samples and finds
    their principal components; :meth:`transform` projects on the first
    ``n_components`` and divides each by the square root of its (regularised)
    variance, so the controls come out with (nearly) identity covariance
    (Ando et al. 2017). When :meth:`transform` gets ``groups`` (plates or
    batches), each group is then aligned with CORAL (Sun et al. 2016): the
    group's samples are mapped by the linear map that turns the covariance of
    the group's controls into the pooled control covariance learnt in
    :meth:`fit`, both regularised by ``coral_reg``.

    Parameters
    ----------
    n_components : int, float or None, default=None
        Principal components of the controls to keep. None keeps every
        direction in which the controls vary: their numerical rank (at most
        ``min(n_controls - 1, n_features)``, less when, e.g., the controls
        were centred per plate before); a float in (0, 1) keeps the fewest
        components that explain that share of the controls' variance.
    whiten_reg : float, default=1.0
        Regulariser of the whitening, as a share of the controls' mean
        variance per feature: component ``i`` is divided by
        ``sqrt(variance_i + whiten_reg * mean_variance)``. It keeps
        components of tiny variance from being blown up into noise; 0 is
        plain PCA whitening. The default 1 is CORAL's convention (the
        identity added to the covariance of standardised features, whose
        mean variance is 1); on the BBBC021 profiles, values of 0.01 or less
        lost accuracy (see the profiling guide).
    coral_reg : float, default=1.0
        Added to the diagonal of both covariances in CORAL (in whitened
        units, where the pooled control covariance is close to the
        identity). 1 is the value of Sun et al.; larger values align less.
    min_controls : int, default=2
        Fewest control samples a group needs for CORAL at :meth:`transform`;
        a group with fewer raises :class:`~sklearn_ben.exceptions.ControlsError`
        (no silent fallback: pass coarser ``groups``, e.g. batches instead of
        plates, or none for whitening only).

    Attributes
    ----------
    mean_ : ndarray of shape (n_features,)
        Mean of the control samples seen in :meth:`fit`.
    components_ : ndarray of shape (n_components_, n_features)
        Principal axes of the controls, by decreasing variance.
    explained_variance_ : ndarray of shape (n_components_,)
        Variance of the controls along each axis (``ddof=1``).
    scale_ : ndarray of shape (n_components_,)
        Factor applied to each component: ``1 / sqrt(variance +
        whiten_reg * mean_variance)``; 1 for a component of zero regularised
        variance.
    covariance_ : ndarray of shape (n_components_, n_components_)
        Covariance of the whitened fit controls: the CORAL target.
    n_components_ : int
        Number of components kept.
    n_features_in_ : int
        Number of features seen during :meth:`fit`.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during :meth:`fit`, when ``X`` has string
        column names.

    See Also
    --------
    PlateControlScaler : Per-plate standardisation against controls, the
        usual step before TVN.
    sklearn.decomposition.PCA : PCA whitening fitted on all samples.

    Notes
    -----
    Reference samples: the controls when ``controls`` is given, else all
    samples (in :meth:`fit` and, per group, in :meth:`transform`).

    CORAL here changes second-order statistics only: a group's samples are
    mapped by ``x -> (x - m) @ A + m``, where ``m`` is the mean of the group's
    whitened controls and ``A = (C + coral_reg I)^(-1/2) (T + coral_reg
    I)^(1/2)`` for the group's control covariance ``C`` and the target ``T``
    (``covariance_``), so the group's controls keep their mean. Per-plate
    centring is the job of :class:`PlateControlScaler` before TVN.

    Without ``groups``, :meth:`transform` only whitens; this needs no warning
    because each sample is then transformed on its own. With ``groups``, a
    sample's output depends on the controls of its group in the data passed
    to :meth:`transform`.

    References
    ----------
    D. M. Ando, C. Y. McLean and M. Berndl, "Improving phenotypic measurements
    in high-content imaging screens", bioRxiv 161422, 2017.

    B. Sun, J. Feng and K. Saenko, "Return of frustratingly easy domain
    adaptation", AAAI 2016.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ben import TVN
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(40, 3)) @ [[2.0, 0.0, 0.0], [1.0, 1.0, 0.0],
    ...                                 [0.0, 0.0, 0.5]]
    >>> dmso = np.arange(40) < 30
    >>> tvn = TVN(whiten_reg=0.0).fit(X, controls=dmso)
    >>> Z = tvn.transform(X)
    >>> np.round(np.cov(Z[dmso], rowvar=False), 6) + 0.0
    array([[1., 0., 0.],
           [0., 1., 0.],
           [0., 0., 1.]])
    >>> tvn.get_feature_names_out()
    array(['tvn0', 'tvn1', 'tvn2'], dtype=object)
    """

    _parameter_constraints = {
        "n_components": [
            Interval(Integral, 1, None, closed="left"),
            Interval(Real, 0, 1, closed="neither"),
            None,
        ],
        "whiten_reg": [Interval(Real, 0, None, closed="left")],
        "coral_reg": [Interval(Real, 0, None, closed="neither")],
        "min_controls": [Interval(Integral, 2, None, closed="left")],
    }

    def __init__(
        self, *, n_components=None, whiten_reg=1.0, coral_reg=1.0, min_controls=2
    ):
        self.n_components = n_components
        self.whiten_reg = whiten_reg
        self.coral_reg = coral_reg
        self.min_controls = min_controls

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, groups=None, controls=None):
        """Learn the whitening from the control samples of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Profiles.
        y : None
            Ignored.
        groups : array-like of shape (n_samples,), default=None
            Group of each sample; validated here, used by :meth:`transform`.
        controls : array-like of bool, shape (n_samples,), default=None
            True for control samples; None fits on all samples.

        Returns
        -------
        self : TVN
            The fitted transformer.
        """
        X = validate_data(self, X, reset=True, dtype=_FLOATS, ensure_min_samples=2)
        n = X.shape[0]
        check_groups(groups, n)
        controls = check_controls(controls, n)
        ref = X if controls is None else X[controls]
        if ref.shape[0] < 2:
            raise ControlsError(
                f"TVN fits its whitening on the control samples, but controls "
                f"marks {ref.shape[0]} of {n} samples; mark at least 2, or pass "
                "controls=None to fit on all samples."
            )
        self.mean_ = ref.mean(axis=0)
        centred = ref - self.mean_
        u, singular, vt = np.linalg.svd(centred, full_matrices=False)
        _, vt = svd_flip(u, vt, u_based_decision=False)
        variance = singular**2 / (ref.shape[0] - 1)
        k = self._choose_n_components(variance, ref.shape[0])
        mean_variance = centred.var(axis=0, ddof=1).mean()
        regularised = variance[:k] + self.whiten_reg * mean_variance
        positive = regularised > np.finfo(regularised.dtype).tiny
        self.scale_ = np.where(
            positive, 1 / np.sqrt(np.where(positive, regularised, 1)), 1.0
        )
        self.components_ = vt[:k]
        self.explained_variance_ = variance[:k]
        self.covariance_ = np.diag(variance[:k] * self.scale_**2)
        self.n_components_ = k
        return self

    def _choose_n_components(self, variance, n_ref):
        most = min(n_ref - 1, self.n_features_in_)
        if self.n_components is None:
            return max(_rank(variance, n_ref, self.n_features_in_), 1)
        if isinstance(self.n_components, Integral):
            if self.n_components > most:
                raise ValueError(
                    f"n_components={self.n_components} is more than the {most} "
                    f"components that {n_ref} reference samples and "
                    f"{self.n_features_in_} features allow (min(n_controls - 1, "
                    "n_features)); lower n_components or pass more controls."
                )
            return self.n_components
        total = variance.sum()
        if total == 0:
            return most
        share = np.cumsum(variance) / total
        return min(int(np.searchsorted(share, self.n_components) + 1), most)

    @property
    def _n_features_out(self):
        return self.n_components_

    def transform(self, X, *, groups=None, controls=None):
        """Whiten ``X``, then align each group with CORAL when groups are given.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Profiles.
        groups : array-like of shape (n_samples,), default=None
            Plate or batch of each sample; None only whitens.
        controls : array-like of bool, shape (n_samples,), default=None
            True for control samples; with ``groups``, each group's CORAL
            statistics come from its controls (all its samples when None).

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_components_)
            The normalised profiles.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=_FLOATS)
        n = X.shape[0]
        groups = check_groups(groups, n)
        controls = check_controls(controls, n)
        Z = ((X - self.mean_) @ self.components_.T) * self.scale_
        if groups is None:
            return Z
        reference = np.ones(n, dtype=bool) if controls is None else controls
        labels, inverse = np.unique(groups, return_inverse=True)
        short = _short_groups(labels, inverse, reference, self.min_controls)
        if short:
            raise ControlsError(
                f"TVN aligns each group with CORAL, which needs at least "
                f"{self.min_controls} {_reference_name(controls)} per group, but "
                f"{len(short)} group(s) have fewer: {format_counts(short)}. Add "
                "controls, pass coarser groups (e.g. batches), or pass "
                "groups=None to whiten only."
            )
        eye = np.eye(self.n_components_)
        target_root = _sym_power(self.covariance_ + self.coral_reg * eye, 0.5)
        for i in range(len(labels)):
            rows = inverse == i
            ref = Z[rows & reference]
            centre = ref.mean(axis=0)
            covariance = np.atleast_2d(np.cov(ref, rowvar=False))
            align = _sym_power(covariance + self.coral_reg * eye, -0.5) @ target_root
            Z[rows] = (Z[rows] - centre) @ align + centre
        return Z
