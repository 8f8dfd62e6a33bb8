"""ErrorRateCalibrator: the criterion on calibration data, optimality, the gap on new data."""

import itertools

import cvxpy as cp
import numpy as np
import pandas as pd
import pytest

from fairsk.calibration import ErrorRateCalibrator
from fairsk.metrics import equal_opportunity_gap, equalized_odds_gap

CRITERIA = ["equal_opportunity", "equalized_odds"]


def _data(seed, n, k=2, shift=0.6):
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, k, n)
    y = (rng.random(n) < 0.3 + 0.1 * groups).astype(int)
    scores = rng.normal(1.2 * y + shift * groups, 1.0)
    return scores, y, groups


def _gap(criterion, y, pred, groups):
    f = equal_opportunity_gap if criterion == "equal_opportunity" else equalized_odds_gap
    return f(y, pred, groups)


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("tol", [0.0, 0.02, 0.1])
@pytest.mark.parametrize("k", [2, 3])
def test_criterion_holds_on_calibration_data(criterion, tol, k):
    scores, y, groups = _data(k, 900, k)
    assert _gap(criterion, y, scores > 0.8, groups) > 0.1  # the raw rule is unfair
    cal = ErrorRateCalibrator(criterion, tol, n_bootstrap=20).fit(scores, y, groups)
    labels = cal.predict(scores, groups)
    assert set(np.unique(labels)) <= {0, 1}
    assert _gap(criterion, y, labels, groups) <= tol + 1e-9
    assert cal.calibration_gap_ == pytest.approx(_gap(criterion, y, labels, groups), abs=1e-12)
    assert cal.calibration_accuracy_ == pytest.approx(np.mean(labels == y))
    # randomized: the criterion holds for the expected labels (the linear program's accuracy)
    rnd = ErrorRateCalibrator(criterion, tol, randomize=True, n_bootstrap=20).fit(scores, y, groups)
    p = rnd.emit_probability(scores, groups)
    assert _gap(criterion, y, p, groups) <= tol + 1e-6
    assert rnd.calibration_accuracy_ >= cal.calibration_accuracy_ - 1e-9


def test_several_attributes_calibrate_every_combination():
    scores, y, g1 = _data(5, 1500, 2)
    g2 = np.random.default_rng(6).integers(0, 2, 1500)
    s = pd.DataFrame({"sex": np.where(g1 == 1, "m", "f"), "age": g2})
    cal = ErrorRateCalibrator("equalized_odds", 0.03, n_bootstrap=20).fit(scores + 0.4 * g2, y, s)
    assert len(cal.group_labels_) == 4 and ("f", 0) in cal.group_labels_
    labels = cal.predict(scores + 0.4 * g2, s)
    # equal rates on every combination bound the gap of each attribute alone
    assert equalized_odds_gap(y, labels, s) <= 0.03 + 1e-9
    assert equalized_odds_gap(y, labels, g1 * 2 + g2) <= 0.03 + 1e-9


def test_deterministic():
    scores, y, groups = _data(1, 800)
    a = ErrorRateCalibrator(n_bootstrap=30).fit(scores, y, groups)
    b = ErrorRateCalibrator(n_bootstrap=30).fit(scores, y, groups)
    np.testing.assert_array_equal(a.thresholds_, b.thresholds_)
    assert a.gap_interval_ == b.gap_interval_ and a.gap_estimate_ == b.gap_estimate_
    r = ErrorRateCalibrator(randomize=True, n_bootstrap=30).fit(scores, y, groups)
    np.testing.assert_array_equal(r.predict(scores, groups), r.predict(scores, groups))


