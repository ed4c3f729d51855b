"""make_plates: seeded synthetic microscopy plates (public face: datasets)."""

import numbers

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter
from sklearn.utils import Bunch, check_random_state

from sklearn_ben._nonaffine import (
    apply_nonaffine_optics,
    apply_nonaffine_stain,
    check_nonaffine,
    draw_nonaffine,
    nonnegative_real,
    shift_density,
)

# Most cells drawn in one whole image (cells_per_image=1) and most spots per cell.
_MAX_CELLS = 3
_MAX_SPOTS = 6
# Camera counts per unit of float intensity for dtype="uint16".
_COUNTS_PER_UNIT = 4096

_DESCR = """\
Synthetic microscopy plates (sklearn_ben.datasets.make_plates)
---------------------------------------------------------------

Each sample is an image of shape (n_channels, image_size, image_size) showing
cells: a nucleus in channel 0 and cytoplasm in the other channels, with spots
in channels 2 and above. The treatment (y; 0 is the DMSO control) changes cell
size, elongation, per-channel intensity and the number of spots, with a
strength set by ``treatment_effect``. Every plate adds its own affine
per-channel change (gain and offset, partly shared by the plates of one
experiment), a smooth illumination gradient, blur and noise, with a strength
set by ``plate_effect``: large in absolute intensity, but mostly an affine
change per channel, so per-plate normalisation of features can undo most of it.
``nonaffine_effects`` adds effects that it cannot undo: cell size and density
shifts, granular texture, a non-linear staining response, vignetting, defocus
and camera saturation. The drawn plate parameters are in ``plate_effects``.
"""


