"""``FairLayerClassifier(calibration_cv=k)``: thresholds on out-of-fold scores of every row."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold
from sklearn.utils._param_validation import InvalidParameterError

from fairsk import FairLayerClassifier
from fairsk.calibration import ErrorRateCalibrator
from fairsk.metrics import equal_opportunity_gap, equalized_odds_gap
from fairsk.persistence import load, save

FAST = dict(max_epochs=3, random_state=0, solver="exact", batch_size=128)


def data(n=900, seed=0):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 2, n)
    X = np.column_stack([rng.normal(size=n) + 0.8 * s, rng.normal(size=(n, 3))])
    y = (X[:, 0] + 0.7 * s + 0.8 * rng.normal(size=n) > 0.8).astype(int)
    return X, y, s


@pytest.mark.parametrize("criterion", ["equal_opportunity", "equalized_odds"])
def test_thresholds_are_learnt_on_out_of_fold_scores_and_the_net_on_every_row(criterion):
    X, y, s = data()
    clf = FairLayerClassifier(criterion=criterion, tolerance=0.03, calibration_cv=3, **FAST)
    clf.fit(X, y, sensitive_features=s)
    # the net is the one trained on every row without calibration
    full = FairLayerClassifier(criterion=criterion, tolerance=0.03, calibration_fraction=None, **FAST)
    full.fit(X, y, sensitive_features=s)
    np.testing.assert_array_equal(clf.predict_proba(X, sensitive_features=s),
                                  full.predict_proba(X, sensitive_features=s))
    assert clf.train_worst_batch_gap_ == full.train_worst_batch_gap_
    # the out-of-fold scores, recomputed from outside with fold models of the same parameters
    oof = np.empty(len(y))
    folds = StratifiedKFold(3, shuffle=True, random_state=clf._seed() % (2**31 - 1)).split(X, s * 2 + y)
    for train, test in folds:
        fold = clone(full).fit(X[train], y[train], sensitive_features=s[train])
        oof[test] = fold.predict_proba(X[test], sensitive_features=s[test])[:, 1]
    assert not np.allclose(oof, full.predict_proba(X, sensitive_features=s)[:, 1])  # new data to each fold
    ref = ErrorRateCalibrator(criterion, 0.03, random_state=clf._seed()).fit(oof, y, s)
    np.testing.assert_allclose(clf.thresholds_, ref.thresholds_, rtol=1e-6)
    assert clf.calibrator_.n_calibration_ == len(y)  # every row calibrates
    gap = equal_opportunity_gap if criterion == "equal_opportunity" else equalized_odds_gap
    assert gap(y, oof > clf.thresholds_[s], s) <= 0.03 + 1e-9  # the criterion holds on the out-of-fold scores
    assert clf.gap_interval_ == clf.calibrator_.gap_interval_


def test_parameters_are_checked_and_the_model_round_trips(tmp_path):
    X, y, s = data(400)
    with pytest.raises(InvalidParameterError, match="calibration_cv"):
        FairLayerClassifier(criterion="equalized_odds", calibration_cv=1, **FAST).fit(X, y, sensitive_features=s)
    with pytest.raises(ValueError, match="exclude each other"):
        FairLayerClassifier(criterion="equalized_odds", calibration_cv=3, **FAST).fit(
            X, y, sensitive_features=s, calibration_mask=np.arange(400) < 100)
    # without groups there is nothing to calibrate
    plain = FairLayerClassifier(criterion="equalized_odds", calibration_cv=3, **FAST)
    with pytest.warns(UserWarning):
        plain.fit(X, y)
    assert plain.calibrator_ is None
    clf = FairLayerClassifier(criterion="equalized_odds", calibration_cv=2, randomize=True, **FAST)
    clf.fit(X, y, sensitive_features=s)
    save(clf, tmp_path / "m.zip")
    back = load(tmp_path / "m.zip")
    assert back.calibration_cv == 2
    np.testing.assert_array_equal(back.predict(X, sensitive_features=s), clf.predict(X, sensitive_features=s))
    assert back.gap_interval_ == clf.gap_interval_
