"""Typical variation normalisation (TVN) of profiles against controls.

:class:`TVN` (Ando et al. 2017) centres each group (plate) on its controls,
scales the features by the pooled spread of the controls, whitens with a
shrunk control covariance (Ledoit-Wolf by default), then aligns each group's
control covariance with the pooled one by CORAL (Sun et al. 2016). It takes
``groups`` and ``controls`` as per-sample metadata, requested by default for
metadata routing. :class:`PlateControlScaler` lives in ``_plate_scaler.py``
and is re-exported here.
"""

from numbers import Integral, Real

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
)
from sklearn.covariance import ledoit_wolf_shrinkage, oas
from sklearn.utils.validation import check_is_fitted, validate_data

from sklearn_ben._metadata import PlateMetadataMixin
from sklearn_ben._plate_scaler import (
    MAD_TO_STD,
    PlateControlScaler,
    _reference_name,
    _short_groups,
)
from sklearn_ben._sklearn_compat import Interval, StrOptions, _fit_context
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


def _group_means(X, inverse, n_groups, reference):
    """Mean of each group's reference rows, shape (n_groups, n_features)."""
    sums = np.zeros((n_groups, X.shape[1]))
    np.add.at(sums, inverse[reference], X[reference])
    counts = np.bincount(inverse[reference], minlength=n_groups)
    return sums / counts[:, None]


def _shrinkage(centred, method):
    """Ledoit-Wolf or OAS shrinkage of the covariance of centred rows."""
    if method == "ledoit-wolf":
        return float(ledoit_wolf_shrinkage(centred, assume_centered=True))
    return float(oas(centred, assume_centered=True)[1])


