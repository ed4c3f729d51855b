"""Profile metrics: hand-computed NSC/NSCB, batch mixing, aggregation, real counts."""

import numpy as np
import pandas as pd
import pytest
import sklearn.metrics

from sklearn_ben import metrics
from sklearn_ben.datasets import get_data_home, load_bbbc021_profiles
from sklearn_ben.metrics import (
    aggregate_treatments,
    average_precision,
    batch_mixing_score,
    label_average_precision,
    mean_average_precision,
    moa_accuracy,
    top_k_accuracy_score,
)


def _has_profiles():
    try:
        return (get_data_home() / "bbbc021_profiles").is_dir()
    except FileNotFoundError:
        return False


needs_profiles = pytest.mark.skipif(
    not _has_profiles(),
    reason="real BBBC021 profiles not found (set SKLEARN_BEN_DATA to ../shared/data)",
)

# Five treatments as unit vectors at these angles (degrees); worked by hand:
#   NSC : 0 -> 1 (A, right), 1 -> 0 (A, right), 2 -> 1 (wrong), 3 -> 4 (wrong),
#         4 -> 3 (wrong): 2 / 5, all 5 counted.
#   NSCB: 0 -> 2 (wrong), 1 -> 2 (wrong), 4 -> 1 (A, right); 2 and 3 (MoA B)
#         have no B compound in another batch and are not counted: 1 / 3.
ANGLES = np.deg2rad([0, 5, 12, 90, 60])
PROFILES = np.column_stack([np.cos(ANGLES), np.sin(ANGLES)])
MOA = np.array(["A", "A", "B", "B", "A"])
COMPOUND = np.array(["a1", "a2", "b1", "b2", "a3"])
BATCH = np.array(["w1", "w1", "w2", "w2", "w2"])


@pytest.mark.parametrize(
    ("exclude", "expected"),
    [("compound", (2 / 5, 5)), ("compound_batch", (1 / 3, 3))],
)
def test_moa_accuracy_hand_computed(exclude, expected):
    result = moa_accuracy(PROFILES, MOA, COMPOUND, BATCH, exclude=exclude)
    assert result.accuracy == pytest.approx(expected[0])
    assert result.n_treatments == expected[1]


@pytest.mark.parametrize("exclude", ["compound", "compound_batch"])
def test_moa_accuracy_aggregates_wells_by_median(exclude):
    # Three wells per treatment: the profile, itself again, and 100 times it.
    wells = np.vstack([PROFILES, PROFILES, 100 * PROFILES])
    tile = np.tile(np.arange(5), 3)
    treatment = np.array([f"t{i}" for i in tile])
    direct = moa_accuracy(PROFILES, MOA, COMPOUND, BATCH, exclude=exclude)
    aggregated = moa_accuracy(
        wells,
        MOA[tile],
        COMPOUND[tile],
        BATCH[tile],
        exclude=exclude,
        treatment=treatment,
    )
    assert aggregated == direct


def test_moa_accuracy_excludes_same_compound_neighbours():
    # Same compound at another dose is the nearest profile but not a candidate.
    X = np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.1, 1.0]])
    result = moa_accuracy(X, ["A", "A", "B", "A"], ["a1", "a1", "b1", "a2"])
    assert result == (pytest.approx(2 / 3), 3)


def test_moa_accuracy_nscb_needs_batch():
    with pytest.raises(ValueError, match="exclude='compound_batch' \\(NSCB\\) needs"):
        moa_accuracy(PROFILES, MOA, COMPOUND, exclude="compound_batch")


def test_moa_accuracy_rejects_unknown_exclude():
    with pytest.raises(ValueError, match="'exclude' parameter of moa_accuracy"):
        moa_accuracy(PROFILES, MOA, COMPOUND, exclude="batch")


def test_moa_accuracy_raises_when_nothing_counts():
    with pytest.raises(ValueError, match="No treatment has a candidate neighbour"):
        moa_accuracy(PROFILES[:2], ["A", "B"], ["a", "b"])


