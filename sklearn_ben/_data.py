"""Batches for the network, converted to float32 one batch at a time.

Images stay in their own dtype (uint8, uint16, ...) in memory; only the rows of
one batch are converted, so a plate of uint16 images is never copied whole to
float32. ``X`` may also be a ``torch.utils.data.Dataset`` whose items are the
images (e.g. files read lazily from disk).
"""

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["BatchDataset", "as_float_tensor", "is_dataset"]


def is_dataset(X) -> bool:
    """True when ``X`` is a torch ``Dataset`` (lazy inputs) and not an array."""
    return isinstance(X, Dataset)


def as_float_tensor(array) -> torch.Tensor:
    """Return ``array`` as float32; integer images are scaled by their dtype's max.

    This is torchvision's ``ToDtype(torch.float32, scale=True)`` convention:
    uint8 images land in [0, 1], uint16 images in [0, 1] too.
    """
    if isinstance(array, torch.Tensor):
        tensor = array
    else:
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if not tensor.dtype.is_floating_point and tensor.dtype != torch.bool:
        scale = float(torch.iinfo(tensor.dtype).max)
        return tensor.to(torch.float32).div_(scale)
    return tensor.to(torch.float32)


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
    """

    def __init__(self, X, y=None, controls=None):
        self.X = X
        self.y = y
        self.controls = controls

    def __len__(self) -> int:
        return len(self.X)

    def get_inputs(self, indices) -> torch.Tensor:
        """Float32 inputs of the rows ``indices``."""
        indices = np.asarray(indices)
        if is_dataset(self.X):
            images = [_item_image(self.X[int(i)]).numpy() for i in indices]
            # np.stack: torch.stack of many small integer tensors spends its
            # time in thread start-up on busy cores.
            return as_float_tensor(np.stack(images))
        return as_float_tensor(self.X[indices])

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
