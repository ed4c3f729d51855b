"""Plate effects that are not affine per channel, for make_plates.

Each kind draws its per-plate parameters from its own generator, keyed on the
state of make_plates' random state without advancing it: the default output of
make_plates stays what it was, and one seed gives the same cells with and
without these effects.
"""

import numbers

import numpy as np
from scipy.ndimage import gaussian_filter

NONAFFINE_EFFECTS = (
    "size", "density", "texture", "gamma", "illumination", "defocus", "saturation"
)  # fmt: skip


def nonnegative_real(value) -> bool:
    """Whether ``value`` is a finite real number >= 0 (bools are not)."""
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and bool(np.isfinite(value))
        and value >= 0
    )


def check_nonaffine(value):
    """Strength of every requested non-affine kind, as a dict."""
    if value is None:
        return {}
    if isinstance(value, str):
        value = NONAFFINE_EFFECTS if value == "all" else [value]
    if not isinstance(value, dict):
        value = {name: 1.0 for name in value}
    unknown = sorted(set(value) - set(NONAFFINE_EFFECTS))
    if unknown:
        raise ValueError(
            f"make_plates got unknown nonaffine_effects {unknown}; the kinds are "
            f"{', '.join(map(repr, NONAFFINE_EFFECTS))} (or 'all')."
        )
    for name, strength in value.items():
        if not nonnegative_real(strength):
            raise ValueError(
                f"make_plates needs nonaffine_effects[{name!r}] to be a finite "
                f"number >= 0, but got {strength!r}."
            )
    return {name: float(s) for name, s in value.items() if s > 0}


def draw_nonaffine(rng, strengths, n_plates, n_channels):
    """Per-plate parameters of the non-affine effects.

    Each kind draws from its own generator, keyed on ``rng``'s current state
    and the kind, so ``rng`` is not advanced (the default output is unchanged)
    and adding a kind leaves the cells and the other kinds as they were.
    """
    state = rng.get_state()
    key = [int(k) for k in state[1][:8]] + [int(state[2])]
    out, columns = {}, {}
    for name, strength in strengths.items():
        sub = np.random.default_rng(key + [NONAFFINE_EFFECTS.index(name)])
        out[f"{name}_rng"] = sub
        if name == "size":
            out[name] = np.exp(sub.normal(0, 0.2, n_plates) * strength)
            columns["size_factor"] = out[name]
        elif name == "density":
            out[name] = sub.uniform(-1, 1, n_plates) * strength
            columns["density"] = out[name]
        elif name == "texture":
            out["texture_amplitude"] = sub.uniform(0.2, 0.6, n_plates) * strength
            out["texture_scale"] = sub.uniform(0.5, 2.0, n_plates)
            columns["texture_amplitude"] = out["texture_amplitude"]
            columns["texture_scale"] = out["texture_scale"]
            out[name] = True
        elif name == "gamma":
            out[name] = np.exp(sub.normal(0, 0.35, (n_plates, n_channels)) * strength)
            for c in range(n_channels):
                columns[f"gamma_{c}"] = out[name][:, c]
        elif name == "illumination":
            out[name] = sub.uniform(0.2, 0.6, n_plates) * strength
            out["vignette_centre"] = sub.uniform(-0.5, 0.5, (n_plates, 2))
            columns["vignette"] = out[name]
            columns["vignette_row"] = out["vignette_centre"][:, 0]
            columns["vignette_col"] = out["vignette_centre"][:, 1]
        elif name == "defocus":
            out[name] = sub.uniform(0, 2.0, n_plates) * strength
            columns["defocus"] = out[name]
        else:  # saturation
            out[name] = sub.uniform(0.6, 2.0, n_plates) / strength
            columns["saturation_level"] = out[name]
    out["columns"] = columns
    return out


def shift_density(extra, plate_of_image, active, centres, cells_per_image, side):
    """More or fewer cells per whole image, or cells packed closer in a field."""
    density = extra["density"][plate_of_image]
    if cells_per_image == 1:
        # P(k cells) proportional to exp(2 * density * k), k = 1 .. most cells
        k = np.arange(1, active.shape[1] + 1)
        p = np.exp(2 * density[:, None] * k)
        p /= p.sum(axis=1, keepdims=True)
        u = extra["density_rng"].uniform(size=(len(p), 1))
        count = 1 + (u > np.cumsum(p, axis=1)[:, :-1]).sum(axis=1)
        return np.arange(active.shape[1]) < count[:, None], centres
    # denser plates: cells pulled towards the field centre (by up to 35%)
    pull = np.exp(-0.35 * np.clip(density, 0, None) + 0.15 * np.clip(density, None, 0))
    middle = side / 2
    return active, middle + (centres - middle) * pull[:, None, None]


def apply_nonaffine_stain(fields, image_plate, extra):
    """Granular texture, then the non-linear staining response, of each plate."""
    if "texture" in extra:
        rng = extra["texture_rng"]
        for plate in np.unique(image_plate):
            idx = np.flatnonzero(image_plate == plate)
            scale = extra["texture_scale"][plate]
            grain = gaussian_filter(
                rng.standard_normal((len(idx),) + fields.shape[1:]),
                sigma=(0, 0, scale, scale),
            )
            grain /= grain.std()
            amplitude = extra["texture_amplitude"][plate]
            fields[idx] *= np.clip(1 + amplitude * grain, 0, None).astype(np.float32)
    if "gamma" in extra:
        gamma = extra["gamma"][image_plate][:, :, None, None].astype(np.float32)
        fields = np.power(fields, gamma)
    return fields


def apply_nonaffine_optics(fields, image_plate, extra):
    """Vignetting, then defocus, of each plate, on the whole field."""
    side = fields.shape[-1]
    coords = np.linspace(-1, 1, side, dtype=np.float32)
    for plate in np.unique(image_plate):
        idx = np.flatnonzero(image_plate == plate)
        if "illumination" in extra:
            row, col = extra["vignette_centre"][plate]
            r2 = (coords[:, None] - row) ** 2 + (coords[None, :] - col) ** 2
            falloff = 1 - extra["illumination"][plate] * np.minimum(r2 / 2, 1)
            fields[idx] *= falloff.astype(np.float32)
        if "defocus" in extra and extra["defocus"][plate] > 0.05:
            sigma = extra["defocus"][plate]
            fields[idx] = gaussian_filter(fields[idx], sigma=(0, 0, sigma, sigma))
    return fields
