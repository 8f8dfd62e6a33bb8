"""DelayedLabelMonitor: running error-rate gaps of a stream with delayed labels."""

import json

import numpy as np
import pandas as pd
import pytest

from fairsk.metrics import equal_opportunity_gap, equalized_odds_gap
from fairsk.monitoring import DelayedLabelMonitor


def _stream(seed, n, kind="labels", c=2):
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, 3, n)
    y = rng.integers(0, c, n)
    if kind == "labels":
        pred = np.where(rng.random(n) < 0.7 + 0.05 * groups, y, rng.integers(0, c, n))
    elif c == 2:
        pred = np.clip(0.5 * y + 0.1 * groups + 0.3 * rng.random(n), 0, 1)
    else:
        pred = rng.dirichlet(np.ones(c), n)
    return np.arange(n) * 7 + 3, pred, y, groups


@pytest.mark.parametrize("kind,c", [("labels", 2), ("scores", 2), ("labels", 3), ("scores", 3)])
def test_gaps_equal_the_metrics_of_the_labelled_rows(kind, c):
    ids, pred, y, groups = _stream(0, 600, kind, c)
    mon = DelayedLabelMonitor(classes=list(range(c)))
    for chunk in np.array_split(np.arange(600), 7):
        mon.record(ids[chunk], pred[chunk], groups[chunk])
    # labels arrive out of order and only for some rows
    rng = np.random.default_rng(1)
    arrived = rng.permutation(600)[:450]
    for chunk in np.array_split(arrived, 5):
        mon.report_labels(ids[chunk], y[chunk])
    assert mon.n_labelled_ == 450 and mon.n_pending_ == 150
    done = np.sort(arrived)
    assert mon.equal_opportunity_gap_ == pytest.approx(equal_opportunity_gap(y[done], pred[done], groups[done]),
                                                       abs=1e-12)
    assert mon.equalized_odds_gap_ == pytest.approx(equalized_odds_gap(y[done], pred[done], groups[done]),
                                                    abs=1e-12)
    low, high = mon.interval("equalized_odds")
    assert low <= high


def test_several_attributes_and_string_labels():
    ids, pred, y, groups = _stream(2, 400)
    rng = np.random.default_rng(3)
    s = pd.DataFrame({"sex": np.array(["f", "m"])[rng.integers(0, 2, 400)], "grp": groups})
    ys = np.where(y == 1, "good", "bad")
    ps = np.where(pred == 1, "good", "bad")
    mon = DelayedLabelMonitor(classes=["bad", "good"])
    mon.record([f"row{i}" for i in ids], ps, s)
    mon.report_labels([f"row{i}" for i in ids], ys)
    assert mon.equalized_odds_gap_ == pytest.approx(equalized_odds_gap(y, pred, s), abs=1e-12)


def test_interval_covers_the_population_gap():
    """Streams drawn from a population with a known equalized-odds gap of 0.1."""
    tpr, fpr = np.array([0.8, 0.7]), np.array([0.2, 0.2])
    covered = 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        n = 2000
        g = rng.integers(0, 2, n)
        y = (rng.random(n) < 0.4).astype(int)
        pred = (rng.random(n) < np.where(y == 1, tpr[g], fpr[g])).astype(int)
        mon = DelayedLabelMonitor(n_draws=500, random_state=seed).record(np.arange(n), pred, g)
        mon.report_labels(np.arange(n), y)
        low, high = mon.interval("equalized_odds")
        covered += low <= 0.1 <= high
    assert covered >= 51  # 95% nominal; 51 of 60 leaves room for the Monte-Carlo noise


def test_state_round_trips_through_json():
    ids, pred, y, groups = _stream(4, 300, "scores")
    mon = DelayedLabelMonitor().record(ids, pred, np.array(["x", "y", "z"])[groups])
    mon.report_labels(ids[:200], y[:200])
    state = mon.get_state()
    text = json.dumps({k: (v.tolist() if isinstance(v, np.ndarray) else
                           [a.tolist() for a in v] if k in ("counts", "sums", "sumsq") else v)
                       for k, v in state.items()})
    again = DelayedLabelMonitor.from_state(json.loads(text))
    for m in (mon, again):
        m.report_labels(ids[200:], y[200:])
    assert again.summary() == mon.summary()
    assert again.n_pending_ == 0 and again.n_labelled_ == 300
    with pytest.raises(ValueError, match="version"):
        DelayedLabelMonitor.from_state({**state, "version": 99})


def test_bad_input():
    mon = DelayedLabelMonitor()
    mon.record([1, 2], [1, 0], ["a", "b"])
    with pytest.raises(ValueError, match="already recorded"):
        mon.record([2, 3], [1, 0], ["a", "b"])
    with pytest.raises(ValueError, match="never recorded"):
        mon.report_labels([5], [1])
    with pytest.raises(ValueError, match="not among classes"):
        mon.report_labels([1], [7])
    with pytest.raises(ValueError, match="values"):
        mon.report_labels([1, 2], [1])
    with pytest.raises(ValueError, match="rows"):
        mon.record([8, 9], [1], ["a", "b"])
    with pytest.raises(ValueError, match="stay labels"):
        mon.record([8], [0.3], ["a"])
    with pytest.raises(ValueError, match="attributes"):
        mon.record([8], [1], [["a", "b"]])
    with pytest.raises(ValueError, match="integers or strings"):
        mon.record([0.5], [1], ["a"])
    with pytest.raises(ValueError, match="classes"):
        DelayedLabelMonitor(classes=[1])
    mon.report_labels([1, 2], [1, 1])
    with pytest.raises(ValueError, match="never recorded"):
        mon.report_labels([1], [1])  # labelled twice
