import copy
import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import sklearn
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from sklearn_ben import BENEmbedder, GroupError, MissingMetadataWarning
from sklearn_ben.datasets import make_plates
from tests.conftest import tiny_embedder


@pytest.fixture(scope="module")
def cells():
    """Single-cell crops: 4 per image, several images per plate."""
    return make_plates(
        n_plates=3,
        n_samples_per_plate=24,
        image_size=16,
        cells_per_image=4,
        random_state=0,
    )


@pytest.fixture(scope="module")
def fitted_simclr(cells):
    return tiny_embedder().fit(cells.X, groups=cells.groups)


@pytest.mark.parametrize("method", ["simclr", "minclr", "supervised"])
@pytest.mark.parametrize("norm", ["group", "controls", "frozen"])
def test_ben_embedder_methods_fit_and_transform(cells, method, norm):
    emb = tiny_embedder(method=method, norm=norm)
    emb.fit(
        cells.X, cells.y, groups=cells.groups, controls=cells.controls, bags=cells.bags
    )
    Z = emb.transform(cells.X, groups=cells.groups, controls=cells.controls)
    assert Z.shape == (len(cells.X), emb.n_features_out_)
    assert np.isfinite(Z).all()
    assert len(emb.net_.history) == 1


def test_ben_embedder_training_loss_decreases(cells):
    emb = tiny_embedder(max_epochs=6, lr=3e-3).fit(cells.X, groups=cells.groups)
    losses = emb.net_.history[:, "train_loss"]
    assert losses[-1] < losses[0]


def test_ben_embedder_group_norm_depends_on_plate_mates(fitted_simclr, cells):
    X, groups = cells.X, cells.groups
    plate = groups == groups[0]
    alone = fitted_simclr.transform(X[plate], groups=groups[plate])
    others = X[~plate][: plate.sum()]
    mixed = fitted_simclr.transform(
        np.concatenate([X[plate][:4], others]), groups=np.zeros(4 + len(others))
    )
    assert np.abs(alone[:4] - mixed[:4]).max() > 1e-3


def test_ben_embedder_frozen_norm_ignores_plate_mates(fitted_simclr, cells):
    frozen = copy.deepcopy(fitted_simclr).set_params(norm="frozen")
    a = frozen.transform(cells.X[:4])
    b = frozen.transform(cells.X[:40])[:4]
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_ben_embedder_fit_transform_passes_plates(cells):
    emb = tiny_embedder()
    Z = emb.fit_transform(cells.X, groups=cells.groups)
    np.testing.assert_allclose(
        Z, emb.transform(cells.X, groups=cells.groups), atol=1e-6
    )


def test_ben_embedder_feature_names_and_set_output(fitted_simclr, cells):
    names = fitted_simclr.get_feature_names_out()
    assert names[0] == "benembedder0" and len(names) == fitted_simclr.n_features_out_
    emb = copy.deepcopy(fitted_simclr).set_output(transform="pandas")
    frame = emb.transform(cells.X[:6], groups=cells.groups[:6])
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == list(names)


def test_ben_embedder_pipeline_with_routed_groups(cells):
    pipe = Pipeline([("embed", tiny_embedder()), ("clf", LogisticRegression())])
    with sklearn.config_context(enable_metadata_routing=True):
        with warnings.catch_warnings():
            warnings.simplefilter("error", MissingMetadataWarning)
            pipe.fit(cells.X, cells.y, groups=cells.groups, controls=cells.controls)
            pred = pipe.predict(cells.X, groups=cells.groups)
    Z = pipe[0].transform(cells.X, groups=cells.groups)
    np.testing.assert_array_equal(pred, pipe[1].predict(Z))


def test_ben_embedder_persistence(fitted_simclr, cells):
    loaded = pickle.loads(pickle.dumps(fitted_simclr))
    np.testing.assert_array_equal(
        loaded.transform(cells.X, groups=cells.groups),
        fitted_simclr.transform(cells.X, groups=cells.groups),
    )


def test_ben_embedder_same_seed_same_embeddings(cells):
    a = tiny_embedder().fit(cells.X, groups=cells.groups)
    b = tiny_embedder().fit(cells.X, groups=cells.groups)
    np.testing.assert_array_equal(
        a.transform(cells.X, groups=cells.groups),
        b.transform(cells.X, groups=cells.groups),
    )


def test_ben_embedder_custom_augment_is_called(cells):
    calls = []

    def augment(x, generator=None):
        calls.append(x.shape)
        return torch.flip(x, dims=[-1])

    tiny_embedder(augment=augment).fit(cells.X, groups=cells.groups)
    # first a probe of 2 samples before training (a broken augment fails
    # there), then one call per batch: 2 views of each sample once per epoch
    assert calls[0][0] == 2
    assert all(shape[0] <= 16 * 2 for shape in calls[1:])
    assert sum(shape[0] for shape in calls[1:]) == len(cells.X) * 2