def _brute_force_best(scores, y, groups, criterion, tol):
    """Most correct labels over every choice of one threshold per group, by enumeration."""
    options = []
    for g in np.unique(groups):
        m = groups == g
        cuts = np.r_[np.inf, np.unique(scores[m]), -np.inf]  # label positive when score >= cut
        rows = []
        for c in cuts:
            pred = scores[m] >= c
            pos, neg = y[m] == 1, y[m] == 0
            tpr = pred[pos].mean() if pos.any() else None
            fpr = pred[neg].mean() if neg.any() else None
            rows.append((int((pred == (y[m] == 1)).sum()), tpr, fpr))
        options.append(rows)
    best = -1
    for combo in itertools.product(*options):
        ok = True
        for j in (1, 2) if criterion == "equalized_odds" else (1,):
            rates = [r[j] for r in combo if r[j] is not None]
            ok &= not rates or max(rates) - min(rates) <= tol + 1e-12
        if ok:
            best = max(best, sum(r[0] for r in combo))
    return best


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("seed", range(8))
def test_deterministic_thresholds_are_optimal_by_brute_force(criterion, seed):
    rng = np.random.default_rng(seed)
    k = 2 + seed % 2
    n = 15 if k == 2 else 12
    groups = rng.integers(0, k, n)
    y = rng.integers(0, 2, n)
    scores = np.round(rng.normal(y + 0.7 * groups, 1.0), 1)  # ties included
    tol = [0.0, 0.1, 0.25, 0.5][seed % 4]
    cal = ErrorRateCalibrator(criterion, tol, n_bootstrap=5).fit(scores, y, groups)
    best = _brute_force_best(scores, y, groups, criterion, tol)
    assert round(cal.calibration_accuracy_ * n) == best


def _cvxpy_randomized_best(scores, y, groups, criterion, tol):
    """The best randomized per-group threshold rule, as an LP over pairwise rate differences."""
    total, rates, cons = 0, [], []
    for g in np.unique(groups):
        m = groups == g
        cuts = np.r_[np.inf, np.unique(scores[m]), -np.inf]
        preds = np.array([scores[m] >= c for c in cuts], dtype=float)  # (cuts, n_g)
        w = cp.Variable(len(cuts), nonneg=True)
        cons.append(cp.sum(w) == 1)
        correct = (preds == (y[m] == 1)).sum(1)
        total = total + correct @ w
        pos, neg = y[m] == 1, y[m] == 0
        tpr = preds[:, pos].mean(1) @ w if pos.any() else None
        fpr = preds[:, neg].mean(1) @ w if neg.any() else None
        rates.append((tpr, fpr))
    for j in (0, 1) if criterion == "equalized_odds" else (0,):
        rj = [r[j] for r in rates if r[j] is not None]
        cons += [a - b <= tol for a in rj for b in rj if a is not b]
    prob = cp.Problem(cp.Maximize(total), cons)
    prob.solve(solver=cp.CLARABEL)
    return prob.value


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("seed", range(4))
def test_randomized_rule_is_the_lp_optimum(criterion, seed):
    scores, y, groups = _data(seed, 60, 2 + seed % 2, shift=1.0)
    scores = np.round(scores, 1)
    tol = [0.0, 0.05][seed % 2]
    cal = ErrorRateCalibrator(criterion, tol, randomize=True, n_bootstrap=5).fit(scores, y, groups)
    best = _cvxpy_randomized_best(scores, y, groups, criterion, tol)
    assert cal.calibration_accuracy_ * len(y) == pytest.approx(best, abs=1e-5)
    # ... and it beats (or ties) the best deterministic rule
    det = ErrorRateCalibrator(criterion, tol, n_bootstrap=5).fit(scores, y, groups)
    assert cal.calibration_accuracy_ >= det.calibration_accuracy_ - 1e-9


