"""Training options: skorch pass-through, weights, warm starts, the record."""

import copy
import logging
import warnings

import numpy as np
import pytest
import sklearn
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, GroupKFold, cross_validate
from skorch.callbacks import Callback, EpochScoring, GradientNormClipping
from skorch.dataset import ValidSplit
from torch import nn

from sklearn_ben import BENEmbedder, MissingMetadataWarning
from sklearn_ben._training import _AutocastNet
from sklearn_ben.backbones import SmallCNN
from tests.conftest import tiny_classifier


class RecordLR(Callback):
    """Records the optimiser's learning rate under ``key`` after each epoch."""

    def __init__(self, key="lr"):
        self.key = key

    def on_epoch_end(self, net, **kwargs):
        net.history.record(self.key, net.optimizer_.param_groups[0]["lr"])


@pytest.fixture(scope="module")
def train_data(plates, split):
    train, _ = split
    return plates.X[train], plates.y[train], plates.groups[train]


def _fit(clf, data, **kwargs):
    X, y, groups = data
    return clf.fit(X, y, groups=groups, **kwargs)


def _proba(clf, data):
    X, _, groups = data
    return clf.predict_proba(X, groups=groups)


# ------------------------------------------------------- prefixed parameters
@pytest.mark.parametrize(
    "key, holder, expected",
    [
        ("optimizer__momentum", "optimizer_params", {"momentum": 0.9}),
        ("criterion__label_smoothing", "criterion_params", {"label_smoothing": 0.9}),
        ("iterator_train__pin_memory", "iterator_train_params", {"pin_memory": 0.9}),
    ],
)
def test_training_prefixed_keys_go_to_their_dict(key, holder, expected):
    clf = tiny_classifier().set_params(**{key: 0.9})
    assert getattr(clf, holder) == expected
    assert clf.get_params()[key] == 0.9
    assert getattr(clone(clf), holder) == expected


@pytest.mark.parametrize(
    "key, param",
    [
        ("optimizer__lr", "lr"),
        ("optimizer__weight_decay", "weight_decay"),
        ("iterator_train__num_workers", "num_workers"),
    ],
)
def test_training_prefixed_alias_sets_the_estimator_parameter(key, param):
    clf = tiny_classifier().set_params(**{key: 3})
    assert getattr(clf, param) == 3
    assert not clf.optimizer_params and not clf.iterator_train_params


def test_training_set_params_does_not_mutate_the_given_dict():
    params = {"momentum": 0.5}
    clf = tiny_classifier(optimizer_params=params)
    clf.set_params(optimizer__momentum=0.9)
    assert params == {"momentum": 0.5}


