"""Readers of the real BBBC021 data beside the project (public face: datasets)."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

#: Environment variable naming the folder that holds the real data.
DATA_ENV = "SKLEARN_BEN_DATA"


def get_data_home(data_home=None):
    """Return the folder that holds the real data sets.

    The folder is, in this order: ``data_home`` when given; else the folder
    named by the environment variable ``SKLEARN_BEN_DATA`` when it is set;
    else ``shared/data`` beside the project's root (the parent of the
    ``sklearn_ben`` package folder, which works for an editable install). The
    first of these that applies is the only one used, so a wrong explicit
    setting is reported rather than silently replaced. Nothing is downloaded
    or copied.

    Parameters
    ----------
    data_home : str or path-like, default=None
        Folder holding ``bbbc021_crops/`` and ``bbbc021_profiles/``.

    Returns
    -------
    data_home : pathlib.Path
        The existing folder.

    Raises
    ------
    FileNotFoundError
        When the folder does not exist; the message names it, where it came
        from, and how to point to the data.

    Examples
    --------
    >>> import tempfile
    >>> from sklearn_ben.datasets import get_data_home
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     get_data_home(folder).is_dir()
    True
    """
    if data_home is not None:
        path, source = Path(data_home), "argument"
    elif os.environ.get(DATA_ENV):
        path, source = Path(os.environ[DATA_ENV]), "environment"
    else:
        path = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
        source = "default beside the project"
    path = path.expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"No data folder at {path} (from the {source}); pass data_home= or "
            f"set {DATA_ENV} to the folder that holds bbbc021_crops/ and "
            "bbbc021_profiles/ (in this project: ../shared/data)."
        )
    return path


def _data_path(data_home, name):
    path = get_data_home(data_home) / name
    if not path.exists():
        raise FileNotFoundError(
            f"No {name} at {path}; pass data_home= or set {DATA_ENV} to the "
            "folder that holds it (in this project: ../shared/data)."
        )
    return path


_BBBC021_ACK = (
    "We used image set BBBC021v1 [Caie et al., Molecular Cancer Therapeutics, "
    "2010], available from the Broad Bioimage Benchmark Collection [Ljosa et al., "
    "Nature Methods, 2012]. Images and ground truth are copyright AstraZeneca "
    "(believed CC BY-NC-SA 3.0)."
)


def load_bbbc021_crops(
    *,
    plates=None,
    data_home=None,
    dtype="uint16",
    return_X_y=False,
    channels_first=True,
):
    """Load real single-cell crops from six BBBC021 plates (DMSO, cycloheximide).

    Reads ``<data_home>/bbbc021_crops``: 7,774 crops of MCF-7 cells of 68x68
    pixels and 3 channels (DNA, then most probably F-actin and beta-tubulin),
    12-bit camera values shifted left by 4 bits. Only the files of the
    requested plates are read, straight into one preallocated array.

    Parameters
    ----------
    plates : str or list of str, default=None
        Plates to load, for example ``["Week4_27481"]``; None loads all six.
    data_home : str or path-like, default=None
        Folder holding ``bbbc021_crops/``; see :func:`get_data_home`.
    dtype : str or numpy dtype, default="uint16"
        Type of ``X``. The default keeps the camera values without a float
        copy (about 28 KB per crop); "float32" doubles the memory.
    return_X_y : bool, default=False
        Return ``(X, y)`` instead of the Bunch.
    channels_first : bool, default=True
        Shape ``X`` as (n, 3, 68, 68), as torch expects; False keeps the
        stored (n, 68, 68, 3).

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with attributes:

        X : ndarray of shape (n_crops, 3, 68, 68)
            The crops (channels last if ``channels_first=False``).
        y : ndarray of shape (n_crops,)
            0 for DMSO, 1 for cycloheximide.
        controls : ndarray of shape (n_crops,), dtype bool
            DMSO controls.
        groups : ndarray of shape (n_crops,)
            Plate of each crop.
        bags : ndarray of shape (n_crops,), dtype int
            Source image (plate, well, site) of each crop.
        crop_id : ndarray of shape (n_crops,)
            Identifier of each crop, as stored.
        frame : DataFrame
            The metadata rows aligned with ``X``.
        target_names : ndarray of shape (2,)
            ``"DMSO"``, ``"cycloheximide"``.
        DESCR : str
            Description and required acknowledgement.
    (X, y) : tuple
        When ``return_X_y`` is True.

    Notes
    -----
    "We used image set BBBC021v1 [Caie et al., Molecular Cancer Therapeutics,
    2010], available from the Broad Bioimage Benchmark Collection [Ljosa et
    al., Nature Methods, 2012]." The data are not redistributed with this
    package.

    Examples
    --------
    >>> from sklearn_ben.datasets import load_bbbc021_crops
    >>> data = load_bbbc021_crops(plates=["Week4_27542"])  # doctest: +SKIP
    >>> data.X.shape, data.X.dtype  # doctest: +SKIP
    ((534, 3, 68, 68), dtype('uint16'))
    """
    folder = _data_path(data_home, "bbbc021_crops")
    meta = pd.read_csv(folder / "metadata_full.csv")
    known = sorted(meta["plate"].unique())
    if plates is None:
        plates = known
    elif isinstance(plates, str):
        plates = [plates]
    unknown = [p for p in plates if p not in known]
    if unknown:
        raise ValueError(
            f"Unknown plate {unknown[0]!r} in plates={list(plates)!r}; the "
            f"crops hold plates {known}."
        )
    frame = meta[meta["plate"].isin(plates)].reset_index(drop=True)
    shape = (3, 68, 68) if channels_first else (68, 68, 3)
    X = np.empty((len(frame), *shape), dtype=dtype)
    crop_id = frame["crop_id"].to_numpy()
    for name, rows in frame.groupby("npz_file", sort=False).indices.items():
        with np.load(folder / name) as stored:
            index = frame["index_in_file"].to_numpy()[rows]
            images = stored["images"][index]
            if not np.array_equal(stored["crop_id"][index], crop_id[rows]):
                raise ValueError(
                    f"{name} does not match metadata_full.csv (crop ids differ); "
                    "the data folder is inconsistent, restore it from its source."
                )
        X[rows] = images.transpose(0, 3, 1, 2) if channels_first else images
    y = frame["label"].to_numpy()
    if return_X_y:
        return X, y
    bags = pd.factorize(pd.MultiIndex.from_frame(frame[["plate", "well", "site"]]))[0]
    return Bunch(
        X=X,
        y=y,
        controls=frame["is_control"].to_numpy(dtype=bool),
        groups=frame["plate"].to_numpy(dtype=object),
        bags=bags,
        crop_id=crop_id,
        frame=frame,
        target_names=np.array(["DMSO", "cycloheximide"]),
        DESCR=(
            "BBBC021 single-cell crops (MCF-7, batch Week4, 6 plates): DMSO "
            "controls on every plate, cycloheximide on three. " + _BBBC021_ACK
        ),
    )


def load_bbbc021_profiles(*, data_home=None):
    """Load real per-well CellProfiler profiles of BBBC021 (55 plates, 12 MoAs).

    Reads ``<data_home>/bbbc021_profiles/bbbc021_per_well_profiles_annotated
    .csv.gz``: 632 wells, 516 raw (not normalised) per-well mean features, and
    the plate, well, batch, compound, concentration and mechanism of action
    (MoA) of each well; 6 DMSO control wells on every plate.

    Parameters
    ----------
    data_home : str or path-like, default=None
        Folder holding ``bbbc021_profiles/``; see :func:`get_data_home`.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with attributes:

        X : ndarray of shape (632, 516), dtype float64
            The features.
        feature_names : ndarray of shape (516,)
            Names of the features (CellProfiler measurements).
        frame : DataFrame
            Metadata of each well: ``plate``, ``well``, ``batch``,
            ``replicate``, ``compound``, ``concentration``, ``moa``,
            ``is_control`` (bool) and ``n_images``.
        controls : ndarray of shape (632,), dtype bool
            DMSO control wells.
        groups : ndarray of shape (632,)
            Plate of each well.
        batches : ndarray of shape (632,)
            Batch (``"Week1"`` ... ``"Week10"``) of each well.
        DESCR : str
            Description and required acknowledgement.

    Examples
    --------
    >>> from sklearn_ben.datasets import load_bbbc021_profiles
    >>> data = load_bbbc021_profiles()  # doctest: +SKIP
    >>> data.X.shape, int(data.controls.sum())  # doctest: +SKIP
    ((632, 516), 330)
    """
    folder = _data_path(data_home, "bbbc021_profiles")
    table = pd.read_csv(folder / "bbbc021_per_well_profiles_annotated.csv.gz")
    meta_columns = [c for c in table.columns if c.startswith("Metadata_")]
    frame = table[meta_columns].rename(
        columns=lambda c: c.removeprefix("Metadata_").lower()
    )
    frame["is_control"] = frame["is_control"].astype(bool)
    features = table.drop(columns=meta_columns)
    return Bunch(
        X=features.to_numpy(dtype=np.float64),
        feature_names=features.columns.to_numpy(dtype=object),
        frame=frame,
        controls=frame["is_control"].to_numpy(dtype=bool),
        groups=frame["plate"].to_numpy(dtype=object),
        batches=frame["batch"].to_numpy(dtype=object),
        DESCR=(
            "BBBC021 per-well CellProfiler profiles (Ljosa et al., J Biomol "
            "Screen 2013): 632 wells, 55 plates, 10 batches, 12 MoAs. " + _BBBC021_ACK
        ),
    )
