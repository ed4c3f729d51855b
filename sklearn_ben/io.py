"""Images read lazily from files, and the RxRx1 (WILDS) metadata table.

:class:`ImageFiles` is a ``torch.utils.data.Dataset`` of image files: pass it
as ``X`` to :class:`~sklearn_ben.BENClassifier` or
:class:`~sklearn_ben.BENEmbedder`, with ``groups`` and ``controls`` as arrays
beside it, and each batch is decoded when it is drawn (in DataLoader workers
with ``num_workers > 0``). Collections that do not fit in memory train this
way; an in-memory array stays the simple path.
"""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

__all__ = ["ImageFiles", "read_rxrx1_metadata"]

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


class ImageFiles(Dataset):
    """Image files decoded on demand into (C, H, W) integer tensors.

    Each item is one image as a ``torch.uint8`` tensor (``torch.uint16`` for
    16-bit grayscale files), channels first; the estimators scale integer
    images by their dtype's maximum, batch by batch. Nothing is decoded at
    construction, so the collection may be far larger than memory.

    Parameters
    ----------
    paths : sequence of str or path-like
        One file per sample, in the order of ``y``, ``groups`` and
        ``controls``. Any format Pillow reads (PNG, TIFF, JPEG, ...).
    root : str or path-like, default=None
        Directory that relative ``paths`` are joined to.
    mode : str, default=None
        Pillow mode every image is converted to after decoding (``"RGB"``,
        ``"L"``, ...). ``None`` keeps the file's own mode, so all files must
        then share one mode and size for batches to stack.
    check : bool, default=True
        Check at construction that every file exists (one ``os.path.exists``
        each, about a second per 100,000 files on a local disk), so that a
        missing file stops the run before training rather than in a
        DataLoader worker hours later. Set False on slow network file systems.

    Attributes
    ----------
    paths : ndarray of str
        The full paths. A fixed-width string array rather than a list, so
        that DataLoader workers do not copy it piece by piece as Python
        reference counts touch the objects of a list.

    See Also
    --------
    read_rxrx1_metadata : File paths, plates and controls of RxRx1 (WILDS).

    Notes
    -----
    The dataset holds only paths and is picklable, as DataLoader workers
    need under the "spawn" start method (macOS, Windows).

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from PIL import Image
    >>> from sklearn_ben.io import ImageFiles
    >>> folder = tempfile.mkdtemp()
    >>> pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    >>> for i in range(2):
    ...     Image.fromarray(pixels[i], mode="L").save(f"{folder}/img{i}.png")
    >>> images = ImageFiles(["img0.png", "img1.png"], root=folder)
    >>> len(images)
    2
    >>> images[1]
    tensor([[[ 9, 10, 11],
             [12, 13, 14],
             [15, 16, 17]]], dtype=torch.uint8)
    """

    def __init__(self, paths, *, root=None, mode=None, check=True):
        if isinstance(paths, (str, os.PathLike)):
            raise TypeError(
                f"paths must be a sequence of file paths, but got one path "
                f"{str(paths)!r}; wrap it in a list."
            )
        paths = [os.fspath(p) for p in paths]
        if root is not None:
            paths = [os.path.join(os.fspath(root), p) for p in paths]
        self.paths = np.asarray(paths, dtype=str)
        self.root = root
        self.mode = mode
        self.check = check
        if check:
            missing = [p for p in paths if not os.path.exists(p)]
            if missing:
                raise FileNotFoundError(
                    f"{len(missing)} of {len(paths)} image files do not exist, "
                    f"the first being {missing[0]!r}; fix the paths or root."
                )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index) -> torch.Tensor:
        path = str(self.paths[index])
        return torch.from_numpy(read_image(path, self.mode))

    def __repr__(self) -> str:
        return f"ImageFiles(<{len(self)} files>, mode={self.mode!r})"


def read_image(path, mode=None) -> np.ndarray:
    """Decode one image file into a (C, H, W) uint8 or uint16 array.

    Parameters
    ----------
    path : str or path-like
        The file.
    mode : str, default=None
        Pillow mode to convert to; ``None`` keeps the file's mode.

    Returns
    -------
    image : ndarray of shape (C, H, W)
        ``uint8``, or ``uint16`` for 16-bit grayscale files.
    """
    from PIL import Image

    with Image.open(path) as image:
        if mode is not None and image.mode != mode:
            image = image.convert(mode)
        file_mode = image.mode
        array = np.asarray(image)
    if file_mode.startswith("I;16"):
        array = array.astype(np.uint16, copy=False)
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(
            f"Image {os.fspath(path)!r} has Pillow mode {file_mode!r} "
            f"({array.dtype} pixels), but ImageFiles returns 8- or 16-bit "
            "images; pass mode='L' or mode='RGB' to convert."
        )
    if array.ndim == 2:
        array = array[None]
    else:
        array = array.transpose(2, 0, 1)
    array = np.ascontiguousarray(array)
    # Pillow's buffer is read-only; torch wants a writable array.
    return array if array.flags.writeable else array.copy()


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
