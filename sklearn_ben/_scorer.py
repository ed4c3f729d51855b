"""Scorers that pass ``groups`` and ``controls`` on to ``predict``.

scikit-learn's string scorers (``scoring="accuracy"``) call ``predict(X)``
with no metadata, so a BEN estimator scored by them never sees plates. The
scorers made here forward the plates and request them under metadata routing.
"""

import numpy as np
from sklearn.metrics import accuracy_score

from sklearn_ben._sklearn_compat import MetadataRequest

__all__ = ["BENScorer", "make_ben_scorer"]

_METADATA = ("groups", "controls")


class BENScorer:
    """Score ``estimator.<response_method>(X, groups=..., controls=...)``.

    Build it with :func:`make_ben_scorer`.

    Parameters
    ----------
    score_func : callable
        ``score_func(y_true, y_pred, **kwargs)``.
    response_method : str
        Method of the estimator that makes ``y_pred``.
    sign : {1, -1}
        -1 turns a loss into a score (greater is better).
    kwargs : dict
        Extra keyword arguments of ``score_func``.
    """

    def __init__(self, score_func, response_method, sign, kwargs):
        self.score_func = score_func
        self.response_method = response_method
        self.sign = sign
        self.kwargs = kwargs

    def __call__(self, estimator, X, y_true, **params):
        """Score ``estimator`` on ``X`` with the plates in ``params``.

        Parameters
        ----------
        estimator : estimator
            A fitted BEN estimator, or a Pipeline ending in one.
        X : array-like
            Samples.
        y_true : array-like
            True targets.
        **params : dict
            ``groups`` and ``controls`` go to the response method; anything
            else (e.g. ``sample_weight``) to ``score_func``.

        Returns
        -------
        score : float
        """
        metadata = {k: params.pop(k) for k in _METADATA if params.get(k) is not None}
        y_pred = getattr(estimator, self.response_method)(X, **metadata)
        if self.response_method == "predict_proba" and np.ndim(y_pred) == 2:
            if np.shape(y_pred)[1] == 2:  # binary: the positive class, as sklearn
                y_pred = np.asarray(y_pred)[:, 1]
        return self.sign * self.score_func(y_true, y_pred, **self.kwargs, **params)

    def get_metadata_routing(self):
        """Request ``groups`` and ``controls`` for scoring, by default.

        Returns
        -------
        routing : MetadataRequest
        """
        request = MetadataRequest(owner=type(self).__name__)
        for name in _METADATA:
            request.score.add_request(param=name, alias=True)
        return request

    def __repr__(self):
        name = getattr(self.score_func, "__name__", repr(self.score_func))
        return f"make_ben_scorer({name}, response_method={self.response_method!r})"


def make_ben_scorer(
    score_func=accuracy_score,
    *,
    response_method="predict",
    greater_is_better=True,
    **kwargs,
):
    """Make a scorer that passes plates on to the estimator's predictions.

    Use it as ``scoring=`` of ``GridSearchCV`` or ``cross_validate`` with
    metadata routing on; the test split's ``groups`` and ``controls`` then
    reach ``predict``, so each held-out plate is normalised with its own
    statistics. Without routing, scikit-learn passes no metadata to scorers,
    and the estimator warns that it got no groups.

    Parameters
    ----------
    score_func : callable, default=accuracy_score
        ``score_func(y_true, y_pred, **kwargs)``.
    response_method : {"predict", "predict_proba", "transform"}, default="predict"
        Method that makes ``y_pred``.
    greater_is_better : bool, default=True
        False for a loss, whose sign is then flipped.
    **kwargs : dict
        Passed to ``score_func``.

    Returns
    -------
    scorer : BENScorer
        A callable ``scorer(estimator, X, y, groups=..., controls=...)``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ben import BENClassifier
    >>> from sklearn_ben.metrics import make_ben_scorer
    >>> rng = np.random.RandomState(0)
    >>> X, y = rng.normal(size=(40, 4)), np.repeat([0, 1], 20)
    >>> X[y == 1] += 2
    >>> groups = np.tile(["A", "B"], 20)
    >>> clf = BENClassifier(module="mlp", max_epochs=5, random_state=0)
    >>> clf = clf.fit(X, y, groups=groups)
    >>> scorer = make_ben_scorer()
    >>> float(scorer(clf, X, y, groups=groups)) > 0.8
    True
    """
    if not callable(score_func):
        raise TypeError(
            f"score_func must be callable, but got {type(score_func).__name__}."
        )
    valid = ("predict", "predict_proba", "transform")
    if response_method not in valid:
        raise ValueError(
            f"response_method must be one of {valid}, but got {response_method!r}."
        )
    sign = 1 if greater_is_better else -1
    return BENScorer(score_func, response_method, sign, kwargs)
