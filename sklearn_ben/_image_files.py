"""ImageFiles: a lazy dataset of image files, one per sample or one per channel."""

import operator
import os
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import Dataset

from sklearn_ben._files import (
    Header,
    ImageFileError,
    read_header,
    read_image,
    read_plane,
)

__all__ = ["ImageFiles"]

CHECKS = ("exists", "header", "none")
# Above this many files in one folder, one listdir beats a stat per file
# (on network file systems by far).
LISTDIR_THRESHOLD = 64


class ImageFiles(Dataset):
    """Image files decoded on demand into (C, H, W) tensors, bit-exactly.

    Each item is one sample as a tensor in the files' own dtype
    (``torch.uint16`` for 16-bit microscopy, ``torch.uint8`` for 8-bit, ...),
    channels first, with the files' values unchanged: the estimators scale
    them batch by batch (see their ``intensity`` setting). A sample is either
    one file holding all channels, or one file per channel, stacked in the
    order of the columns. Nothing is decoded at construction, so the
    collection may be far larger than memory.

    Parameters
    ----------
    paths : sequence of str, or 2-D array-like of str of shape (n_samples, n_channels)
        One file per sample (channels inside it: the pages or samples of a
        TIFF, the colours of a PNG), or one file per channel of each sample,
        one row per sample, in the order of ``y``, ``groups`` and
        ``controls``. TIFF (``.tif``, ``.tiff``) is read with ``tifffile``
        (compressed TIFF needs ``imagecodecs``), other formats with Pillow.
    root : str or path-like, default=None
        Folder that relative ``paths`` are joined to. Relative paths are made
        absolute when the object is made (against the current directory when
        ``root`` is None), so a later ``os.chdir`` changes nothing.
    mode : str, default=None
        Pillow mode every 8-bit image is converted to (``"RGB"``, ``"L"``).
        ``None`` keeps the files' channels and values. Files of more than 8
        bits are refused with a mode, since Pillow clips them to 255.
    check : {"exists", "header", "none"}, default="exists"
        What is checked when the object is made, so that a bad file stops the
        run before training, with its path and sample index:

        - ``"exists"``: every file exists (one directory listing per folder,
          or one ``stat`` per file in small folders), and sample 0's header
          gives the shape and dtype every sample read must have;
        - ``"header"``: besides, every file's header is read (in threads, no
          pixels decoded) and must give sample 0's shape and dtype; TIFF
          files shorter than their pixel data (truncated copies) are refused;
        - ``"none"``: nothing; the first sample read in each process sets
          the expected shape. For slow network file systems.

        ``True`` and ``False`` mean ``"exists"`` and ``"none"``.
    channels : sequence of str, default=None
        Names of the channel columns, used in messages and ``repr``
        (:meth:`from_table` sets them).
    n_jobs : int, default=None
        Threads for ``check="header"``; ``None`` means 4 per CPU, up to 32.

    Attributes
    ----------
    paths : ndarray of str, of shape (n_samples,) or (n_samples, n_channels)
        The absolute paths. A fixed-width string array rather than a list, so
        that DataLoader workers do not copy it piece by piece as Python
        reference counts touch the objects of a list.
    sample_shape : tuple of int or None
        (C, H, W) of every sample, from sample 0's header; None when
        ``check="none"``.
    dtype : numpy.dtype or None
        The pixel dtype of every sample, likewise.

    Raises
    ------
    FileNotFoundError
        With ``check`` other than ``"none"``, when files do not exist.
    ImageFileError
        When a file cannot be read or its shape or dtype differs from sample
        0's; the message names the file and its sample index (also when
        raised by a DataLoader worker during training).

    See Also
    --------
    read_rxrx1_metadata : File paths, plates and controls of RxRx1 (WILDS).

    Notes
    -----
    Indexing with an integer gives a tensor; with a slice, an integer array
    or a boolean mask, it gives an ``ImageFiles`` of those samples (no files
    are checked again), so train and test splits need no
    ``torch.utils.data.Subset``. The dataset holds only paths and is
    picklable, as DataLoader workers need under the "spawn" start method.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> import tifffile
    >>> from sklearn_ben.io import ImageFiles
    >>> folder = tempfile.mkdtemp()
    >>> pixels = np.arange(2 * 2 * 3 * 3, dtype=np.uint16).reshape(2, 2, 3, 3) * 1000
    >>> for i in range(2):
    ...     for c, stain in enumerate(["DNA", "Actin"]):
    ...         tifffile.imwrite(f"{folder}/site{i}_{stain}.tif", pixels[i, c])
    >>> rows = [[f"site{i}_DNA.tif", f"site{i}_Actin.tif"] for i in range(2)]
    >>> images = ImageFiles(rows, root=folder)
    >>> images
    ImageFiles(<2 samples x 2 channel files>, (2, 3, 3) uint16, check='exists')
    >>> images[1][1]
    tensor([[27000, 28000, 29000],
            [30000, 31000, 32000],
            [33000, 34000, 35000]], dtype=torch.uint16)
    >>> images[np.array([False, True])]
    ImageFiles(<1 samples x 2 channel files>, (2, 3, 3) uint16, check='exists')
    """

    def __init__(
        self, paths, *, root=None, mode=None, check="exists", channels=None, n_jobs=None
    ):
        self.check = _check_check(check)
        self.mode = mode
        self.root = root
        self.n_jobs = n_jobs
        self.paths = _resolve(_path_array(paths), root)
        self.channels = _check_channels(channels, self.paths)
        if mode is not None and self.paths.ndim == 2:
            raise ValueError(
                f"mode={mode!r} converts files that hold a whole sample, but paths "
                "has one file per channel, read as they are; pass mode=None."
            )
        self.sample_shape = None
        self.dtype = None
        self._reference = None  # (sample index, Header), the shape all must have
        if self.check != "none":
            _check_exist(self.paths, self.channels)
            self._reference = (0, self._sample_header(0))
            self.sample_shape = self._reference[1].shape
            self.dtype = self._reference[1].dtype
        if self.check == "header":
            self._check_headers()

    # ------------------------------------------------------------ from a table
    @classmethod
    def from_table(cls, table, channels, *, root=None, check="exists", n_jobs=None):
        """One sample per row of a CellProfiler LoadData table, one file per channel.

        Parameters
        ----------
        table : pandas.DataFrame
            Columns ``FileName_<channel>`` and, optionally,
            ``PathName_<channel>`` (the folder) for each channel, as
            CellProfiler's LoadData module reads and its exports write; the
            ``Image_`` prefix of exported per-image tables
            (``Image_FileName_OrigDNA``, as in BBBC021's
            ``BBBC021_v1_image.csv``) is accepted too. Rows are samples, in
            order: take ``groups`` and ``controls`` from the same table
            (``table["Metadata_Plate"]``, ...).
        channels : sequence of str
            Channel names, as after ``FileName_`` (``["OrigDNA", "OrigER"]``);
            the image's channels come in this order.
        root : str or path-like, default=None
            Folder that relative ``PathName`` values (or file names, without
            ``PathName`` columns) are joined to. Absolute ``PathName`` values
            are kept: overwrite the columns to move the images.
        check, n_jobs
            As for the constructor.

        Returns
        -------
        images : ImageFiles
            With ``paths`` of shape (len(table), len(channels)).

        Examples
        --------
        >>> import tempfile
        >>> import numpy as np
        >>> import pandas as pd
        >>> import tifffile
        >>> from sklearn_ben.io import ImageFiles
        >>> root = tempfile.mkdtemp()
        >>> for name in ["A01_w1.tif", "A01_w2.tif"]:
        ...     tifffile.imwrite(f"{root}/{name}", np.zeros((4, 5), np.uint16))
        >>> table = pd.DataFrame({
        ...     "FileName_DNA": ["A01_w1.tif"], "PathName_DNA": [root],
        ...     "FileName_Actin": ["A01_w2.tif"], "PathName_Actin": [root],
        ...     "Metadata_Plate": ["P1"], "Metadata_Well": ["A01"],
        ... })
        >>> images = ImageFiles.from_table(table, ["DNA", "Actin"])
        >>> images.sample_shape, images.channels
        ((2, 4, 5), ('DNA', 'Actin'))
        >>> groups = table["Metadata_Plate"].to_numpy()
        """
        paths = _table_paths(table, channels)
        return cls(paths, root=root, check=check, channels=channels, n_jobs=n_jobs)

    # ------------------------------------------------------------ the dataset
    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):
        if _is_selection(index):
            return self._subset(index)
        try:
            i = operator.index(index)
        except TypeError:
            raise TypeError(
                f"ImageFiles indices must be integers, slices, integer arrays or "
                f"boolean masks, but got {type(index).__name__}; pass one of those."
            ) from None
        n = len(self)
        if not -n <= i < n:
            raise IndexError(
                f"index {i} is out of range for ImageFiles of {n} samples; pass an "
                f"index in [-{n}, {n})."
            )
        return torch.from_numpy(self._read_sample(i % n))

    def __repr__(self) -> str:
        what = f"{len(self)} samples"
        if self.paths.ndim == 2:
            what += f" x {self.paths.shape[1]} channel files"
        shape = f"{self.sample_shape} {self.dtype}" if self.dtype is not None else "?"
        mode = f", mode={self.mode!r}" if self.mode is not None else ""
        return f"ImageFiles(<{what}>, {shape}{mode}, check={self.check!r})"

    # --------------------------------------------------------------- private
    def _subset(self, index):
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.paths = self.paths[_selection(index, len(self))]
        return new

    def _where(self, i: int, c=None) -> str:
        """'sample 3, channel 'DNA'' for messages."""
        if c is None:
            return f"sample {i}"
        name = self.channels[c] if self.channels is not None else c
        return f"sample {i}, channel {name!r}"

    def _sample_header(self, i: int) -> Header:
        """Header of sample ``i``, refusing mismatched channel files."""
        row = self.paths[i]
        if row.ndim == 0:
            return _header(str(row), self._where(i), self.mode)
        first = None
        for c, path in enumerate(row):
            header = _header(str(path), self._where(i, c), self.mode)
            if header.shape[0] != 1:
                raise ImageFileError(
                    f"Image file {str(path)!r} ({self._where(i, c)}) holds "
                    f"{header.shape[0]} planes, but a file per channel must hold "
                    "one; pass multi-plane files one per sample, as a 1-D list."
                )
            if first is None:
                first = (path, header)
            elif header != first[1]:
                raise ImageFileError(
                    f"Image file {str(path)!r} ({self._where(i, c)}) has size "
                    f"{header}, but the sample's first channel file "
                    f"{str(first[0])!r} has {first[1]}; the channels of a sample "
                    "must match: fix the file or drop the row."
                )
        return Header((len(row), *first[1].shape[1:]), first[1].dtype)

    def _check_headers(self):
        n_jobs = self.n_jobs or min(32, 4 * (os.cpu_count() or 1))
        with ThreadPoolExecutor(n_jobs) as pool:
            headers = pool.map(self._sample_header, range(len(self)), chunksize=64)
            for i, header in enumerate(headers):
                self._compare(i, header)

    def _compare(self, i: int, header: Header):
        """Refuse sample ``i`` when its shape or dtype differs from the reference."""
        if self._reference is None:
            self._reference = (i, header)
            return
        j, expected = self._reference
        if header != expected:
            path = self.paths[i] if self.paths.ndim == 1 else self.paths[i][0]
            raise ImageFileError(
                f"Image file {str(path)!r} ({self._where(i)}) has shape {header}, "
                f"but sample {j} has {expected}; all samples must share one shape "
                "and dtype to form batches: crop or resize the file, or drop its row."
            )

    def _read_sample(self, i: int) -> np.ndarray:
        row = self.paths[i]
        if row.ndim == 0:
            image = _decode(read_image, str(row), self._where(i), self.mode)
            self._compare(i, Header(image.shape, image.dtype))
            return image
        out = None
        if self._reference is not None:
            expected = self._reference[1]
            out = np.empty((len(row), *expected.shape[1:]), dtype=expected.dtype)
        for c, path in enumerate(row):
            target = None if out is None else out[c]
            plane = _decode(read_plane, str(path), self._where(i, c), target)
            if out is None:
                out = np.empty((len(row), *plane.shape), dtype=plane.dtype)
            if plane is not target:
                self._check_plane(i, c, plane, out)
                out[c] = plane
        self._compare(i, Header(out.shape, out.dtype))
        return out

    def _check_plane(self, i: int, c: int, plane: np.ndarray, out: np.ndarray):
        if plane.shape == out.shape[1:] and plane.dtype == out.dtype:
            return
        source = (
            f"sample {self._reference[0]}"
            if self._reference is not None
            else "the sample's first channel file"
        )
        raise ImageFileError(
            f"Image file {str(self.paths[i][c])!r} ({self._where(i, c)}) has shape "
            f"{Header((1, *plane.shape), plane.dtype)}, but {source} has "
            f"{Header((1, *out.shape[1:]), out.dtype)} per channel; all samples "
            "must share one shape and dtype to form batches: crop or resize the "
            "file, or drop its row."
        )


