import numpy as np
import pytest

from sklearn_ben import BENClassifier, BENEmbedder
from sklearn_ben.backbones import SmallCNN
from sklearn_ben.datasets import make_plates


@pytest.fixture(scope="session")
def plates():
    """Four tiny synthetic plates of 3x16x16 images, three classes."""
    return make_plates(
        n_plates=4, n_samples_per_plate=36, n_classes=3, image_size=16, random_state=0
    )


@pytest.fixture(scope="session")
def split(plates):
    """Train on the first three plates, test on the last."""
    test = plates.groups == np.unique(plates.groups)[-1]
    return ~test, test


def tiny_classifier(**params):
    """A network small enough for CPU tests."""
    defaults = {
        "module": SmallCNN(width=4, n_blocks=2),
        "max_epochs": 2,
        "batch_size": 16,
        "random_state": 0,
    }
    return BENClassifier(**{**defaults, **params})


def tiny_embedder(**params):
    """A self-supervised embedder small enough for CPU tests."""
    defaults = {
        "module": SmallCNN(width=4, n_blocks=2),
        "n_views": 2,
        "max_epochs": 1,
        "batch_size": 16,
        "projection_dim": 8,
        "random_state": 0,
    }
    return BENEmbedder(**{**defaults, **params})


@pytest.fixture(scope="session")
def fitted_ben(plates, split):
    train, _ = split
    return tiny_classifier().fit(
        plates.X[train], plates.y[train], groups=plates.groups[train]
    )


@pytest.fixture(scope="session")
def fitted_controls(plates, split):
    train, _ = split
    return tiny_classifier(norm="controls").fit(
        plates.X[train],
        plates.y[train],
        groups=plates.groups[train],
        controls=plates.controls[train],
    )


# A script run by tests/test_distributed.py under torchrun, not a test module.
collect_ignore = ["_distributed_run.py"]
