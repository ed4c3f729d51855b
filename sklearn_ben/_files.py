"""Decoding image files bit-exactly into (C, H, W) arrays, and reading headers.

TIFF goes through ``tifffile`` (compressed TIFF, LZW/deflate/zstd as written
by Opera Phenix and others, needs ``imagecodecs``); other formats through
Pillow, except 16-bit colour PNG, which Pillow reduces to 8 bits, so it goes
through ``imagecodecs``. Arrays keep the file's dtype and values: nothing is
rescaled, clipped or converted.
"""

import os
from dataclasses import dataclass

import numpy as np

from sklearn_ben.exceptions import BENError

__all__ = ["Header", "ImageFileError", "read_header", "read_image", "read_plane"]

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Pillow modes whose pixels numpy gives exactly, and the dtype they give.
PILLOW_DTYPES = {
    "1": np.dtype(np.uint8),
    "L": np.dtype(np.uint8),
    "LA": np.dtype(np.uint8),
    "RGB": np.dtype(np.uint8),
    "RGBA": np.dtype(np.uint8),
    "I;16": np.dtype(np.uint16),
    "I;16L": np.dtype(np.uint16),
    "I;16B": np.dtype(np.uint16),
    "I;16N": np.dtype(np.uint16),
    "I": np.dtype(np.int32),
    "F": np.dtype(np.float32),
}
EIGHT_BIT_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr")


class ImageFileError(BENError, ValueError):
    """An image file cannot be read as the sample it should be."""


@dataclass(frozen=True)
class Header:
    """What a file holds, read without decoding its pixels."""

    shape: tuple  # (C, H, W)
    dtype: np.dtype

    def __str__(self) -> str:
        return f"{self.shape} {self.dtype}"


def is_tiff(path: str) -> bool:
    return path.lower().endswith(TIFF_SUFFIXES)


def read_image(path, mode=None) -> np.ndarray:
    """Decode one image file into a (C, H, W) array, in the file's own dtype.

    Parameters
    ----------
    path : str or path-like
        The file. TIFF (``.tif``, ``.tiff``, ...) is read with ``tifffile``:
        every plane of the file (pages, samples) becomes a channel, in file
        order. Other formats are read with Pillow (16-bit colour PNG with
        ``imagecodecs``).
    mode : str, default=None
        Pillow mode to convert 8-bit images to (``"RGB"``, ``"L"``).
        ``None`` keeps the file's channels and values.

    Returns
    -------
    image : ndarray of shape (C, H, W)
        The file's dtype (``uint8``, ``uint16``, ``int32``, ``float32``, ...),
        native byte order, C-contiguous and writable.

    Raises
    ------
    ImageFileError
        When ``mode`` is given for a file of more than 8 bits (Pillow's
        conversion would clip its values to 255), or the file holds something
        that is not one image (several image series, a palette).
    """
    path = os.fspath(path)
    if mode is not None:
        return _read_pillow_converted(path, mode)
    if is_tiff(path):
        return _read_tiff(path)
    return _read_other(path)


def read_plane(path, out=None) -> np.ndarray:
    """Decode a file holding one plane into an (H, W) array.

    A TIFF whose size and dtype match ``out`` (H, W) is decoded straight into
    it, with no copy; otherwise the plane is returned in a new array, for the
    caller to compare with what it expected.

    Raises
    ------
    ImageFileError
        When the file holds more than one plane.
    """
    path = os.fspath(path)
    if is_tiff(path) and out is not None:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            # Fast path: one page holding one plane of the expected size and
            # dtype (a channel file); tifffile's series detection is skipped.
            if len(tif.pages) == 1:
                page = tif.pages.first
                if page.shape == out.shape and page.dtype == out.dtype:
                    page.asarray(out=out)
                    return out
            series = _all_series(tif, path)[0]
            shape = _chw_shape(series.shape, series.axes)
            one = len(tif.series) == 1
            if one and shape == (1, *out.shape) and series.dtype == out.dtype:
                series.asarray(out=out.reshape(series.shape))
                return out
    image = read_image(path)
    if image.shape[0] != 1:
        raise ImageFileError(
            f"Image file {path!r} holds {image.shape[0]} planes, but a file per "
            "channel must hold one; pass multi-plane files one per sample, as "
            "a 1-D list."
        )
    return image[0]


def _read_tiff(path: str) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        arrays = [_to_chw(s.asarray(), s.axes) for s in _all_series(tif, path)]
    array = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
    return _native(array)


def _all_series(tif, path):
    """The file's image series; several only when all have one shape and dtype.

    Pages written one by one (``TiffWriter.write`` per channel) form one
    series each: they are the planes of one image. Series of different shapes
    (thumbnails, pyramid levels, masks) are not, and are refused.
    """
    series = tif.series
    if len({(s.shape, s.axes, s.dtype) for s in series}) != 1:
        shapes = ", ".join(f"{s.shape} {s.dtype}" for s in series[:4])
        raise ImageFileError(
            f"Image file {path!r} holds {len(series)} image series of different "
            f"shapes ({shapes}), but ImageFiles reads files that hold one image; "
            "export one image per file."
        )
    return series


