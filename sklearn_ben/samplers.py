"""Batch samplers that keep every minibatch inside one group (plate).

Part of the engine: imports numpy (and pandas through the metadata checks),
never scikit-learn or skorch, so it serves a plain PyTorch loop as well.
"""

from collections.abc import Iterator
from numbers import Integral

import numpy as np
import torch

from sklearn_ben._validation import (
    check_controls,
    check_controls_per_group,
    check_group_sizes,
    check_groups,
)

__all__ = ["GroupBatchSampler", "KeyedBatchSampler", "batch_generators"]


class GroupBatchSampler:
    """Yield minibatches of indices that each come from a single group.

    This is BEN's group-wise training: every batch holds samples of one plate,
    so batch normalisation sees that plate's statistics. Use it with a plain
    ``torch.utils.data.DataLoader(dataset, batch_sampler=sampler)``.

    Each epoch, every sample is used exactly once. A group of ``n`` samples
    is cut into ``ceil(n / batch_size)`` batches of near-equal size, so no
    batch exceeds ``batch_size`` and no small tail is left over (nor dropped).
    The one exception: with ``batch_size=2``, a group of odd size ends with a
    batch of 3, since a batch of one sample cannot be batch-normalised. The
    batches of all groups are then shuffled together.
    With ``min_controls``, a group's controls are spread evenly over its
    batches, and a batch left with fewer than ``min_controls`` controls is
    topped up with controls drawn again from the same group; those extra
    indices come on top of ``batch_size``.

    Parameters
    ----------
    groups : array-like of shape (n_samples,) or None
        Group (plate) of each sample. ``None`` puts all samples in one group,
        which gives ordinary random minibatches.
    batch_size : int
        Largest number of (non-extra) samples per batch; at least 2, since
        batch normalisation needs two samples.
    controls : array-like of bool, shape (n_samples,), default=None
        Control mask, needed when ``min_controls > 0``.
    min_controls : int, default=0
        Least number of controls of the batch's group in every batch.
    shuffle : bool, default=True
        Shuffle samples within groups and batches across groups.
    random_state : int, RandomState instance or None, default=None
        Seeds the shuffling. An int gives the same sequence of epochs on every
        run; successive epochs differ.

    Attributes
    ----------
    n_samples : int
        Number of samples.
    groups_ : ndarray
        The distinct groups.

    Examples
    --------
    >>> from sklearn_ben.samplers import GroupBatchSampler
    >>> sampler = GroupBatchSampler(["a"] * 5 + ["b"] * 3, batch_size=3,
    ...                             random_state=0)
    >>> len(sampler)
    3
    >>> sorted(sorted(int(i) for i in batch) for batch in sampler)
    [[0, 1, 2], [3, 4], [5, 6, 7]]
    """

    def __init__(
        self,
        groups,
        batch_size: int,
        *,
        controls=None,
        min_controls: int = 0,
        shuffle: bool = True,
        random_state=None,
    ) -> None:
        if not isinstance(batch_size, Integral) or isinstance(batch_size, bool):
            raise TypeError(
                f"batch_size should be an integer, but got {type(batch_size).__name__}."
            )
        if batch_size < 2:
            raise ValueError(
                "batch_size should be at least 2 (batch normalisation needs two "
                f"samples per batch), but got batch_size={batch_size}."
            )
        if not isinstance(min_controls, Integral) or min_controls < 0:
            raise ValueError(
                "min_controls should be a non-negative integer, but got "
                f"min_controls={min_controls!r}."
            )
        if min_controls >= batch_size:
            raise ValueError(
                f"min_controls={min_controls} must be smaller than "
                f"batch_size={batch_size}."
            )
        if groups is None and controls is None:
            raise ValueError("Pass groups, controls, or both, to size the sampler.")
        n_samples = len(groups) if groups is not None else len(controls)
        groups = check_groups(groups, n_samples)
        if groups is None:
            groups = np.zeros(n_samples, dtype=int)
        controls = check_controls(controls, n_samples)
        if min_controls > 0:
            if controls is None:
                raise ValueError(
                    f"min_controls={min_controls} needs the controls mask; pass "
                    "controls=... or set min_controls=0."
                )
            check_controls_per_group(groups, controls, min_controls, where="training")
        self.groups_ = check_group_sizes(groups, 2)
        self.n_samples = n_samples
        self.batch_size = int(batch_size)
        self.min_controls = int(min_controls)
        self.shuffle = shuffle
        self._rng = _check_random_state(random_state)
        self._members = [np.flatnonzero(groups == g) for g in self.groups_]
        self._controls = controls
        self._n_batches = [
            min(-(-len(m) // self.batch_size), len(m) // 2) for m in self._members
        ]

    def __len__(self) -> int:
        return int(sum(self._n_batches))

    def __iter__(self) -> Iterator[list[int]]:
        batches = []
        for members, k in zip(self._members, self._n_batches):
            batches.extend(self._split_group(members, k))
        order = (
            self._rng.permutation(len(batches)) if self.shuffle else range(len(batches))
        )
        for i in order:
            yield batches[i].tolist()

    def _split_group(self, members: np.ndarray, k: int) -> list[np.ndarray]:
        rng = self._rng
        if self._controls is None or self.min_controls == 0:
            idx = rng.permutation(members) if self.shuffle else members
            return np.array_split(idx, k)
        # Spread controls and the rest evenly, so each batch gets its share.
        is_ctrl = self._controls[members]
        ctrl, rest = members[is_ctrl], members[~is_ctrl]
        if self.shuffle:
            ctrl, rest = rng.permutation(ctrl), rng.permutation(rest)
        ctrl_parts = np.array_split(ctrl, k)
        # Balance sizes: the batch with fewest controls gets the most others.
        rest_parts = np.array_split(rest, k)[::-1]
        batches = []
        for c, r in zip(ctrl_parts, rest_parts):
            missing = self.min_controls - len(c)
            if missing > 0:
                pool = np.setdiff1d(ctrl, c)
                extra = rng.choice(pool, missing, replace=len(pool) < missing)
                c = np.concatenate([c, extra])
            batch = np.concatenate([c, r])
            batches.append(rng.permutation(batch) if self.shuffle else batch)
        return batches


def _check_random_state(seed) -> np.random.RandomState:
    """A ``RandomState`` from None, an int or a ``RandomState`` (numpy's rules)."""
    if seed is None:
        return np.random.mtrand._rand
    if isinstance(seed, np.random.RandomState):
        return seed
    if isinstance(seed, Integral) and not isinstance(seed, bool):
        return np.random.RandomState(int(seed))
    raise ValueError(
        f"random_state should be None, an int or a numpy RandomState, but got {seed!r}."
    )


class KeyedBatchSampler:
    """Give every batch of a batch sampler its key ``(seed, epoch, batch)``.

    Randomness inside a batch (augmentations, views, crop draws) must not come
    from a generator held by the dataset: DataLoader workers each get a copy of
    it and replay one stream. Instead, the dataset receives
    ``(key, indices)`` and derives its generators from the key with
    :func:`batch_generators`, so that one seed gives the same batches for any
    ``num_workers`` and different draws for every epoch and batch. The epoch
    counter advances each time the sampler is iterated (once per epoch, in the
    main process), or is set with :meth:`set_epoch`.

    Parameters
    ----------
    sampler : iterable of index lists
        A batch sampler such as :class:`GroupBatchSampler`.
    seed : int
        The run's seed.

    Examples
    --------
    >>> from sklearn_ben.samplers import GroupBatchSampler, KeyedBatchSampler
    >>> keyed = KeyedBatchSampler(GroupBatchSampler([0, 0, 1, 1], 2,
    ...                                             random_state=0), seed=7)
    >>> [key for key, _ in keyed]
    [(7, 0, 0), (7, 0, 1)]
    >>> [key for key, _ in keyed]
    [(7, 1, 0), (7, 1, 1)]
    """

    def __init__(self, sampler, seed: int) -> None:
        if not isinstance(seed, Integral) or isinstance(seed, bool) or seed < 0:
            raise ValueError(
                f"seed should be a non-negative integer, but got seed={seed!r}."
            )
        self.sampler = sampler
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch number ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[tuple[int, int, int], list[int]]]:
        epoch = self.epoch
        self.epoch += 1
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        for i, batch in enumerate(self.sampler):
            yield (self.seed, epoch, i), batch


def batch_generators(key) -> tuple[np.random.Generator, torch.Generator]:
    """Independent numpy and torch generators derived from a batch key.

    Parameters
    ----------
    key : tuple of int
        ``(seed, epoch, batch)`` as given by :class:`KeyedBatchSampler`.

    Returns
    -------
    rng : numpy.random.Generator
    generator : torch.Generator
        A CPU generator.
    """
    sequence = np.random.SeedSequence([int(k) for k in key])
    numpy_seq, torch_seq = sequence.spawn(2)
    torch_seed = int(torch_seq.generate_state(1, dtype=np.uint64)[0])
    return np.random.default_rng(numpy_seq), torch.Generator().manual_seed(torch_seed)
