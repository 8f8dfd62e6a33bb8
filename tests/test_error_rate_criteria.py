"""``FairLayerClassifier(criterion="equal_opportunity" | "equalized_odds")``.

Every claim is checked from outside: the training batches' gaps are recomputed in
NumPy from what a callback saw, and the calibrated labels' true- and false-positive
rates from what ``predict`` returns.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import sklearn
import torch
from sklearn.model_selection import GridSearchCV, cross_validate
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks
from skorch.callbacks import Callback

from fairsk import FairLayerClassifier, FairnessLayer, StreamingFairPredictor
from fairsk.baselines import PenaltyClassifier, ProjectionClassifier
from fairsk.metrics import equalized_odds_gap, fairness_report
from fairsk.odds import ErrorRateLayer, batch_error_rate_gap
from fairsk.persistence import load, save
from fairsk.projection import CRITERIA, get_criterion

ERROR_CRITERIA = ("equal_opportunity", "equalized_odds")
FAST = dict(max_epochs=3, random_state=0, solver="exact", batch_size=128)


def data(n=1200, seed=0, attributes=1):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 2, size=(n, attributes))
    X = np.column_stack([rng.normal(size=n) + 0.8 * s[:, 0], rng.normal(size=(n, 3))])
    y = (X[:, 0] + 0.7 * s[:, 0] + 0.8 * rng.normal(size=n) > 0.8).astype(int)
    return X, y, (s[:, 0] if attributes == 1 else s)


def rates(labels, y, groups, positive_label=1):
    """{(attribute, group): (tpr, fpr)} recomputed from labels (NaN where undefined)."""
    groups = np.asarray(groups).reshape(len(y), -1)
    hit, pos = np.asarray(labels) == positive_label, np.asarray(y) == positive_label
    out = {}
    for a in range(groups.shape[1]):
        for g in np.unique(groups[:, a]):
            m = groups[:, a] == g
            out[a, g] = (hit[m & pos].mean() if (m & pos).any() else np.nan,
                         hit[m & ~pos].mean() if (m & ~pos).any() else np.nan)
    return out


def error_gap(labels, y, groups, criterion, cells=False):
    """Largest difference of TPR (and FPR) between groups; ``cells``: between the
    combinations of all attributes' values (what the thresholds are fitted on)."""
    groups = np.asarray(groups).reshape(len(y), -1)
    if cells:
        groups = np.unique(groups, axis=0, return_inverse=True)[1].reshape(-1, 1)
    r = rates(labels, y, groups)
    gap = 0.0
    for a in range(groups.shape[1]):
        for k in ((0,) if criterion == "equal_opportunity" else (0, 1)):
            vals = [v[k] for (b, _), v in r.items() if b == a and not np.isnan(v[k])]
            if len(vals) > 1:
                gap = max(gap, max(vals) - min(vals))
    return gap


class BatchRecorder(Callback):
    """Keeps every training batch's projected probabilities, labels and groups."""

    def on_train_begin(self, net, **kwargs):
        self.batches_ = []

    def on_batch_end(self, net, batch=None, training=False, y_pred=None, **kwargs):
        if training:
            Xi, yi = batch
            self.batches_.append((y_pred.detach().double().numpy()[:, 0], yi.numpy().reshape(-1),
                                  Xi.groups.numpy()))


class Recorded(FairLayerClassifier):
    def _callbacks(self):
        self.recorder_ = BatchRecorder()
        return super()._callbacks() + [("recorder", self.recorder_)]


# -- the criterion objects -----------------------------------------------------------
def test_registered_next_to_the_other_criteria():
    for name in ERROR_CRITERIA:
        crit = get_criterion(name)
        assert CRITERIA[name] is crit and crit.name == name
        assert crit.needs_targets and crit.label_strata
    assert not getattr(get_criterion("ecp"), "label_strata", False)
    assert not getattr(get_criterion("eer"), "label_strata", False)
    labels = np.array([1, 0, 1, 1])
    (col, eo), = get_criterion("equal_opportunity").strata(labels)
    (_, odds), = get_criterion("equalized_odds").strata(labels)
    assert col == 0 and len(eo) == 1 and eo[0].tolist() == [True, False, True, True]
    assert len(odds) == 2 and odds[1].tolist() == [False, True, False, False]


