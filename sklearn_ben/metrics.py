"""Metrics for image-based profiles.

- :func:`moa_accuracy`: mechanism-of-action (MoA) 1-nearest-neighbour accuracy
  of treatment profiles by cosine similarity, with the neighbour not of the
  same compound (NSC) or neither of the same compound nor batch (NSCB), as in
  the BBBC021 studies (Ljosa et al. 2013; Ando et al. 2017).
- :func:`aggregate_treatments`: deprecated, use
  :func:`sklearn_ben.profiles.aggregate_profiles`.
- :func:`average_precision` and :func:`mean_average_precision`: retrieval
  of same-label profiles (the metric of Cell Painting / JUMP evaluations, as
  the copairs library computes it); :func:`label_average_precision`: mAP per
  label with a permutation p-value.
- :func:`batch_mixing_score`: share of samples whose nearest neighbour is from
  the same batch, beside its chance level (Lin & Lu).
- :func:`top_k_accuracy_score`: scikit-learn's, re-exported.
"""

import warnings
from numbers import Integral
from typing import NamedTuple

import numpy as np
import pandas as pd
from sklearn.metrics import (
    pairwise_distances,
    pairwise_distances_chunked,
    top_k_accuracy_score,
)
from sklearn.preprocessing import normalize
from sklearn.utils import check_array, check_random_state

from sklearn_ben._scorer import BENScorer, make_ben_scorer
from sklearn_ben._sklearn_compat import Interval, StrOptions, validate_params
from sklearn_ben._validation import check_labels
from sklearn_ben.profiles import aggregate_profiles

__all__ = [
    "BENScorer",
    "BatchMixing",
    "MoAAccuracy",
    "aggregate_treatments",
    "average_precision",
    "label_average_precision",
    "mean_average_precision",
    "batch_mixing_score",
    "make_ben_scorer",
    "moa_accuracy",
    "top_k_accuracy_score",
]


class MoAAccuracy(NamedTuple):
    """Result of :func:`moa_accuracy`: the accuracy and how many counted."""

    accuracy: float
    n_treatments: int


class BatchMixing(NamedTuple):
    """Result of :func:`batch_mixing_score`: the score and its chance level."""

    score: float
    chance: float


def _labels(values, name, n_samples):
    """A 1-D array of labels with one entry per sample and none missing."""
    return check_labels(values, name, n_samples)


def _feature_frame(X):
    names = getattr(X, "columns", None)
    X = check_array(X, dtype=np.float64)
    if names is None:
        names = [f"x{j}" for j in range(X.shape[1])]
    return pd.DataFrame(X, columns=list(names))


def aggregate_treatments(X, by, *, func="median"):
    """Aggregate sample profiles to one profile per treatment (deprecated).

    .. deprecated:: 0.1
        Use :func:`sklearn_ben.profiles.aggregate_profiles`, the one
        implementation, which also carries metadata columns; this alias will
        be removed in 0.3.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Profiles of wells or cells.
    by : array-like of shape (n_samples,) or DataFrame
        Treatment of each sample, or a DataFrame of columns that together
        name it (e.g. compound and concentration).
    func : {"median", "mean"}, default="median"
        How to aggregate each feature.

    Returns
    -------
    profiles : DataFrame of shape (n_treatments, n_features)
        One row per treatment, sorted, indexed by the treatment (a MultiIndex
        when ``by`` is a DataFrame); columns as ``X``'s, else ``x0, x1, ...``.
    """
    warnings.warn(
        "aggregate_treatments is deprecated and will be removed in 0.3; use "
        "sklearn_ben.profiles.aggregate_profiles(X, metadata, by=columns, "
        "how=func), which also carries the metadata columns.",
        FutureWarning,
        stacklevel=2,
    )
    frame = _feature_frame(X)
    n = frame.shape[0]
    if isinstance(by, pd.DataFrame):
        names = list(by.columns)
        meta = pd.DataFrame({c: _labels(by[c], f"by[{c!r}]", n) for c in names})
    else:
        names = ["treatment"]
        meta = pd.DataFrame({"treatment": _labels(by, "by", n)})
    return aggregate_profiles(frame, meta, by=names, how=func, keep=[]).set_index(names)


def _per_treatment(values, name, treatment):
    """One label per treatment; raise if a treatment has several."""
    table = pd.DataFrame({"treatment": treatment, "value": values})
    counts = table.groupby("treatment")["value"].nunique()
    mixed = counts[counts > 1]
    if len(mixed):
        raise ValueError(
            f"{name} must be constant within each treatment, but {len(mixed)} "
            f"treatment(s) have several values, e.g. {mixed.index[0]!r}; pass "
            f"treatment labels that separate them."
        )
    return table.groupby("treatment")["value"].first().to_numpy()