def _header(path: str, where: str, mode) -> Header:
    header = _decode(read_header, path, where)
    if mode is not None and header.dtype != np.uint8:
        raise ImageFileError(
            f"Image file {path!r} ({where}) is {header.dtype}, but mode={mode!r} "
            "converts through Pillow's 8-bit modes, which clips values to 255; "
            "pass mode=None to keep the file's values."
        )
    if mode is not None:
        channels = {"L": 1, "RGB": 3, "RGBA": 4, "LA": 2}.get(mode, header.shape[0])
        header = Header((channels, *header.shape[1:]), header.dtype)
    return header


def _decode(reader, path: str, where: str, *args):
    """``reader(path, *args)``, with every failure naming the file and sample."""
    try:
        return reader(path, *args)
    except ImageFileError as error:
        message = str(error)
        if where not in message:
            message = message.replace(f"{path!r}", f"{path!r} ({where})", 1)
        raise ImageFileError(message) from error
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"Image file {path!r} ({where}) does not exist; fix the path, or make "
            "the dataset again to check every file."
        ) from error
    except Exception as error:
        raise ImageFileError(
            f"Image file {path!r} ({where}) could not be decoded "
            f"({type(error).__name__}: {error}); copy the file again from the "
            "source, or drop its row."
        ) from error


