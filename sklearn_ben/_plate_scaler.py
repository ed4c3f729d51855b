"""Per-plate standardisation against controls, for profiles and for images.

:class:`PlateControlScaler` standardises every plate with the statistics of
its own reference samples (its controls, or all its samples): per feature for
a profile table ``(n_samples, n_features)``, per channel for images
``(n_samples, channels, height, width)``.
"""

from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from sklearn_ben._metadata import PlateMetadataMixin
from sklearn_ben._sklearn_compat import Interval, _fit_context
from sklearn_ben._validation import check_controls, check_groups, format_counts
from sklearn_ben.exceptions import ControlsError

__all__ = ["MAD_TO_STD", "PlateControlScaler"]

_FLOATS = [np.float64, np.float32]

# The MAD of a normal sample times this estimates its standard deviation
# (1 / Phi^-1(3/4)), so robust=True and robust=False give comparable units.
MAD_TO_STD = 1.482602218505602

# Largest float64 temporary, in bytes, when image statistics are computed.
_CHUNK_BYTES = 2**25


def _constant(scale, centre):
    """True where a scale is zero up to the rounding of ``centre``."""
    eps = np.finfo(scale.dtype).eps
    return (scale == 0) | (scale <= 10 * eps * np.abs(centre))


def _finish(centre, scale, with_std):
    """Scale 1 where a reference is constant, or everywhere without with_std."""
    if not with_std:
        return centre, np.ones_like(centre)
    return centre, np.where(_constant(scale, centre), 1.0, scale)


def _location_scale(ref, *, robust, with_std):
    """Centre and scale of the reference rows; constant features get scale 1."""
    if robust:
        centre = np.median(ref, axis=0)
        scale = np.median(np.abs(ref - centre), axis=0) * MAD_TO_STD
    else:
        centre = ref.mean(axis=0)
        scale = ref.std(axis=0)
    return _finish(centre, scale, with_std)


