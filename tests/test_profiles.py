"""Profile aggregation and pycytominer-style tables."""

import numpy as np
import pandas as pd
import pytest

from sklearn_ben import TVN
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


def _pycytominer_table():
    return pd.DataFrame(
        {
            "Metadata_Plate": ["P1", "P1", "P1", "P2", "P2", "P2"],
            "Metadata_Compound": ["DMSO", "DMSO", "taxol"] * 2,
            "Metadata_is_control": [True, True, False] * 2,
            "Cells_AreaShape_Area": [1.0, 3.0, 7.0, 10.0, 20.0, 0.0],
            "Nuclei_Intensity_Mean": [5.0, 7.0, 6.0, 1.0, 3.0, 2.0],
        },
        index=[3, 4, 5, 6, 7, 8],
    )


@pytest.mark.parametrize(
    "controls", ["Metadata_is_control", ("Metadata_Compound", "DMSO")]
)
def test_split_profiles_round_trips_a_pycytominer_table(controls):
    from sklearn_ben._tvn import PlateControlScaler
    from sklearn_ben.profiles import split_profiles

    table = _pycytominer_table()
    parts = split_profiles(table, controls=controls)
    assert list(parts.X.columns) == ["Cells_AreaShape_Area", "Nuclei_Intensity_Mean"]
    assert parts.controls.tolist() == [True, True, False] * 2
    pd.testing.assert_frame_equal(pd.concat([parts.metadata, parts.X], axis=1), table)
    scaler = PlateControlScaler().set_output(transform="pandas")
    out = scaler.fit_transform(parts.X, groups=parts.groups, controls=parts.controls)
    back = pd.concat([parts.metadata, out], axis=1)
    assert list(back.columns) == list(table.columns)
    assert back["Cells_AreaShape_Area"].tolist() == [-1.0, 1.0, 5.0, -1.0, 1.0, -3.0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"controls": "Metadata_Compound"}, "controls column 'Metadata_Compound'"),
        ({"groups": "Metadata_Well"}, r"names columns \['Metadata_Well'\]"),
        ({"prefix": ""}, "table has no feature columns"),
    ],
)
def test_split_profiles_rejects_bad_columns(kwargs, match):
    from sklearn_ben.profiles import split_profiles

    with pytest.raises(ValueError, match=match):
        split_profiles(_pycytominer_table(), **kwargs)


def _profile_table():
    rng = np.random.default_rng(0)
    n = 24
    table = pd.DataFrame(
        {
            "Metadata_Plate": np.repeat(["P1", "P2", "P3"], 8),
            "Metadata_Compound": np.tile(["DMSO"] * 4 + ["taxol"] * 4, 3),
            "f_a": rng.normal(size=n),
            "f_b": rng.normal(size=n) * 3,
        },
        index=[f"well{i}" for i in range(n)],
    )
    return table


def test_keep_metadata_tables_in_tables_out_equal_the_plain_transformer():
    from sklearn_ben import PlateControlScaler
    from sklearn_ben.profiles import KeepMetadata

    table = _profile_table()
    wrapped = KeepMetadata(PlateControlScaler(), controls=("Metadata_Compound", "DMSO"))
    out = wrapped.fit_transform(table)
    assert list(out.columns) == ["Metadata_Plate", "Metadata_Compound", "f_a", "f_b"]
    assert out.index.equals(table.index)
    pd.testing.assert_frame_equal(
        out[["Metadata_Plate", "Metadata_Compound"]],
        table[["Metadata_Plate", "Metadata_Compound"]],
    )
    plain = PlateControlScaler().fit_transform(
        table[["f_a", "f_b"]].to_numpy(),
        groups=table["Metadata_Plate"].to_numpy(),
        controls=(table["Metadata_Compound"] == "DMSO").to_numpy(),
    )
    np.testing.assert_allclose(out[["f_a", "f_b"]].to_numpy(), plain)
    np.testing.assert_array_equal(wrapped.feature_names_in_, ["f_a", "f_b"])


def test_keep_metadata_passes_only_the_metadata_a_transformer_takes():
    from sklearn.preprocessing import StandardScaler

    from sklearn_ben.profiles import KeepMetadata

    table = _profile_table()
    out = KeepMetadata(StandardScaler()).fit(table).transform(table)
    np.testing.assert_allclose(out["f_b"].std(ddof=0), 1.0)
    assert out["Metadata_Plate"].tolist() == table["Metadata_Plate"].tolist()


def test_keep_metadata_refuses_a_table_without_features():
    from sklearn_ben.profiles import KeepMetadata

    with pytest.raises(ValueError, match="table has no feature columns"):
        KeepMetadata(TVN()).fit(_profile_table()[["Metadata_Plate"]])