@pytest.mark.parametrize("criterion", ERROR_CRITERIA)
def test_the_group_mean_layer_refuses_them_with_a_pointer(criterion):
    layer = FairnessLayer(criterion, tolerance=0.0, solver="exact")
    with pytest.raises(ValueError, match="ErrorRateLayer"):
        layer(torch.rand(6, dtype=torch.float64), torch.tensor([0, 0, 0, 1, 1, 1]), torch.ones(6))


def test_a_stratum_with_one_group_adds_no_constraint():
    # group 1 has no positive row: equal opportunity constrains nothing in this batch
    p = torch.tensor([0.9, 0.2, 0.6, 0.1, 0.3, 0.8], dtype=torch.float64)
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    y = torch.tensor([1, 1, 1, 0, 0, 0])
    out = ErrorRateLayer("equal_opportunity", tolerance=0.0)(p, groups, y)
    torch.testing.assert_close(out, p)
    assert batch_error_rate_gap(p.numpy(), groups.numpy(), y.numpy(), "equalized_odds") == 0.0
    # equalized odds still constrains nothing: each stratum holds one group only
    torch.testing.assert_close(ErrorRateLayer("equalized_odds", tolerance=0.0)(p, groups, y), p)
    # a second group in the negative stratum does get constrained
    y2 = torch.tensor([1, 1, 0, 0, 0, 0])
    out2 = ErrorRateLayer("equalized_odds", tolerance=0.0)(p, groups, y2).numpy()
    assert abs(out2[2] - out2[3:].mean()) < 1e-9
    np.testing.assert_allclose(out2[:2], p.numpy()[:2])


# -- training -------------------------------------------------------------------------
@pytest.mark.parametrize("criterion", ERROR_CRITERIA)
@pytest.mark.parametrize("attributes", [1, 2])
def test_every_training_batch_meets_the_criterion(criterion, attributes):
    X, y, s = data(1000, attributes=attributes)
    tol = 0.01
    clf = Recorded(criterion=criterion, tolerance=tol, **FAST).fit(X, y, sensitive_features=s)
    batches = clf.recorder_.batches_
    assert len(batches) >= 3 * 6  # 3 epochs of ~800 training rows in batches of 128
    worst = 0.0
    for p, yb, g in batches:
        for a in range(g.shape[1]):
            strata = [yb == 1] if criterion == "equal_opportunity" else [yb == 1, yb == 0]
            for m in strata:
                present = np.unique(g[m, a])
                if present.size < 2:
                    continue
                means = [p[m & (g[:, a] == v)].mean() for v in present]
                worst = max(worst, max(means) - min(means))
    assert worst <= tol + 1e-5  # float32 outputs, certified to 1e-5
    assert worst >= tol - 1e-3  # the constraint was active: the check could fail
    assert clf.train_worst_batch_gap_ == pytest.approx(worst, abs=1e-9)
    history = clf.net_.history[:, "train_worst_batch_gap"]
    assert len(history) == 3 and max(history) == pytest.approx(worst, abs=1e-9)


