"""Data-parallel BEN: whole-plate batches dealt to processes, inference by plate.

Part of the engine: imports numpy and torch (``torch.distributed``) only, never
scikit-learn, skorch or Accelerate, so a plain PyTorch DDP loop can use it.

BEN changes two things about data parallelism:

- **Batches stay whole plates.** Every process computes the same list of
  plate batches for an epoch (same seed), and :class:`DistributedGroupBatchSampler`
  deals them out: process ``r`` gets batches ``r, r + R, r + 2R, ...``. Each
  process normalises with its own batch's statistics; batch normalisation is
  *not* synchronised across processes (``SyncBatchNorm`` would mix plates).
- **Inference is split by plate.** :func:`predict_by_group_distributed` gives
  each process whole plates, and gathers the outputs back in input order on
  every process.

Gradient averaging (DDP's all-reduce) needs every process to run the same
number of steps. When the number of batches ``B`` of an epoch is not a
multiple of the number of processes ``R``, the largest batches are split in
two halves (each still one plate, each with at least two samples, and with
``min_controls`` controls each when the sampler asks for them) until it is, so
a process runs ``ceil(B / R)`` steps. Only when too few batches can be split
(all of 2 or 3 samples) are pairs of batches of one plate merged instead
(``floor(B / R)`` steps). No sample is dropped or repeated either way: each
epoch still uses every sample exactly once across all processes.
"""

import zlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor, nn

from sklearn_ben._data import BatchDataset
from sklearn_ben.inference import group_indices, predict_by_group

__all__ = [
    "DistributedGroupBatchSampler",
    "assign_groups",
    "check_no_sync_batchnorm",
    "predict_by_group_distributed",
]


