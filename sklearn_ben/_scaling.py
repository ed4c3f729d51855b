"""Intensity scaling of image batches to float32, one batch at a time.

Torch and numpy only, so a plain PyTorch loop can use it as the estimators do.
One validated *spec* says how raw pixel values become network inputs; the
same spec is applied at fit and at predict, to each batch as it is drawn, so a
plate of uint16 images is never copied whole to float32.

Specs (see :func:`check_intensity`):

``"dtype"``
    Integers divided by their dtype's maximum (uint8 by 255, uint16 by
    65535), floats unchanged: torchvision's ``ToDtype(scale=True)``. A 12-bit
    camera's values then land in [0, 0.0625], which BatchNorm absorbs but a
    fixed threshold or a pretrained network does not.
``"none"``
    Cast to float32, values unchanged.
``(low, high)``
    ``(x - low) / (high - low)`` per channel, no clipping; ``low`` and
    ``high`` are scalars or one value per channel (e.g. the camera's dark
    level and the stain's bright level, measured once on controls).
``("percentile", q_low, q_high)``
    The same map with ``low`` and ``high`` the ``q_low`` and ``q_high``
    percentiles of each image and channel (linear interpolation, as
    ``numpy.percentile``); a flat channel (``high == low``) becomes
    ``x - low``, i.e. zeros.
"""

from numbers import Real

import numpy as np
import torch

__all__ = ["check_intensity", "describe_input", "scale_batch"]

_NAMED = ("dtype", "none")


def check_intensity(spec, n_channels: int | None = None):
    """Validate an intensity spec and return it in normal form.

    Parameters
    ----------
    spec : {"dtype", "none"}, tuple of (low, high) or ("percentile", q_low, q_high)
        The scaling; see the module docstring. ``low`` and ``high`` are
        scalars or sequences of one value per channel.
    n_channels : int, default=None
        The images' channel count, when known: per-channel ``low`` and
        ``high`` must then have this length.

    Returns
    -------
    spec : str or tuple
        ``"dtype"``, ``"none"``, ``("range", low, high)`` with ``low`` and
        ``high`` float64 arrays of shape (1,) or (n_channels,), or
        ``("percentile", q_low, q_high)`` with floats.

    Raises
    ------
    ValueError
        When the spec is none of the above, or its numbers are out of order.

    Examples
    --------
    >>> from sklearn_ben._scaling import check_intensity
    >>> check_intensity("dtype")
    'dtype'
    >>> check_intensity((100, [4095, 2000]), n_channels=2)
    ('range', array([100., 100.]), array([4095., 2000.]))
    >>> check_intensity(("percentile", 1, 99.5))
    ('percentile', 1.0, 99.5)
    """
    if isinstance(spec, str):
        if spec in _NAMED:
            return spec
        raise ValueError(
            f"intensity must be 'dtype', 'none', a (low, high) pair or "
            f"('percentile', q_low, q_high), but got the string {spec!r}; "
            "pass one of those."
        )
    if isinstance(spec, (tuple, list)) and len(spec) == 3 and spec[0] == "percentile":
        return _check_percentiles(spec[1], spec[2])
    if isinstance(spec, (tuple, list)) and len(spec) == 3 and spec[0] == "range":
        spec = spec[1:]  # the normal form is accepted back
    if isinstance(spec, (tuple, list)) and len(spec) == 2:
        return _check_range(spec[0], spec[1], n_channels)
    raise ValueError(
        f"intensity must be 'dtype', 'none', a (low, high) pair or "
        f"('percentile', q_low, q_high), but got {spec!r}; pass one of those."
    )


def _check_percentiles(q_low, q_high):
    if not all(
        isinstance(q, Real) and not isinstance(q, bool) for q in (q_low, q_high)
    ):
        raise ValueError(
            f"intensity ('percentile', q_low, q_high) needs two numbers, but got "
            f"{q_low!r} and {q_high!r}; pass e.g. ('percentile', 1, 99)."
        )
    if not 0 <= q_low < q_high <= 100:
        raise ValueError(
            f"intensity percentiles must satisfy 0 <= q_low < q_high <= 100, but "
            f"got q_low={q_low} and q_high={q_high}; pass e.g. ('percentile', 1, 99)."
        )
    return ("percentile", float(q_low), float(q_high))


def _check_range(low, high, n_channels):
    try:
        low = np.atleast_1d(np.asarray(low, dtype=np.float64))
        high = np.atleast_1d(np.asarray(high, dtype=np.float64))
    except (TypeError, ValueError):
        raise ValueError(
            f"intensity (low, high) needs numbers or one number per channel, but "
            f"got low={low!r} and high={high!r}; pass e.g. (100, 4095)."
        ) from None
    if low.ndim != 1 or high.ndim != 1:
        raise ValueError(
            f"intensity low and high must be scalars or flat sequences, but got "
            f"shapes {low.shape} and {high.shape}; pass one value per channel."
        )
    size = max(low.size, high.size)
    if low.size not in (1, size) or high.size not in (1, size):
        raise ValueError(
            f"intensity low has {low.size} values and high has {high.size}; pass "
            "one value, or one per channel for both."
        )
    if n_channels is not None and size not in (1, n_channels):
        raise ValueError(
            f"intensity gives {size} values per channel but the images have "
            f"{n_channels} channels; pass {n_channels} values or a single one."
        )
    low, high = np.broadcast_to(low, size).copy(), np.broadcast_to(high, size).copy()
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        raise ValueError(
            f"intensity low and high must be finite, but got low={low.tolist()} "
            f"and high={high.tolist()}; pass finite numbers."
        )
    bad = np.flatnonzero(high <= low)
    if bad.size:
        c = int(bad[0])
        raise ValueError(
            f"intensity high must exceed low, but channel {c} has low={low[c]:g} "
            f"and high={high[c]:g}; swap them or widen the range."
        )
    return ("range", low, high)