# -- calibration ----------------------------------------------------------------------
@pytest.mark.parametrize("criterion", ERROR_CRITERIA)
@pytest.mark.parametrize("attributes", [1, 2])
def test_calibrated_labels_meet_the_criterion_on_the_calibration_rows(criterion, attributes):
    X, y, s = data(1500, seed=1, attributes=attributes)
    held = np.random.default_rng(0).random(len(y)) < 0.3
    tol = 0.03
    clf = FairLayerClassifier(criterion=criterion, tolerance=tol, **FAST)
    clf.fit(X, y, sensitive_features=s, calibration_mask=held)
    labels = clf.predict(X[held], sensitive_features=s[held])
    gap = error_gap(labels, y[held], s[held], criterion, cells=True)
    assert gap <= tol + 1e-9
    assert gap == pytest.approx(clf.calibration_gap_, abs=1e-9)
    # marginal groups of each attribute are averages of the cells: within tol too
    assert error_gap(labels, y[held], s[held], criterion) <= tol + 1e-9
    # without calibration the labels are the argmax, and break the criterion here
    raw = (clf.predict_proba(X[held], sensitive_features=s[held])[:, 1] > 0.5).astype(int)
    assert error_gap(raw, y[held], s[held], criterion, cells=True) > tol
    lo, hi = clf.gap_interval_
    assert 0 <= lo <= clf.gap_estimate_ <= hi <= 1
    assert clf.thresholds_.shape == (2 ** attributes,)


def test_calibration_fraction_holds_out_stratified_rows_and_zero_turns_it_off():
    X, y, s = data(1000)
    clf = Recorded(criterion="equalized_odds", tolerance=0.05, **FAST).fit(X, y, sensitive_features=s)
    trained = sum(len(b[0]) for b in clf.recorder_.batches_) // 3
    assert trained == 1000 - 200  # 20% of every (group, label) stratum, rounded
    assert clf.calibrator_ is not None and clf.calibration_gap_ <= 0.05 + 1e-9
    off = Recorded(criterion="equalized_odds", calibration_fraction=0, **FAST).fit(X, y, sensitive_features=s)
    assert sum(len(b[0]) for b in off.recorder_.batches_) // 3 == 1000
    assert off.calibrator_ is None and off.gap_estimate_ is None and off.gap_interval_ is None
    proba = off.predict_proba(X, sensitive_features=s)
    np.testing.assert_array_equal(off.predict(X, sensitive_features=s), np.argmax(proba, 1))
    # calibrate afterwards, on any labelled data
    off.calibrate(X[:400], y[:400], sensitive_features=s[:400])
    assert error_gap(off.predict(X[:400], sensitive_features=s[:400]), y[:400], s[:400], "equalized_odds") <= 0.02


def test_predict_proba_and_decision_function_are_the_uncalibrated_scores():
    X, y, s = data(800)
    clf = FairLayerClassifier(criterion="equalized_odds", tolerance=0.02, **FAST).fit(X, y, sensitive_features=s)
    proba = clf.predict_proba(X, sensitive_features=s)
    z = clf.decision_function(X, sensitive_features=s)
    np.testing.assert_allclose(proba[:, 1], 1 / (1 + np.exp(-z)), atol=1e-9)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    # predict: the group's threshold on predict_proba[:, 1]
    groups = np.asarray(s)
    expected = (proba[:, 1] > clf.thresholds_[groups]).astype(int)
    np.testing.assert_array_equal(clf.predict(X, sensitive_features=s), expected)
    # one row at a time gives the same labels (per-row thresholds, no per-call projection)
    np.testing.assert_array_equal([clf.predict(X[i:i + 1], sensitive_features=s[i:i + 1])[0] for i in range(20)],
                                  expected[:20])


def test_randomized_thresholds_are_reproducible():
    X, y, s = data(800)
    clf = FairLayerClassifier(criterion="equalized_odds", tolerance=0.02, randomize=True, **FAST)
    clf.fit(X, y, sensitive_features=s)
    a, b = clf.predict(X, sensitive_features=s), clf.predict(X, sensitive_features=s)
    np.testing.assert_array_equal(a, b)
    assert clf.calibrator_.randomize and clf.calibration_gap_ <= 0.02 + 1e-6


