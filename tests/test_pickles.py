"""What a fitted estimator carries into its pickles (slim copies of the net)."""

import io

import joblib
import numpy as np
import torch

from tests.conftest import tiny_classifier


def _nbytes_state_dict(module):
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return len(buffer.getvalue())


def test_pickle_holds_the_network_once_and_no_optimizer_moments(plates):
    from sklearn_ben.backbones import SmallCNN

    # wide enough that weights, not skorch's bookkeeping, dominate the pickle
    clf = tiny_classifier(module=SmallCNN(width=48, n_blocks=3), max_epochs=1)
    clf.fit(plates.X, plates.y, groups=plates.groups)
    n_moments = len(clf.net_.optimizer_.state)
    buffer = io.BytesIO()
    joblib.dump(clf, buffer)
    ratio = len(buffer.getvalue()) / _nbytes_state_dict(clf.net_.module_)
    assert ratio <= 1.2, ratio
    assert len(clf.net_.optimizer_.state) == n_moments > 0  # the live net kept
    buffer.seek(0)
    loaded = joblib.load(buffer)
    assert loaded.net_.module is loaded.net_.module_  # one network in memory
    np.testing.assert_array_equal(
        loaded.predict_proba(plates.X, groups=plates.groups),
        clf.predict_proba(plates.X, groups=plates.groups),
    )
