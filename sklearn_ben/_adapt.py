"""Plate statistics kept with a fitted estimator: ``adapt`` once, predict any rows.

The scikit-learn side of stored statistics. :meth:`AdaptMixin.adapt` asks the
engine (:func:`sklearn_ben.inference.group_statistics`) for the exact
batch-norm statistics of each plate and keeps them, keyed by plate and layer
name, as fitted state; predict hands them back to the engine
(``predict_by_group(..., stored=...)``), which normalises the rows of those
plates with them, however few rows come.
"""

import numpy as np
from sklearn.utils.validation import check_is_fitted

from sklearn_ben.batchnorm import named_group_layers
from sklearn_ben.exceptions import ControlsError, GroupError
from sklearn_ben.inference import group_statistics

__all__ = ["AdaptMixin"]


def _label(value):
    """A plate label as a plain Python value (the key it is kept under)."""
    return value.item() if hasattr(value, "item") else value


class AdaptMixin:
    """``adapt``, ``drop_adapted`` and ``adapted_groups_`` for BEN estimators."""

    def adapt(self, X, *, groups, controls=None):
        """Compute and keep each plate's batch-norm statistics.

        After ``adapt``, every sample of an adapted plate is normalised with
        its plate's statistics in ``predict``, ``predict_proba``,
        ``transform`` and ``score``, however many samples of the plate come in
        the call: a single image gets the output it gets inside its whole
        plate. The statistics are exact: those of the whole plate
        (``norm="group"``) or of its controls (``norm="controls"``), computed
        in chunks of ``predict_batch_size`` when it is set. Adapting a plate
        again replaces its statistics.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W) or (n_samples, n_features)
            All samples of the plates to adapt (or a torch ``Dataset``).
        groups : array-like of shape (n_samples,)
            Plate of each sample; each plate needs at least 2 samples.
        controls : array-like of bool, shape (n_samples,), default=None
            Control mask; needed with ``norm="controls"`` (at least 2 controls
            per plate).

        Returns
        -------
        self : estimator instance
            The estimator, with ``plate_statistics_`` updated.

        Notes
        -----
        Stored statistics win over plate-mates: a sample of an adapted plate
        is normalised with the stored statistics even when other samples of
        its plate are in the same call, so its output never depends on what
        else is predicted with it. Plates that were not adapted are
        normalised as before, with the statistics of their samples in the
        call. With ``norm="frozen"`` there is nothing to adapt (running
        averages are used), and stored statistics are not used.

        The statistics belong to the fitted network: ``fit`` discards them,
        and ``clone``/``get_params`` do not carry them. ``joblib``/pickle and
        :func:`sklearn_ben.save` keep them.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn_ben import BENClassifier
        >>> from sklearn_ben.datasets import make_plates
        >>> data = make_plates(n_plates=3, n_samples_per_plate=24, image_size=16,
        ...                    random_state=0)
        >>> clf = BENClassifier(max_epochs=1, random_state=0)
        >>> clf = clf.fit(data.X, data.y, groups=data.groups)
        >>> new = data.groups == data.groups[-1]
        >>> clf = clf.adapt(data.X[new], groups=data.groups[new])
        >>> clf.adapted_groups_.tolist() == [data.groups[-1]]
        True
        >>> one = clf.predict_proba(data.X[-1:], groups=data.groups[-1:])
        >>> whole = clf.predict_proba(data.X[new], groups=data.groups[new])
        >>> bool(np.allclose(one, whole[-1:], atol=1e-5))
        True
        """
        X, groups, controls, norm = self._check_adapt_inputs(X, groups, controls)
        module = self.net_.module_
        found = group_statistics(
            module,
            X,
            groups,
            controls if norm.controls else None,
            use_controls=norm.controls,
            **self._engine_settings(),  # the same inputs and settings as predict
        )
        names = {layer: name for name, layer in named_group_layers(module)}
        new = {
            _label(group): {
                names[layer]: (
                    mean.detach().float().cpu().clone(),
                    var.detach().float().cpu().clone(),
                )
                for layer, (mean, var) in stats.items()
            }
            for group, stats in found.items()
        }
        # One assignment each: a concurrent predict sees the old or the new dict.
        self.adapted_norm_ = self.norm
        self.plate_statistics_ = {**self.plate_statistics_, **new}
        return self

    def drop_adapted(self, groups=None):
        """Forget the stored statistics of some plates (all with ``None``).

        Parameters
        ----------
        groups : array-like or None, default=None
            Labels of the plates to drop; None drops every adapted plate.

        Returns
        -------
        self : estimator instance
        """
        check_is_fitted(self)
        if groups is None:
            self.plate_statistics_ = {}
            return self
        labels = [_label(g) for g in np.atleast_1d(np.asarray(groups, dtype=object))]
        unknown = [g for g in labels if g not in self.plate_statistics_]
        if unknown:
            raise GroupError(
                f"{len(unknown)} plate(s) to drop were never adapted, e.g. "
                f"{unknown[0]!r}; adapted plates are listed in adapted_groups_."
            )
        dropped = set(labels)
        self.plate_statistics_ = {
            g: s for g, s in self.plate_statistics_.items() if g not in dropped
        }
        return self

    @property
    def adapted_groups_(self):
        """ndarray: labels of the plates whose statistics are kept, in order."""
        check_is_fitted(self)
        labels = list(getattr(self, "plate_statistics_", {}))
        return np.asarray(labels) if labels else np.empty(0, dtype=object)

    def _check_adapt_inputs(self, X, groups, controls):
        """Validate everything ``adapt`` needs, without changing ``self``."""
        check_is_fitted(self)
        norm = self._norm()
        if not norm.per_group:
            raise ValueError(
                "norm='frozen' normalises with the running averages of training, "
                "so there are no plate statistics to adapt; use norm='group' or "
                "norm='controls' to keep each plate's statistics."
            )
        if groups is None:
            raise GroupError(
                "adapt computes the statistics of each plate, but got "
                "groups=None; pass groups=<plate of each sample>."
            )
        if norm.controls and controls is None:
            raise ControlsError(
                "norm='controls' adapts each plate to its control samples, but "
                "adapt got controls=None; pass controls=<boolean mask> or use "
                "norm='group'."
            )
        self._check_adapted_norm(
            "call drop_adapted() first, then adapt every plate again."
        )
        X, groups, controls, norm, _ = self._check_predict_inputs(
            X, groups, controls, "adapt", use_stored=False
        )
        return X, groups, controls, norm

    def _check_adapted_norm(self, fix: str) -> None:
        """Refuse stored statistics kept for another ``norm`` than the current."""
        held = getattr(self, "adapted_norm_", None)
        stored = getattr(self, "plate_statistics_", None)
        if stored and held is not None and held != self.norm:
            raise ValueError(
                f"The {len(stored)} adapted plate(s) hold statistics for "
                f"norm={held!r}, but norm is now {self.norm!r}; {fix}"
            )

    def _stored_statistics(self, groups, norm):
        """``{plate: stats}`` for the adapted plates among ``groups``, and the
        mask of the rows of other plates."""
        held = getattr(self, "plate_statistics_", None) or {}
        pending = np.ones(len(groups), dtype=bool)
        if not held or not norm.per_group:
            return {}, pending
        self._check_adapted_norm(
            "set norm back, or call drop_adapted() and adapt the plates again."
        )
        labels, inverse = np.unique(groups, return_inverse=True)
        is_held = np.array([_label(g) in held for g in labels])
        stored = {_label(g): held[_label(g)] for g in labels[is_held]}
        return stored, ~is_held[inverse]

    def _stored_layers(self, stored):
        """Stored statistics keyed by layer modules, as the engine takes them."""
        layers = dict(named_group_layers(self.net_.module_))
        return {
            group: {layers[name]: st for name, st in stats.items()}
            for group, stats in stored.items()
        }
