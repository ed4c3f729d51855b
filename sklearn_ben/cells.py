"""From whole images to single cells and back to profiles.

``find_nuclei`` locates nuclei, ``crop_cells`` cuts one fixed-size crop per
cell (the units BEN's embedders are trained on, with the source image as a
bag). :func:`sklearn_ben.profiles.aggregate_profiles` and
:func:`~sklearn_ben.profiles.treatment_profiles` (also importable from here)
turn per-cell embeddings into per-image, per-well or per-treatment profiles.

Cell centres travel as a DataFrame with columns ``image`` (index of the image
in the stack), ``y`` and ``x`` (row and column, in pixels); extra columns
ride along.
"""

from numbers import Integral

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

# Aggregation lives in sklearn_ben.profiles; re-exported for cells -> profiles.
from sklearn_ben.profiles import (  # noqa: F401
    _check_columns,
    aggregate_profiles,
    treatment_profiles,
)

__all__ = ["crop_cells", "find_nuclei"]


def crop_cells(
    images, centers, *, size=48, image_index=None, groups=None, channels_last=False
):
    """Cut a square crop around each cell centre.

    Parameters
    ----------
    images : array-like of shape (N, C, H, W), or (N, H, W, C) with ``channels_last``
        The whole images.
    centers : DataFrame, list of arrays or array of shape (M, 2)
        Cell centres, in one of three forms: a DataFrame with columns
        ``image``, ``y``, ``x`` (what :func:`find_nuclei` returns); a list of
        N arrays of shape (k_i, 2), the ``(y, x)`` centres in image ``i``; or
        one array of shape (M, 2) of ``(y, x)`` with ``image_index``.
        Fractional centres are rounded to the nearest pixel.
    size : int, default=48
        Side of the square crops, in pixels.
    image_index : array-like of int, shape (M,), default=None
        Image of each centre, only with an (M, 2) array of centres.
    groups : array-like of shape (N,), default=None
        Plate (or any label) of each image, passed on to its crops.
    channels_last : bool, default=False
        Whether ``images`` are (N, H, W, C). Crops are channels-first in
        any case, the layout the estimators take.

    Returns
    -------
    result : Bunch
        ``crops`` : ndarray of shape (M', C, size, size), same dtype as
        ``images``, exact copies of the pixels;
        ``bags`` : ndarray of int, shape (M',), the source image of each crop;
        ``groups`` : ndarray of shape (M',) or None, the plate of each crop;
        ``centers`` : DataFrame of the M' kept centres (rounded, with any
        extra columns) and a fresh index;
        ``kept`` : ndarray of bool, shape (M,), False where the crop would
        leave the image and was dropped.

    See Also
    --------
    find_nuclei : Cell centres from a nuclear stain.

    Notes
    -----
    A crop around centre ``(y, x)`` covers rows ``y - size // 2`` to
    ``y - size // 2 + size - 1`` (and likewise columns), so for an even
    ``size`` the centre is the pixel just below and right of the middle.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ben.cells import crop_cells
    >>> images = np.arange(2 * 1 * 10 * 10).reshape(2, 1, 10, 10)
    >>> centers = [np.array([[5, 5], [1, 1]]), np.array([[4, 6]])]
    >>> cells = crop_cells(images, centers, size=4, groups=["P1", "P2"])
    >>> cells.crops.shape, cells.bags.tolist(), cells.groups.tolist()
    ((2, 1, 4, 4), [0, 1], ['P1', 'P2'])
    >>> cells.kept.tolist()  # the crop around (1, 1) would leave the image
    [True, False, True]
    """
    images = _check_stack(images, channels_last)
    n_images, _, height, width = images.shape
    if not isinstance(size, Integral) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size should be a positive integer, but got size={size!r}.")
    table = _centers_table(centers, image_index, n_images)
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (n_images,):
            raise ValueError(
                f"groups has shape {groups.shape} but there are {n_images} "
                "images; pass one plate per image."
            )
    image = table["image"].to_numpy()
    top = table["y"].to_numpy() - size // 2
    left = table["x"].to_numpy() - size // 2
    kept = (top >= 0) & (left >= 0) & (top + size <= height) & (left + size <= width)
    image, top, left = image[kept], top[kept], left[kept]
    # one gather for all crops: (M', C, size, size)
    rows = top[:, None] + np.arange(size)  # (M', size)
    cols = left[:, None] + np.arange(size)  # (M', size)
    crops = images[image[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    crops = np.moveaxis(crops, -1, 1)  # (M', size, size, C) -> (M', C, size, size)
    return Bunch(
        crops=np.ascontiguousarray(crops),
        bags=image,
        groups=None if groups is None else groups[image],
        centers=table[kept].reset_index(drop=True),
        kept=kept,
    )


def find_nuclei(
    images, *, channel=0, channels_last=False, sigma=1.0, min_area=20, threshold=None
):
    """Find nuclei by Otsu thresholding and return their centres.

    Each image's nuclear channel is smoothed with a Gaussian, thresholded
    (Otsu's threshold of that image, or a fixed one) and split into
    connected components; components smaller than ``min_area`` pixels are
    dropped and the others' centroids returned. Needs scikit-image
    (``pip install sklearn-ben[cells]``).

    Parameters
    ----------
    images : array-like of shape (N, C, H, W), or (N, H, W, C) with ``channels_last``
        The images; (N, H, W) is taken as a single channel.
    channel : int, default=0
        Index of the nuclear (DNA) stain.
    channels_last : bool, default=False
        Whether ``images`` are (N, H, W, C).
    sigma : float, default=1.0
        Standard deviation (pixels) of the Gaussian smoothing; 0 for none.
    min_area : int, default=20
        Smallest nucleus area, in pixels, after thresholding.
    threshold : float or None, default=None
        Fixed intensity threshold; ``None`` computes Otsu's per image.

    Returns
    -------
    centers : DataFrame
        Columns ``image``, ``y``, ``x`` (the centroid rounded to the nearest
        pixel, as ints) and ``area`` (pixels), one row per nucleus; the
        ``centers`` argument of :func:`crop_cells`.

    Notes
    -----
    Touching nuclei merge into one component; classical seeded watershed or
    a learned segmenter (e.g. Cellpose) separates them better. An image with
    no contrast has no nuclei.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ben.cells import find_nuclei
    >>> images = np.zeros((1, 1, 40, 40))
    >>> yy, xx = np.mgrid[:40, :40]
    >>> images[0, 0][(yy - 10) ** 2 + (xx - 12) ** 2 <= 16] = 1.0
    >>> images[0, 0][(yy - 30) ** 2 + (xx - 25) ** 2 <= 16] = 1.0
    >>> find_nuclei(images, min_area=10)
       image   y   x  area
    0      0  10  12    57
    1      0  30  25    57
    """
    try:
        from skimage.filters import gaussian, threshold_otsu
        from skimage.measure import label, regionprops
    except ImportError as error:
        raise ImportError(
            "find_nuclei needs scikit-image, which is not installed; install it "
            "with pip install sklearn-ben[cells] (or pip install scikit-image)."
        ) from error
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[:, None] if not channels_last else images[..., None]
    images = _check_stack(images, channels_last)
    n_channels = images.shape[1]
    if not isinstance(channel, Integral) or not -n_channels <= channel < n_channels:
        raise ValueError(
            f"channel={channel!r} is not a channel of images with {n_channels} "
            "channels; pass the index of the nuclear stain."
        )
    if not isinstance(min_area, Integral) or min_area < 1:
        raise ValueError(
            f"min_area should be a positive integer, but got min_area={min_area!r}."
        )
    rows = []
    for index, image in enumerate(images[:, channel].astype(np.float64)):
        if sigma > 0:
            image = gaussian(image, sigma=sigma, preserve_range=True)
        if threshold is not None:
            cut = threshold
        elif image.max() > image.min():
            cut = threshold_otsu(image)
        else:
            continue  # no contrast, no nuclei
        for region in regionprops(label(image > cut)):
            if region.area >= min_area:
                y, x = region.centroid
                rows.append((index, round(y), round(x), int(region.area)))
    return pd.DataFrame(rows, columns=["image", "y", "x", "area"]).astype(
        {"image": np.int64, "y": np.int64, "x": np.int64, "area": np.int64}
    )


def _check_stack(images, channels_last):
    images = np.asarray(images)
    if images.ndim != 4:
        layout = "(N, H, W, C)" if channels_last else "(N, C, H, W)"
        raise ValueError(
            f"images must be a 4-d array {layout}, but got shape {images.shape}; "
            "stack the images and add a channel axis if needed."
        )
    return np.moveaxis(images, -1, 1) if channels_last else images


def _centers_table(centers, image_index, n_images):
    """Centres as a DataFrame with int columns image, y, x (plus extras)."""
    if isinstance(centers, pd.DataFrame):
        _check_columns(centers, ["image", "y", "x"], "centers")
        table = centers.reset_index(drop=True).copy()
    elif image_index is not None:
        points = np.asarray(centers, dtype=float).reshape(-1, 2)
        image_index = np.asarray(image_index)
        if len(image_index) != len(points):
            raise ValueError(
                f"image_index has {len(image_index)} entries but there are "
                f"{len(points)} centres; pass one image per centre."
            )
        table = pd.DataFrame(
            {"image": image_index, "y": points[:, 0], "x": points[:, 1]}
        )
    else:
        if len(centers) != n_images:
            raise ValueError(
                f"centers has {len(centers)} arrays but there are {n_images} "
                "images; pass one (k, 2) array of (y, x) per image, a DataFrame "
                "with columns image, y, x, or an (M, 2) array with image_index."
            )
        points = [np.asarray(c, dtype=float).reshape(-1, 2) for c in centers]
        table = pd.DataFrame(
            {
                "image": np.repeat(np.arange(n_images), [len(p) for p in points]),
                "y": np.concatenate(points)[:, 0] if points else [],
                "x": np.concatenate(points)[:, 1] if points else [],
            }
        )
    for column in ("y", "x"):
        values = table[column].to_numpy(dtype=float)
        bad = ~np.isfinite(values) | (np.abs(values) > 2**52)
        if bad.any():
            raise ValueError(
                f"{int(bad.sum())} centre(s) have a {column} coordinate that is "
                f"NaN, infinite or absurdly large, e.g. {float(values[bad][0])!r} (row "
                f"{int(np.flatnonzero(bad)[0])}); drop or fix these centres "
                "before cropping."
            )
        table[column] = np.rint(values).astype(np.int64)
    image = table["image"].to_numpy()
    if image.dtype.kind not in "iu" and len(image):
        raise ValueError(
            f"centre image indices must be integers, but got dtype {image.dtype}."
        )
    table["image"] = image.astype(np.int64)
    outside = (image < 0) | (image >= n_images)
    if outside.any():
        raise ValueError(
            f"{int(outside.sum())} centres name images outside 0..{n_images - 1}, "
            f"e.g. image {int(image[outside][0])}; image is an index into images."
        )
    return table
