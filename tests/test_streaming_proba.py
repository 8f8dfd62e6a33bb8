"""Streams of probabilities (``enforce_on="proba"``): the pooled means of the emitted
probabilities per group stay within the pooled bound after every call, checked from
outside on everything emitted."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fairsk import FairLayerClassifier, FairLayerRegressor
from fairsk.persistence import load, save
from fairsk.streaming import StreamingFairPredictor


def data(seed=0, n=600, k=3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    s = rng.choice(np.array(["a", "b", "c", "d"])[:k], size=n, p=np.array([0.55, 0.3, 0.1, 0.05])[:k]
                   / np.array([0.55, 0.3, 0.1, 0.05])[:k].sum())
    y = (X[:, 0] + (s == "a") + rng.normal(size=n) > 0.5).astype(int)
    return X, y, s


@pytest.fixture(scope="module")
def fitted():
    X, y, s = data()
    clf = FairLayerClassifier(enforce_on="proba", solver="exact", max_epochs=3, random_state=0, tolerance=0.05)
    return clf.fit(X[:300], y[:300], sensitive_features=s[:300]), (X, y, s)


def pooled_gap(p, g):
    means = [p[g == v].mean() for v in np.unique(g)]
    return max(means) - min(means)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), slack=st.sampled_from([0.0, 1.0]), tol=st.sampled_from([0.01, 0.05, 0.2]))
def test_pooled_probability_means_stay_within_the_bound_after_every_call(fitted, seed, slack, tol):
    clf, (X, _, s) = fitted
    stream = StreamingFairPredictor(clf, tolerance=tol, slack=slack, enforce_on="proba").fit(
        X[:300], fitted[1][1][:300], sensitive_features=s[:300])
    rng = np.random.default_rng(seed)
    emitted, groups, i = [], [], 300
    while i < 600:
        size = int(rng.integers(1, 6))
        proba = stream.partial_predict_proba(X[i:i + size], sensitive_features=s[i:i + size])
        assert proba.shape == (min(size, 600 - i), 2)
        np.testing.assert_allclose(proba.sum(1), 1.0)
        assert proba.min() >= 0.0 and proba.max() <= 1.0
        emitted += list(proba[:, 1])
        groups += list(s[i:i + size])
        i += size
        gap = pooled_gap(np.array(emitted), np.array(groups))
        assert gap <= stream.pooled_bound_ + 1e-9
        assert abs(gap - stream.pooled_gap_) <= 1e-9
        if slack == 0:
            assert stream.pooled_bound_ == tol


def test_labels_and_logits_of_a_probability_stream_follow_its_probabilities(fitted):
    clf, (X, y, s) = fitted
    a = StreamingFairPredictor(clf, slack=0).fit(X[:300], y[:300], sensitive_features=s[:300])
    b = StreamingFairPredictor(clf, slack=0).fit(X[:300], y[:300], sensitive_features=s[:300])
    c = StreamingFairPredictor(clf, slack=0).fit(X[:300], y[:300], sensitive_features=s[:300])
    for i in range(300, 360, 3):
        p = a.partial_predict_proba(X[i:i + 3], sensitive_features=s[i:i + 3])[:, 1]
        labels = b.partial_predict(X[i:i + 3], sensitive_features=s[i:i + 3])
        logits = c.partial_decision_function(X[i:i + 3], sensitive_features=s[i:i + 3])
        np.testing.assert_array_equal(labels, clf.classes_[(p >= 0.5).astype(int)])
        np.testing.assert_allclose(1.0 / (1.0 + np.exp(-logits)), p, atol=1e-12)


def test_a_probability_stream_saved_mid_stream_continues_identically(fitted, tmp_path):
    clf, (X, y, s) = fitted
    stream = StreamingFairPredictor(clf).fit(X[:300], y[:300], sensitive_features=s[:300])
    for i in range(300, 330, 3):
        stream.partial_predict_proba(X[i:i + 3], sensitive_features=s[i:i + 3])
    save(stream, tmp_path / "stream.fairsk")
    back = load(tmp_path / "stream.fairsk")
    for i in range(330, 360, 3):
        np.testing.assert_allclose(back.partial_predict_proba(X[i:i + 3], sensitive_features=s[i:i + 3]),
                                   stream.partial_predict_proba(X[i:i + 3], sensitive_features=s[i:i + 3]),
                                   atol=1e-12)
    assert back.pooled_gap_ == pytest.approx(stream.pooled_gap_, abs=1e-12)


def test_probabilities_are_refused_where_they_are_not_the_stream(fitted):
    clf, (X, y, s) = fitted
    logits = StreamingFairPredictor(clf, enforce_on="logits").fit(X[:300], y[:300], sensitive_features=s[:300])
    with pytest.raises(ValueError, match="not probabilities"):
        logits.partial_predict_proba(X[:2], sensitive_features=s[:2])
    y3 = np.arange(300) % 3
    multi = StreamingFairPredictor(FairLayerClassifier(enforce_on="proba", solver="exact", max_epochs=1,
                                                       random_state=0))
    with pytest.raises(ValueError, match="binary classifier"):
        multi.fit(X[:300], y3, sensitive_features=s[:300])
    reg = StreamingFairPredictor(FairLayerRegressor(solver="exact", max_epochs=1, random_state=0))
    reg.fit(X[:300], y[:300].astype(float), sensitive_features=s[:300])
    assert not hasattr(reg, "partial_predict_proba")