def make_plates(
    n_plates=6,
    n_samples_per_plate=96,
    *,
    n_classes=3,
    n_channels=3,
    image_size=32,
    control_fraction=None,
    plate_effect=1.0,
    treatment_effect=1.0,
    n_plates_per_experiment=2,
    cells_per_image=1,
    noise=0.05,
    composition="balanced",
    nonaffine_effects=None,
    dtype="float32",
    random_state=None,
):
    """Draw synthetic microscopy plates with plate effects and treatments.

    Every plate holds control samples (class 0, "DMSO") and, depending on
    ``composition``, treated samples. Images show cells whose shape, intensity
    and texture depend on the treatment; each plate distorts its images with
    its own per-channel gain and offset (partly shared within an experiment),
    an illumination gradient, blur and noise. The plate effect is large in
    absolute intensity but mostly affine per channel, which is what batch
    effects normalisation (BEN) is designed to undo.

    Parameters
    ----------
    n_plates : int, default=6
        Number of plates.
    n_samples_per_plate : int, default=96
        Number of samples (rows of ``X``) on each plate. With
        ``cells_per_image > 1`` it must be a multiple of ``cells_per_image``.
    n_classes : int, default=3
        Number of treatment classes, control included (at least 2).
    n_channels : int, default=3
        Number of image channels: 0 is the nucleus, 1 the cytoplasm, 2 and
        above cytoplasm with spots.
    image_size : int, default=32
        Height and width of every image in ``X`` (at least 8).
    control_fraction : float, default=None
        Fraction of the source images of each plate that are controls, in
        (0, 1). None means ``1 / n_classes``.
    plate_effect : float, default=1.0
        Strength of the plate effects (0 for none): gains, offsets,
        illumination gradient, blur and extra noise all scale with it.
    treatment_effect : float, default=1.0
        Strength of the treatment phenotypes (0 makes classes identical).
    n_plates_per_experiment : int, default=2
        Plates per experiment. Plates of one experiment share part of their
        gain and offset, so batching by experiment and by plate differ.
    cells_per_image : int, default=1
        With 1, each sample is a whole image showing one to three cells and
        ``bags`` is ``arange(n_samples)``. With more, each source image (field
        of view) holds that many cells and each sample is a single-cell crop of
        side ``image_size`` centred on one of them; crops of one field share
        its bag id, treatment, plate distortions and an image-level phenotype
        jitter.
    noise : float, default=0.05
        Standard deviation of the additive pixel noise, before the plate's
        extra noise.
    composition : {"balanced", "varied"}, default="balanced"
        "balanced": every plate holds every class, in equal shares beside the
        controls. "varied": as in real screens, every third plate (plate01,
        plate04, ...) holds controls only and the other plates draw their
        class proportions at random.
    nonaffine_effects : str, sequence of str or dict, default=None
        Plate effects that are not an affine change of each channel, so that
        standardising each plate's inputs per channel cannot undo them. None
        adds none (the data are then exactly those of earlier versions);
        ``"all"`` adds every kind; a sequence names kinds at strength 1; a
        dict maps kinds to strengths >= 0. Every plate draws its own
        parameters (recorded in ``plate_effects``), independently of the
        cells and of the other kinds, so one seed gives the same cells with
        and without them. Kinds, in the order they act:

        - ``"size"``: cells of the plate are larger or smaller (radius
          times ``size_factor``, log-normal, sd 0.2 x strength).
        - ``"density"``: more or fewer cells per image (whole images) or
          cells packed closer in the field, so that neighbours enter the
          crops (``cells_per_image > 1``); ``density`` in [-1, 1] x strength.
        - ``"texture"``: granular staining, each image multiplied by
          ``1 + texture_amplitude * G`` (0.2 to 0.6 x strength), where G is
          unit-variance noise smoothed over ``texture_scale`` pixels: the
          channel means stay, the fine structure changes.
        - ``"gamma"``: non-linear staining response, stain ``s`` becomes
          ``s ** gamma_c`` per channel (log-normal, sd 0.35 x strength).
        - ``"illumination"``: vignetting, the field is multiplied by
          ``1 - vignette * min(r**2 / 2, 1)``, with ``r`` the distance to an
          off-centre point in [-1, 1] coordinates.
        - ``"defocus"``: a Gaussian blur of ``defocus`` pixels (0 to 2 x
          strength) on top of the plate's ``blur``.
        - ``"saturation"``: the camera saturates, intensity ``v`` becomes
          ``saturation_level * tanh(v / saturation_level)`` after the gains
          and before the noise (level 0.6 to 2.0, divided by strength).
    dtype : {"float32", "float64", "uint16"}, default="float32"
        Type of ``X``: float intensities in roughly [0, 3], or camera-like
        counts (``round(4096 * intensity)``) as ``uint16``.
    random_state : int, RandomState instance or None, default=None
        Seed of everything drawn.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with attributes:

        X : ndarray of shape (n_samples, n_channels, image_size, image_size)
            The images; ``n_samples = n_plates * n_samples_per_plate``,
            ordered by plate.
        y : ndarray of shape (n_samples,), dtype int
            Treatment class; 0 is the control.
        controls : ndarray of shape (n_samples,), dtype bool
            ``y == 0``.
        groups : ndarray of shape (n_samples,), dtype str
            Plate id of each sample: ``"plate00"``, ``"plate01"``, ...
        experiments : ndarray of shape (n_samples,), dtype str
            Experiment id of each sample: ``"exp00"``, ...
        bags : ndarray of shape (n_samples,), dtype int
            Source image of each sample (crops of one field share it).
        plate_effects : DataFrame
            One row per plate: experiment, gains and offsets per channel,
            illumination gradient, blur, noise, sample counts and the
            parameters of any ``nonaffine_effects``.
        target_names : ndarray of shape (n_classes,)
            ``"DMSO"``, ``"treatment1"``, ...
        DESCR : str
            Description of the data.

    See Also
    --------
    load_bbbc021_crops : Real single-cell crops from six BBBC021 plates.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ben.datasets import make_plates
    >>> data = make_plates(n_plates=4, n_samples_per_plate=30, image_size=16,
    ...                    random_state=0)
    >>> data.X.shape, data.X.dtype
    ((120, 3, 16, 16), dtype('float32'))
    >>> print(*np.unique(data.groups))
    plate00 plate01 plate02 plate03
    >>> np.bincount(data.y[data.groups == "plate00"])
    array([10, 10, 10])
    >>> crops = make_plates(n_plates=2, n_samples_per_plate=24, cells_per_image=4,
    ...                     image_size=16, random_state=0)
    >>> crops.bags[:8]
    array([0, 0, 0, 0, 1, 1, 1, 1])
    """
    _check_make_plates_params(
        n_plates=n_plates,
        n_samples_per_plate=n_samples_per_plate,
        n_classes=n_classes,
        n_channels=n_channels,
        image_size=image_size,
        control_fraction=control_fraction,
        plate_effect=plate_effect,
        treatment_effect=treatment_effect,
        n_plates_per_experiment=n_plates_per_experiment,
        cells_per_image=cells_per_image,
        noise=noise,
        composition=composition,
        dtype=dtype,
    )
    strengths = check_nonaffine(nonaffine_effects)
    rng = check_random_state(random_state)
    # Drawn from generators keyed on rng's state, without consuming from rng.
    extra = draw_nonaffine(rng, strengths, n_plates, n_channels)
    if control_fraction is None:
        control_fraction = 1.0 / n_classes
    n_images = n_samples_per_plate // cells_per_image
    n_controls = _n_control_images(n_images, control_fraction)
    _check_plate_sizes(n_images, n_controls, n_classes, cells_per_image, composition)

    plate_labels = _draw_labels(
        rng, n_plates, n_images, n_controls, n_classes, composition
    )
    image_y = np.concatenate(plate_labels)
    image_plate = np.repeat(np.arange(n_plates), n_images)
    effects = _draw_plate_effects(
        rng, n_plates, n_channels, n_plates_per_experiment, plate_effect, noise
    )
    phenotypes = _draw_phenotypes(rng, n_classes, n_channels, treatment_effect)

    fields, centres = _render_fields(
        rng, image_y, phenotypes, n_channels, image_size, cells_per_image,
        plate_of_image=image_plate, extra=extra,
    )  # fmt: skip
    fields = apply_nonaffine_stain(fields, image_plate, extra)
    fields = _apply_field_effects(fields, image_plate, effects)
    fields = apply_nonaffine_optics(fields, image_plate, extra)
    if cells_per_image == 1:
        X = fields
        bags = np.arange(len(image_y))
    else:
        X = _crop(fields, centres, image_size)
        bags = np.repeat(np.arange(len(image_y)), cells_per_image)
    del fields
    sample_plate = np.repeat(image_plate, cells_per_image)
    X = _apply_sample_effects(rng, X, sample_plate, effects, extra)
    X = _as_dtype(X, dtype)

    y = np.repeat(image_y, cells_per_image)
    plate_names = np.array([f"plate{p:02d}" for p in range(n_plates)])
    experiment_names = effects["experiment"].to_numpy()
    counts = np.stack([np.bincount(lab, minlength=n_classes) for lab in plate_labels])
    effects.insert(0, "plate", plate_names)
    effects["n_samples"] = n_samples_per_plate
    effects["n_controls"] = counts[:, 0] * cells_per_image
    effects["n_classes_present"] = (counts > 0).sum(axis=1)
    for name, values in extra["columns"].items():
        effects[name] = values
    return Bunch(
        X=X,
        y=y,
        controls=y == 0,
        groups=plate_names[sample_plate],
        experiments=experiment_names[sample_plate],
        bags=bags,
        plate_effects=effects,
        target_names=np.array(
            ["DMSO"] + [f"treatment{k}" for k in range(1, n_classes)]
        ),
        DESCR=_DESCR,
    )


