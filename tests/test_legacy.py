"""What users already have keeps working: archives written by fairsk 0.1 (format
``fairsk-model/1``, made by ``tests/fixtures/make_fixtures.py`` before the internals were
reorganised) load and predict exactly as they did."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from fairsk.persistence import load

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def expected():
    return np.load(FIXTURES / "v1_expected.npz")


def _load(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # old archives may be loaded with a warning
        return load(FIXTURES / name)


def test_v1_regressor_predicts_as_before(expected):
    reg = _load("v1_regressor.fairsk")
    X, s = expected["X"], expected["s"]
    np.testing.assert_allclose(reg.predict(X, sensitive_features=s), expected["reg_predict"], rtol=0, atol=1e-12)


def test_v1_classifier_predicts_as_before(expected):
    clf = _load("v1_classifier.fairsk")
    X, s = expected["X"], expected["s"]
    np.testing.assert_array_equal(clf.predict(X, sensitive_features=s), expected["clf_predict"])
    np.testing.assert_allclose(clf.decision_function(X, sensitive_features=s), expected["clf_decision"],
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(clf.predict_proba(X, sensitive_features=s), expected["clf_proba"], rtol=0, atol=1e-12)


def test_v1_stream_continues_as_before(expected):
    stream = _load("v1_stream.fairsk")
    X, s = expected["X"], expected["s"]
    after = np.concatenate([stream.partial_predict(X[i : i + 2], sensitive_features=s[i : i + 2])
                            for i in range(120, 200, 2)])
    np.testing.assert_allclose(after, expected["stream_after"], rtol=0, atol=1e-12)


def test_v1_archives_load_with_a_warning_and_refuse_a_key():
    with pytest.warns(UserWarning, match="not authenticated"):
        load(FIXTURES / "v1_regressor.fairsk")
    with pytest.raises(ValueError, match="cannot be authenticated"):
        load(FIXTURES / "v1_regressor.fairsk", key=b"k")


def test_v1_stream_keeps_its_strict_rule():
    stream = _load("v1_stream.fairsk")
    assert stream.slack == 0.0 and stream.prior_samples == 0 and stream.pooled_bound_ == stream._tol