# -- model selection and routing -----------------------------------------------------
def test_grid_search_over_criterion_and_tolerance_with_routing():
    X, y, s = data(900)
    with sklearn.config_context(enable_metadata_routing=True):
        clf = FairLayerClassifier(**FAST).set_fit_request(sensitive_features=True)
        clf.set_score_request(sensitive_features=True)
        search = GridSearchCV(clf, {"criterion": ["ecp", *ERROR_CRITERIA], "tolerance": [0.02, 0.2]}, cv=3)
        search.fit(X, y, sensitive_features=s)
    scores = search.cv_results_["mean_test_score"]
    assert len(scores) == 6 and np.isfinite(scores).all() and (scores > 0.5).all()
    best = search.best_estimator_
    assert best.criterion in ("ecp", *ERROR_CRITERIA)
    assert best.predict(X, sensitive_features=s).shape == (900,)


def test_calibration_mask_is_routed_and_split_with_the_rows():
    X, y, s = data(900)
    held = np.arange(900) % 4 == 0
    with sklearn.config_context(enable_metadata_routing=True):
        clf = FairLayerClassifier(criterion="equal_opportunity", tolerance=0.05, **FAST)
        clf.set_fit_request(sensitive_features=True, calibration_mask=True).set_score_request(sensitive_features=True)
        res = cross_validate(clf, X, y, cv=3, params={"sensitive_features": s, "calibration_mask": held},
                             return_estimator=True)
    assert np.isfinite(res["test_score"]).all()
    for est in res["estimator"]:
        assert est.calibration_gap_ <= 0.05 + 1e-9


# -- persistence ------------------------------------------------------------------------
@pytest.mark.parametrize("criterion", ERROR_CRITERIA)
def test_save_load_and_pickle_predict_identically(criterion, tmp_path):
    X, y, s = data(800)
    clf = FairLayerClassifier(criterion=criterion, tolerance=0.02, **FAST).fit(X, y, sensitive_features=s)
    save(clf, tmp_path / "m.zip")
    for other in (load(tmp_path / "m.zip"), pickle.loads(pickle.dumps(clf))):
        np.testing.assert_array_equal(other.predict(X, sensitive_features=s), clf.predict(X, sensitive_features=s))
        np.testing.assert_array_equal(other.predict_proba(X, sensitive_features=s),
                                      clf.predict_proba(X, sensitive_features=s))
        assert other.gap_interval_ == clf.gap_interval_ and other.gap_estimate_ == clf.gap_estimate_
        assert other.train_worst_batch_gap_ == clf.train_worst_batch_gap_
        np.testing.assert_array_equal(other.thresholds_, clf.thresholds_)
    uncalibrated = FairLayerClassifier(criterion=criterion, calibration_fraction=None, **FAST)
    uncalibrated.fit(X, y, sensitive_features=s)
    save(uncalibrated, tmp_path / "u.zip")
    back = load(tmp_path / "u.zip")
    assert back.calibrator_ is None
    np.testing.assert_array_equal(back.predict(X, sensitive_features=s), uncalibrated.predict(X, sensitive_features=s))


# -- the report -------------------------------------------------------------------------
def test_fairness_report_shows_error_rates_and_the_interval():
    X, y, s = data(800)
    clf = FairLayerClassifier(criterion="equalized_odds", tolerance=0.02, **FAST).fit(X, y, sensitive_features=s)
    labels = clf.predict(X, sensitive_features=s)
    report = fairness_report(y, labels, s, estimator=clf)
    r = rates(labels, y, s)
    np.testing.assert_allclose(report["tpr"].to_numpy(), [r[0, 0][0], r[0, 1][0]])
    np.testing.assert_allclose(report["fpr"].to_numpy(), [r[0, 0][1], r[0, 1][1]])
    assert report.attrs["gap_interval"] == clf.gap_interval_
    assert report.attrs["gap_estimate"] == clf.gap_estimate_ and report.attrs["criterion"] == "equalized_odds"
    assert equalized_odds_gap(y, labels, s) == pytest.approx(
        max(np.ptp(report["tpr"]), np.ptp(report["fpr"])), abs=1e-12)
    # scores, not labels: no error-rate columns unless asked
    assert "tpr" not in fairness_report(y, clf.predict_proba(X, sensitive_features=s)[:, 1], s).columns