@validate_params(
    {
        "X": ["array-like"],
        "moa": ["array-like"],
        "compound": ["array-like"],
        "batch": ["array-like", None],
        "exclude": [StrOptions({"compound", "compound_batch"})],
        "treatment": ["array-like", None],
        "aggregate": [StrOptions({"median", "mean"})],
    },
    prefer_skip_nested_validation=True,
)
def moa_accuracy(
    X,
    moa,
    compound,
    batch=None,
    *,
    exclude="compound",
    treatment=None,
    aggregate="median",
):
    """Mechanism-of-action 1-nearest-neighbour accuracy (NSC or NSCB).

    Each treatment profile is given the MoA of its nearest other profile by
    cosine similarity, among candidates not of the same compound (NSC,
    ``exclude="compound"``) or neither of the same compound nor of the same
    batch (NSCB, ``exclude="compound_batch"``). A treatment counts only when
    its MoA has at least one candidate under that rule; the accuracy is the
    share of counted treatments whose neighbour has their MoA.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Profiles: one per treatment, or per well/cell with ``treatment``.
        Leave the controls (DMSO) out: they are no MoA.
    moa : array-like of shape (n_samples,)
        Mechanism of action of each sample.
    compound : array-like of shape (n_samples,)
        Compound of each sample.
    batch : array-like of shape (n_samples,), default=None
        Batch of each sample; required for ``exclude="compound_batch"``.
    exclude : {"compound", "compound_batch"}, default="compound"
        Which neighbours are not candidates: NSC or NSCB.
    treatment : array-like of shape (n_samples,), default=None
        Treatment of each sample (e.g. ``compound + "@" + concentration``).
        When given, ``X`` is first aggregated to one profile per treatment
        with :func:`sklearn_ben.profiles.aggregate_profiles`; ``moa``,
        ``compound`` and ``batch`` must then be constant within each treatment.
    aggregate : {"median", "mean"}, default="median"
        Aggregation used with ``treatment``.

    Returns
    -------
    result : MoAAccuracy
        Named tuple ``(accuracy, n_treatments)``: the accuracy and the number
        of treatments counted.

    Notes
    -----
    Ties in similarity go to the first candidate in sorted treatment order (or
    in row order without ``treatment``). A profile of zeros has cosine
    similarity 0 with every other.

    References
    ----------
    V. Ljosa, P. D. Caie et al., "Comparison of methods for image-based
    profiling of cellular morphological responses to small-molecule
    treatment", J Biomol Screen 18(10), 2013.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ben.metrics import moa_accuracy
    >>> X = np.array([[1.0, 0.1], [0.9, 0.0], [0.0, 1.0], [0.1, 0.9]])
    >>> moa = ["A", "A", "B", "B"]
    >>> compound = ["a1", "a2", "b1", "b2"]
    >>> moa_accuracy(X, moa, compound)
    MoAAccuracy(accuracy=1.0, n_treatments=4)
    >>> batch = ["w1", "w1", "w2", "w2"]
    >>> moa_accuracy(X, moa, compound, batch, exclude="compound_batch")
    Traceback (most recent call last):
    ...
    ValueError: No treatment has a candidate neighbour of its own MoA ...
    """
    correct = _moa_hits(X, moa, compound, batch, exclude, treatment, aggregate)
    return MoAAccuracy(float(correct.mean()), len(correct))


def _moa_hits(X, moa, compound, batch, exclude, treatment, aggregate):
    """Whether each counted treatment's neighbour has its MoA (for bootstraps)."""
    X = check_array(X, dtype=np.float64)
    n = X.shape[0]
    if exclude == "compound_batch" and batch is None:
        raise ValueError(
            "exclude='compound_batch' (NSCB) needs the batch of each sample; "
            "pass batch=, or use exclude='compound' (NSC)."
        )
    meta = {"moa": moa, "compound": compound}
    if batch is not None:
        meta["batch"] = batch
    meta = {name: _labels(v, name, n) for name, v in meta.items()}
    if treatment is not None:
        treatment = _labels(treatment, "treatment", n)
        meta_frame = pd.DataFrame({"treatment": treatment})
        X = aggregate_profiles(X, meta_frame, by="treatment", how=aggregate)
        X = X.drop(columns="treatment").to_numpy()
        meta = {k: _per_treatment(v, k, treatment) for k, v in meta.items()}
    candidate = meta["compound"][:, None] != meta["compound"][None, :]
    if exclude == "compound_batch":
        candidate &= meta["batch"][:, None] != meta["batch"][None, :]
    same_moa = meta["moa"][:, None] == meta["moa"][None, :]
    counted = (candidate & same_moa).any(axis=1)
    if not counted.any():
        raise ValueError(
            f"No treatment has a candidate neighbour of its own MoA under "
            f"exclude={exclude!r}, so the accuracy is undefined; every MoA "
            "needs profiles of at least two compounds (in different batches "
            "for 'compound_batch')."
        )
    unit = normalize(X)
    similarity = np.where(candidate, unit @ unit.T, -np.inf)
    neighbour = similarity.argmax(axis=1)
    correct = meta["moa"][neighbour] == meta["moa"]
    return correct[counted]


