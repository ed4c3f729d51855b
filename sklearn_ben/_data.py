"""Batches for the network, converted to float32 one batch at a time.

Images stay in their own dtype (uint8, uint16, ...) in memory; only the rows of
one batch are converted (under the estimator's intensity spec, see
:mod:`sklearn_ben._scaling`), so a plate of uint16 images is never copied whole
to float32. ``X`` may also be a ``torch.utils.data.Dataset`` whose items are
the images (e.g. files read lazily from disk). Every converted batch is checked
for values that are not finite in float32.
"""

import numpy as np
import torch
from torch.utils.data import Dataset

from sklearn_ben._scaling import scale_batch

__all__ = ["BatchDataset", "check_finite_batch", "is_dataset"]


def is_dataset(X) -> bool:
    """True when ``X`` is a torch ``Dataset`` (lazy inputs) and not an array."""
    return isinstance(X, Dataset)


def check_finite_batch(batch: torch.Tensor, indices) -> torch.Tensor:
    """Return ``batch`` if every value is finite, else raise naming the rows."""
    finite = torch.isfinite(batch.reshape(batch.shape[0], -1)).all(dim=1)  # (N,)
    if not bool(finite.all()):
        rows = np.asarray(indices)[~finite.numpy()]
        raise ValueError(
            f"X has {len(rows)} sample(s) with values that are not finite as "
            f"float32 (NaN, inf, or beyond +-3.4e38), e.g. row(s) "
            f"{rows[:5].tolist()}; fix or drop these samples, or rescale values "
            "into float32's range."
        )
    return batch


def _item_image(item):
    """The image of a dataset item: the item itself or the first of a tuple."""
    if isinstance(item, (tuple, list)):
        item = item[0]
    return item if isinstance(item, torch.Tensor) else torch.as_tensor(np.asarray(item))


class BatchDataset(Dataset):
    """A dataset indexed by a whole batch of indices at once.

    Used with ``DataLoader(dataset, sampler=batch_sampler, batch_size=None)``:
    each item is a batch, built with one fancy-indexing call.

    Parameters
    ----------
    X : ndarray of shape (n_samples, ...) or torch Dataset
        Inputs.
    y : ndarray of shape (n_samples,) or None
        Targets (encoded integers), returned as a long tensor.
    controls : ndarray of bool or None
        When given, each batch carries its control mask, which the network
        uses for control-based normalisation.
    intensity : str or tuple, default="dtype"
        How raw values become float32 inputs (:func:`~sklearn_ben._scaling.
        check_intensity`).
    """

    def __init__(self, X, y=None, controls=None, intensity="dtype"):
        self.X = X
        self.y = y
        self.controls = controls
        self.intensity = intensity

    def __len__(self) -> int:
        return len(self.X)

    def get_inputs(self, indices) -> torch.Tensor:
        """Float32 inputs of the rows ``indices``."""
        indices = np.asarray(indices)
        if is_dataset(self.X):
            images = [_item_image(self.X[int(i)]).numpy() for i in indices]
            # np.stack: torch.stack of many small integer tensors spends its
            # time in thread start-up on busy cores.
            batch = scale_batch(np.stack(images), self.intensity)
        else:
            batch = scale_batch(self.X[indices], self.intensity)
        return check_finite_batch(batch, indices)

    def __getitem__(self, indices):
        indices = np.asarray(indices)
        inputs = {"X": self.get_inputs(indices)}
        if self.controls is not None:
            inputs["controls"] = torch.from_numpy(self.controls[indices])
        if self.y is None:
            target = torch.zeros(len(indices), dtype=torch.long)
        else:
            target = torch.from_numpy(np.asarray(self.y[indices]))
        return inputs, target
