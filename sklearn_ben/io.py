"""Images read lazily from files, and the RxRx1 (WILDS) metadata table.

:class:`ImageFiles` is a ``torch.utils.data.Dataset`` of image files: pass it
as ``X`` to :class:`~sklearn_ben.BENClassifier` or
:class:`~sklearn_ben.BENEmbedder`, with ``groups`` and ``controls`` as arrays
beside it, and each batch is decoded when it is drawn (in DataLoader workers
with ``num_workers > 0``). Files keep their dtype and values: 16-bit
microscopy stays uint16. Samples are one file each (a multi-page TIFF, an RGB
PNG) or one file per channel, as in CellProfiler LoadData tables
(:meth:`ImageFiles.from_table`). Collections that do not fit in memory train
this way; an in-memory array stays the simple path.
"""

import os
from pathlib import Path

import pandas as pd

from sklearn_ben._files import ImageFileError, read_header, read_image
from sklearn_ben._image_files import ImageFiles

__all__ = [
    "ImageFileError",
    "ImageFiles",
    "read_header",
    "read_image",
    "read_rxrx1_metadata",
]

RXRX1_COLUMNS = (
    "site_id",
    "well_id",
    "cell_type",
    "dataset",
    "experiment",
    "plate",
    "well",
    "site",
    "well_type",
    "sirna",
    "sirna_id",
)
RXRX1_NEGATIVE_CONTROL = 1138
RXRX1_POSITIVE_CONTROLS = range(1108, 1138)


def read_rxrx1_metadata(root, *, positive_controls=False):
    """Read ``metadata.csv`` of a WILDS ``rxrx1_v1.0`` folder, with file paths.

    Parameters
    ----------
    root : str or path-like
        The ``rxrx1_v1.0`` folder, holding ``metadata.csv`` and
        ``images/<experiment>/Plate<plate>/<well>_s<site>.png``.
    positive_controls : bool, default=False
        Whether the positive-control wells (``sirna_id`` 1108-1137, 30 siRNAs
        of known strong effect on every plate) count as controls besides the
        negative controls (``sirna_id`` 1138, no siRNA). Controls are the
        samples ``norm="controls"`` takes batch-norm statistics from; the
        negative controls alone are the untreated reference, but they are few
        per plate, so check ``meta.groupby("plate_key").is_control.sum()``
        against ``min_controls`` before choosing.

    Returns
    -------
    metadata : pandas.DataFrame
        The table's columns plus ``path`` (the image file, joined to
        ``root``), ``plate_key`` (``"<experiment>_<plate>"``: plate numbers
        1-4 repeat in every experiment, so the number alone does not name a
        plate), ``is_control`` (bool) and ``label`` (``sirna_id`` as int, the
        WILDS target; controls are classes too). Splits are in ``dataset``:
        ``train``, ``val``, ``test`` (the official out-of-distribution test),
        ``id_test``.

    Raises
    ------
    FileNotFoundError
        When ``root`` holds no ``metadata.csv``.
    ValueError
        When columns of the WILDS table are missing.

    Examples
    --------
    >>> import tempfile
    >>> import pandas as pd
    >>> from sklearn_ben.io import read_rxrx1_metadata
    >>> root = tempfile.mkdtemp()
    >>> pd.DataFrame({
    ...     "site_id": ["HEPG2-01_1_B02_1", "HUVEC-01_1_B02_1"],
    ...     "well_id": ["HEPG2-01_1_B02", "HUVEC-01_1_B02"],
    ...     "cell_type": ["HEPG2", "HUVEC"], "dataset": ["train", "test"],
    ...     "experiment": ["HEPG2-01", "HUVEC-01"], "plate": [1, 1],
    ...     "well": ["B02", "B02"], "site": [1, 1],
    ...     "well_type": ["negative_control", "treatment"],
    ...     "sirna": ["EMPTY", "s1"], "sirna_id": [1138, 3],
    ... }).to_csv(f"{root}/metadata.csv", index=False)
    >>> meta = read_rxrx1_metadata(root)
    >>> meta[["plate_key", "is_control", "label"]]
        plate_key  is_control  label
    0  HEPG2-01_1        True   1138
    1  HUVEC-01_1       False      3
    >>> meta.path[0][len(root):]
    '/images/HEPG2-01/Plate1/B02_s1.png'
    """
    root = os.fspath(root)
    csv = Path(root) / "metadata.csv"
    if not csv.is_file():
        raise FileNotFoundError(
            f"No metadata.csv in {root!r}; pass the rxrx1_v1.0 folder that "
            "WILDS downloads (it holds metadata.csv and images/)."
        )
    meta = pd.read_csv(csv)
    missing = [c for c in RXRX1_COLUMNS if c not in meta.columns]
    if missing:
        raise ValueError(
            f"{csv} lacks the WILDS rxrx1 columns {missing} (it has "
            f"{list(meta.columns)}); pass the metadata.csv of rxrx1_v1.0."
        )
    meta["path"] = [
        os.path.join(root, "images", str(e), f"Plate{p}", f"{w}_s{s}.png")
        for e, p, w, s in zip(meta.experiment, meta.plate, meta.well, meta.site)
    ]
    meta["plate_key"] = meta.experiment.astype(str) + "_" + meta.plate.astype(str)
    meta["label"] = meta.sirna_id.astype(int)
    is_control = meta.label == RXRX1_NEGATIVE_CONTROL
    if positive_controls:
        is_control |= meta.label.isin(RXRX1_POSITIVE_CONTROLS)
    meta["is_control"] = is_control.to_numpy(dtype=bool)
    return meta