def test_moa_accuracy_rejects_labels_of_wrong_length():
    with pytest.raises(ValueError, match="moa has 4 entries but X has 5 samples"):
        moa_accuracy(PROFILES, MOA[:4], COMPOUND)


def test_moa_accuracy_rejects_missing_labels():
    moa = np.array(["A", "A", None, "B", "A"], dtype=object)
    with pytest.raises(ValueError, match="moa has 1 missing entries"):
        moa_accuracy(PROFILES, moa, COMPOUND)


def test_moa_accuracy_rejects_moa_varying_within_treatment():
    with pytest.raises(ValueError, match="moa must be constant within each treatment"):
        moa_accuracy(PROFILES, MOA, COMPOUND, treatment=["t", "u", "u", "v", "w"])


@pytest.mark.parametrize(
    ("func", "expected"), [("median", [3.0, 2.0]), ("mean", [3.0, 4.0])]
)
def test_aggregate_treatments_is_deprecated_and_hand_computed(func, expected):
    X = np.array([[1.0, 0.0], [3.0, 2.0], [5.0, 10.0], [7.0, 7.0]])
    with pytest.warns(FutureWarning, match="aggregate_treatments is deprecated"):
        out = aggregate_treatments(X, ["a", "a", "a", "b"], func=func)
    assert list(out.columns) == ["x0", "x1"] and out.index.name == "treatment"
    np.testing.assert_allclose(out.loc["a"], expected)
    np.testing.assert_allclose(out.loc["b"], [7.0, 7.0])


def test_aggregate_treatments_keys_from_dataframe_and_feature_names():
    X = pd.DataFrame({"f": [1.0, 3.0, 8.0]})
    by = pd.DataFrame({"compound": ["c", "c", "c"], "dose": [1.0, 1.0, 3.0]})
    with pytest.warns(FutureWarning, match="use sklearn_ben.profiles"):
        out = aggregate_treatments(X, by)
    assert out.index.names == ["compound", "dose"]
    assert list(out.columns) == ["f"]
    np.testing.assert_allclose(out["f"], [2.0, 8.0])


def test_aggregate_treatments_rejects_two_dimensional_by():
    with pytest.warns(FutureWarning, match="deprecated"):
        with pytest.raises(ValueError, match="by must be one-dimensional"):
            aggregate_treatments(np.ones((2, 2)), np.ones((2, 2)))


@pytest.mark.parametrize(
    ("batch", "expected"),
    [
        (["p1", "p1", "p2", "p2"], (1.0, 1 / 3)),
        (["p1", "p2", "p1", "p2"], (0.0, 1 / 3)),
        (["p1", "p1", "p1", "p2"], (0.5, 1 / 2)),
    ],
)
def test_batch_mixing_score_hand_computed(batch, expected):
    X = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    result = batch_mixing_score(X, batch)
    assert result.score == pytest.approx(expected[0])
    assert result.chance == pytest.approx(expected[1])


def test_batch_mixing_score_excludes_the_sample_itself_among_duplicates():
    X = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert batch_mixing_score(X, ["a", "b", "a", "b"]).score == 0.0


def test_batch_mixing_score_needs_two_samples():
    with pytest.raises(ValueError, match="minimum of 2 is required"):
        batch_mixing_score(np.ones((1, 2)), ["a"])


def test_batch_mixing_score_rejects_batch_of_wrong_length():
    with pytest.raises(ValueError, match="batch has 3 entries but X has 4 samples"):
        batch_mixing_score(np.eye(4), ["a", "b", "a"])


def test_top_k_accuracy_score_is_sklearns():
    assert top_k_accuracy_score is sklearn.metrics.top_k_accuracy_score
    assert "top_k_accuracy_score" in metrics.__all__


