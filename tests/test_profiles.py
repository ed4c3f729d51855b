"""Profile aggregation and pycytominer-style tables."""

import numpy as np
import pandas as pd
import pytest

from sklearn_ben.profiles import aggregate_profiles, treatment_profiles


@pytest.fixture
def cells_table():
    """Five cells in three wells on two plates, two compounds."""
    metadata = pd.DataFrame(
        {
            "plate": ["P1", "P1", "P1", "P2", "P2"],
            "well": ["A1", "A1", "A2", "B1", "B1"],
            "compound": ["dmso", "dmso", "taxol", "dmso", "dmso"],
            "cell": [0, 1, 0, 0, 1],
        },
        index=[10, 11, 12, 13, 14],  # not positional: must be ignored
    )
    embeddings = np.array(
        [[1.0, 10.0], [3.0, 30.0], [5.0, 50.0], [7.0, 70.0], [11.0, 110.0]]
    )
    return embeddings, metadata


def test_aggregate_profiles_means_per_well(cells_table):
    embeddings, metadata = cells_table
    profiles = aggregate_profiles(embeddings, metadata, by=["plate", "well"])
    expected = pd.DataFrame(
        {
            "plate": ["P1", "P1", "P2"],
            "well": ["A1", "A2", "B1"],
            "compound": ["dmso", "taxol", "dmso"],
            "f0": [2.0, 5.0, 9.0],
            "f1": [20.0, 50.0, 90.0],
        }
    )
    pd.testing.assert_frame_equal(profiles, expected)


def test_aggregate_profiles_median_and_explicit_keep(cells_table):
    embeddings, metadata = cells_table
    profiles = aggregate_profiles(
        embeddings, metadata, by="compound", how="median", keep=[]
    )
    expected = pd.DataFrame(
        {"compound": ["dmso", "taxol"], "f0": [5.0, 5.0], "f1": [50.0, 50.0]}
    )
    pd.testing.assert_frame_equal(profiles, expected)


def test_aggregate_profiles_keeps_dataframe_feature_names(cells_table):
    embeddings, metadata = cells_table
    features = pd.DataFrame(embeddings, columns=["area", "dna"])
    profiles = aggregate_profiles(features, metadata, by="plate")
    assert list(profiles.columns) == ["plate", "area", "dna"]
    assert profiles["area"].tolist() == [3.0, 9.0]


def test_treatment_profiles_mean_per_well_then_median(cells_table):
    embeddings, metadata = cells_table
    profiles = treatment_profiles(
        embeddings, metadata, unit=["plate", "well"], treatment="compound"
    )
    # dmso wells: P1/A1 mean (2, 20), P2/B1 mean (9, 90); median (5.5, 55)
    expected = pd.DataFrame(
        {"compound": ["dmso", "taxol"], "f0": [5.5, 5.0], "f1": [55.0, 50.0]}
    )
    pd.testing.assert_frame_equal(profiles, expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"by": "row"}, r"by names columns \['row'\] that are not in the table"),
        (
            {"how": "max"},
            r"how should be one of \('mean', 'median'\), but got how='max'",
        ),
        ({"keep": ["cell"]}, r"keep columns \['cell'\] vary within some \['well'\]"),
        ({"embeddings": np.zeros((4, 2))}, "embeddings has 4 rows but metadata has 5"),
        ({"embeddings": np.zeros(5)}, r"embeddings must be 2-d .*\(5,\)"),
        ({"metadata": {"well": [1] * 5}}, "metadata must be a pandas DataFrame"),
        (
            {"embeddings": pd.DataFrame({"well": np.zeros(5)})},
            r"feature columns \['well'\] are also metadata columns",
        ),
    ],
)
def test_aggregate_profiles_rejects_bad_input(cells_table, kwargs, message):
    embeddings, metadata = cells_table
    params = {"embeddings": embeddings, "metadata": metadata, "by": "well", **kwargs}
    with pytest.raises(ValueError, match=message):
        aggregate_profiles(params.pop("embeddings"), params.pop("metadata"), **params)


def test_aggregate_profiles_rejects_missing_by_values(cells_table):
    embeddings, metadata = cells_table
    metadata = metadata.assign(well=["A1", None, "A2", "A1", None])
    with pytest.raises(ValueError, match=r"missing values: 'well' \(2\)"):
        aggregate_profiles(embeddings, metadata, by="well")


def test_treatment_profiles_rejects_units_with_several_treatments(cells_table):
    embeddings, metadata = cells_table
    with pytest.raises(ValueError, match=r"treatment columns \['compound'\] vary"):
        treatment_profiles(embeddings, metadata, unit="plate", treatment="compound")