def test_training_grid_search_over_optimizer_weight_decay(plates):
    clf = tiny_classifier(max_epochs=1)
    grid = {"optimizer__weight_decay": [0.0, 0.5]}
    search = GridSearchCV(clf, grid, cv=GroupKFold(n_splits=2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingMetadataWarning)
        search.fit(plates.X, plates.y, groups=plates.groups)
    best = search.best_params_["optimizer__weight_decay"]
    assert search.best_estimator_.weight_decay == best
    group = search.best_estimator_.net_.optimizer_.param_groups[0]
    assert group["weight_decay"] == best


def test_training_optimizer_and_its_params_reach_the_net(train_data):
    clf = tiny_classifier(
        max_epochs=1,
        optimizer=torch.optim.SGD,
        optimizer_params={"momentum": 0.9},
        weight_decay=0.01,
    )
    optimizer = _fit(clf, train_data).net_.optimizer_
    assert isinstance(optimizer, torch.optim.SGD)
    group = optimizer.param_groups[0]
    assert group["momentum"] == 0.9 and group["weight_decay"] == 0.01


def test_training_criterion_params_reach_the_loss(train_data):
    clf = tiny_classifier(max_epochs=1).set_params(criterion__label_smoothing=0.2)
    criterion = _fit(clf, train_data).net_.criterion_
    assert isinstance(criterion, nn.CrossEntropyLoss)
    assert criterion.label_smoothing == 0.2


@pytest.mark.parametrize(
    "params, match",
    [
        ({"optimizer_params": {"lr": 0.1}}, "optimizer_params sets 'lr'.*use lr="),
        (
            {"optimizer_params": {"weight_decay": 0.1}},
            "optimizer_params sets 'weight_decay'.*use weight_decay=",
        ),
        (
            {"optimizer": torch.optim.Rprop},
            "optimizer Rprop takes no weight_decay, but weight_decay=1e-05; set "
            "weight_decay=0",
        ),
        (
            {"validation_fraction": 0.25, "train_split": ValidSplit(2)},
            "validation_fraction and train_split both choose held-out samples",
        ),
    ],
)
def test_training_refused_optimizer_and_split_settings(train_data, params, match):
    clf = tiny_classifier(**params)
    with pytest.raises(ValueError, match=match):
        _fit(clf, train_data)
    assert not hasattr(clf, "net_")


# ----------------------------------------------------------------- callbacks
def test_training_callback_scores_land_in_history(train_data):
    recorder = RecordLR()
    clf = tiny_classifier(callbacks=[("rec", recorder), GradientNormClipping(1.0)])
    clf.set_params(callbacks__rec__key="learning_rate")
    _fit(clf, train_data)
    assert all("learning_rate" in row for row in clf.net_.history)
    assert recorder.key == "learning_rate"
    assert not hasattr(recorder, "initialized_")  # a copy was trained
    assert (
        clf.get_params()["callbacks__GradientNormClipping__gradient_clip_value"] == 1.0
    )


def test_training_callback_parameters_survive_clone():
    clf = tiny_classifier(callbacks=[("rec", RecordLR())])
    clf.set_params(callbacks__rec__key="other")
    copy_ = clone(clf)
    assert copy_.callbacks[0][1] is not clf.callbacks[0][1]
    assert copy_.callbacks[0][1].key == "other"


def test_training_callback_replaced_by_name():
    clf = tiny_classifier(callbacks=[("rec", RecordLR())])
    new = RecordLR(key="x")
    assert clf.set_params(callbacks__rec=new).callbacks == [("rec", new)]


def test_training_unknown_callback_name():
    clf = tiny_classifier(callbacks=[("rec", RecordLR())])
    with pytest.raises(ValueError, match="no callback named 'nope'; its callbacks are"):
        clf.set_params(callbacks__nope__key=1)


@pytest.mark.parametrize(
    "callbacks, error, match",
    [
        ([("print_log", RecordLR())], ValueError, "named 'print_log', a name"),
        (
            [("a", RecordLR()), ("a", RecordLR())],
            ValueError,
            "several callbacks named 'a'",
        ),
        ([EpochScoring("accuracy")], ValueError, "scores skorch's validation set"),
        (["not a callback"], TypeError, "callbacks must be a list of skorch callbacks"),
    ],
)
def test_training_refused_callbacks(train_data, callbacks, error, match):
    with pytest.raises(error, match=match):
        _fit(tiny_classifier(callbacks=callbacks), train_data)


# ----------------------------------------------------------- data loader
@pytest.mark.parametrize(
    "key", ["batch_size", "sampler", "batch_sampler", "shuffle", "drop_last"]
)
def test_training_iterator_params_that_break_plate_batches_are_refused(train_data, key):
    clf = tiny_classifier().set_params(**{f"iterator_train__{key}": 1})
    with pytest.raises(ValueError, match=f"iterator_train__{key} is refused: "):
        _fit(clf, train_data)


def test_training_unknown_iterator_param(train_data):
    clf = tiny_classifier().set_params(iterator_train__nope=1)
    with pytest.raises(ValueError, match="iterator_train__nope is not an argument"):
        _fit(clf, train_data)


def test_training_iterator_params_reach_the_loader(train_data):
    clf = tiny_classifier(max_epochs=1).set_params(iterator_train__worker_init_fn=id)
    _fit(clf, train_data)
    assert clf.net_.iterator_train__worker_init_fn is id


# ------------------------------------------------------------------ weights
def test_training_weighted_loss_is_the_mean_of_weighted_sample_losses():
    net = _AutocastNet(
        module=nn.Linear(3, 2),
        criterion=nn.CrossEntropyLoss,
        criterion__reduction="none",
    ).initialize()
    logits = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 1, 0, 1])
    w = torch.tensor([0.0, 1.0, 2.0, 0.5, 1.5])
    loss = net.get_loss(logits, y, X={"X": logits, "sample_weight": w})
    per_sample = [-torch.log_softmax(logits[i], 0)[y[i]] * w[i] for i in range(len(y))]
    torch.testing.assert_close(loss, torch.stack(per_sample).sum() / 5)