def test_ben_embedder_simclr_with_bags_draws_one_crop_per_image(cells):
    calls = []

    def augment(x, generator=None):
        calls.append(x.clone())
        return x

    tiny_embedder(augment=augment).fit(cells.X, groups=cells.groups, bags=cells.bags)
    n_bags = len(np.unique(cells.bags))
    views = torch.cat(calls[1:])  # calls[0]: the 2-sample probe before training
    assert len(views) == n_bags * 2  # one crop per image per epoch, 2 views each
    # the two views of a unit are the same crop (before augmentation)
    torch.testing.assert_close(views[0::2], views[1::2])


def test_ben_embedder_feature_tables():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 8))
    groups = np.repeat(["a", "b", "c"], 20)
    emb = BENEmbedder(module="mlp", n_views=3, max_epochs=2, batch_size=10)
    assert emb.fit_transform(X, groups=groups).shape == (60, 128)


# --------------------------------------------------------------- bad input
def test_ben_embedder_minclr_needs_bags(cells):
    with pytest.raises(ValueError, match="method='minclr'.*fit got bags=None"):
        tiny_embedder(method="minclr").fit(cells.X, groups=cells.groups)


def test_ben_embedder_bags_length(cells):
    with pytest.raises(ValueError, match="bags has 3 entries but X has 72 samples"):
        tiny_embedder(method="minclr").fit(cells.X, groups=cells.groups, bags=[1, 2, 3])


def test_ben_embedder_bags_across_plates(cells):
    bags = np.zeros(len(cells.X), dtype=int)
    with pytest.raises(GroupError, match="1 bag\\(s\\) hold samples of several plates"):
        tiny_embedder(method="minclr").fit(cells.X, groups=cells.groups, bags=bags)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"n_views": 1}, "'n_views' parameter of BENEmbedder"),
        ({"method": "byol"}, "'method' parameter of BENEmbedder"),
        ({"temperature": 0.0}, "'temperature' parameter of BENEmbedder"),
    ],
)
def test_ben_embedder_bad_parameters(cells, params, match):
    with pytest.raises(ValueError, match=match):
        tiny_embedder(**params).fit(cells.X, groups=cells.groups)


def test_ben_embedder_supervised_needs_y(cells):
    with pytest.raises(ValueError, match="requires y to be passed"):
        tiny_embedder(method="supervised").fit(cells.X, groups=cells.groups)


def test_ben_embedder_transform_channels(fitted_simclr):
    with pytest.raises(
        ValueError, match="X has 2 channels, but BENEmbedder is expecting 3"
    ):
        fitted_simclr.transform(np.zeros((4, 2, 16, 16)), groups=np.zeros(4))


class _RecordingAugment:
    """Replaces each image by one random draw of the batch's generator."""

    def __call__(self, x, generator=None):
        draws = torch.rand(x.shape[0], 1, 1, 1, generator=generator)
        return draws.expand_as(x)


def _drawn_views(cells, num_workers, epochs=2):
    """Every training batch's views, as the DataLoader delivers them."""
    from torch.utils.data import DataLoader

    from sklearn_ben._embedder import _ViewDataset
    from sklearn_ben.samplers import GroupBatchSampler, KeyedBatchSampler

    members = [np.array([i]) for i in range(len(cells.groups))]
    dataset = _ViewDataset(
        cells.X,
        None,
        members=members,
        n_views=2,
        augment=_RecordingAugment(),
        distinct=False,
    )
    sampler = KeyedBatchSampler(
        GroupBatchSampler(cells.groups, 8, random_state=0), seed=3
    )
    loader = DataLoader(
        dataset, sampler=sampler, batch_size=None, num_workers=num_workers
    )
    return [inputs["X"] for _ in range(epochs) for inputs, _ in loader]


def test_ben_embedder_views_do_not_depend_on_workers_and_never_repeat(cells):
    serial = _drawn_views(cells, num_workers=0)
    parallel = _drawn_views(cells, num_workers=2)
    assert len(serial) == len(parallel) == 2 * 9
    for a, b in zip(serial, parallel):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # every batch (across workers and epochs) drew its own augmentations
    draws = [tuple(views[:, 0, 0, 0].tolist()) for views in parallel]
    assert len(set(draws)) == len(draws)


def test_ben_embedder_fit_identical_for_any_num_workers(cells):
    fits = [
        tiny_embedder(num_workers=w, max_epochs=2).fit(cells.X, groups=cells.groups)
        for w in (0, 2)
    ]
    a, b = (f.net_.module_.state_dict() for f in fits)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    np.testing.assert_array_equal(
        fits[0].transform(cells.X, groups=cells.groups),
        fits[1].transform(cells.X, groups=cells.groups),
    )