def _check_check(check):
    if check is True:
        return "exists"
    if check is False:
        return "none"
    if check not in CHECKS:
        raise ValueError(
            f"check must be one of {CHECKS} (or True, False), but got {check!r}; "
            "pass one of those."
        )
    return check


def _path_array(paths) -> np.ndarray:
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise TypeError(
            f"paths must be a sequence of file paths, but got one path "
            f"{os.fsdecode(paths)!r}; wrap it in a list."
        )
    try:
        array = np.asarray(paths, dtype=object)
    except ValueError:  # ragged rows
        raise ValueError(
            "paths has rows of different lengths; pass one file per sample, or "
            "the same number of channel files in every row."
        ) from None
    if array.ndim == 1 and any(isinstance(p, (list, tuple, np.ndarray)) for p in array):
        raise ValueError(
            "paths has rows of different lengths; pass one file per sample, or "
            "the same number of channel files in every row."
        )
    if array.size == 0:
        raise ValueError(
            f"paths is empty (shape {array.shape}), but ImageFiles needs at least "
            "one file; pass the image files (check the table or filter that "
            "made the list)."
        )
    if array.ndim not in (1, 2):
        raise ValueError(
            f"paths must be 1-D (one file per sample) or 2-D (samples x channel "
            f"files), but has shape {array.shape}; pass one of those."
        )
    for index, value in np.ndenumerate(array):
        if not isinstance(value, (str, os.PathLike)):
            where = index[0] if array.ndim == 1 else index
            raise TypeError(
                f"paths[{where}] is {value!r} ({type(value).__name__}), not a file "
                "path; drop samples without a file, or fill it in."
            )
    return array


