"""The paper's baselines: Projection and Penalty (and the strict penalty)."""

from __future__ import annotations

import numpy as np
import torch

from fairsk import FairLayerRegressor
from fairsk.baselines import PenaltyClassifier, PenaltyRegressor, ProjectionRegressor
from fairsk.metrics import parity_gap

FAST = dict(max_epochs=8, random_state=0, solver="exact")


def data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 2, n)
    X = rng.normal(size=(n, 4)) + 0.8 * s[:, None]
    y = X[:, 0] + s + 0.1 * rng.normal(size=n)
    return X, y, s


def raw(est, X):
    return est.body64_(torch.as_tensor(X)).detach().numpy()[:, 0]


def test_projection_trains_without_the_layer_and_projects_at_predict():
    X, y, s = data()
    proj = ProjectionRegressor(tolerance=0.02, **FAST).fit(X, y, sensitive_features=s)
    plain = FairLayerRegressor(tolerance=1e6, **FAST).fit(X, y, sensitive_features=s)
    # same seed, same batches, no active layer: the same trained body
    np.testing.assert_allclose(raw(proj, X), raw(plain, X), atol=1e-6)
    assert parity_gap(proj.predict(X, sensitive_features=s), s) <= 0.02 + 1e-6


def test_penalty_predicts_raw_outputs_and_a_large_lam_shrinks_the_gap():
    X, y, s = data()
    weak = PenaltyRegressor(lam=0.0, tolerance=0.02, **FAST).fit(X, y, sensitive_features=s)
    strict = PenaltyRegressor(lam=1e3, tolerance=0.02, **FAST).fit(X, y, sensitive_features=s)
    np.testing.assert_array_equal(weak.predict(X, sensitive_features=s), raw(weak, X))
    assert parity_gap(strict.predict(X), s) < 0.5 * parity_gap(weak.predict(X), s)


def test_auto_lam_is_the_smallest_that_meets_the_tolerance_on_validation():
    X, y, s = data()
    reg = PenaltyRegressor(lam="auto", lam_grid=(0.01, 1.0, 100.0), tolerance=0.1, **FAST)
    reg.fit(X, y, sensitive_features=s)
    lams = [lam for lam, _ in reg.lam_search_]
    gaps = [gap for _, gap in reg.lam_search_]
    assert lams == sorted(lams) and reg.lam_ == lams[-1]
    assert all(g > 0.1 for g in gaps[:-1])
    assert gaps[-1] <= 0.1 or reg.lam_ == 100.0


def test_penalty_classifier_penalises_logit_gaps():
    X, y, s = data()
    yc = (y > np.median(y)).astype(int)
    weak = PenaltyClassifier(lam=0.0, **FAST).fit(X, yc, sensitive_features=s)
    strict = PenaltyClassifier(lam=1e3, **FAST).fit(X, yc, sensitive_features=s)
    assert parity_gap(strict.decision_function(X), s) < parity_gap(weak.decision_function(X), s)
