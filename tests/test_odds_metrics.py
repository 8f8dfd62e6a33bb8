"""equal_opportunity_gap and equalized_odds_gap against fairlearn and NumPy."""

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import MetricFrame, equalized_odds_difference, true_positive_rate
from hypothesis import given, settings
from hypothesis import strategies as st

from fairsk.metrics import equal_opportunity_gap, equalized_odds_gap


def _draw(seed, n, k_groups, p_pos=0.4):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < p_pos).astype(int)
    pred = (rng.random(n) < 0.3 + 0.4 * y).astype(int)
    groups = rng.integers(0, k_groups, n)
    return y, pred, groups


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(20, 200), k=st.integers(2, 5))
def test_labels_match_fairlearn(seed, n, k):
    y, pred, groups = _draw(seed, n, k)
    names = np.array(["g0", "g1", "g2", "g3", "g4"])[groups]
    # fairlearn needs every group to have both labels for its rates to be defined
    frame = pd.crosstab(names, y)
    if frame.shape[1] < 2 or (frame.to_numpy() == 0).any():
        return
    expected = equalized_odds_difference(y, pred, sensitive_features=names)
    assert equalized_odds_gap(y, pred, names) == pytest.approx(expected, abs=1e-12)
    tpr = MetricFrame(metrics=true_positive_rate, y_true=y, y_pred=pred, sensitive_features=names).difference()
    assert equal_opportunity_gap(y, pred, names) == pytest.approx(tpr, abs=1e-12)


def test_pos_label_and_string_labels_match_fairlearn():
    y, pred, groups = _draw(3, 300, 3)
    ys = np.where(y == 1, "yes", "no")
    ps = np.where(pred == 1, "yes", "no")
    # fairlearn's equalized_odds_difference takes 0/1 labels: compare on the binarised ones
    expected = equalized_odds_difference(y, pred, sensitive_features=groups)
    assert equalized_odds_gap(ys, ps, groups, pos_label="yes") == pytest.approx(expected, abs=1e-12)
    # the negative class as the positive one: TPR of "no" is 1 - FPR of "yes"
    tpr0 = MetricFrame(metrics=lambda a, b: true_positive_rate(a, b, pos_label=0), y_true=y, y_pred=pred,
                       sensitive_features=groups).difference()
    assert equal_opportunity_gap(y, pred, groups, pos_label=0) == pytest.approx(tpr0, abs=1e-12)


def _numpy_strata_gap(values, mask, codes):
    gaps = []
    for a in range(codes.shape[1]):
        means = [values[mask & (codes[:, a] == g)].mean() for g in np.unique(codes[mask, a])]
        gaps.append(max(means) - min(means))
    return max(gaps)


def test_scores_are_group_means_within_strata_several_attributes():
    rng = np.random.default_rng(0)
    n = 500
    y = rng.integers(0, 2, n)
    p = rng.random(n)
    codes = np.stack([rng.integers(0, 3, n), rng.integers(0, 2, n)], 1)
    s = pd.DataFrame({"a": np.array(list("xyz"))[codes[:, 0]], "b": codes[:, 1]})
    eo = _numpy_strata_gap(p, y == 1, codes)
    fpr = _numpy_strata_gap(p, y == 0, codes)
    assert equal_opportunity_gap(y, p, s) == pytest.approx(eo, abs=1e-12)
    assert equalized_odds_gap(y, p, s) == pytest.approx(max(eo, fpr), abs=1e-12)
    # a two-column probability matrix reads the positive class's column
    proba = np.stack([1 - p, p], 1)
    assert equalized_odds_gap(y, proba, s) == pytest.approx(max(eo, fpr), abs=1e-12)
    assert equal_opportunity_gap(y, proba, s, pos_label=0) == pytest.approx(
        _numpy_strata_gap(1 - p, y == 0, codes), abs=1e-12)


def test_several_classes_are_class_vs_rest():
    rng = np.random.default_rng(1)
    n = 400
    y = rng.integers(0, 3, n)
    pred = np.where(rng.random(n) < 0.6, y, rng.integers(0, 3, n))
    groups = rng.integers(0, 2, n)
    codes = groups[:, None]
    expected_eo, expected_odds = 0.0, 0.0
    for c in range(3):
        hit = (pred == c).astype(float)
        expected_eo = max(expected_eo, _numpy_strata_gap(hit, y == c, codes))
        expected_odds = max(expected_odds, _numpy_strata_gap(hit, y == c, codes), _numpy_strata_gap(hit, y != c, codes))
        # each class-vs-rest split agrees with fairlearn on the binarised problem
        fl = equalized_odds_difference(y == c, pred == c, sensitive_features=groups)
        assert max(_numpy_strata_gap(hit, y == c, codes), _numpy_strata_gap(hit, y != c, codes)) == pytest.approx(fl)
    assert equal_opportunity_gap(y, pred, groups) == pytest.approx(expected_eo, abs=1e-12)
    assert equalized_odds_gap(y, pred, groups) == pytest.approx(expected_odds, abs=1e-12)
    proba = rng.dirichlet(np.ones(3), n)
    expected = max(
        max(_numpy_strata_gap(proba[:, c], y == c, codes), _numpy_strata_gap(proba[:, c], y != c, codes))
        for c in range(3))
    assert equalized_odds_gap(y, proba, groups) == pytest.approx(expected, abs=1e-12)


def test_absent_groups_add_nothing_and_bad_input_is_refused():
    y = np.array([1, 1, 0, 0])
    pred = np.array([1, 0, 0, 0])
    # group "b" has no positive row: it takes no part in the true-positive rates
    assert equal_opportunity_gap(y, pred, ["a", "a", "b", "b"]) == 0.0
    assert equalized_odds_gap(y, pred, ["a", "a", "b", "b"]) == 0.0
    with pytest.raises(ValueError, match="rows"):
        equalized_odds_gap(y, pred[:3], ["a", "a", "b", "b"])
    with pytest.raises(ValueError, match="rows"):
        equalized_odds_gap(y, pred, ["a", "a", "b"])
    with pytest.raises(ValueError, match="pos_label"):
        equal_opportunity_gap(y, pred, [0, 0, 1, 1], pos_label=7)
    with pytest.raises(ValueError, match="NaN"):
        equalized_odds_gap(y, [0.1, np.nan, 0.2, 0.3], [0, 0, 1, 1])
