"""Profiles as tables: aggregation and pycytominer-style tables.

- :func:`aggregate_profiles`: cell, image or well rows to one profile per
  value of some metadata columns (mean or median), carrying the metadata that
  is constant per profile.
- :func:`treatment_profiles`: mean per image or well, then median per
  treatment, the usual two-step aggregation of cell profiling.
- :func:`split_profiles`: a pycytominer-style table (``Metadata_*`` columns
  beside the features) into features, metadata, groups and controls.

Everything here needs numpy, pandas and scikit-learn only (no torch).
"""

import inspect

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils import Bunch
from sklearn.utils.validation import check_is_fitted

__all__ = [
    "KeepMetadata",
    "aggregate_profiles",
    "split_profiles",
    "treatment_profiles",
]

_HOW = ("mean", "median")


def aggregate_profiles(embeddings, metadata, *, by, how="mean", keep=None):
    """Aggregate per-cell (or per-image) embeddings into profiles.

    Parameters
    ----------
    embeddings : array-like of shape (n_rows, n_features) or DataFrame
        One row per cell (or image). Columns of an array are named ``f0``,
        ``f1``, ...; a DataFrame keeps its column names.
    metadata : DataFrame of shape (n_rows, n_columns)
        Row-aligned metadata (plate, well, treatment, ...), by position.
    by : str or list of str
        Metadata column(s) that define a profile, e.g. ``["plate", "well"]``.
    how : {"mean", "median"}, default="mean"
        How features are aggregated within a profile.
    keep : list of str or None, default=None
        Other metadata columns to carry over; each must be constant within
        every profile. ``None`` carries over every column that is (the
        plate, batch and treatment of a well, say, but not its cells' ids).

    Returns
    -------
    profiles : DataFrame
        One row per distinct value of ``by`` (sorted), with the ``by`` and
        kept columns first, then the aggregated features.

    See Also
    --------
    treatment_profiles : Mean per image or well, then median per treatment.

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from sklearn_ben.profiles import aggregate_profiles
    >>> meta = pd.DataFrame({"well": ["A1", "A1", "B1"], "plate": ["P1"] * 3,
    ...                      "cell": [0, 1, 0]})
    >>> aggregate_profiles(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]),
    ...                    meta, by="well")
      well plate   f0   f1
    0   A1    P1  2.0  3.0
    1   B1    P1  5.0  6.0
    """
    features, metadata = _check_profile_inputs(embeddings, metadata)
    by = [by] if isinstance(by, str) else list(by)
    if how not in _HOW:
        raise ValueError(f"how should be one of {_HOW}, but got how={how!r}.")
    _check_columns(metadata, by, "by")
    missing = metadata[by].isna().sum()
    if missing.any():
        bad = ", ".join(f"{c!r} ({n})" for c, n in missing.items() if n)
        raise ValueError(
            f"The by columns have missing values: {bad}; fill or drop those "
            "rows first, so that no rows are silently left out."
        )
    groups = metadata.groupby(by, sort=True, dropna=False)
    others = [c for c in metadata.columns if c not in by]
    varying = groups[others].nunique(dropna=False).gt(1).any() if others else None
    if keep is None:
        keep = [c for c in others if not varying[c]]
    else:
        keep = [keep] if isinstance(keep, str) else list(keep)
        _check_columns(metadata, keep, "keep")
        bad = [c for c in keep if c in others and varying[c]]
        if bad:
            raise ValueError(
                f"keep columns {bad} vary within some {by} profiles; carry "
                "only columns that are constant per profile, or add them to by."
            )
    table = pd.concat([metadata[by + keep], features], axis=1)
    grouped = table.groupby(by, sort=True, dropna=False)
    parts = [grouped[keep].first()] if keep else []
    parts.append(grouped[list(features.columns)].agg(how))
    return pd.concat(parts, axis=1).reset_index()