def _work_dtype(dtype):
    """float32 where it holds every value exactly (small ints, float32), else 64."""
    exact_in_float32 = dtype.kind in "biu" and dtype.itemsize <= 2
    if exact_in_float32 or dtype in (np.float32, np.float16):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _image_location_scale(ref, *, robust, with_std):
    """Per-channel centre and scale (float64) of reference images (n, C, H, W).

    Never makes a float64 copy of ``ref``: the mean and standard deviation are
    two passes over chunks of samples; the median and MAD copy one channel at
    a time, in float32 where that is exact.
    """
    n, n_channels = ref.shape[:2]
    centre = np.empty(n_channels)
    scale = np.empty(n_channels)
    if robust:
        for c in range(n_channels):
            work = ref[:, c].astype(_work_dtype(ref.dtype)).ravel()  # one channel
            centre[c] = np.median(work, overwrite_input=True)
            work -= work.dtype.type(centre[c])
            np.abs(work, out=work)
            scale[c] = np.median(work, overwrite_input=True) * MAD_TO_STD
        return _finish(centre, scale, with_std)
    step = max(1, _CHUNK_BYTES // (8 * max(ref[0].size, 1)))
    chunks = [ref[i : i + step] for i in range(0, n, step)]  # views
    per_channel = n * ref[0, 0].size
    total = sum(np.sum(x, axis=(0, 2, 3), dtype=np.float64) for x in chunks)
    centre = total / per_channel
    square = sum(
        np.sum(np.square(x - centre[:, None, None]), axis=(0, 2, 3)) for x in chunks
    )
    return _finish(centre, np.sqrt(square / per_channel), with_std)


def _standardise_images(X, inverse, n_plates, reference, *, robust, with_std):
    """float32 images, each plate standardised per channel with its statistics."""
    out = np.empty(X.shape, dtype=np.float32)
    work = _work_dtype(X.dtype)
    for i in range(n_plates):
        rows = inverse == i
        centre, scale = _image_location_scale(
            X[rows & reference], robust=robust, with_std=with_std
        )
        block = X[rows].astype(work, copy=False)  # X[rows] is already a copy
        block -= centre.astype(work)[:, None, None]
        block /= scale.astype(work)[:, None, None]
        out[rows] = block
    return out


def _short_groups(labels, inverse, reference, minimum):
    """``{group: n_reference}`` for the groups with fewer than ``minimum``."""
    counts = np.bincount(inverse[reference], minlength=len(labels))
    return {labels[i]: int(c) for i, c in enumerate(counts) if c < minimum}


def _reference_name(controls):
    return "samples" if controls is None else "control samples"


def _ndim(X):
    ndim = getattr(X, "ndim", None)
    return np.asarray(X).ndim if ndim is None else ndim


_KINDS = {2: "a profile table", 4: "images"}


class PlateControlScaler(
    PlateMetadataMixin, OneToOneFeatureMixin, TransformerMixin, BaseEstimator
):
    """Standardise each plate with the statistics of its own controls.

    For every plate in ``groups``, each feature is centred on the mean of the
    plate's control samples and divided by their standard deviation (with
    ``robust=True``: the median and the MAD scaled to a standard deviation).
    Images ``(n_samples, channels, height, width)`` are standardised per
    channel, with statistics pooled over the pixels of the plate's controls.
    The statistics come from the data passed to :meth:`transform`: plates
    seen at transform are usually new plates, and each carries its controls.

    Parameters
    ----------
    robust : bool, default=False
        Use the median and the median absolute deviation (times
        ``MAD_TO_STD`` = 1.4826, so that it estimates the standard deviation
        of normal data) instead of the mean and the standard deviation.
    with_std : bool, default=True
        Divide by the scale; False only centres each plate on its controls.
    min_controls : int, default=2
        Fewest control samples a plate must hold; a plate with fewer raises
        :class:`~sklearn_ben.exceptions.ControlsError`.

    Attributes
    ----------
    input_shape_ : tuple of int
        Shape of one sample seen during :meth:`fit`: ``(n_features,)`` for a
        table, ``(channels, height, width)`` for images.
    n_features_in_ : int
        Number of features (of channels, for images) seen during :meth:`fit`.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during :meth:`fit`, when ``X`` has string
        column names.

    See Also
    --------
    TVN : Whitening on controls and CORAL per group, for profiles.
    BENClassifier : Per-plate batch normalisation inside a network.
    sklearn.preprocessing.StandardScaler : The same standardisation with one
        set of statistics for all samples.

    Notes
    -----
    Which rows are the reference of a plate: its control samples when
    ``controls`` is given, else all its samples (plain per-plate
    standardisation).

    A feature (or channel) whose reference values on a plate are constant
    (zero standard deviation or, with ``robust=True``, zero MAD, up to
    rounding) is only centred on that plate: its scale is set to 1, as
    :class:`~sklearn.preprocessing.StandardScaler` does, so the output never
    holds NaN or inf.

    Images come out as float32 whatever their dtype (uint8 and uint16 camera
    data included); the statistics are computed in float64 without a float64
    copy of the images: memory beyond the output is about one plate's images
    in float32. Height and width may differ between :meth:`fit` and
    :meth:`transform`; the channels may not. ``set_output`` applies to tables
    only. Tables keep their float dtype (float32 or float64).

    When to use it, BEN, or both. On images before a network trained with
    BEN (:class:`BENClassifier`, :class:`BENEmbedder`), this scaler removes
    per-plate intensity offsets and gains of each channel at the input, which
    BEN's group-wise batch normalisation inside the network also removes,
    layer by layer; using both is harmless and helps when plates differ a lot
    in raw intensity (the first layer then sees comparable inputs), and it is
    the only plate correction for a network trained without BEN. On profiles
    (CellProfiler features or embeddings), it is the per-plate step before
    :class:`TVN`.

    Without ``groups``, :meth:`transform` treats all its rows as one plate and
    warns with :class:`~sklearn_ben.exceptions.MissingMetadataWarning` (raises
    :class:`~sklearn_ben.exceptions.MissingMetadataError` inside
    ``sklearn_ben.config_context(on_missing_metadata="raise")``): this is
    what happens inside a ``Pipeline`` when metadata routing is off. Because
    the statistics come from the rows passed in, transforming one sample at a
    time is not the same as transforming a whole plate.

    :meth:`fit` learns nothing but the shape and names of the features; it
    validates ``groups`` and ``controls`` so that bad metadata fails early.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ben import PlateControlScaler
    >>> X = np.array([[1.0, 10.0], [3.0, 30.0], [5.0, 20.0],
    ...               [11.0, 0.0], [13.0, 2.0], [20.0, 4.0]])
    >>> plate = np.array(["P1", "P1", "P1", "P2", "P2", "P2"])
    >>> dmso = np.array([True, True, False, True, True, False])
    >>> PlateControlScaler().fit_transform(X, groups=plate, controls=dmso)
    array([[-1., -1.],
           [ 1.,  1.],
           [ 3.,  0.],
           [-1., -1.],
           [ 1.,  1.],
           [ 8.,  3.]])

    Images, one channel of 2 x 2 pixels, two plates of two images:

    >>> images = np.repeat(np.array([0, 2, 10, 30], dtype=np.uint16), 4)
    >>> images = images.reshape(4, 1, 2, 2)
    >>> out = PlateControlScaler().fit_transform(images, groups=["a", "a", "b", "b"])
    >>> out.dtype, out[:, 0, 0, :].tolist()
    (dtype('float32'), [[-1.0, -1.0], [1.0, 1.0], [-1.0, -1.0], [1.0, 1.0]])
    """

    _parameter_constraints = {
        "robust": ["boolean"],
        "with_std": ["boolean"],
        "min_controls": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, *, robust=False, with_std=True, min_controls=2):
        self.robust = robust
        self.with_std = with_std
        self.min_controls = min_controls

    def _validate(self, X, *, reset):
        """A float table or an (n, C, H, W) image array of its own dtype."""
        ndim = _ndim(X)
        if ndim == 3 or ndim > 4:
            raise ValueError(
                f"X must be a profile table (n_samples, n_features) or images "
                f"(n_samples, channels, height, width), but got a {ndim}-d array "
                f"of shape {np.shape(X)}."
            )
        if not reset and ndim in _KINDS and ndim != len(self.input_shape_) + 1:
            raise ValueError(
                f"X holds {_KINDS[ndim]}, but PlateControlScaler was fitted on "
                f"{_KINDS[len(self.input_shape_) + 1]} (sample shape "
                f"{self.input_shape_}); pass the same kind of data as in fit."
            )
        if ndim != 4:  # scikit-learn's message for 1-d input
            return validate_data(self, X, reset=reset, dtype=_FLOATS)
        X = validate_data(self, X, reset=reset, dtype=None, allow_nd=True)
        if X.dtype.kind not in "biuf":
            raise ValueError(
                f"images must hold numbers, but got dtype {X.dtype}; pass an "
                "integer or float array."
            )
        return X.view(np.uint8) if X.dtype.kind == "b" else X

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, groups=None, controls=None):
        """Record the shape of ``X`` and validate the metadata.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Profiles, or images with channels first.
        y : None
            Ignored.
        groups : array-like of shape (n_samples,), default=None
            Plate of each sample.
        controls : array-like of bool, shape (n_samples,), default=None
            True for control samples (e.g. DMSO).

        Returns
        -------
        self : PlateControlScaler
            The fitted scaler.
        """
        X = self._validate(X, reset=True)
        self.input_shape_ = tuple(X.shape[1:])
        check_groups(groups, X.shape[0])
        check_controls(controls, X.shape[0])
        return self

    def transform(self, X, *, groups=None, controls=None):
        """Standardise each plate of ``X`` with its own controls.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Profiles, or images with channels first.
        groups : array-like of shape (n_samples,), default=None
            Plate of each sample. None treats all rows as one plate, with a
            :class:`~sklearn_ben.exceptions.MissingMetadataWarning`.
        controls : array-like of bool, shape (n_samples,), default=None
            True for control samples; None uses all samples of each plate.

        Returns
        -------
        X_new : ndarray of the shape of ``X``
            The standardised profiles (float32 or float64, as ``X``), or
            images (float32).
        """
        check_is_fitted(self)
        X = self._validate(X, reset=False)
        n = X.shape[0]
        groups = check_groups(groups, n)
        controls = check_controls(controls, n)
        no_groups = groups is None
        if no_groups:
            self._warn_missing_metadata(
                "transform", "all its samples are standardised as one plate"
            )
            groups = np.zeros(n, dtype=int)
        reference = np.ones(n, dtype=bool) if controls is None else controls
        labels, inverse = np.unique(groups, return_inverse=True)
        self._check_references(labels, inverse, reference, controls, no_groups)
        if X.ndim == 4:
            return _standardise_images(
                X,
                inverse,
                len(labels),
                reference,
                robust=self.robust,
                with_std=self.with_std,
            )
        X = X.copy()
        for i in range(len(labels)):
            rows = inverse == i
            centre, scale = _location_scale(
                X[rows & reference], robust=self.robust, with_std=self.with_std
            )
            X[rows] = (X[rows] - centre) / scale
        return X

    def _check_references(self, labels, inverse, reference, controls, no_groups):
        short = _short_groups(labels, inverse, reference, self.min_controls)
        if short and no_groups:
            raise ControlsError(
                f"PlateControlScaler got no groups, so it treats all "
                f"{len(inverse)} samples as one plate, which holds "
                f"{sum(short.values())} {_reference_name(controls)}; it needs at "
                f"least {self.min_controls}. Pass groups, more controls, or lower "
                "min_controls."
            )
        if short:
            raise ControlsError(
                f"PlateControlScaler needs at least {self.min_controls} "
                f"{_reference_name(controls)} on every plate, but {len(short)} "
                f"plate(s) have fewer: {format_counts(short)}. Add controls to "
                "these plates, drop them, or lower min_controls."
            )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
