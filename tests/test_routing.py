"""How groups and controls travel through scikit-learn's meta-estimators.

Each test pins one path, including the ones that drop the plates.
"""

import warnings

import numpy as np
import pytest
import sklearn
from sklearn.model_selection import (
    GridSearchCV,
    GroupKFold,
    cross_val_predict,
    cross_validate,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_ben import BENClassifier, MissingMetadataWarning
from sklearn_ben.metrics import make_ben_scorer


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(0)
    groups = np.repeat(["p0", "p1", "p2", "p3"], 30)
    y = np.tile([0, 1, 2], 40)
    X = rng.normal(size=(120, 5))
    X[:, 0] += y
    X *= 1 + np.repeat(np.arange(4), 30)[:, None]  # plate effect: a gain
    return X, y, groups, y == 0


@pytest.fixture
def routing():
    with sklearn.config_context(enable_metadata_routing=True):
        yield


def _clf(**params):
    return BENClassifier(
        module="mlp", max_epochs=2, batch_size=16, random_state=0, **params
    )


def _missing(caught):
    return [w for w in caught if issubclass(w.category, MissingMetadataWarning)]


def test_routing_pipeline_passes_groups_to_fit_and_predict(table, routing):
    X, y, groups, controls = table
    pipe = Pipeline([("scale", StandardScaler()), ("clf", _clf(norm="controls"))])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe.fit(X, y, groups=groups, controls=controls)
        pred = pipe.predict_proba(X, groups=groups, controls=controls)
    assert not _missing(caught)
    direct = pipe[-1].predict_proba(
        pipe[0].transform(X), groups=groups, controls=controls
    )
    np.testing.assert_allclose(pred, direct)


def test_routing_grid_search_group_kfold_and_ben_scorer(table, routing):
    X, y, groups, controls = table
    search = GridSearchCV(
        _clf(),
        {"lr": [1e-3, 1e-2]},
        cv=GroupKFold(n_splits=2),
        scoring=make_ben_scorer(),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        search.fit(X, y, groups=groups, controls=controls)
    assert not _missing(caught)
    # the same groups drove the splitter: each test fold holds whole plates
    for train, test in GroupKFold(n_splits=2).split(X, y, groups):
        assert not set(groups[train]) & set(groups[test])
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_routing_ben_scorer_equals_score_with_groups(table, routing):
    X, y, groups, _ = table
    clf = _clf().fit(X, y, groups=groups)
    assert make_ben_scorer()(clf, X, y, groups=groups) == clf.score(X, y, groups=groups)


def test_routing_string_scorer_drops_groups_and_warns(table, routing):
    X, y, groups, _ = table
    search = GridSearchCV(
        _clf(), {"lr": [1e-3]}, cv=GroupKFold(n_splits=2), scoring="accuracy"
    )
    with pytest.warns(MissingMetadataWarning, match="predict got no groups"):
        search.fit(X, y, groups=groups)


def test_routing_default_score_passes_groups(table, routing):
    X, y, groups, _ = table
    search = GridSearchCV(_clf(), {"lr": [1e-3]}, cv=GroupKFold(n_splits=2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        search.fit(X, y, groups=groups)
    assert not _missing(caught)


def test_routing_cross_validate_params(table, routing):
    X, y, groups, controls = table
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = cross_validate(
            _clf(norm="controls"),
            X,
            y,
            cv=GroupKFold(n_splits=2),
            scoring=make_ben_scorer(),
            params={"groups": groups, "controls": controls},
        )
    assert not _missing(caught)
    assert len(result["test_score"]) == 2


def test_routing_cross_val_predict_routes_nothing_to_predict(table, routing):
    X, y, groups, _ = table
    with pytest.warns(MissingMetadataWarning, match="predict got no groups"):
        cross_val_predict(
            _clf(), X, y, cv=GroupKFold(n_splits=2), params={"groups": groups}
        )


def test_routing_grid_search_predict_takes_no_groups(table, routing):
    X, y, groups, _ = table
    search = GridSearchCV(
        _clf(), {"lr": [1e-3]}, cv=GroupKFold(n_splits=2), scoring=make_ben_scorer()
    ).fit(X, y, groups=groups)
    with pytest.raises(TypeError, match="unexpected keyword argument 'groups'"):
        search.predict(X, groups=groups)
    # the documented way: the refitted best estimator
    assert search.best_estimator_.predict(X, groups=groups).shape == (len(X),)


def test_routing_off_grid_search_warns_that_plates_were_dropped(table):
    X, y, groups, _ = table
    search = GridSearchCV(
        _clf(), {"lr": [1e-3]}, cv=GroupKFold(n_splits=2), scoring=make_ben_scorer()
    )
    with pytest.warns(MissingMetadataWarning, match="fit got no groups"):
        search.fit(X, y, groups=groups)


def test_routing_off_pipeline_step_params_still_work(table):
    X, y, groups, _ = table
    pipe = Pipeline([("scale", StandardScaler()), ("clf", _clf())])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe.fit(X, y, clf__groups=groups)
        pipe.predict(X, groups=groups)
    assert not _missing(caught)


def test_make_ben_scorer_bad_input():
    with pytest.raises(TypeError, match="score_func must be callable, but got str"):
        make_ben_scorer("accuracy")
    with pytest.raises(ValueError, match="response_method must be one of"):
        make_ben_scorer(response_method="decision_function")


def test_make_ben_scorer_requests_plates():
    routing = make_ben_scorer().get_metadata_routing()
    assert routing.score.requests == {"groups": True, "controls": True}


def test_make_ben_scorer_roc_auc_on_a_binary_task(table):
    from sklearn.metrics import roc_auc_score

    X, y, groups, _ = table
    binary = y % 2
    clf = _clf().fit(X, binary, groups=groups)
    scorer = make_ben_scorer(roc_auc_score, response_method="predict_proba")
    expected = roc_auc_score(binary, clf.predict_proba(X, groups=groups)[:, 1])
    assert scorer(clf, X, binary, groups=groups) == pytest.approx(expected)
