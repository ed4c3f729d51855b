"""PlateMetadataMixin: default requests, fit_transform, the missing-groups warning."""

import numpy as np
import pytest
from sklearn.base import BaseEstimator, TransformerMixin

from sklearn_ben._config import config_context
from sklearn_ben._metadata import PlateMetadataMixin
from sklearn_ben._plate_scaler import PlateControlScaler
from sklearn_ben._tvn import TVN
from sklearn_ben.exceptions import (
    BENError,
    MissingMetadataError,
    MissingMetadataWarning,
)


class _Recorder(PlateMetadataMixin, TransformerMixin, BaseEstimator):
    """Records the metadata each method got; warns from the method named."""

    def fit(self, X, y=None, *, groups=None, controls=None, weight=None):
        self.fit_got_ = (groups, controls, weight)
        if groups is None:
            self._warn_missing_metadata("fit", "nothing is fitted per plate")
        return self

    def transform(self, X, *, groups=None, controls=None):
        self.transform_got_ = (groups, controls)
        if controls is None:
            self._warn_missing_metadata(
                "transform", "all samples are the reference", what="controls"
            )
        return np.asarray(X)


@pytest.mark.parametrize("Estimator", [_Recorder, PlateControlScaler, TVN])
@pytest.mark.parametrize("method", ["fit", "transform"])
def test_plate_metadata_mixin_requests_groups_and_controls_by_default(
    Estimator, method
):
    requests = (
        Estimator()
        .get_metadata_routing()
        .consumes(method, ["groups", "controls", "other"])
    )
    assert requests == {"groups", "controls"}


def test_plate_metadata_mixin_fit_transform_passes_metadata_to_both():
    groups, controls = np.array([1, 2]), np.array([True, False])
    est = _Recorder()
    est.fit_transform(np.ones((2, 1)), groups=groups, controls=controls, weight=3)
    assert est.fit_got_ == (groups, controls, 3)
    assert est.transform_got_ == (groups, controls)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        ("fit", r"_Recorder\.fit got no groups, so nothing is fitted per plate\."),
        ("transform", r"_Recorder\.transform got no controls, so all samples"),
    ],
)
def test_plate_metadata_mixin_warning_names_the_method(call, match):
    est = _Recorder()
    with pytest.warns(MissingMetadataWarning, match=match):
        if call == "fit":
            est.fit(np.ones((2, 1)))
        else:
            est.transform(np.ones((2, 1)), groups=[0, 0])


def test_plate_control_scaler_warning_names_transform():
    X = np.arange(8.0).reshape(4, 2)
    with pytest.warns(
        MissingMetadataWarning, match=r"PlateControlScaler\.transform got no groups"
    ):
        PlateControlScaler().fit_transform(X)


def test_plate_metadata_mixin_raises_in_raise_mode():
    X = np.arange(8.0).reshape(4, 2)
    scaler = PlateControlScaler().fit(X)
    with config_context(on_missing_metadata="raise"):
        with pytest.raises(
            MissingMetadataError, match=r"PlateControlScaler\.transform got no groups"
        ):
            scaler.transform(X)
    with pytest.warns(MissingMetadataWarning):  # back to warning afterwards
        scaler.transform(X)


def test_missing_metadata_error_is_a_ben_error_and_a_value_error():
    assert issubclass(MissingMetadataError, BENError)
    assert issubclass(MissingMetadataError, ValueError)