@validate_params(
    {"X": ["array-like"], "batch": ["array-like"]},
    prefer_skip_nested_validation=True,
)
def batch_mixing_score(X, batch):
    """Share of samples whose cosine nearest neighbour is from the same batch.

    For each sample, the nearest other sample by cosine distance (the sample
    itself excluded) is found; the score is the share of samples whose
    neighbour shares their batch. Lower means better mixed batches; compare
    it with ``chance``, the probability that a random other sample shares the
    batch: ``sum_b n_b (n_b - 1) / (n (n - 1))`` for batch sizes ``n_b``.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Profiles or embeddings; at least 2 samples.
    batch : array-like of shape (n_samples,)
        Batch (or plate) of each sample.

    Returns
    -------
    result : BatchMixing
        Named tuple ``(score, chance)``.

    Notes
    -----
    Distances are computed in chunks (scikit-learn's working memory), so
    memory grows linearly with the number of samples. Ties go to the sample
    of lowest index.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ben.metrics import batch_mixing_score
    >>> X = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> batch_mixing_score(X, ["p1", "p1", "p2", "p2"])
    BatchMixing(score=1.0, chance=0.333...)
    >>> batch_mixing_score(X, ["p1", "p2", "p1", "p2"])
    BatchMixing(score=0.0, chance=0.333...)
    """
    X = check_array(X, dtype=np.float64, ensure_min_samples=2)
    n = X.shape[0]
    batch = _labels(batch, "batch", n)

    def nearest_other(distances, start):
        rows = np.arange(distances.shape[0])
        distances[rows, start + rows] = np.inf
        return distances.argmin(axis=1)

    chunks = pairwise_distances_chunked(X, metric="cosine", reduce_func=nearest_other)
    neighbour = np.concatenate(list(chunks))
    _, sizes = np.unique(batch, return_counts=True)
    chance = float((sizes * (sizes - 1)).sum() / (n * (n - 1)))
    return BatchMixing(float(np.mean(batch[neighbour] == batch)), chance)


def _query_pairs(labels, exclude, i):
    """Positives and candidates of query ``i``, as copairs defines them."""
    same = labels == labels[i]
    positive = same & (exclude != exclude[i])
    positive[i] = False
    candidate = positive | ~same
    return positive, candidate


def _ap(distances, positive):
    """Average precision of ``positive`` ranked by ascending ``distances``."""
    hits = positive[np.argsort(distances, kind="stable")]
    ranks = np.flatnonzero(hits) + 1
    return float(np.mean(np.arange(1, len(ranks) + 1) / ranks))


def _ap_inputs(X, labels, exclude):
    X = check_array(X, dtype=np.float64, ensure_min_samples=2)
    n = X.shape[0]
    labels = _labels(labels, "labels", n)
    exclude = np.arange(n) if exclude is None else _labels(exclude, "exclude", n)
    return X, labels, exclude


_AP_PARAMS = {
    "X": ["array-like"],
    "labels": ["array-like"],
    "exclude": ["array-like", None],
    "metric": [StrOptions({"cosine", "euclidean"})],
}


