"""Intensity specs: validation, and scaling checked against numpy references."""

import numpy as np
import pytest
import torch

from sklearn_ben._scaling import check_intensity, describe_input, scale_batch

RNG = np.random.default_rng(0)
UINT16 = RNG.integers(0, 4096, (3, 2, 6, 5), dtype=np.uint16)  # a 12-bit camera


# ------------------------------------------------------------- check_intensity
@pytest.mark.parametrize("spec", ["dtype", "none"])
def test_check_intensity_named_specs_pass_through(spec):
    assert check_intensity(spec) == spec


def test_check_intensity_scalar_range_is_broadcast():
    kind, low, high = check_intensity((100, 4095), n_channels=3)
    assert kind == "range"
    np.testing.assert_array_equal(low, [100.0])
    np.testing.assert_array_equal(high, [4095.0])


def test_check_intensity_normal_form_is_accepted_back():
    spec = check_intensity(([0, 10], [5, 20]))
    again = check_intensity(spec)
    np.testing.assert_array_equal(again[1], [0, 10])
    np.testing.assert_array_equal(again[2], [5, 20])


def test_check_intensity_percentile_is_floats():
    assert check_intensity(("percentile", 1, 99)) == ("percentile", 1.0, 99.0)


@pytest.mark.parametrize(
    ("spec", "n_channels", "match"),
    [
        ("max", None, r"but got the string 'max'; pass one of those"),
        ((1, 2, 3), None, r"but got \(1, 2, 3\); pass one of those"),
        (5, None, r"but got 5; pass one of those"),
        ((10, 10), None, r"channel 0 has low=10 and high=10; swap them"),
        (([0, 0], [5, -1]), None, r"channel 1 has low=0 and high=-1"),
        (([0, 0, 0], [5, 5]), None, r"low has 3 values and high has 2"),
        (([0, 0], [5, 5]), 3, r"gives 2 values per channel but the images have 3"),
        ((0, np.inf), None, r"must be finite"),
        (("a", 1), None, r"needs numbers or one number per channel"),
        ((0, [[1, 2]]), None, r"scalars or flat sequences"),
        (("percentile", 99, 1), None, r"0 <= q_low < q_high <= 100.*q_low=99"),
        (("percentile", 1, 101), None, r"q_high=101"),
        (("percentile", "1", 99), None, r"needs two numbers, but got '1'"),
    ],
)
def test_check_intensity_bad_spec_is_named(spec, n_channels, match):
    with pytest.raises(ValueError, match=match):
        check_intensity(spec, n_channels=n_channels)


# ----------------------------------------------------------------- scale_batch
@pytest.mark.parametrize(
    "dtype", [np.uint8, np.uint16, np.int16, np.int32, np.uint32, np.int8]
)
def test_scale_batch_dtype_divides_by_dtype_max(dtype):
    batch = RNG.integers(0, 100, (2, 3, 4, 4)).astype(dtype)
    expected = batch.astype(np.float64) / np.iinfo(dtype).max
    out = scale_batch(batch, "dtype")
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_scale_batch_dtype_keeps_float_values(dtype):
    batch = RNG.normal(size=(2, 3)).astype(dtype)
    out = scale_batch(batch, "dtype")
    np.testing.assert_array_equal(out.numpy(), batch.astype(np.float32))


def test_scale_batch_none_casts_only():
    out = scale_batch(UINT16, "none")
    np.testing.assert_array_equal(out.numpy(), UINT16.astype(np.float32))


def test_scale_batch_range_per_channel_matches_formula():
    low, high = np.array([100.0, 0.0]), np.array([4095.0, 2000.0])
    out = scale_batch(UINT16, (low, high))
    expected = (UINT16 - low[:, None, None]) / (high - low)[:, None, None]
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_scale_batch_range_does_not_clip():
    out = scale_batch(np.array([[[[0, 300]]]], dtype=np.uint16), (100, 200))
    np.testing.assert_allclose(out.flatten().numpy(), [-1.0, 2.0])


def test_scale_batch_range_on_features():
    features = RNG.normal(size=(4, 3)).astype(np.float32)
    out = scale_batch(features, ([0, 1, 2], [1, 2, 4]))
    np.testing.assert_allclose(
        out.numpy(), (features - [0, 1, 2]) / [1, 1, 2], rtol=1e-6
    )


def test_scale_batch_range_channel_count_is_checked():
    with pytest.raises(
        ValueError, match="gives 3 values per channel but the images have 2"
    ):
        scale_batch(UINT16, ([0, 0, 0], [1, 1, 1]))


@pytest.mark.parametrize(
    ("q_low", "q_high"), [(0, 100), (1, 99), (0.5, 99.9), (50, 51)]
)
def test_scale_batch_percentile_matches_numpy(q_low, q_high):
    flat = UINT16.reshape(3, 2, -1).astype(np.float64)
    low = np.percentile(flat, q_low, axis=-1, keepdims=True)
    high = np.percentile(flat, q_high, axis=-1, keepdims=True)
    expected = ((flat - low) / (high - low)).reshape(UINT16.shape)
    out = scale_batch(UINT16, ("percentile", q_low, q_high))
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-5)


def test_scale_batch_percentile_flat_channel_is_zero():
    batch = np.full((1, 2, 3, 3), 7, dtype=np.uint16)
    out = scale_batch(batch, ("percentile", 1, 99))
    assert torch.equal(out, torch.zeros(1, 2, 3, 3))


@pytest.mark.parametrize("spec", ["dtype", "none", (0, 2), ("percentile", 1, 99)])
def test_scale_batch_leaves_float32_input_unchanged(spec):
    batch = torch.arange(24, dtype=torch.float32).reshape(1, 2, 3, 4)
    before = batch.clone()
    scale_batch(batch, spec)
    assert torch.equal(batch, before)


def test_scale_batch_tensor_and_array_agree():
    spec = ("percentile", 2, 98)
    torch.testing.assert_close(
        scale_batch(torch.from_numpy(UINT16), spec), scale_batch(UINT16, spec)
    )


def test_scale_batch_big_endian_array():
    batch = UINT16.astype(">u2")
    torch.testing.assert_close(scale_batch(batch), scale_batch(UINT16))


def test_scale_batch_without_batch_axis_is_refused():
    with pytest.raises(ValueError, match=r"shape \(5,\) of torch.int64; add the batch"):
        scale_batch(np.arange(5), "none")


# -------------------------------------------------------------- describe_input
@pytest.mark.parametrize("as_tensor", [False, True])
def test_describe_input_integer_records_max(as_tensor):
    batch = torch.from_numpy(UINT16) if as_tensor else UINT16
    assert describe_input(batch) == {"dtype": "uint16", "max": int(UINT16.max())}


def test_describe_input_float_records_dtype_only():
    assert describe_input(np.zeros((2, 2), np.float64)) == {"dtype": "float64"}