@needs_profiles
@pytest.mark.parametrize(
    ("exclude", "n_treatments"), [("compound", 103), ("compound_batch", 92)]
)
def test_moa_accuracy_counts_real_bbbc021_treatments(exclude, n_treatments):
    data = load_bbbc021_profiles()
    treated = ~data.controls
    frame = data.frame[treated]
    treatment = frame["compound"].astype(str) + "@" + frame["concentration"].astype(str)
    result = moa_accuracy(
        data.X[treated],
        frame["moa"],
        frame["compound"],
        data.batches[treated],
        exclude=exclude,
        treatment=treatment,
    )
    assert result.n_treatments == n_treatments
    assert 0.0 <= result.accuracy <= 1.0


# ------------------------------------------------------- mean average precision

AP_X = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.6, 0.4], [0.5, 0.5]])
AP_LABELS = np.array(["a", "a", "b", "b", "b"])
AP_COMPOUND = np.array(["c1", "c2", "c3", "c4", "c4"])


def test_average_precision_hand_computed():
    # Query 3 ([0.6, 0.4]): cosine order 4 (excluded: same compound c4), then
    # 1, 0 (negatives), 2 (positive, rank 3): AP 1/3. Query 4 ([0.5, 0.5]):
    # order 3 (excluded), 1, 0, 2 -> the one positive at rank 3: 1/3.
    # Query 2 ([0, 1]): order 4, 3 (both positives), ...: AP 1.
    ap = average_precision(AP_X, AP_LABELS, exclude=AP_COMPOUND)
    np.testing.assert_allclose(ap, [1.0, 1.0, 1.0, 1 / 3, 1 / 3])
    assert mean_average_precision(
        AP_X, AP_LABELS, exclude=AP_COMPOUND
    ) == pytest.approx(11 / 15)


def test_average_precision_nan_without_positives():
    ap = average_precision(AP_X, ["a", "b", "b", "c", "c"], exclude=AP_COMPOUND)
    assert np.isnan(ap[0])


def test_mean_average_precision_raises_without_any_positive():
    with pytest.raises(ValueError, match="No query has a positive"):
        mean_average_precision(AP_X[:2], ["a", "b"])


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("with_exclude", [False, True])
def test_mean_average_precision_equals_copairs(metric, with_exclude):
    copairs_map = pytest.importorskip("copairs.map")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 8))
    labels = np.repeat(["m1", "m2", "m3", "m4"], 15)
    X += (labels[:, None] == ["m1", "m2", "m3", "m4"]) @ rng.normal(size=(4, 8))
    compound = np.array([f"c{i // 5}" for i in range(60)])
    meta = pd.DataFrame({"label": labels, "compound": compound})
    meta["row"] = np.arange(60)
    diffby = ["compound"] if with_exclude else ["row"]
    result = copairs_map.average_precision(
        meta,
        X,
        pos_sameby=["label"],
        pos_diffby=diffby,
        neg_sameby=[],
        neg_diffby=["label"],
        distance=metric,
        progress_bar=False,
    )
    expected = result.sort_values("row")["average_precision"].to_numpy()
    exclude = compound if with_exclude else None
    ours = average_precision(X, labels, exclude=exclude, metric=metric)
    np.testing.assert_allclose(ours, expected, atol=1e-6)
    assert mean_average_precision(
        X, labels, exclude=exclude, metric=metric
    ) == pytest.approx(np.nanmean(expected), abs=1e-6)


@pytest.mark.parametrize(("shift", "significant"), [(3.0, True), (0.0, False)])
def test_label_average_precision_p_values(shift, significant):
    # Two labels, shifted apart or not: each retrieves its own label better
    # than chance only when the clouds are apart.
    rng = np.random.default_rng(1)
    labels = np.repeat(["x", "y"], 20)
    X = rng.normal(size=(40, 5))
    X[:20] += shift
    table = label_average_precision(X, labels, null_size=200, random_state=0)
    assert (table["n_queries"] == 20).all()
    if significant:
        np.testing.assert_allclose(table["p_value"], 1 / 201)
    else:
        assert (table["p_value"] > 0.05).all()