def test_training_class_weight_changes_the_model(train_data):
    plain = _proba(_fit(tiny_classifier(), train_data), train_data)
    weighted = tiny_classifier(class_weight={0: 10.0, 1: 1.0, 2: 1.0})
    proba = _proba(_fit(weighted, train_data), train_data)
    assert np.abs(proba - plain).max() > 1e-3
    assert proba[:, 0].mean() > plain[:, 0].mean()  # class 0 favoured


def test_training_balanced_class_weight_on_balanced_classes_changes_nothing(
    train_data,
):
    X, y, groups = train_data
    keep = np.concatenate([np.flatnonzero(y == k)[:30] for k in range(3)])
    data = (X[keep], y[keep], groups[keep])
    plain = _proba(_fit(tiny_classifier(), data), data)
    balanced = _proba(_fit(tiny_classifier(class_weight="balanced"), data), data)
    np.testing.assert_array_equal(balanced, plain)


def test_training_sample_weight_changes_the_model(train_data):
    _, y, _ = train_data
    plain = _proba(_fit(tiny_classifier(), train_data), train_data)
    weight = np.where(y == 1, 10.0, 1.0)
    proba = _proba(
        _fit(tiny_classifier(), train_data, sample_weight=weight), train_data
    )
    assert np.abs(proba - plain).max() > 1e-3
    assert proba[:, 1].mean() > plain[:, 1].mean()
    scaled = _fit(tiny_classifier(), train_data, sample_weight=weight * 7)
    np.testing.assert_allclose(_proba(scaled, train_data), proba, atol=1e-5)


def test_training_unit_sample_weight_is_the_unweighted_fit(train_data):
    plain = _proba(_fit(tiny_classifier(), train_data), train_data)
    ones = np.ones(len(train_data[1]))
    same = _proba(_fit(tiny_classifier(), train_data, sample_weight=ones), train_data)
    np.testing.assert_array_equal(same, plain)


@pytest.mark.parametrize(
    "weight, match",
    [
        (lambda n: -np.ones(n), "Negative values in data passed to `sample_weight`"),
        (lambda n: np.ones(n - 1), r"sample_weight.shape == \(107,\), expected"),
        (lambda n: np.zeros(n), "at least one non-zero number"),
    ],
)
def test_training_bad_sample_weight(train_data, weight, match):
    clf = tiny_classifier()
    with pytest.raises(ValueError, match=match):
        _fit(clf, train_data, sample_weight=weight(len(train_data[1])))
    assert not hasattr(clf, "net_")


def test_training_sample_weight_is_routed_when_requested(plates):
    weight = np.where(plates.y == 0, 3.0, 1.0)
    with sklearn.config_context(enable_metadata_routing=True):
        clf = tiny_classifier(max_epochs=1).set_fit_request(sample_weight=True)
        clf.set_score_request(sample_weight=False)
        result = cross_validate(
            clf,
            plates.X,
            plates.y,
            cv=GroupKFold(n_splits=2),
            params={"groups": plates.groups, "sample_weight": weight},
            return_estimator=True,
        )
        routing = tiny_classifier().get_metadata_routing()
    assert len(result["estimator"]) == 2
    assert routing.fit.requests["sample_weight"] is None  # not by default


# --------------------------------------------------------------- warm start
def test_training_warm_start_continues_from_fitted_weights(train_data):
    clf = _fit(tiny_classifier(warm_start=True), train_data)
    before = _proba(clf, train_data)
    clf.set_params(max_epochs=1, lr=1e-12)
    _fit(clf, train_data)
    np.testing.assert_allclose(_proba(clf, train_data), before, atol=1e-5)
    assert clf.n_iter_ == 3 and len(clf.loss_curve_) == 3
    assert [row["epoch"] for row in clf.net_.history] == [1, 2, 3]
    cold = _fit(clf.set_params(warm_start=False), train_data)
    assert cold.n_iter_ == 1
    assert np.abs(_proba(cold, train_data) - before).max() > 1e-3


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda X, y: (X[:, :2], y), r"X has sample shape \(2, 16, 16\) while"),
        (lambda X, y: (X, np.minimum(y, 1)), r"y has classes \[0, 1\] while"),
    ],
)
def test_training_warm_start_refuses_changed_data(train_data, change, match):
    X, y, groups = train_data
    clf = _fit(tiny_classifier(max_epochs=1, warm_start=True), train_data)
    net = clf.net_
    X2, y2 = change(X, y)
    with pytest.raises(ValueError, match=match):
        clf.fit(X2, y2, groups=groups)
    assert clf.net_ is net