def _chw_shape(shape, axes) -> tuple:
    """(C, H, W) of an array of ``shape`` with tifffile ``axes``: all but Y, X are C."""
    sizes = dict(zip(axes, shape))
    height, width = sizes.get("Y", 1), sizes.get("X", 1)
    channels = int(np.prod([n for a, n in zip(axes, shape) if a not in "YX"]))
    return (channels, height, width)


def _to_chw(array: np.ndarray, axes: str) -> np.ndarray:
    if "Y" not in axes or "X" not in axes:
        raise ImageFileError(
            f"tifffile reads axes {axes!r}, without Y and X; pass 2-D images."
        )
    order = [i for i, a in enumerate(axes) if a not in "YX"]
    order += [axes.index("Y"), axes.index("X")]
    array = array.transpose(order)
    return np.ascontiguousarray(array.reshape(-1, *array.shape[-2:]))


def _native(array: np.ndarray) -> np.ndarray:
    if not array.dtype.isnative:  # big-endian TIFF; torch needs native order
        array = array.astype(array.dtype.newbyteorder("="))
    if not array.flags.writeable:
        array = array.copy()
    return array


def _png_is_deep_colour(head: bytes) -> bool:
    """A PNG whose IHDR says 16 bits with colour or alpha (Pillow gives 8 bits)."""
    return (
        head[:8] == PNG_SIGNATURE
        and len(head) >= 26
        and head[24] == 16
        and head[25] in (2, 4, 6)
    )


def _read_other(path: str) -> np.ndarray:
    with open(path, "rb") as fh:
        head = fh.read(26)
    if _png_is_deep_colour(head):
        import imagecodecs

        with open(path, "rb") as fh:
            array = imagecodecs.png_decode(fh.read())
        return _native(np.ascontiguousarray(array.transpose(2, 0, 1)))
    from PIL import Image

    with Image.open(path) as image:
        _check_pillow_image(image, path)
        array = np.asarray(image)
    return _pillow_chw(array)


def _check_pillow_image(image, path):
    if getattr(image, "n_frames", 1) > 1:
        raise ImageFileError(
            f"Image file {path!r} holds {image.n_frames} frames, but Pillow "
            "formats are read as one frame; save each image to its own file."
        )
    if image.mode not in PILLOW_DTYPES:
        raise ImageFileError(
            f"Image file {path!r} has Pillow mode {image.mode!r}, whose values "
            "are not intensities; pass mode='RGB' (or 'L') to convert it."
        )


def _pillow_chw(array: np.ndarray) -> np.ndarray:
    if array.dtype == bool:
        array = array.astype(np.uint8)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return _native(np.ascontiguousarray(array))


def _read_pillow_converted(path: str, mode: str) -> np.ndarray:
    from PIL import Image

    header = read_header(path)
    if header.dtype != np.uint8:
        raise ImageFileError(
            f"Image file {path!r} is {header.dtype}, but mode={mode!r} converts "
            "through Pillow's 8-bit modes, which clips values to 255; pass "
            "mode=None to keep the file's values."
        )
    with Image.open(path) as image:
        if image.mode != mode:
            image = image.convert(mode)
        array = np.asarray(image)
    return _pillow_chw(array)


def read_header(path) -> Header:
    """Shape (C, H, W) and dtype of a file, without decoding its pixels.

    For TIFF, also refuses a file shorter than its pixel data (a truncated
    copy), which would otherwise fail only when decoded.
    """
    path = os.fspath(path)
    if is_tiff(path):
        return _tiff_header(path)
    with open(path, "rb") as fh:
        head = fh.read(26)
    if _png_is_deep_colour(head):
        width, height = (int.from_bytes(head[i : i + 4], "big") for i in (16, 20))
        channels = {2: 3, 4: 2, 6: 4}[head[25]]
        return Header((channels, height, width), np.dtype(np.uint16))
    from PIL import Image

    with Image.open(path) as image:
        _check_pillow_image(image, path)
        width, height = image.size
        channels = len(image.getbands())
        return Header((channels, height, width), PILLOW_DTYPES[image.mode])


def _tiff_header(path: str) -> Header:
    import tifffile

    size = os.path.getsize(path)
    with tifffile.TiffFile(path) as tif:
        series = _all_series(tif, path)
        end = max(_data_end(page) for s in series for page in s.pages)
        if end > size:
            raise ImageFileError(
                f"Image file {path!r} is {size} bytes but its pixel data runs to "
                f"byte {end}: the file is truncated; copy it again from the source."
            )
        channels, height, width = _chw_shape(series[0].shape, series[0].axes)
        dtype = series[0].dtype.newbyteorder("=")
        return Header((channels * len(series), height, width), dtype)


def _data_end(page) -> int:
    if page is None:
        return 0
    ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts)]
    return max(ends, default=0)
