"""Tests of the microscopy augmentations."""

import pytest
import torch

from sklearn_ben.augment import MicroscopyAugment, make_views

# Augmentations that move pixels only: no crop, no blur, no jitter.
PERMUTING = {"crop_scale": None, "blur_prob": 0.0, "intensity_jitter": 0.0}


def _images(n=6, channels=3, height=16, width=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, height, width, generator=generator)


def _dihedral_images(image):
    """The 8 flips and quarter turns of one (C, H, W) image."""
    turns = [torch.rot90(image, k, dims=(-2, -1)) for k in range(4)]
    return turns + [t.flip(-1) for t in turns]


def _generator(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("channels", [1, 3, 5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("intensity_jitter", [0.0, 0.2])
def test_microscopy_augment_keeps_shape_and_dtype(channels, dtype, intensity_jitter):
    x = _images(channels=channels).to(dtype)
    augment = MicroscopyAugment(blur_prob=1.0, intensity_jitter=intensity_jitter)
    views = augment(x, generator=_generator())
    assert views.shape == x.shape
    assert views.dtype == dtype
    assert torch.isfinite(views).all()


@pytest.mark.parametrize("size", [8, (12, 20)])
@pytest.mark.parametrize("crop_scale", [None, (0.3, 1.0)])
def test_microscopy_augment_resizes_to_size(size, crop_scale):
    augment = MicroscopyAugment(size=size, crop_scale=crop_scale)
    views = augment(_images(channels=5), generator=_generator())
    expected = (size, size) if isinstance(size, int) else size
    assert views.shape == (6, 5, *expected)


@pytest.mark.parametrize("shape", [(16, 16), (12, 20)])
def test_microscopy_augment_is_reproducible_with_a_seed(shape):
    x = _images(height=shape[0], width=shape[1])
    augment = MicroscopyAugment(intensity_jitter=0.1)
    first = augment(x, generator=_generator(3))
    second = augment(x, generator=_generator(3))
    other = augment(x, generator=_generator(4))
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert not torch.equal(first, other)


def test_microscopy_augment_views_of_one_image_differ():
    x = _images(n=1).expand(8, -1, -1, -1)  # one image, 8 times
    views = MicroscopyAugment()(x, generator=_generator())
    distinct = {tuple(v.flatten().tolist()) for v in views}
    assert len(distinct) == 8


@pytest.mark.parametrize("flips", [True, False])
@pytest.mark.parametrize("rotations", [True, False])
@pytest.mark.parametrize("shape", [(8, 8), (6, 10)])
def test_microscopy_augment_flips_and_turns_permute_pixels(flips, rotations, shape):
    x = _images(n=32, height=shape[0], width=shape[1])
    augment = MicroscopyAugment(flips=flips, rotations=rotations, **PERMUTING)
    views = augment(x, generator=_generator())
    assert views.shape == x.shape
    torch.testing.assert_close(
        views.flatten(1).sort(dim=1).values, x.flatten(1).sort(dim=1).values
    )


@pytest.mark.parametrize(
    ("flips", "rotations", "n_expected"),
    [(True, True, 8), (True, False, 4), (False, True, 4), (False, False, 1)],
)
def test_microscopy_augment_draws_all_symmetries_of_the_square(
    flips, rotations, n_expected
):
    image = _images(n=1)[0]
    candidates = _dihedral_images(image)
    x = image.expand(64, -1, -1, -1)
    augment = MicroscopyAugment(flips=flips, rotations=rotations, **PERMUTING)
    views = augment(x, generator=_generator())
    seen = {
        next(k for k, c in enumerate(candidates) if torch.equal(view, c))
        for view in views
    }
    assert len(seen) == n_expected


def test_microscopy_augment_crop_of_whole_image_is_a_symmetry():
    # a full crop with aspect 1 samples pixel centres: the folded flip or
    # turn must then give one of the 8 symmetries, up to rounding
    image = _images(n=1, height=10, width=10)[0]
    candidates = _dihedral_images(image)
    augment = MicroscopyAugment(
        crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), blur_prob=0.0
    )
    views = augment(image.expand(32, -1, -1, -1), generator=_generator())
    seen = set()
    for view in views:
        errors = [(view - c).abs().max().item() for c in candidates]
        assert min(errors) < 1e-5
        seen.add(errors.index(min(errors)))
    assert len(seen) == 8


def test_microscopy_augment_crop_zooms_in():
    # a horizontal ramp: a crop of half the width spans about half the range
    ramp = torch.linspace(0, 1, 32).expand(4, 1, 32, 32).contiguous()
    augment = MicroscopyAugment(
        crop_scale=(0.25, 0.25),
        crop_ratio=(1.0, 1.0),
        flips=False,
        rotations=False,
        blur_prob=0.0,
    )
    views = augment(ramp, generator=_generator())
    spans = views.amax(dim=(1, 2, 3)) - views.amin(dim=(1, 2, 3))
    torch.testing.assert_close(spans, torch.full((4,), 0.5), atol=0.05, rtol=0)


def test_microscopy_augment_blur_smooths_and_keeps_mean():
    x = _images(n=4, height=24, width=24)
    augment = MicroscopyAugment(
        flips=False, rotations=False, crop_scale=None, blur_prob=1.0
    )
    views = augment(x, generator=_generator())
    assert (views.std(dim=(2, 3)) < x.std(dim=(2, 3))).all()
    torch.testing.assert_close(
        views.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=0.02, rtol=0
    )


def test_microscopy_augment_without_jitter_stays_in_input_range():
    x = 1000 + 500 * _images(n=16, channels=5)  # raw-intensity-like values
    views = MicroscopyAugment(blur_prob=0.5)(x, generator=_generator())
    low = x.amin(dim=(2, 3), keepdim=True)
    high = x.amax(dim=(2, 3), keepdim=True)
    assert ((views >= low - 1e-3) & (views <= high + 1e-3)).all()


@pytest.mark.parametrize("intensity_jitter", [0.05, 0.3])
def test_microscopy_augment_jitter_is_bounded_per_channel(intensity_jitter):
    x = 1000 + 500 * _images(n=16, channels=5)
    augment = MicroscopyAugment(
        intensity_jitter=intensity_jitter,
        **{"flips": False, "rotations": False, "crop_scale": None, "blur_prob": 0.0},
    )
    views = augment(x, generator=_generator())
    ratio = views.mean(dim=(2, 3)) / x.mean(dim=(2, 3))  # (N, C)
    # scale within 1 +- j, shift within +- j std (std << mean here)
    assert (ratio - 1).abs().max() <= intensity_jitter * 1.2
    assert (ratio - 1).abs().max() > 0


@pytest.mark.parametrize("n_views", [2, 5])
@pytest.mark.parametrize("channels", [1, 4])
def test_make_views_shapes_and_ids(n_views, channels):
    x = _images(n=3, channels=channels)
    views, ids = make_views(x, n_views, generator=_generator())
    assert views.shape == (3 * n_views, channels, 16, 16)
    assert ids.dtype == torch.int64
    torch.testing.assert_close(ids, torch.arange(3).repeat_interleave(n_views))


def test_make_views_view_rows_come_from_their_sample():
    x = _images(n=4)
    augment = MicroscopyAugment(**PERMUTING)
    views, ids = make_views(x, 3, augment, generator=_generator())
    sorted_views = views.flatten(1).sort(dim=1).values
    sorted_x = x.flatten(1).sort(dim=1).values
    torch.testing.assert_close(sorted_views, sorted_x[ids])


def test_make_views_uses_the_given_augment():
    calls = []

    def identity(x, generator=None):
        calls.append(x.shape)
        return x

    views, _ = make_views(_images(n=2), 3, identity)
    assert calls == [(6, 3, 16, 16)]
    torch.testing.assert_close(views[:3], _images(n=2)[:1].expand(3, -1, -1, -1))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"crop_scale": (0.0, 1.0)}, r"crop_scale should be a pair \(a, b\) with 0"),
        ({"crop_scale": (0.8, 0.5)}, r"crop_scale should be .* got crop_scale=\(0.8"),
        ({"crop_scale": (0.5, 1.5)}, r"crop_scale should be .*a <= b <= 1"),
        ({"crop_scale": 0.5}, "crop_scale should be a pair"),
        ({"crop_ratio": (0, 1)}, "crop_ratio should be a pair"),
        ({"blur_prob": 1.5}, r"blur_prob should be a probability in \[0, 1\]"),
        ({"blur_sigma": (-1, 1)}, "blur_sigma should be a pair"),
        ({"intensity_jitter": 1.0}, r"intensity_jitter should be a float in \[0, 1\)"),
        ({"intensity_jitter": -0.1}, "intensity_jitter should be a float"),
        ({"size": 0}, "size should be a positive integer or a pair"),
        ({"size": (8, 8, 8)}, "size should be a positive integer or a pair"),
    ],
)
def test_microscopy_augment_rejects_bad_params(params, message):
    with pytest.raises(ValueError, match=message):
        MicroscopyAugment(**params)


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (torch.rand(3, 16, 16), r"x must be a 4-d tensor .* got \(3, 16, 16\)"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "x.float()"),
        ([[1.0]], "x must be a 4-d tensor .* got list"),
    ],
)
def test_microscopy_augment_rejects_bad_images(x, message):
    with pytest.raises(ValueError, match=message):
        MicroscopyAugment()(x)


@pytest.mark.parametrize("n_views", [1, 0, 2.0, True])
def test_make_views_rejects_bad_n_views(n_views):
    with pytest.raises(ValueError, match="n_views should be an integer of at least 2"):
        make_views(_images(), n_views)