class DistributedGroupBatchSampler:
    """Deal the plate batches of a batch sampler out to ``num_replicas`` processes.

    Every process wraps an identically seeded sampler (e.g.
    :class:`~sklearn_ben.samplers.GroupBatchSampler` with the same
    ``random_state``), so all of them compute the same batches each epoch;
    process ``rank`` keeps every ``num_replicas``-th one. Across processes, an
    epoch uses every sample exactly once, every batch holds one plate, the
    processes' batches are disjoint, and every process runs ``len(self)``
    steps (batches are split in halves to make the count a multiple of
    ``num_replicas``; see the module docstring).

    When a ``torch.distributed`` process group is running, each epoch's batch
    list is fingerprinted and compared across processes (one small
    ``all_gather_object``); processes that drew different batches (different
    seeds or data) raise instead of training on overlapping samples.

    Parameters
    ----------
    sampler : iterable
        Yields index lists, or ``(key, indices)`` pairs as
        :class:`~sklearn_ben.samplers.KeyedBatchSampler` does. A half of a
        split keyed batch gets the key ``(*key, half)``, so its random draws
        differ from the other half's.
    num_replicas : int
        Number of processes.
    rank : int
        This process, in ``0 .. num_replicas - 1``.
    check : bool, default=True
        Compare the batch lists across processes each epoch (needs an
        initialised process group; skipped otherwise).

    Examples
    --------
    >>> from sklearn_ben.samplers import GroupBatchSampler
    >>> from sklearn_ben.distributed import DistributedGroupBatchSampler
    >>> groups = ["a"] * 6 + ["b"] * 4
    >>> ranks = [
    ...     DistributedGroupBatchSampler(
    ...         GroupBatchSampler(groups, 3, random_state=0), 2, rank
    ...     )
    ...     for rank in (0, 1)
    ... ]
    >>> [len(r) for r in ranks]
    [2, 2]
    >>> sorted(int(i) for r in ranks for batch in r for i in batch)
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    """

    def __init__(self, sampler, num_replicas: int, rank: int, *, check=True) -> None:
        if not _is_int(num_replicas) or num_replicas < 1:
            raise ValueError(
                "num_replicas should be a positive integer, but got "
                f"num_replicas={num_replicas!r}."
            )
        if not _is_int(rank) or not 0 <= rank < num_replicas:
            raise ValueError(
                f"rank should be an integer in [0, {num_replicas - 1}], but got "
                f"rank={rank!r}."
            )
        self.sampler = sampler
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.check = check
        base = getattr(sampler, "sampler", sampler)  # a KeyedBatchSampler's inner
        self._controls = getattr(base, "_controls", None)
        self._min_controls = getattr(base, "min_controls", 0)
        self._plate_of = _plate_of(base)
        self._merge_first = _check_splittable(base, len(sampler), self.num_replicas)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Passed on to the wrapped sampler when it has ``set_epoch``."""
        self.epoch = int(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        if self._merge_first:
            return len(self.sampler) // self.num_replicas
        return -(-len(self.sampler) // self.num_replicas)

    def __iter__(self) -> Iterator:
        items = list(self.sampler)
        self.epoch += 1
        keyed = bool(items) and isinstance(items[0], tuple)
        batches = [
            (key, np.asarray(b)) for key, b in (items if keyed else _unkeyed(items))
        ]
        batches = self._even_out(batches)
        if self.check:
            _check_agree(batches, self.epoch)
        for key, batch in batches[self.rank :: self.num_replicas]:
            yield (key, batch.tolist()) if keyed else batch.tolist()

    def _even_out(self, batches: list) -> list:
        """Make the number of batches a multiple of the number of processes.

        First by splitting the largest splittable batches in halves; when too
        few batches split (batches of 2 or 3), by merging pairs of batches of
        the same plate instead.
        """
        if self._merge_first:
            return self._merge(list(batches))
        try:
            return self._split(list(batches))
        except ValueError:  # sizes unknown in advance (control top-up)
            return self._merge(list(batches))

    def _split(self, batches: list) -> list:
        while len(batches) % self.num_replicas:
            sizes = [len(b) if self._halves(b) is not None else -1 for _, b in batches]
            pos = int(np.argmax(sizes))
            if sizes[pos] < 0:
                raise ValueError("no splittable batch")
            key, batch = batches[pos]
            first, second = self._halves(batch)
            halves = [(_half_key(key, 0), first), (_half_key(key, 1), second)]
            batches[pos : pos + 1] = halves
        return batches

    def _merge(self, batches: list) -> list:
        plate = self._plate_of
        for _ in range(len(batches) % self.num_replicas):
            pair = _smallest_same_plate_pair(batches, plate)
            if pair is None:
                raise ValueError(
                    f"{len(batches)} plate batches cannot be dealt evenly to "
                    f"{self.num_replicas} processes: none splits into halves of "
                    "at least 2 samples (and min_controls controls) and no two "
                    "are of one plate; lower batch_size or use fewer processes."
                )
            i, j = pair
            key, first = batches[i]
            batches[i] = (key, np.concatenate([first, batches[j][1]]))
            del batches[j]
        return batches

    def _halves(self, batch: np.ndarray):
        """Two halves of ``batch`` keeping the sampler's promises, or None."""
        if len(batch) < 4:
            return None
        if self._controls is None or self._min_controls == 0:
            return batch[: len(batch) // 2], batch[len(batch) // 2 :]
        is_ctrl = self._controls[batch]
        ctrl, rest = batch[is_ctrl], batch[~is_ctrl]
        if len(ctrl) // 2 < self._min_controls:
            return None
        c1, c2 = np.array_split(ctrl, 2)
        r2, r1 = np.array_split(rest, 2)  # the half with fewer controls gets more
        return np.concatenate([c1, r1]), np.concatenate([c2, r2])


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _unkeyed(items):
    return ((None, b) for b in items)


def _plate_of(base) -> np.ndarray | None:
    """Plate number of every sample, from a GroupBatchSampler's members."""
    members = getattr(base, "_members", None)
    if members is None:
        return None
    plate = np.empty(base.n_samples, dtype=np.int64)
    for k, m in enumerate(members):
        plate[m] = k
    return plate


def _smallest_same_plate_pair(batches, plate):
    """Positions (i < j) of the two smallest batches of one plate, or None."""
    if plate is None:
        return None
    by_plate: dict[int, list[int]] = {}
    for pos, (_, b) in enumerate(batches):
        by_plate.setdefault(int(plate[b[0]]), []).append(pos)
    pairs = [
        sorted(sorted(p, key=lambda q: (len(batches[q][1]), q))[:2])
        for p in by_plate.values()
        if len(p) > 1
    ]
    if not pairs:
        return None
    return min(pairs, key=lambda ij: (sum(len(batches[q][1]) for q in ij), ij))


def _half_key(key, half: int):
    return None if key is None else (*key, half)


def _check_splittable(base, n_batches: int, num_replicas: int) -> bool:
    """Whether batches must be merged (not split); refuse when neither works.

    Exact for a :class:`~sklearn_ben.samplers.GroupBatchSampler` without
    control top-up (its batch sizes are fixed); otherwise splitting is tried
    when the batches are drawn.
    """
    needed = -n_batches % num_replicas
    members = getattr(base, "_members", None)
    n_batches_per_group = getattr(base, "_n_batches", None)
    if needed == 0 or members is None or getattr(base, "min_controls", 0):
        return False
    sizes = [
        len(part)
        for m, k in zip(members, n_batches_per_group)
        for part in np.array_split(np.arange(len(m)), k)
    ]
    extra = sum(n // 2 - 1 for n in sizes)  # a batch of n gives at most n // 2
    mergeable = sum(k - 1 for k in n_batches_per_group)
    if extra < needed and mergeable < n_batches % num_replicas:
        raise ValueError(
            f"The sampler makes {n_batches} plate batches per epoch, too few "
            f"to give each of {num_replicas} processes the same number of "
            "steps, by splitting batches in halves of at least 2 samples or "
            "merging two of one plate; use fewer processes or a smaller "
            "batch_size."
        )
    return extra < needed


def _fingerprint(batches) -> int:
    crc = 0
    for _, batch in batches:
        crc = zlib.crc32(np.asarray(batch, dtype=np.int64).tobytes(), crc)
        crc = zlib.crc32(b"|", crc)
    return crc


def _check_agree(batches, epoch: int) -> None:
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return
    prints = [None] * dist.get_world_size()
    dist.all_gather_object(prints, _fingerprint(batches))
    if len(set(prints)) > 1:
        raise RuntimeError(
            f"The processes drew different plate batches in epoch {epoch}, so "
            "they would train on overlapping samples; give every process the "
            "same X, groups and an int random_state."
        )


def check_no_sync_batchnorm(module: nn.Module) -> None:
    """Refuse a network whose batch norm is synchronised across processes.

    ``SyncBatchNorm`` computes statistics over the batches of all processes,
    which in BEN are different plates; each process must normalise with its
    own plate's statistics.

    Parameters
    ----------
    module : torch.nn.Module
        The (possibly wrapped) network.
    """
    synced = [n for n, m in module.named_modules() if isinstance(m, nn.SyncBatchNorm)]
    if synced:
        raise ValueError(
            f"The network has {len(synced)} SyncBatchNorm layer(s), e.g. "
            f"{synced[0]!r}, which would mix the statistics of the plates of "
            "different processes; BEN needs each process's own plate statistics, "
            "so do not convert the network with SyncBatchNorm (or an "
            "Accelerate/DeepSpeed sync_bn option)."
        )


def assign_groups(groups, num_replicas: int) -> list[np.ndarray]:
    """Rows of each process: whole plates, balanced by size, deterministic.

    Plates are given largest first to the process with fewest rows so far
    (ties: lower rank, earlier plate).

    Parameters
    ----------
    groups : array-like of shape (n_samples,)
        Plate of each row.
    num_replicas : int
        Number of processes.

    Returns
    -------
    rows : list of ndarray
        Sorted row indices of each process (possibly empty).
    """
    plates = group_indices(np.asarray(groups))
    order = sorted(range(len(plates)), key=lambda k: (-len(plates[k]), k))
    load = [0] * num_replicas
    parts: list[list[np.ndarray]] = [[] for _ in range(num_replicas)]
    for k in order:
        r = int(np.argmin(load))
        parts[r].append(plates[k])
        load[r] += len(plates[k])
    return [
        np.sort(np.concatenate(p)) if p else np.empty(0, dtype=np.int64) for p in parts
    ]


def predict_by_group_distributed(
    module: nn.Module,
    X,
    groups=None,
    controls=None,
    *,
    rank: int,
    num_replicas: int,
    source: str = "batch",
    inputs=None,
    intensity="dtype",
    **kwargs,
) -> Tensor:
    """:func:`~sklearn_ben.inference.predict_by_group`, plates split over processes.

    Each process predicts the whole plates :func:`assign_groups` gives it
    (``source="running"``: contiguous row ranges), then the outputs are
    gathered (``torch.distributed.all_gather_object``) and every process
    returns all rows in the order of ``X``. Every process must call it with
    the same arguments and identical weights.

    Parameters
    ----------
    module, X, groups, controls, source, intensity
        As for :func:`~sklearn_ben.inference.predict_by_group`.
    rank : int
        This process.
    num_replicas : int
        Number of processes.
    inputs : callable, default=None
        ``inputs(indices) -> float32 tensor`` over rows of ``X``.
    **kwargs
        ``chunk_size``, ``device``, ``dtype`` of ``predict_by_group``.

    Returns
    -------
    out : torch.Tensor of shape (n_samples, ...)
        Float32 outputs on the CPU, in the order of ``X``, on every process.
    """
    n = len(X)
    if source == "running" or groups is None:
        bounds = np.linspace(0, n, num_replicas + 1).astype(int)
        rows = np.arange(bounds[rank], bounds[rank + 1])
    else:
        rows = assign_groups(groups, num_replicas)[rank]
    get = inputs or BatchDataset(X, intensity=intensity).get_inputs
    out = None
    if len(rows):
        out = predict_by_group(
            module,
            rows,  # only its length is read: inputs come from ``inputs=``
            None if groups is None else np.asarray(groups)[rows],
            None if controls is None else np.asarray(controls)[rows],
            source=source,
            inputs=lambda idx: get(rows[idx]),
            **kwargs,
        ).numpy()
    parts = [None] * num_replicas
    torch.distributed.all_gather_object(parts, (rows, out))
    shape = next(o.shape[1:] for _, o in parts if o is not None)
    result = torch.empty((n, *shape))
    for part_rows, part in parts:
        if part is not None:
            result[torch.from_numpy(part_rows)] = torch.from_numpy(part)
    return result