def scale_batch(batch, spec="dtype") -> torch.Tensor:
    """Convert one batch to float32 under an intensity spec.

    Parameters
    ----------
    batch : ndarray or Tensor of shape (N, C, H, W) or (N, F)
        Any numeric dtype (uint8, uint16, int32, float16, ...). Only this
        batch is converted; ``(N, F)`` features count as ``F`` channels.
    spec : str or tuple, default="dtype"
        An intensity spec, raw or from :func:`check_intensity`.

    Returns
    -------
    scaled : Tensor of dtype float32, same shape as ``batch``
        On ``batch``'s device. ``batch`` is never modified; a float32 batch
        under ``"dtype"`` or ``"none"`` comes back as is (no copy).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ben._scaling import scale_batch
    >>> batch = np.array([[[[0, 4095]], [[100, 2100]]]], dtype=np.uint16)
    >>> scale_batch(batch, "dtype").flatten()
    tensor([0.0000, 0.0625, 0.0015, 0.0320])
    >>> scale_batch(batch, ([0, 100], [4095, 2100])).flatten()
    tensor([0., 1., 0., 1.])
    >>> scale_batch(batch, ("percentile", 0, 100)).flatten()
    tensor([0., 1., 0., 1.])
    """
    spec = check_intensity(spec)
    tensor = _as_tensor(batch)
    if spec == "none" or (spec == "dtype" and not _is_integer(tensor)):
        return tensor.to(torch.float32)
    if spec == "dtype":
        scale = float(torch.iinfo(tensor.dtype).max)
        return tensor.to(torch.float32).div_(scale)
    out = tensor.to(torch.float32)
    if out.data_ptr() == tensor.data_ptr():
        out = out.clone()  # float32 input: never scale the caller's array in place
    if spec[0] == "range":
        _, low, high = check_intensity(spec, n_channels=_n_channels(out))
        shape = (1, -1) + (1,) * (out.ndim - 2)
        low_t = torch.as_tensor(low, dtype=torch.float32, device=out.device)
        span = torch.as_tensor(high - low, dtype=torch.float32, device=out.device)
        return out.sub_(low_t.view(shape)).div_(span.view(shape))
    return _percentile_scale(out, spec[1], spec[2])


def _as_tensor(batch) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        tensor = batch
    else:
        array = np.asarray(batch)
        if not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder("="))
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.ndim < 2 or tensor.is_complex():
        raise ValueError(
            f"scale_batch needs a real batch of shape (N, C, H, W) or (N, F), but "
            f"got shape {tuple(tensor.shape)} of {tensor.dtype}; add the batch axis."
        )
    return tensor


def _is_integer(tensor: torch.Tensor) -> bool:
    return not tensor.dtype.is_floating_point and tensor.dtype != torch.bool


def _n_channels(tensor: torch.Tensor) -> int:
    return tensor.shape[1]


def _percentile_scale(out: torch.Tensor, q_low: float, q_high: float) -> torch.Tensor:
    """Map each image and channel's q_low/q_high percentiles to 0 and 1, in place."""
    n, c = out.shape[0], out.shape[1]
    flat = out.reshape(n, c, -1)  # (N, C, P): P pixels per image and channel
    low = _percentile(flat, q_low)  # (N, C, 1)
    high = _percentile(flat, q_high)  # (N, C, 1)
    span = high - low
    span = torch.where(span > 0, span, torch.ones_like(span))
    return flat.sub_(low).div_(span).reshape(out.shape)


def _percentile(flat: torch.Tensor, q: float) -> torch.Tensor:
    """numpy.percentile(flat, q, axis=-1, keepdims=True), 'linear' method."""
    p = flat.shape[-1]
    if p == 1:
        return flat.clone()
    position = q / 100 * (p - 1)
    below = int(np.floor(position))
    above = min(below + 1, p - 1)
    # kthvalue is 1-based and O(P), cheaper than a sort of every image.
    low = flat.kthvalue(below + 1, dim=-1, keepdim=True).values
    if above == below or position == below:
        return low
    high = flat.kthvalue(above + 1, dim=-1, keepdim=True).values
    return low + (high - low) * (position - below)


def describe_input(batch) -> dict:
    """What a batch's raw values look like, to record at fit and compare at predict.

    Parameters
    ----------
    batch : ndarray or Tensor
        Raw inputs (before scaling).

    Returns
    -------
    description : dict
        ``{"dtype": name}``, plus ``"max"`` (int, the largest value seen) for
        integer inputs. An estimator that saw uint16 with max 4095 at fit
        (a 12-bit camera) and gets max 65535 at predict is being fed another
        camera or another bit shift.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ben._scaling import describe_input
    >>> describe_input(np.array([[3, 4095]], dtype=np.uint16))
    {'dtype': 'uint16', 'max': 4095}
    >>> describe_input(np.zeros((1, 2), dtype=np.float32))
    {'dtype': 'float32'}
    """
    tensor = _as_tensor(batch)
    name = str(tensor.dtype).removeprefix("torch.")
    if tensor.dtype.is_floating_point or tensor.numel() == 0:
        return {"dtype": name}
    if tensor.dtype == torch.bool:
        return {"dtype": name, "max": int(tensor.any())}
    if tensor.device.type == "cpu":
        # numpy: torch implements no max for uint16/uint32 tensors.
        return {"dtype": name, "max": int(tensor.numpy().max())}
    return {"dtype": name, "max": int(tensor.to(torch.int64).max())}