def _check_int(name, value, low):
    if (
        not isinstance(value, numbers.Integral)
        or isinstance(value, bool)
        or value < low
    ):
        raise ValueError(
            f"make_plates needs {name} to be an integer >= {low}, but got "
            f"{name}={value!r}; pass an integer such as {max(low, 2)}."
        )


def _check_real(name, value):
    if not nonnegative_real(value):
        raise ValueError(
            f"make_plates needs {name} to be a finite number >= 0, but got "
            f"{name}={value!r}; pass for example {name}=1.0 (or 0 for none)."
        )


#: Largest output make_plates draws (in bytes of the returned images).
MAX_BYTES = 8 * 2**30


def _check_total_size(params):
    """Refuse, before drawing anything, an output that cannot fit in memory."""
    n = params["n_plates"] * params["n_samples_per_plate"]
    size = n * params["n_channels"] * params["image_size"] ** 2
    nbytes = size * (
        2 if params["dtype"] == "uint16" else 8 if params["dtype"] == "float64" else 4
    )
    if nbytes > MAX_BYTES:
        raise ValueError(
            f"make_plates would generate {n:,} images of {params['n_channels']}x"
            f"{params['image_size']}x{params['image_size']} ({nbytes / 2**30:,.1f} "
            f"GiB, more than the {MAX_BYTES // 2**30} GiB limit); lower n_plates, "
            "n_samples_per_plate or image_size."
        )