# -- bad input --------------------------------------------------------------------------
@pytest.mark.parametrize("enforce_on", ["proba", "logits"])
def test_error_rate_criteria_need_enforce_on_labels(enforce_on):
    X, y, s = data(200)
    with pytest.raises(ValueError, match="enforce_on='labels'"):
        FairLayerClassifier(criterion="equalized_odds", enforce_on=enforce_on, **FAST).fit(X, y, sensitive_features=s)


def test_bad_input_is_refused_clearly():
    X, y, s = data(300)
    clf = FairLayerClassifier(criterion="equalized_odds", **FAST)
    y3 = y + (X[:, 1] > 1)
    with pytest.raises(ValueError, match="binary targets"):
        clf.fit(X, y3, sensitive_features=s)
    clf.fit(X, y3)  # several classes without groups: an ordinary unconstrained model (warns)
    assert clf.predict_proba(X).shape == (300, 3)
    assert clf.train_worst_batch_gap_ is None and clf.calibrator_ is None  # nothing was constrained
    with pytest.raises(ValueError, match="calibration_mask must be a boolean"):
        clf.fit(X, y, sensitive_features=s, calibration_mask=np.ones(10, bool))
    with pytest.raises(ValueError, match="some rows for calibration"):
        clf.fit(X, y, sensitive_features=s, calibration_mask=np.zeros(300, bool))
    with pytest.raises(ValueError, match="no sensitive_features"):
        clf.fit(X, y, calibration_mask=np.arange(300) < 50)
    with pytest.raises(ValueError, match="calibration_mask is used by"):
        FairLayerClassifier(**FAST).fit(X, y, sensitive_features=s, calibration_mask=np.arange(300) < 50)
    with pytest.raises(InvalidParameterError):
        FairLayerClassifier(calibration_fraction=1.0).fit(X, y, sensitive_features=s)
    with pytest.raises(InvalidParameterError):  # the baselines train without the layer
        ProjectionClassifier(criterion="equalized_odds").fit(X, y)
    with pytest.raises(InvalidParameterError):
        PenaltyClassifier(criterion="equalized_odds", lam=1.0).fit(X, y)
    fitted = FairLayerClassifier(criterion="equalized_odds", **FAST).fit(X, y, sensitive_features=s)
    with pytest.raises(ValueError, match="not seen in calibration"):
        fitted.predict(X[:3], sensitive_features=[0, 1, 7])
    with pytest.raises(ValueError, match="single class"):
        fitted.calibrate(X[y == 1], y[y == 1], sensitive_features=s[y == 1])
    with pytest.raises(ValueError, match="calibrate applies"):
        FairLayerClassifier(**FAST).fit(X, y, sensitive_features=s).calibrate(X, y, sensitive_features=s)
    with pytest.raises(ValueError, match="DelayedLabelMonitor"):
        StreamingFairPredictor(FairLayerClassifier(criterion="equal_opportunity", **FAST)).fit(
            X, y, sensitive_features=s)


# -- scikit-learn's checks (without groups: the unconstrained path and the parameters,
# which both criteria share; one of them is enough) ----------------------------------------
EXPECTED_FAILED = {
    "check_sample_weight_equivalence_on_dense_data": "SGD on mini-batches: weights != repeated rows",
    "check_sample_weight_equivalence_on_sparse_data": "SGD on mini-batches: weights != repeated rows",
}


@parametrize_with_checks([FairLayerClassifier(criterion="equalized_odds", max_epochs=40, random_state=0,
                                              solver="exact")], expected_failed_checks=lambda est: EXPECTED_FAILED)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