def treatment_profiles(
    embeddings, metadata, *, unit, treatment, unit_how="mean", treatment_how="median"
):
    """Two-step profiles: mean per image or well, then median per treatment.

    The usual aggregation of cell profiling (e.g. the BBBC021 MoA benchmark):
    cells are averaged within each ``unit`` (an image or a well), then units
    are combined by median within each ``treatment``, so that wells with many
    cells do not dominate.

    Parameters
    ----------
    embeddings : array-like of shape (n_rows, n_features) or DataFrame
        One row per cell.
    metadata : DataFrame of shape (n_rows, n_columns)
        Row-aligned metadata.
    unit : str or list of str
        Column(s) of the first step, e.g. ``["plate", "well"]``.
    treatment : str or list of str
        Column(s) of the second step, e.g. ``["compound", "concentration"]``.
    unit_how, treatment_how : {"mean", "median"}, default="mean", "median"
        Aggregation of each step.

    Returns
    -------
    profiles : DataFrame
        One row per treatment: the treatment columns, every metadata column
        constant per treatment (e.g. the MoA), then the features.

    See Also
    --------
    aggregate_profiles : One step of aggregation.

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from sklearn_ben.profiles import treatment_profiles
    >>> meta = pd.DataFrame({"well": ["A1", "A1", "A2", "A3"],
    ...                      "compound": ["taxol"] * 4, "moa": ["MT"] * 4})
    >>> treatment_profiles(np.array([[0.0], [2.0], [5.0], [9.0]]), meta,
    ...                    unit="well", treatment="compound")
      compound moa   f0
    0    taxol  MT  5.0
    """
    unit = [unit] if isinstance(unit, str) else list(unit)
    treatment = [treatment] if isinstance(treatment, str) else list(treatment)
    features, metadata = _check_profile_inputs(embeddings, metadata)
    _check_columns(metadata, treatment, "treatment")
    units = aggregate_profiles(features, metadata, by=unit, how=unit_how)
    unit_meta = units.drop(columns=features.columns)
    missing = [c for c in treatment if c not in unit_meta.columns]
    if missing:
        raise ValueError(
            f"treatment columns {missing} vary within some {unit} units; each "
            "unit (image or well) must hold a single treatment."
        )
    return aggregate_profiles(
        units[features.columns], unit_meta, by=treatment, how=treatment_how
    )


def _check_columns(frame, columns, name):
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{name} names columns {missing} that are not in the table, whose "
            f"columns are {list(frame.columns)}."
        )


def _check_profile_inputs(embeddings, metadata):
    if not isinstance(metadata, pd.DataFrame):
        raise ValueError(
            f"metadata must be a pandas DataFrame, but got {type(metadata).__name__}."
        )
    if isinstance(embeddings, pd.DataFrame):
        features = embeddings.reset_index(drop=True)
    else:
        array = np.asarray(embeddings)
        if array.ndim != 2:
            raise ValueError(
                "embeddings must be 2-d (n_rows, n_features), but got shape "
                f"{array.shape}."
            )
        features = pd.DataFrame(array, columns=[f"f{i}" for i in range(array.shape[1])])
    if len(features) != len(metadata):
        raise ValueError(
            f"embeddings has {len(features)} rows but metadata has "
            f"{len(metadata)}; pass one metadata row per embedding."
        )
    clash = [c for c in features.columns if c in metadata.columns]
    if clash:
        raise ValueError(
            f"feature columns {clash} are also metadata columns; rename one of them."
        )
    return features, metadata.reset_index(drop=True)


def split_profiles(
    table, *, groups="Metadata_Plate", controls=None, prefix="Metadata_"
):
    """Split a pycytominer-style profile table into features and metadata.

    Parameters
    ----------
    table : DataFrame
        One row per profile; metadata columns start with ``prefix``, every
        other column is a feature.
    groups : str or None, default="Metadata_Plate"
        Column holding the plate (or batch) of each row.
    controls : str, (str, value) or None, default=None
        A boolean column marking the controls (``"Metadata_is_control"``),
        or a column and the value that marks them
        (``("Metadata_Compound", "DMSO")``).
    prefix : str, default="Metadata_"
        Prefix of the metadata columns.

    Returns
    -------
    result : Bunch
        ``X`` (DataFrame of the features, the table's index), ``metadata``
        (DataFrame of the metadata columns), ``groups`` (ndarray or None)
        and ``controls`` (boolean ndarray or None). ``pd.concat([metadata,
        X], axis=1)`` gives the table back.

    Examples
    --------
    >>> import pandas as pd
    >>> from sklearn_ben.profiles import split_profiles
    >>> table = pd.DataFrame({"Metadata_Plate": ["P1", "P1", "P2"],
    ...                       "Metadata_Compound": ["DMSO", "taxol", "DMSO"],
    ...                       "area": [1.0, 2.0, 3.0]})
    >>> parts = split_profiles(table, controls=("Metadata_Compound", "DMSO"))
    >>> list(parts.X.columns), parts.groups.tolist(), parts.controls.tolist()
    (['area'], ['P1', 'P1', 'P2'], [True, False, True])
    """
    if not isinstance(table, pd.DataFrame):
        raise ValueError(
            f"table must be a pandas DataFrame, but got {type(table).__name__}."
        )
    meta_columns = [c for c in table.columns if str(c).startswith(prefix)]
    features = [c for c in table.columns if c not in meta_columns]
    if not features:
        raise ValueError(
            f"table has no feature columns: every column starts with {prefix!r}."
        )
    named = [groups] if groups is not None else []
    column = controls[0] if isinstance(controls, tuple) else controls
    named += [column] if column is not None else []
    _check_columns(table, named, "groups/controls")
    mask = None
    if isinstance(controls, tuple):
        mask = (table[column] == controls[1]).to_numpy()
    elif controls is not None:
        mask = table[column].to_numpy()
        if mask.dtype != np.bool_:
            raise ValueError(
                f"controls column {column!r} must be boolean, but has dtype "
                f"{mask.dtype}; pass (column, value), e.g. "
                "('Metadata_Compound', 'DMSO')."
            )
    return Bunch(
        X=table[features],
        metadata=table[meta_columns],
        groups=None if groups is None else table[groups].to_numpy(),
        controls=mask,
    )