def _check_make_plates_params(**params):
    _check_int("n_plates", params["n_plates"], 1)
    _check_int("n_samples_per_plate", params["n_samples_per_plate"], 2)
    _check_int("n_classes", params["n_classes"], 2)
    _check_int("n_channels", params["n_channels"], 1)
    _check_int("image_size", params["image_size"], 8)
    _check_int("n_plates_per_experiment", params["n_plates_per_experiment"], 1)
    _check_int("cells_per_image", params["cells_per_image"], 1)
    for name in ("plate_effect", "treatment_effect", "noise"):
        _check_real(name, params[name])
    _check_total_size(params)
    fraction = params["control_fraction"]
    if fraction is not None and (
        not isinstance(fraction, numbers.Real)
        or isinstance(fraction, bool)
        or not 0 < fraction < 1
    ):
        raise ValueError(
            "make_plates needs control_fraction strictly between 0 and 1 (or "
            f"None for 1 / n_classes), but got control_fraction={fraction!r}."
        )
    if params["composition"] not in ("balanced", "varied"):
        raise ValueError(
            "make_plates needs composition to be 'balanced' or 'varied', but got "
            f"composition={params['composition']!r}."
        )
    if params["dtype"] not in ("float32", "float64", "uint16"):
        raise ValueError(
            "make_plates needs dtype to be 'float32', 'float64' or 'uint16', but "
            f"got dtype={params['dtype']!r}."
        )
    n, k = params["n_samples_per_plate"], params["cells_per_image"]
    if n % k:
        raise ValueError(
            f"n_samples_per_plate={n} is not a multiple of cells_per_image={k}; "
            f"pass a multiple such as {max(k, n - n % k)} or {n - n % k + k}."
        )


def _n_control_images(n_images, control_fraction):
    return int(np.clip(round(control_fraction * n_images), 1, n_images))


def _check_plate_sizes(n_images, n_controls, n_classes, cells_per_image, kind):
    if n_controls * cells_per_image < 2:
        raise ValueError(
            f"make_plates would put {n_controls * cells_per_image} control sample "
            "on each plate, but control statistics need at least 2; increase "
            "n_samples_per_plate or control_fraction."
        )
    needed = n_classes - 1 if kind == "balanced" else 1
    if n_images - n_controls < needed:
        raise ValueError(
            f"A {kind} plate of {n_images} source images with {n_controls} "
            f"controls has {n_images - n_controls} left for treatments, but "
            f"needs {needed} for n_classes={n_classes}; increase "
            "n_samples_per_plate (for example to "
            f"{2 * n_classes * cells_per_image}) or lower control_fraction."
        )


def _draw_labels(rng, n_plates, n_images, n_controls, n_classes, composition):
    """Class of each source image, one array per plate (shuffled within plate)."""
    n_treated = n_images - n_controls
    labels = []
    for plate in range(n_plates):
        if composition == "balanced":
            treated = np.arange(n_treated) % (n_classes - 1) + 1
        elif plate % 3 == 1:
            treated = np.zeros(n_treated, dtype=int)
        else:
            weights = rng.dirichlet(np.full(n_classes - 1, 0.7))
            treated = rng.choice(np.arange(1, n_classes), size=n_treated, p=weights)
        plate_labels = np.concatenate([np.zeros(n_controls, dtype=int), treated])
        labels.append(rng.permutation(plate_labels))
    return labels