class TVN(
    PlateMetadataMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator
):
    """Typical variation normalisation: centre, scale and whiten on controls, CORAL.

    Four steps, each fitted on the control samples only and each one that
    can be turned off:

    1. ``center="group"``: each group (plate) is centred on the mean of its
       own controls, in :meth:`fit` and in :meth:`transform`;
       ``center="global"`` centres every sample on the mean of all controls
       seen in :meth:`fit`.
    2. ``scale=True``: each feature is divided by the standard deviation of
       the centred controls, pooled over all groups (one global scale, not a
       noisy one per plate).
    3. Whitening: projection on the principal components of the controls,
       each divided by ``sqrt(variance + whiten_reg * mean_variance)``. The
       default ``whiten_reg="ledoit-wolf"`` takes the regulariser from the
       Ledoit-Wolf shrinkage ``a`` of the controls' covariance
       (``whiten_reg = a / (1 - a)``: whitening with the shrunk covariance
       ``(1 - a) S + a mean_variance I``, up to a global factor that cosine
       similarity ignores), so it is chosen from the control data alone.
    4. ``coral=True``: when :meth:`transform` gets ``groups``, each group is
       aligned with CORAL: its samples are mapped by the linear map that
       turns the covariance of its controls into the pooled control
       covariance, both regularised by ``coral_reg``.

    Parameters
    ----------
    n_components : int, float or None, default=None
        Principal components of the controls to keep. None keeps every
        direction of positive regularised variance: all ``n_features`` when
        ``whiten_reg`` is positive (the shrunk covariance is full rank), the
        controls' numerical rank when it is 0; a float in (0, 1) keeps the
        fewest components that explain that share of the controls' variance.
    center : {"group", "global"}, default="group"
        Centre each group on its own controls, or all samples on the mean of
        the controls seen in :meth:`fit`.
    scale : bool, default=True
        Divide each feature by the pooled standard deviation of the centred
        controls before whitening (features with constant controls: by 1).
    whiten : bool, default=True
        Divide each component by its regularised standard deviation; False
        only rotates (and drops components).
    whiten_reg : {"ledoit-wolf", "oas"} or float, default="ledoit-wolf"
        Regulariser of the whitening, as a share of the controls' mean
        variance per component; a string picks it from the Ledoit-Wolf or
        OAS shrinkage of the controls' covariance; 0 is plain PCA whitening.
    coral : bool, default=True
        Align each group with CORAL at :meth:`transform` when ``groups`` is
        given.
    coral_reg : float, default=1.0
        Added to the diagonal of both covariances in CORAL (in whitened
        units). 1 is the value of Sun et al.; larger values align less.
    min_controls : int, default=2
        Fewest control samples a group needs (for its mean and for CORAL);
        a group with fewer raises :class:`~sklearn_ben.exceptions.ControlsError`
        (no silent fallback: pass coarser ``groups``, e.g. batches).

    Attributes
    ----------
    mean_ : ndarray of shape (n_features,)
        Mean of the control samples seen in :meth:`fit` (used to centre when
        ``center="global"`` or no ``groups`` arrive).
    feature_scale_ : ndarray of shape (n_features,)
        Divisor of each feature (1 with ``scale=False``).
    components_ : ndarray of shape (n_components_, n_features)
        Principal axes of the centred, scaled controls, by decreasing
        variance.
    explained_variance_ : ndarray of shape (n_components_,)
        Variance of the controls along each axis (``ddof=1``).
    whiten_reg_ : float
        The regulariser used (from the shrinkage when ``whiten_reg`` is a
        string).
    shrinkage_ : float or None
        The Ledoit-Wolf or OAS shrinkage, in [0, 1]; None for a float
        ``whiten_reg``.
    scale_ : ndarray of shape (n_components_,)
        Factor applied to each component.
    covariance_ : ndarray of shape (n_components_, n_components_)
        Covariance of the whitened fit controls: the CORAL target. Its
        diagonal is the variance each component comes out with, between 0
        and 1: shrinkage leaves weak components below unit variance.
    n_components_ : int
        Number of components kept.
    n_features_in_ : int
        Number of features seen during :meth:`fit`.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during :meth:`fit`, when ``X`` has string
        column names.

    See Also
    --------
    PlateControlScaler : Per-plate standardisation against controls.
    sklearn.covariance.LedoitWolf : The shrinkage used by default.

    Notes
    -----
    Reference samples: the controls when ``controls`` is given, else all
    samples. Without ``groups``, ``center="group"`` and ``coral=True`` fall
    back to the global mean and no CORAL, with a
    :class:`~sklearn_ben.exceptions.MissingMetadataWarning` (what happens in a
    ``Pipeline`` with metadata routing off); each sample is then transformed
    on its own. With ``groups``, a sample's output depends on the controls of
    its group in the data passed to :meth:`transform`.

    Whitened controls do not come out with identity covariance unless
    ``whiten_reg=0``: component ``i`` gets variance ``v_i / (v_i + whiten_reg
    * mean_variance)``, near 1 for strong components and near 0 for weak
    ones. This is the point of shrinkage with few controls (330 on BBBC021
    for 516 features): the weak components are mostly noise.

    Why these defaults, on raw CellProfiler features of BBBC021 (see the
    profiling guide for the numbers): per-plate scaling with 6 control wells
    per plate adds noise to every plate, so the scale is global; centring
    stays per plate because plate offsets are large and a mean of 6 wells
    estimates them well enough.

    References
    ----------
    D. M. Ando, C. Y. McLean and M. Berndl, "Improving phenotypic measurements
    in high-content imaging screens", bioRxiv 161422, 2017.

    B. Sun, J. Feng and K. Saenko, "Return of frustratingly easy domain
    adaptation", AAAI 2016.

    O. Ledoit and M. Wolf, "A well-conditioned estimator for large-dimensional
    covariance matrices", J. Multivar. Anal. 88(2), 2004.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ben import TVN
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(40, 3)) @ [[2.0, 0.0, 0.0], [1.0, 1.0, 0.0],
    ...                                 [0.0, 0.0, 0.5]]
    >>> dmso = np.arange(40) < 30
    >>> tvn = TVN(center="global", whiten_reg=0.0, coral=False)
    >>> Z = tvn.fit(X, controls=dmso).transform(X)
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
        "center": [StrOptions({"group", "global"})],
        "scale": ["boolean"],
        "whiten": ["boolean"],
        "whiten_reg": [
            StrOptions({"ledoit-wolf", "oas"}),
            Interval(Real, 0, None, closed="left"),
        ],
        "coral": ["boolean"],
        "coral_reg": [Interval(Real, 0, None, closed="neither")],
        "min_controls": [Interval(Integral, 2, None, closed="left")],
    }

    def __init__(
        self,
        *,
        n_components=None,
        center="group",
        scale=True,
        whiten=True,
        whiten_reg="ledoit-wolf",
        coral=True,
        coral_reg=1.0,
        min_controls=2,
    ):
        self.n_components = n_components
        self.center = center
        self.scale = scale
        self.whiten = whiten
        self.whiten_reg = whiten_reg
        self.coral = coral
        self.coral_reg = coral_reg
        self.min_controls = min_controls

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, groups=None, controls=None):
        """Learn centring, scaling and whitening from the controls of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Profiles.
        y : None
            Ignored.
        groups : array-like of shape (n_samples,), default=None
            Plate of each sample; with ``center="group"`` each is centred on
            its controls before the statistics are pooled.
        controls : array-like of bool, shape (n_samples,), default=None
            True for control samples; None fits on all samples.

        Returns
        -------
        self : TVN
            The fitted transformer.
        """
        X = validate_data(self, X, reset=True, dtype=_FLOATS, ensure_min_samples=2)
        n = X.shape[0]
        groups = check_groups(groups, n)
        controls = check_controls(controls, n)
        reference = np.ones(n, dtype=bool) if controls is None else controls
        if reference.sum() < 2:
            raise ControlsError(
                f"TVN fits its whitening on the control samples, but controls "
                f"marks {reference.sum()} of {n} samples; mark at least 2, or pass "
                "controls=None to fit on all samples."
            )
        self.mean_ = X[reference].mean(axis=0)
        centred = self._centre(X, groups, controls, "fit")[reference]
        spread = centred.std(axis=0)
        constant = (spread == 0) | (not self.scale)
        self.feature_scale_ = np.where(constant, 1.0, spread)
        ref = centred / self.feature_scale_
        self.shrinkage_, self.whiten_reg_ = self._regulariser(ref)
        # A shrunk covariance is full rank: with n_components=None every
        # direction is kept, also those in which the controls do not vary.
        full = self.n_components is None and self.whiten_reg_ > 0
        _, singular, vt = np.linalg.svd(ref, full_matrices=full)
        vt *= np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])[:, None]
        n_ref = ref.shape[0]
        variance = np.zeros(len(vt))
        variance[: len(singular)] = singular**2 / (n_ref - 1)
        k = len(vt) if full else self._choose_n_components(variance, n_ref)
        mean_variance = variance.sum() / self.n_features_in_
        regularised = variance[:k] + self.whiten_reg_ * mean_variance
        positive = regularised > np.finfo(regularised.dtype).tiny
        whiten = np.where(positive, 1 / np.sqrt(np.where(positive, regularised, 1)), 1)
        self.scale_ = whiten if self.whiten else np.ones(k)
        self.components_ = vt[:k]
        self.explained_variance_ = variance[:k]
        self.covariance_ = np.diag(variance[:k] * self.scale_**2)
        self.n_components_ = k
        return self

    def _regulariser(self, ref):
        if not isinstance(self.whiten_reg, str):
            return None, float(self.whiten_reg)
        shrinkage = _shrinkage(ref, self.whiten_reg)
        if shrinkage >= 1:
            return shrinkage, np.inf
        return shrinkage, shrinkage / (1 - shrinkage)

    def _centre(self, X, groups, controls, method):
        """``X`` minus its group's control mean, or minus ``mean_``."""
        if self.center == "global":
            return X - self.mean_
        if groups is None:
            self._warn_missing_metadata(
                method, "every sample is centred on the mean of all fit controls"
            )
            return X - self.mean_
        n = X.shape[0]
        reference = np.ones(n, dtype=bool) if controls is None else controls
        labels, inverse = self._check_groups(groups, controls, reference)
        return X - _group_means(X, inverse, len(labels), reference)[inverse]

    def _check_groups(self, groups, controls, reference):
        labels, inverse = np.unique(groups, return_inverse=True)
        short = _short_groups(labels, inverse, reference, self.min_controls)
        if short:
            raise ControlsError(
                f"TVN centres and aligns each group on its controls, which needs "
                f"at least {self.min_controls} {_reference_name(controls)} per "
                f"group, but {len(short)} group(s) have fewer: "
                f"{format_counts(short)}. Add controls, pass coarser groups (e.g. "
                "batches), or use center='global', coral=False."
            )
        return labels, inverse

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
        """Centre, scale and whiten ``X``, then align each group with CORAL.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Profiles.
        groups : array-like of shape (n_samples,), default=None
            Plate (or batch) of each sample; None centres on ``mean_`` and
            skips CORAL (with a warning unless both are turned off).
        controls : array-like of bool, shape (n_samples,), default=None
            True for control samples; each group's statistics come from its
            controls (all its samples when None).

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
        centred = self._centre(X, groups, controls, "transform")
        Z = ((centred / self.feature_scale_) @ self.components_.T) * self.scale_
        if not self.coral:
            return Z
        if groups is None:
            if self.center == "global":  # the group-centring warning covers it
                self._warn_missing_metadata("transform", "no group is aligned")
            return Z
        return self._coral(Z, groups, controls)

    def _coral(self, Z, groups, controls):
        reference = np.ones(len(Z), dtype=bool) if controls is None else controls
        labels, inverse = self._check_groups(groups, controls, reference)
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