def test_bad_input():
    scores, y, groups = _data(0, 200)
    with pytest.raises(ValueError, match="two classes"):
        ErrorRateCalibrator().fit(scores, np.arange(200) % 3, groups)
    with pytest.raises(ValueError, match="pos_label"):
        ErrorRateCalibrator(pos_label=7).fit(scores, y, groups)
    with pytest.raises(ValueError, match="NaN"):
        ErrorRateCalibrator().fit(np.r_[np.nan, scores[1:]], y, groups)
    with pytest.raises(ValueError, match="rows"):
        ErrorRateCalibrator().fit(scores, y[:-1], groups)
    with pytest.raises(ValueError, match="criterion"):
        ErrorRateCalibrator(criterion="ecp").fit(scores, y, groups)
    cal = ErrorRateCalibrator(n_bootstrap=5).fit(scores, y, groups)
    with pytest.raises(ValueError, match="not seen"):
        cal.predict(scores[:3], [0, 1, 9])
    # string labels and predict_proba-shaped scores
    ys = np.where(y == 1, "yes", "no")
    cal = ErrorRateCalibrator(pos_label="yes", n_bootstrap=5).fit(np.stack([-scores, scores], 1), ys, groups)
    assert set(cal.predict(np.stack([-scores, scores], 1), groups)) <= {"yes", "no"}


@pytest.mark.slow
def test_adult_test_gap_within_tolerance_plus_interval():
    """Over several train / calibration / test splits of Adult: the test gap of the
    calibrated labels is within tolerance + the width of the interval announced for a
    test set of that size, and that interval covers it."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from fairsk.datasets import load_adult

    X, y, s = load_adult(subset="train", sensitive=("sex",))
    X_te, y_te, s_te = load_adult(subset="test", sensitive=("sex",))
    cat = [c for c in X.columns if str(X[c].dtype) == "category"]
    num = [c for c in X.columns if c not in cat]
    covered = 0
    seeds = range(10)
    for seed in seeds:
        X_fit, X_cal, y_fit, y_cal, s_fit, s_cal = train_test_split(X, y, s, test_size=0.3, random_state=seed,
                                                                    stratify=y)
        pre = ColumnTransformer([("num", StandardScaler(), num),
                                 ("cat", OneHotEncoder(handle_unknown="ignore"), cat)])
        model = LogisticRegression(max_iter=500).fit(pre.fit_transform(X_fit), y_fit)
        score_cal, score_te = (model.decision_function(pre.transform(Z)) for Z in (X_cal, X_te))
        raw_gap = equalized_odds_gap(y_te, score_te > 0, s_te)
        cal = ErrorRateCalibrator("equalized_odds", tolerance=0.02, random_state=seed,
                                  test_size=len(y_te)).fit(score_cal, y_cal, s_cal)
        labels = cal.predict(score_te, s_te)
        test_gap = equalized_odds_gap(y_te, labels, s_te)
        low, high = cal.gap_interval_
        assert raw_gap > 0.05  # there was something to correct
        assert test_gap <= 0.02 + (high - low)
        assert np.mean(labels == y_te) > 0.8
        covered += low <= test_gap <= high
    # measured: 10 of the 10 splits covered (nominal 95%: 9.5 expected)
    assert covered >= len(seeds) - 1


_MU = {(0, 0): 0.0, (0, 1): 1.5, (1, 0): 0.5, (1, 1): 2.2}  # score means per (group, label)


def _population(rng, n):
    g = rng.integers(0, 2, n)
    y = (rng.random(n) < 0.3 + 0.1 * g).astype(int)
    return rng.normal([_MU[(a, b)] for a, b in zip(g, y)], 1.0), y, g


@pytest.mark.parametrize("criterion", CRITERIA)
def test_interval_covers_the_population_gap_and_the_measured_test_gap(criterion):
    """Scores from known normal distributions: the thresholds' gap on the population is
    exact, and a fresh test set's measured gap is what a user would compare with."""
    from scipy.stats import norm

    n_cal, n_test, seeds = 1200, 2000, range(40)
    covered_population = covered_test = covered_default = 0
    for seed in seeds:
        rng = np.random.default_rng(seed)
        s, y, g = _population(rng, n_cal)
        cal = ErrorRateCalibrator(criterion, 0.02, random_state=seed, test_size=None).fit(s, y, g)
        tpr = [norm.sf(cal.thresholds_[h] - _MU[(h, 1)]) for h in (0, 1)]
        fpr = [norm.sf(cal.thresholds_[h] - _MU[(h, 0)]) for h in (0, 1)]
        gap = abs(tpr[0] - tpr[1]) if criterion == "equal_opportunity" else max(abs(tpr[0] - tpr[1]),
                                                                                abs(fpr[0] - fpr[1]))
        low, high = cal.gap_interval_
        assert (cal.gap_estimate_, cal.gap_interval_) == cal.estimate_gap(None)
        covered_population += low <= gap <= high
        s_te, y_te, g_te = _population(rng, n_test)
        test_gap = _gap(criterion, y_te, cal.predict(s_te, g_te), g_te)
        _, (low, high) = cal.estimate_gap(n_test)
        covered_test += low <= test_gap <= high
        # the default interval: a test set as large as the calibration set
        s_te, y_te, g_te = _population(rng, n_cal)
        _, (low, high) = cal.estimate_gap("calibration")
        covered_default += low <= _gap(criterion, y_te, cal.predict(s_te, g_te), g_te) <= high
    # nominal 95% (38 of 40 expected); measured (equal opportunity, equalized odds): population
    # 40/40 and 40/40, test 39/40 and 40/40, calibration-sized test 37/40 and 38/40
    assert covered_population >= 35
    assert covered_test >= 35
    assert covered_default >= 35