class KeepMetadata(TransformerMixin, BaseEstimator):
    """Apply a transformer to a profile table's features and keep its metadata.

    Tables in, tables out, as in pycytominer: ``fit`` and ``transform`` take a
    DataFrame whose ``Metadata_*`` columns describe each profile; the plates
    and the control mask are read from named columns (see
    :func:`split_profiles`) and passed to the wrapped transformer, which sees
    the feature columns only; ``transform`` returns the metadata columns
    followed by the transformed features, on the table's index.

    Parameters
    ----------
    transformer : transformer
        E.g. :class:`~sklearn_ben.TVN` or :class:`~sklearn_ben.PlateControlScaler`;
        cloned at fit. ``groups`` and ``controls`` are passed to its ``fit``
        and ``transform`` when their signatures take them.
    groups : str or None, default="Metadata_Plate"
        Column holding the plate (or batch) of each row.
    controls : str, (str, value) or None, default=None
        Boolean control column, or ``(column, value)`` marking the controls.
    prefix : str, default="Metadata_"
        Prefix of the metadata columns.

    Attributes
    ----------
    transformer_ : transformer
        The fitted clone.
    feature_names_in_ : ndarray of str
        Feature columns seen in fit (metadata excluded).
    n_features_in_ : int
        Number of feature columns.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from sklearn_ben import PlateControlScaler
    >>> from sklearn_ben.profiles import KeepMetadata
    >>> table = pd.DataFrame({
    ...     "Metadata_Plate": ["P1"] * 4 + ["P2"] * 4,
    ...     "Metadata_Compound": ["DMSO", "DMSO", "taxol", "DMSO"] * 2,
    ...     "area": [1.0, 3.0, 9.0, 2.0, 10.0, 30.0, 90.0, 20.0]})
    >>> out = KeepMetadata(PlateControlScaler(),
    ...                    controls=("Metadata_Compound", "DMSO")).fit_transform(table)
    >>> list(out.columns)
    ['Metadata_Plate', 'Metadata_Compound', 'area']
    >>> out["area"].round(2).tolist()
    [-1.22, 1.22, 8.57, 0.0, -1.22, 1.22, 8.57, 0.0]
    """

    def __init__(
        self, transformer, *, groups="Metadata_Plate", controls=None, prefix="Metadata_"
    ):
        self.transformer = transformer
        self.groups = groups
        self.controls = controls
        self.prefix = prefix

    def _split(self, table):
        return split_profiles(
            table, groups=self.groups, controls=self.controls, prefix=self.prefix
        )

    def _metadata(self, method, parts):
        wanted = inspect.signature(method).parameters
        given = {"groups": parts.groups, "controls": parts.controls}
        return {k: v for k, v in given.items() if k in wanted and v is not None}

    def fit(self, table, y=None):
        """Fit the transformer on the table's features, plates and controls.

        Parameters
        ----------
        table : DataFrame
            Profiles with metadata columns.
        y : None
            Ignored.

        Returns
        -------
        self : KeepMetadata
        """
        parts = self._split(table)
        transformer = clone(self.transformer)
        transformer.fit(parts.X, **self._metadata(transformer.fit, parts))
        self.transformer_ = transformer
        self.feature_names_in_ = np.asarray(parts.X.columns, dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        return self

    def transform(self, table):
        """The table's metadata columns, then its transformed features.

        Parameters
        ----------
        table : DataFrame
            Profiles with the same feature columns as in fit.

        Returns
        -------
        table_out : DataFrame
            Same index as ``table``.
        """
        check_is_fitted(self)
        parts = self._split(table)
        inner = self.transformer_
        out = inner.transform(parts.X, **self._metadata(inner.transform, parts))
        if not isinstance(out, pd.DataFrame):
            names = (
                inner.get_feature_names_out()
                if hasattr(inner, "get_feature_names_out")
                else [f"feature{i}" for i in range(np.shape(out)[1])]
            )
            out = pd.DataFrame(np.asarray(out), columns=names, index=table.index)
        else:
            out = out.set_axis(table.index)
        return pd.concat([parts.metadata, out], axis=1)