def _draw_plate_effects(rng, n_plates, n_channels, per_experiment, strength, noise):
    """Gains, offsets, gradient, blur and noise of every plate, as a DataFrame."""
    experiment = np.arange(n_plates) // per_experiment
    n_experiments = experiment[-1] + 1
    log_gain = (
        rng.normal(0, 0.4, (n_experiments, n_channels))[experiment]
        + rng.normal(0, 0.25, (n_plates, n_channels))
    ) * strength
    offset = (
        rng.uniform(0, 0.2, (n_experiments, n_channels))[experiment]
        + rng.uniform(0, 0.15, (n_plates, n_channels))
    ) * strength
    columns = {"experiment": np.array([f"exp{e:02d}" for e in experiment])}
    for c in range(n_channels):
        columns[f"gain_{c}"] = np.exp(log_gain[:, c])
    for c in range(n_channels):
        columns[f"offset_{c}"] = offset[:, c]
    columns["gradient"] = rng.uniform(0, 0.3, n_plates) * strength
    columns["gradient_angle"] = rng.uniform(0, 2 * np.pi, n_plates)
    columns["blur"] = rng.uniform(0, 0.8, n_plates) * strength
    columns["noise"] = noise * (1 + rng.uniform(0, 1, n_plates) * strength)
    return pd.DataFrame(columns)


def _draw_phenotypes(rng, n_classes, n_channels, strength):
    """Feature shifts of each class: log size, log elongation, spots, log intensity.

    Row 0 (the control) is zero; the other rows are random unit directions
    scaled by ``strength``.
    """
    directions = rng.normal(size=(n_classes, 3 + n_channels))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    directions[0] = 0
    return directions * strength


def _render_fields(
    rng, image_y, phenotypes, n_channels, size, cells_per_image, plate_of_image, extra
):
    """Draw every source image, with the cell size and density plate effects only.

    Returns the fields, shape (n_images, n_channels, side, side), and the cell
    centres (n_images, n_cells, 2) in pixels (row, column).
    """
    n = len(image_y)
    if cells_per_image == 1:
        n_cells, side = _MAX_CELLS, size
        radius = 0.16 * size
        centres = rng.uniform(0.25 * size, 0.75 * size, (n, n_cells, 2))
        active = np.arange(n_cells) < rng.randint(1, n_cells + 1, n)[:, None]
    else:
        n_cells = cells_per_image
        radius = 0.25 * size
        per_row = int(np.ceil(np.sqrt(n_cells)))
        spacing = 0.8 * size
        side = int(np.ceil((per_row - 1) * spacing + size)) + 2
        grid = np.stack(np.divmod(np.arange(n_cells), per_row), axis=1)
        jitter = rng.uniform(-0.1, 0.1, (n, n_cells, 2)) * size
        centres = size / 2 + 1 + grid * spacing + jitter
        active = np.ones((n, n_cells), dtype=bool)
    if "density" in extra:
        active, centres = shift_density(
            extra, plate_of_image, active, centres, cells_per_image, side
        )
    if "size" in extra:
        radius = radius * extra["size"][plate_of_image][:, None]

    # Per-cell features: class phenotype + image-level jitter + cell jitter.
    n_features = phenotypes.shape[1]
    features = (
        phenotypes[image_y][:, None, :]
        + rng.normal(0, 0.15, (n, 1, n_features))
        + rng.normal(0, 0.25, (n, n_cells, n_features))
    )
    major = radius * np.exp(0.25 * features[..., 0] + 0.15)
    minor = radius * np.exp(0.25 * features[..., 0] - 0.15 - 0.3 * features[..., 1])
    n_spots = np.clip(np.round(2 + 2 * features[..., 2]), 0, _MAX_SPOTS)
    intensity = np.exp(0.3 * features[..., 3:])  # (n, n_cells, n_channels)
    intensity *= np.array([1.0, 0.6] + [0.4] * (n_channels - 2))[:n_channels]
    angle = rng.uniform(0, np.pi, (n, n_cells))

    coords = np.arange(side, dtype=np.float32) + 0.5
    dy = coords[None, None, :, None] - centres[..., 0, None, None]
    dx = coords[None, None, None, :] - centres[..., 1, None, None]
    cos, sin = np.cos(angle)[..., None, None], np.sin(angle)[..., None, None]
    u = (dx * cos + dy * sin).astype(np.float32)
    v = (dy * cos - dx * sin).astype(np.float32)
    a, b = major[..., None, None], minor[..., None, None]
    cyto_dist = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    cyto = _soft_edge((1 - cyto_dist) * b) * active[..., None, None]
    nucleus_radius = 0.45 * b
    nucleus = _soft_edge(nucleus_radius - np.sqrt(u**2 + v**2)) * cyto

    fields = np.empty((n, n_channels, side, side), dtype=np.float32)
    fields[:, 0] = np.einsum("nm,nmhw->nhw", intensity[..., 0], nucleus)
    if n_channels > 1:
        body = cyto * (1 - 0.6 * nucleus)
        fields[:, 1:] = np.einsum("nmc,nmhw->nchw", intensity[..., 1:], body)
    if n_channels > 2:
        spots = _render_spots(rng, u, v, a, b, n_spots, cyto)
        fields[:, 2:] += np.einsum("nmc,nmhw->nchw", intensity[..., 2:], spots)
    return fields, centres