def test_interval_widens_with_a_smaller_test_set_and_reaches_near_zero():
    s, y, g = _population(np.random.default_rng(0), 3000)
    cal = ErrorRateCalibrator("equal_opportunity", 0.005, random_state=0).fit(s, y, g)
    widths = [np.subtract(*cal.estimate_gap(m)[1][::-1]) for m in (200, 2000, 20000)]
    assert widths[0] > widths[1] > widths[2]
    # the calibration gap is at most 0.005; the population gap is small, and the
    # interval's lower end comes near 0 rather than sitting on the upward bias of a maximum
    assert cal.estimate_gap(None)[1][0] < 0.005
    with pytest.raises(ValueError, match="test_size"):
        cal.estimate_gap(0)
    with pytest.raises(ValueError, match="test_size"):
        ErrorRateCalibrator(test_size="all").fit(s, y, g)


@pytest.mark.parametrize("randomize", [False, True])
def test_fitted_state_round_trips_through_json(randomize):
    import json

    scores, y, groups = _data(3, 500)
    names = np.array(["f", "m"])[groups]
    cal = ErrorRateCalibrator(randomize=randomize, n_bootstrap=10).fit(scores, y, names)
    state = cal.get_fitted_state()

    def plain(v):
        if isinstance(v, np.ndarray):
            return v.tolist()
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v.item() if hasattr(v, "item") else v

    text = json.dumps({"attributes": {k: plain(v) for k, v in state["attributes"].items()}})
    again = ErrorRateCalibrator.from_fitted_state(cal.get_params(), json.loads(text))
    np.testing.assert_array_equal(again.predict(scores, names), cal.predict(scores, names))
    np.testing.assert_array_equal(again.emit_probability(scores, names), cal.emit_probability(scores, names))
    assert again.gap_interval_ == cal.gap_interval_
    assert again.estimate_gap(1000) == cal.estimate_gap(1000) and again.estimate_gap(None) == cal.estimate_gap(None)


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("seed", range(6))
def test_optimal_with_a_group_of_one_label(criterion, seed):
    """A group with no positive (or no negative) row has no rate of that kind to equalise."""
    rng = np.random.default_rng(seed)
    k, n = 2 + seed % 2, 12
    groups = rng.integers(0, k, n)
    y = rng.integers(0, 2, n)
    y[groups == 0] = seed % 2
    y[-2:], groups[-2:] = [0, 1], k - 1  # both labels present overall
    scores = np.round(rng.normal(y + 0.7 * groups, 1.0), 1)
    tol = [0.0, 0.1, 0.25][seed % 3]
    cal = ErrorRateCalibrator(criterion, tol, n_bootstrap=2).fit(scores, y, groups)
    assert round(cal.calibration_accuracy_ * n) == _brute_force_best(scores, y, groups, criterion, tol)