@validate_params(_AP_PARAMS, prefer_skip_nested_validation=True)
def average_precision(X, labels, *, exclude=None, metric="cosine"):
    """Average precision of retrieving same-label profiles, per query.

    Each profile in turn is a query; the others are ranked by distance.
    Positives are the profiles with the query's label and a different
    ``exclude`` value (e.g. another compound of the same MoA); negatives are
    the profiles of another label. Profiles of the query's label and
    ``exclude`` value are left out. The average precision is the mean, over
    positives, of the precision at each positive's rank. This is copairs'
    ``average_precision`` with ``pos_sameby=[label]``,
    ``pos_diffby=[exclude]``, ``neg_sameby=[]``, ``neg_diffby=[label]``.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Profiles (one per well or per treatment).
    labels : array-like of shape (n_samples,)
        What should be retrieved together (e.g. the MoA).
    exclude : array-like of shape (n_samples,), default=None
        Pairs sharing a value are not positives (e.g. the compound); None
        excludes nothing but the query itself.
    metric : {"cosine", "euclidean"}, default="cosine"
        Distance used for ranking.

    Returns
    -------
    ap : ndarray of shape (n_samples,)
        Average precision of each query; NaN for a query without positives.

    Notes
    -----
    Computes the full ``n_samples x n_samples`` distance matrix. Ties in
    distance go to the profile of lower index.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ben.metrics import average_precision
    >>> X = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.6, 0.4]])
    >>> average_precision(X, ["a", "a", "b", "b"])
    array([1.        , 1.        , 1.        , 0.33333333])

    The last query, ``[0.6, 0.4]``, finds both ``a`` profiles before its
    ``b`` positive: precision 1/3 at rank 3.
    """
    X, labels, exclude = _ap_inputs(X, labels, exclude)
    distances = pairwise_distances(X, metric=metric)
    ap = np.full(X.shape[0], np.nan)
    for i in range(X.shape[0]):
        positive, candidate = _query_pairs(labels, exclude, i)
        if positive.any():
            ap[i] = _ap(distances[i, candidate], positive[candidate])
    return ap


@validate_params(_AP_PARAMS, prefer_skip_nested_validation=True)
def mean_average_precision(X, labels, *, exclude=None, metric="cosine"):
    """Mean over queries of :func:`average_precision` (queries with positives).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Profiles.
    labels : array-like of shape (n_samples,)
        What should be retrieved together (e.g. the MoA).
    exclude : array-like of shape (n_samples,), default=None
        Pairs sharing a value are not positives (e.g. the compound).
    metric : {"cosine", "euclidean"}, default="cosine"
        Distance used for ranking.

    Returns
    -------
    score : float
        Mean average precision.

    See Also
    --------
    label_average_precision : mAP per label, with a permutation p-value.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ben.metrics import mean_average_precision
    >>> X = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.6, 0.4]])
    >>> mean_average_precision(X, ["a", "a", "b", "b"])
    0.833...
    """
    ap = average_precision(X, labels, exclude=exclude, metric=metric)
    if np.isnan(ap).all():
        raise ValueError(
            "No query has a positive (a profile of its label with another "
            "exclude value), so the mean average precision is undefined; every "
            "label needs profiles of at least two exclude values."
        )
    return float(np.nanmean(ap))


@validate_params(
    {
        **_AP_PARAMS,
        "null_size": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def label_average_precision(
    X, labels, *, exclude=None, metric="cosine", null_size=1000, random_state=None
):
    """Mean average precision per label, with a permutation p-value.

    For each label, the mAP of its queries is compared with ``null_size``
    draws of the same queries ranked at random (each query keeps its numbers
    of positives and candidates), as copairs' ``mean_average_precision``
    does; the p-value is ``(1 + #{null >= observed}) / (1 + null_size)``.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Profiles.
    labels : array-like of shape (n_samples,)
        What should be retrieved together (e.g. the MoA).
    exclude : array-like of shape (n_samples,), default=None
        Pairs sharing a value are not positives (e.g. the compound).
    metric : {"cosine", "euclidean"}, default="cosine"
        Distance used for ranking.
    null_size : int, default=1000
        Random rankings per label.
    random_state : int, RandomState instance or None, default=None
        Seed of the random rankings.

    Returns
    -------
    table : DataFrame
        One row per label with a query that has positives: columns
        ``label``, ``mean_average_precision``, ``p_value``, ``n_queries``.
        No correction for multiple labels is applied.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ben.metrics import label_average_precision
    >>> X = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.6, 0.4]])
    >>> label_average_precision(X, ["a", "a", "b", "b"], random_state=0)
      label  mean_average_precision   p_value  n_queries
    0     a                1.000000  0.120879          2
    1     b                0.666667  0.548452          2
    """
    X, labels, exclude = _ap_inputs(X, labels, exclude)
    ap = average_precision(X, labels, exclude=exclude, metric=metric)
    rng = check_random_state(random_state)
    rows = []
    for label in np.unique(labels):
        queries = np.flatnonzero((labels == label) & ~np.isnan(ap))
        if not len(queries):
            continue
        null = np.zeros(null_size)
        for i in queries:
            positive, candidate = _query_pairs(labels, exclude, i)
            hits = positive[candidate]
            for draw in range(null_size):
                null[draw] += _ap(rng.random(len(hits)), hits)
        null /= len(queries)
        observed = float(ap[queries].mean())
        p_value = (1 + np.sum(null >= observed - 1e-12)) / (1 + null_size)
        rows.append((label, observed, float(p_value), len(queries)))
    return pd.DataFrame(
        rows, columns=["label", "mean_average_precision", "p_value", "n_queries"]
    )