def _resolve(paths: np.ndarray, root) -> np.ndarray:
    base = os.path.abspath(os.fspath(root)) if root is not None else os.getcwd()
    resolved = [
        p if os.path.isabs(p) else os.path.normpath(os.path.join(base, p))
        for p in map(os.fspath, paths.ravel())
    ]
    return np.asarray(resolved, dtype=str).reshape(paths.shape)


def _check_channels(channels, paths):
    if channels is None:
        return None
    if isinstance(channels, str):
        channels = [channels]
    channels = tuple(str(c) for c in channels)
    width = paths.shape[1] if paths.ndim == 2 else None
    if width != len(channels):
        raise ValueError(
            f"channels names {len(channels)} channels but paths has "
            f"{width or 'no'} channel columns; pass one name per column."
        )
    return channels


def _check_exist(paths: np.ndarray, channels):
    flat = paths.ravel()
    by_folder = {}
    for k, path in enumerate(flat):
        folder, name = os.path.split(str(path))
        by_folder.setdefault(folder, []).append((k, name))
    missing = []
    for folder, entries in by_folder.items():
        names = _listdir(folder) if len(entries) > LISTDIR_THRESHOLD else None
        for k, name in entries:
            known = names is not None and name in names
            if not known and not os.path.exists(flat[k]):
                missing.append(k)
    if missing:
        k = min(missing)
        i, c = divmod(k, paths.shape[1]) if paths.ndim == 2 else (k, None)
        where = (
            f"sample {i}"
            if c is None
            else f"sample {i}, channel " + (repr(channels[c]) if channels else str(c))
        )
        raise FileNotFoundError(
            f"{len(missing)} of {flat.size} image files do not exist, the first "
            f"being {str(flat[k])!r} ({where}); fix the paths or root."
        )