def _soft_edge(distance_inside):
    """About 1 inside, 0 outside, a one-pixel soft edge at distance 0."""
    return (1 / (1 + np.exp(-2 * distance_inside))).astype(np.float32)


def _render_spots(rng, u, v, a, b, n_spots, cyto):
    """Small bright spots inside each cell, in the cell's own frame."""
    n, n_cells = n_spots.shape
    where = rng.uniform(-0.6, 0.6, (n, n_cells, _MAX_SPOTS, 2))
    su = where[..., 0, None, None] * a[:, :, None]
    sv = where[..., 1, None, None] * b[:, :, None]
    on = np.arange(_MAX_SPOTS) < n_spots[..., None]
    width = (0.15 * b[:, :, None]) ** 2
    spots = np.zeros_like(cyto)
    for s in range(_MAX_SPOTS):  # a loop over spots keeps memory small
        bump = np.exp(
            -((u - su[:, :, s]) ** 2 + (v - sv[:, :, s]) ** 2) / (2 * width[:, :, 0])
        )
        spots += 1.5 * on[:, :, s, None, None] * bump
    return spots * cyto


def _apply_field_effects(fields, image_plate, effects):
    """Illumination gradient and blur of each plate, on the whole field."""
    side = fields.shape[-1]
    coords = np.linspace(-1, 1, side, dtype=np.float32)
    for plate, row in effects.iterrows():
        idx = np.flatnonzero(image_plate == plate)
        angle = row["gradient_angle"]
        ramp = np.cos(angle) * coords[None, :] + np.sin(angle) * coords[:, None]
        fields[idx] *= (1 + row["gradient"] * ramp).astype(np.float32)
        if row["blur"] > 0.05:
            fields[idx] = gaussian_filter(
                fields[idx], sigma=(0, 0, row["blur"], row["blur"])
            )
    return fields


def _crop(fields, centres, size):
    """Square crops of side ``size`` centred on every cell, fields order kept."""
    n, n_cells = centres.shape[:2]
    start = np.round(centres - size / 2).astype(int)
    start = np.clip(start, 0, fields.shape[-1] - size).reshape(-1, 2)
    image = np.repeat(np.arange(n), n_cells)
    offsets = np.arange(size)
    rows = (start[:, 0, None] + offsets)[:, :, None]
    cols = (start[:, 1, None] + offsets)[:, None, :]
    crops = fields[image[:, None, None], :, rows, cols]  # (N, size, size, C)
    return np.ascontiguousarray(crops.transpose(0, 3, 1, 2))


def _apply_sample_effects(rng, X, sample_plate, effects, extra):
    """Per-channel gain and offset, background, saturation, noise of each plate."""
    n_channels = X.shape[1]
    gain = effects[[f"gain_{c}" for c in range(n_channels)]].to_numpy()
    offset = effects[[f"offset_{c}" for c in range(n_channels)]].to_numpy()
    background = 0.05
    X *= gain[sample_plate][:, :, None, None].astype(np.float32)
    X += (background + offset[sample_plate])[:, :, None, None].astype(np.float32)
    if "saturation" in extra:
        level = extra["saturation"][sample_plate][:, None, None, None]
        X[:] = level * np.tanh(X / level)
    sigma = effects["noise"].to_numpy()[sample_plate].astype(np.float32)
    X += rng.standard_normal(X.shape).astype(np.float32) * sigma[:, None, None, None]
    np.clip(X, 0, None, out=X)
    return X


def _as_dtype(X, dtype):
    if dtype == "uint16":
        counts = np.round(X * _COUNTS_PER_UNIT)
        return np.clip(counts, 0, np.iinfo(np.uint16).max).astype(np.uint16)
    return X.astype(dtype, copy=False)


# ------------------------------------------------------------------ real data
