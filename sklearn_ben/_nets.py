"""The network an estimator trains: a backbone and a training head (torch only)."""

from contextlib import contextmanager

import torch
from torch import Tensor, nn

from sklearn_ben.batchnorm import bn_statistics

__all__ = ["HeadNet", "seeded"]


class HeadNet(nn.Module):
    """Backbone plus a training head; an optional control mask drives BN.

    Parameters
    ----------
    backbone : torch.nn.Module
        Maps a batch to features (N, D).
    head : torch.nn.Module
        Maps features to the training output (logits, projections).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, X: Tensor, controls: Tensor | None = None) -> Tensor:
        # X: (N, C, H, W) or (N, F); controls: (N,) bool; returns head outputs
        if controls is None:
            return self.head(self.backbone(X))
        with bn_statistics("controls", mask=controls):
            return self.head(self.backbone(X))

    def sklearn_ben_blocks(self) -> list[nn.Module]:
        """The chain ``forward`` computes without controls: backbone, head.

        Lets chunked group statistics cache activations between blocks
        (see :func:`sklearn_ben.batchnorm.group_forward`).
        """
        return [self.backbone, self.head]


@contextmanager
def seeded(seed: int):
    """Seed torch for a block of code, leaving the caller's RNG state as it was."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