def _listdir(folder: str):
    try:
        return set(os.listdir(folder or "."))
    except OSError:
        return None


def _is_selection(index) -> bool:
    if isinstance(index, slice):
        return True
    if isinstance(index, (list, tuple)):
        return True
    if isinstance(index, (np.ndarray, torch.Tensor)):
        return index.ndim >= 1
    return False


def _selection(index, n: int):
    if isinstance(index, slice):
        return index
    if isinstance(index, torch.Tensor):
        index = index.cpu().numpy()
    array = np.asarray(index)
    if array.size == 0:
        return np.zeros(0, dtype=np.intp)
    if array.dtype == bool:
        if array.shape != (n,):
            raise IndexError(
                f"boolean mask has shape {array.shape} but ImageFiles has {n} "
                "samples; pass one bool per sample."
            )
        return array
    if array.dtype.kind not in "iu" or array.ndim != 1:
        raise IndexError(
            f"ImageFiles index arrays must be 1-D integers or booleans, but got "
            f"{array.dtype} of shape {array.shape}; pass sample positions or a mask."
        )
    bad = array[(array < -n) | (array >= n)]
    if bad.size:
        raise IndexError(
            f"index {int(bad[0])} is out of range for ImageFiles of {n} samples; "
            f"pass indices in [-{n}, {n})."
        )
    return array


def _table_paths(table, channels) -> np.ndarray:
    if isinstance(channels, str):
        raise TypeError(
            f"channels must be a list of channel names, but got the string "
            f"{channels!r}; pass [{channels!r}]."
        )
    channels = list(channels)
    if not channels:
        raise ValueError("channels is empty; pass the channel names to read.")
    if len(set(channels)) != len(channels):
        raise ValueError(f"channels {channels} names a channel twice; pass each once.")
    columns = []
    for name in channels:
        file_col = _column(table, "FileName", name)
        path_col = _column(table, "PathName", name, required=False)
        names = table[file_col]
        folders = table[path_col] if path_col is not None else None
        for col, values in ((file_col, names), (path_col, folders)):
            if values is not None and values.isna().any():
                row = values.index[values.isna().to_numpy()][0]
                row = row.item() if isinstance(row, np.generic) else row
                raise ValueError(
                    f"table column {col} is empty in row {row!r}; drop the rows "
                    "without images or fill them in."
                )
        if folders is None:
            columns.append([str(f) for f in names])
        else:
            columns.append(
                [os.path.join(str(d), str(f)) for d, f in zip(folders, names)]
            )
    return np.array(columns, dtype=object).T.reshape(len(table), len(channels))


def _column(table, kind: str, name: str, required: bool = True):
    for column in (f"{kind}_{name}", f"Image_{kind}_{name}"):
        if column in table.columns:
            return column
    if not required:
        return None
    pattern = re.compile(rf"^(?:Image_)?{kind}_(.+)$")
    available = [m.group(1) for c in table.columns if (m := pattern.match(str(c)))]
    raise ValueError(
        f"table has no column {kind}_{name} (nor Image_{kind}_{name}); its "
        f"channels are {available}; pass channel names from those."
    )