def test_training_embedder_warm_start_refuses_another_method(plates):
    emb = BENEmbedder(
        module=SmallCNN(width=4, n_blocks=2),
        n_views=2,
        max_epochs=1,
        batch_size=8,
        random_state=0,
        warm_start=True,
    ).fit(plates.X, groups=plates.groups)
    emb.fit(plates.X, groups=plates.groups)
    assert emb.n_iter_ == 2
    emb.set_params(method="supervised")
    with pytest.raises(ValueError, match="fitted with a contrastive head"):
        emb.fit(plates.X, plates.y, groups=plates.groups)


def test_training_embedder_refuses_temperature_in_criterion_params(plates):
    emb = BENEmbedder(n_views=2, max_epochs=1).set_params(criterion__temperature=0.5)
    with pytest.raises(ValueError, match="sets 'temperature'.*use temperature="):
        emb.fit(plates.X, groups=plates.groups)


# ------------------------------------------------------------- validation
def test_training_train_split_by_plate(plates):
    clf = tiny_classifier(train_split=ValidSplit(GroupKFold(n_splits=4)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # plates are not shared: no warning
        clf.fit(plates.X, plates.y, groups=plates.groups)
    assert all("valid_loss" in row and "valid_acc" in row for row in clf.net_.history)


def test_training_train_split_sharing_plates_warns(plates):
    clf = tiny_classifier(
        max_epochs=1, train_split=ValidSplit(0.25, stratified=False, random_state=0)
    )
    with pytest.warns(UserWarning, match="valid_loss measures generalisation within"):
        clf.fit(plates.X, plates.y, groups=plates.groups)


def test_training_train_split_must_split_given_samples(plates):
    from skorch.helper import predefined_split

    clf = tiny_classifier(train_split=predefined_split(plates.X))
    with pytest.raises(ValueError, match="train_split must return subsets"):
        clf.fit(plates.X, plates.y, groups=plates.groups)


# ---------------------------------------------------------- training record
def test_training_record_with_early_stopping(plates):
    clf = tiny_classifier(
        max_epochs=20, lr=1e-9, validation_fraction=0.25, n_iter_no_change=2
    ).fit(plates.X, plates.y, groups=plates.groups)
    assert clf.n_iter_ == len(clf.net_.history) < 20
    assert clf.loss_curve_ == [row["train_loss"] for row in clf.net_.history]
    assert 1 <= clf.best_epoch_ <= clf.n_iter_ - 2


def test_training_record_without_early_stopping(fitted_ben):
    assert fitted_ben.n_iter_ == 2 and len(fitted_ben.loss_curve_) == 2
    assert fitted_ben.best_epoch_ is None


def test_training_verbose_table_is_plain_text_when_redirected(train_data, capsys):
    _fit(tiny_classifier(verbose=1), train_data)
    out = capsys.readouterr().out
    assert "train_loss" in out and "\x1b[" not in out


def test_training_epochs_are_logged(train_data, caplog):
    with caplog.at_level(logging.INFO, logger="sklearn_ben"):
        _fit(tiny_classifier(), train_data)
    messages = [r.getMessage() for r in caplog.records if r.name == "sklearn_ben"]
    assert messages[0].startswith("epoch 1/2: ") and "train_loss=" in messages[0]
    assert len(messages) == 2


def test_training_fit_leaves_parameters_untouched(train_data):
    recorder = RecordLR()
    clf = tiny_classifier(max_epochs=1, callbacks=[recorder])
    before = copy.deepcopy(clf.get_params(deep=False))
    _fit(clf, train_data)
    assert clf.callbacks[0] is recorder
    assert clf.get_params(deep=False).keys() == before.keys()
