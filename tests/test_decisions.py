"""Fair labels per call (fair_labels) and per stream (StreamingLabeler), checked from outside."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fairsk.decisions import StreamingLabeler, fair_labels, label_gap, selection_rates
from fairsk.exceptions import InfeasibleProjectionError


# --------------------------------------------------------------------------- outside checks
def outside_gap(labels: np.ndarray, codes: np.ndarray, n_classes: int) -> float:
    """Selection-rate gap recomputed with plain NumPy (rates = mean of indicators per group)."""
    codes = codes.reshape(len(labels), -1)
    classes = [1] if n_classes == 2 else range(n_classes)
    gap = 0.0
    for a in range(codes.shape[1]):
        for c in classes:
            rates = [np.mean(labels[codes[:, a] == g] == c) for g in np.unique(codes[:, a])]
            gap = max(gap, max(rates) - min(rates))
    return gap


def expected_correct(P: np.ndarray, labels: np.ndarray) -> float:
    return float(P[np.arange(len(labels)), labels].sum())


def brute_force(P: np.ndarray, codes: np.ndarray, tol: float) -> float:
    """Best expected number of correct labels over ALL labellings whose gap is <= tol."""
    n, k = P.shape
    codes = codes.reshape(n, -1)
    labs = np.array(list(itertools.product(range(k), repeat=n)), dtype=np.int64)
    ok = np.ones(len(labs), dtype=bool)
    for a in range(codes.shape[1]):
        groups = np.unique(codes[:, a])
        for c in [1] if k == 2 else range(k):
            rates = np.stack([np.mean(labs[:, codes[:, a] == g] == c, axis=1) for g in groups], 1)
            ok &= rates.max(1) - rates.min(1) <= tol
    values = P[np.arange(n), labs].sum(1)
    assert ok.any()  # all rows in one class is always feasible
    return float(values[ok].max())


def two_columns(p: np.ndarray) -> np.ndarray:
    return np.stack([1 - p, p], 1)


# --------------------------------------------------------------------------- strategies
@st.composite
def instances(draw, max_n=300, classes=(2,)):
    """Random probabilities and groups: 1-20 groups, 1-3 attributes, very unequal group sizes."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n = draw(st.integers(1, max_n))
    n_attr = draw(st.integers(1, 3))
    cols = []
    for _ in range(n_attr):
        n_groups = draw(st.integers(1, 20))
        shares = rng.dirichlet(np.full(n_groups, draw(st.sampled_from([0.1, 1.0, 10.0]))))
        cols.append(rng.choice(n_groups, size=n, p=shares))
    codes = np.stack(cols, 1)
    k = draw(st.sampled_from(classes))
    if k == 2:
        kind = draw(st.sampled_from(["uniform", "ties", "extreme", "shifted"]))
        p = rng.random(n)
        if kind == "ties":
            p = np.round(p * 4) / 4
        elif kind == "extreme":
            p = (p > 0.5).astype(float)
        elif kind == "shifted":
            p = np.clip(p * 0.5 + 0.4 * (codes[:, 0] % 2), 0, 1)
        P = p
    else:
        P = rng.dirichlet(np.full(k, draw(st.sampled_from([0.2, 1.0, 5.0]))), size=n)
    tol = draw(st.one_of(st.sampled_from([0.0, 0.01, 0.1, 1 / 3, 0.5, 1.0]), st.floats(0.0, 1.0)))
    return P, codes, tol


# --------------------------------------------------------------------------- per call
@given(instances(classes=(2, 3, 5)))
def test_rates_within_tolerance(case):
    P, codes, tol = case
    labels = fair_labels(P, codes, tol)
    k = 2 if P.ndim == 1 else P.shape[1]
    assert labels.shape == (len(codes),) and labels.dtype == np.int64
    assert labels.min() >= 0 and labels.max() < k
    assert outside_gap(labels, codes, k) <= tol


@given(instances(classes=(2, 3, 5)))
def test_same_call_same_labels(case):
    P, codes, tol = case
    first = fair_labels(P, codes, tol)
    np.testing.assert_array_equal(first, fair_labels(P.copy(), codes.copy(), tol))


@given(instances(max_n=12))
def test_binary_one_attribute_is_optimal_hypothesis(case):
    p, codes, tol = case
    codes = codes[:, :1]
    labels = fair_labels(p, codes, tol)
    assert expected_correct(two_columns(p), labels) == pytest.approx(brute_force(two_columns(p), codes, tol), abs=1e-9)


def test_binary_one_attribute_is_optimal_many_instances():
    """1,500 random instances with n <= 12, compared with every labelling."""
    rng = np.random.default_rng(7)
    for _ in range(1500):
        n = int(rng.integers(1, 13))
        g = rng.integers(0, int(rng.integers(1, 6)), n)
        p = rng.random(n)
        if rng.random() < 0.3:
            p = np.round(p * 4) / 4  # ties, and p = 1/2 exactly
        tol = float(rng.choice([0.0, 0.1, 0.2, 0.25, 1 / 3, 0.5, 2 / 3, 1.0, rng.random()]))
        labels = fair_labels(p, g, tol)
        assert outside_gap(labels, g, 2) <= tol
        best = brute_force(two_columns(p), g, tol)
        assert expected_correct(two_columns(p), labels) == pytest.approx(best, abs=1e-9), (p, g, tol)


@given(instances(max_n=600), st.floats(0.0, 1.0))
def test_windowed_sweep_equals_full_sweep(case, tol):
    """The sweep restricted to the window of the lemma ("Fair decisions" in the user guide) finds the
    same optimum as the sweep over every candidate rate."""
    import fairsk.decisions as decisions

    p, codes, _ = case
    g = decisions._recode(codes[:, 0])
    w = 2 * p - 1
    order = decisions._group_order(w, g)
    avail = np.bincount(g)
    starts = np.concatenate(([0], np.cumsum(avail)[:-1]))
    ws = w[order]
    windowed = decisions._best_counts(ws, starts, avail, avail.astype(float), tol)
    free = np.array([np.sum(ws[s : s + a] > 0) for s, a in zip(starts, avail)])
    full = decisions._sweep(ws, starts, avail, avail.astype(float), tol, free, np.zeros_like(avail), avail.copy())

    def value(counts):
        return sum(ws[s : s + c].sum() for s, c in zip(starts, counts))

    assert value(windowed) == pytest.approx(value(full), abs=1e-9)
    rates = windowed / avail
    assert rates.max() - rates.min() <= tol


@pytest.mark.parametrize("k, n_attr, n_max", [(2, 2, 11), (2, 3, 11), (3, 1, 7), (3, 2, 7), (4, 1, 6)])
def test_feasible_methods_against_brute_force(k, n_attr, n_max):
    """Several attributes or classes: feasible, never better than the optimum, and not worse than
    the trivial fair labellings; optimal whenever the unconstrained labels are already fair."""
    rng = np.random.default_rng(k * 10 + n_attr)
    n_optimal = 0
    for _ in range(60):
        n = int(rng.integers(2, n_max + 1))
        codes = rng.integers(0, 3, (n, n_attr))
        P = two_columns(rng.random(n)) if k == 2 else rng.dirichlet(np.ones(k), n)
        tol = float(rng.choice([0.0, 0.2, 1 / 3, 0.5, rng.random()]))
        labels = fair_labels(P[:, 1] if k == 2 else P, codes, tol)
        assert outside_gap(labels, codes, k) <= tol
        value, best = expected_correct(P, labels), brute_force(P, codes, tol)
        assert value <= best + 1e-9
        assert value >= max(P[:, c].sum() for c in range(k)) - 1e-9 or k == 2
        if k == 2:
            assert value >= P[:, 0].sum() - 1e-9  # nobody accepted is feasible
        argmax = np.argmax(P, 1)
        if outside_gap(argmax, codes, k) <= tol:
            assert value == pytest.approx(expected_correct(P, argmax))
        n_optimal += value >= best - 1e-9
    assert n_optimal >= 30  # mostly optimal (the measured cost is in the user guide)


def test_ties_go_to_the_lower_row_index():
    p = np.array([0.7, 0.7, 0.7, 0.7, 0.2, 0.2])
    g = np.array([0, 0, 0, 0, 1, 1])
    labels = fair_labels(p, g, 0.0)  # equal rates: 2 of 4 and 1 of 2, or all/none
    assert outside_gap(labels, g, 2) == 0.0
    accepted = np.flatnonzero(labels[:4])
    assert accepted.tolist() == list(range(len(accepted)))
    # p = 1/2 exactly: accepting gains nothing, so it is not accepted when free
    assert fair_labels([0.5, 0.5], [0, 1], 1.0).tolist() == [0, 0]


def test_no_constraint_for_one_row_or_one_group():
    rng = np.random.default_rng(0)
    p = rng.random(50)
    np.testing.assert_array_equal(fair_labels(p, np.zeros(50, int), 0.0), (p > 0.5).astype(int))
    assert fair_labels([0.9], [3], 0.0).tolist() == [1]
    assert fair_labels(np.zeros(0), np.zeros(0, int), 0.1).shape == (0,)
    P = rng.dirichlet(np.ones(4), 30)
    np.testing.assert_array_equal(fair_labels(P, np.ones(30, int), 0.0), P.argmax(1))


def test_probability_matrix_inputs():
    rng = np.random.default_rng(1)
    p = rng.random(40)
    g = rng.integers(0, 3, 40)
    np.testing.assert_array_equal(fair_labels(two_columns(p), g, 0.1), fair_labels(p, g, 0.1))
    np.testing.assert_array_equal(fair_labels(p[:, None], g, 0.1), fair_labels(p, g, 0.1))


@pytest.mark.parametrize(
    "proba, groups, tol, match",
    [
        ([0.5, np.nan], [0, 1], 0.1, "NaN"),
        ([0.5, 1.5], [0, 1], 0.1, r"\[0, 1\]"),
        ([0.5, 0.2], [0, 1], -0.1, "tolerance"),
        ([0.5, 0.2], [0, 1], float("nan"), "tolerance"),
        ([0.5, 0.2], [0, 1], "x", "tolerance"),
        ([0.5, 0.2], [0, 1, 1], 0.1, "rows"),
        ([0.5, 0.2], ["a", "b"], 0.1, "integer"),
        ([0.5, 0.2], [0.5, 1.0], 0.1, "integer"),
        (np.zeros((2, 2, 2)), [0, 1], 0.1, "1-D"),
    ],
)
def test_bad_input(proba, groups, tol, match):
    with pytest.raises(ValueError, match=match):
        fair_labels(proba, groups, tol)


def test_a_violation_raises(monkeypatch):
    import fairsk.decisions as decisions

    monkeypatch.setattr(decisions, "_binary_one", lambda p, g, tol: np.array([1, 0]))
    with pytest.raises(InfeasibleProjectionError, match="exceeds the tolerance"):
        fair_labels([0.9, 0.1], [0, 1], 0.5)


def test_selection_rates_and_gap_helpers():
    rates = selection_rates([0, 1, 2, 2], [[0, 5], [0, 5], [1, 5], [1, 6]], n_classes=3)
    assert len(rates) == 2
    np.testing.assert_allclose(rates[0], [[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    assert label_gap([0, 1, 2, 2], [0, 0, 1, 1]) == 1.0


# --------------------------------------------------------------------------- Adult
@pytest.fixture(scope="module")
def adult_probabilities():
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from fairsk.datasets import load_adult

    X_train, y_train, _ = load_adult(subset="train")
    X_test, y_test, s_test = load_adult(subset="test")
    categorical = X_train.select_dtypes(exclude="number").columns
    numeric = X_train.select_dtypes("number").columns
    model = make_pipeline(
        make_column_transformer((OneHotEncoder(handle_unknown="ignore"), categorical), (StandardScaler(), numeric)),
        LogisticRegression(max_iter=500),
    ).fit(X_train, y_train)
    codes = np.stack([np.unique(s_test[c].astype(str), return_inverse=True)[1] for c in ("sex", "race")], 1)
    return model.predict_proba(X_test)[:, 1], np.asarray(y_test).astype(int), codes


def test_adult_random_subsets_within_tolerance(adult_probabilities):
    """1,000 random subsets of the Adult test set, sizes 1 to 5,000: the gap never exceeds the tolerance."""
    p, _, codes = adult_probabilities
    rng = np.random.default_rng(2024)
    tolerances = [0.0, 0.01, 0.02, 0.05]
    for i in range(1000):
        size = int(rng.integers(1, 5001))
        rows = rng.choice(len(p), size=size, replace=False)
        tol = tolerances[i % 4]
        groups = codes[rows] if i % 10 == 0 else codes[rows, 0]  # sex and race on one subset in ten
        labels = fair_labels(p[rows], groups, tol)
        assert outside_gap(labels, groups, 2) <= tol, (i, size, tol)


def test_adult_stream_batch_size_one(adult_probabilities):
    """Pooled streaming at batch size 1, tolerance 0.02: the bound holds after every call, the final
    gap is <= 0.02 and the accuracy is within one point of the batch labels."""
    p, y, codes = adult_probabilities
    sex = codes[:, 0]
    tol = 0.02
    stream = StreamingLabeler(tol)
    emitted = np.zeros(len(p), dtype=np.int64)
    n_seen = np.zeros(2, dtype=np.int64)
    accepted = np.zeros(2, dtype=np.int64)
    for i in range(len(p)):
        emitted[i] = stream.partial_labels(p[i : i + 1], sex[i : i + 1])[0]
        n_seen[sex[i]] += 1
        accepted[sex[i]] += emitted[i]
        seen = n_seen > 0
        rates = accepted[seen] / n_seen[seen]
        assert rates.max() - rates.min() <= max(tol, 1 / n_seen[seen].min()) + 1e-12
    final_gap = outside_gap(emitted, sex, 2)
    assert final_gap <= tol + 1e-12
    batch = fair_labels(p, sex, tol)
    assert np.mean(emitted == y) >= np.mean(batch == y) - 0.01


# --------------------------------------------------------------------------- stream
@st.composite
def streams(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n = draw(st.integers(1, 400))
    n_attr = draw(st.integers(1, 3))
    cols = []
    for _ in range(n_attr):
        n_groups = draw(st.integers(1, 6))
        shares = rng.dirichlet(np.full(n_groups, draw(st.sampled_from([0.2, 1.0, 10.0]))))
        cols.append(rng.choice(n_groups, size=n, p=shares))
    codes = np.stack(cols, 1)
    p = np.clip(rng.random(n) * 0.6 + 0.35 * (codes[:, 0] % 2), 0, 1)
    if draw(st.booleans()):
        p = np.round(p * 3) / 3
    tol = draw(st.one_of(st.sampled_from([0.0, 0.02, 0.1, 0.5, 1.0]), st.floats(0.0, 1.0)))
    max_batch = draw(st.sampled_from([1, 3, 50]))
    return p, codes, tol, max_batch, rng


@given(streams())
def test_stream_bound_after_every_call(case):
    """From outside: after every call, for every attribute, the pooled gap of everything emitted is at
    most max(tolerance, 1 / smallest cell count), and at most the tolerance once every cell has at
    least ceil(1 / tolerance) rows."""
    p, codes, tol, max_batch, rng = case
    stream = StreamingLabeler(tol)
    emitted = []
    start = 0
    cells = np.unique(codes, axis=0, return_inverse=True)[1].reshape(-1)
    while start < len(p):
        stop = min(len(p), start + int(rng.integers(1, max_batch + 1)))
        out = stream.partial_labels(p[start:stop], codes[start:stop])
        assert out.shape == (stop - start,) and set(out.tolist()) <= {0, 1}
        emitted.extend(out.tolist())
        start = stop
        labels = np.array(emitted)
        seen = codes[:stop]
        smallest = np.bincount(cells[:stop])
        smallest = smallest[smallest > 0].min()
        bound = max(tol, 1 / smallest)
        gap = outside_gap(labels, seen, 2)
        assert gap <= bound + 1e-12
        if tol > 0 and smallest >= 1 / tol:  # at least ceil(1 / tol) rows in every cell
            assert gap <= tol + 1e-12
        # pairwise invariant on the cells
        n_c = np.bincount(cells[:stop])
        a_c = np.bincount(cells[:stop], weights=labels)
        present = np.flatnonzero(n_c)
        for g, h in itertools.combinations(present, 2):
            assert abs(a_c[g] / n_c[g] - a_c[h] / n_c[h]) <= max(tol, 1 / min(n_c[g], n_c[h])) + 1e-12


def test_stream_labels_follow_probabilities_when_free():
    rng = np.random.default_rng(3)
    p = rng.random(500)
    stream = StreamingLabeler(1.0)
    out = stream.partial_labels(p, np.zeros(500, int))
    assert np.mean(out == (p > 0.5)) > 0.95


def test_stream_reset_and_errors():
    stream = StreamingLabeler(0.1)
    stream.partial_labels([0.9, 0.1], [[0, 1], [1, 0]])
    assert stream.n_seen_ == 2
    with pytest.raises(ValueError, match="attributes"):
        stream.partial_labels([0.9], [[0, 1, 2]])
    with pytest.raises(ValueError, match="binary"):
        stream.partial_labels(np.full((1, 3), 1 / 3), [0])
    with pytest.raises(ValueError, match="integer"):
        stream.partial_labels([0.9], ["a"])
    stream.reset()
    assert stream.n_seen_ == 0 and stream.pooled_gap() == 0.0
    with pytest.raises(ValueError, match="tolerance"):
        StreamingLabeler(-1.0)


def test_stream_state_round_trip_continues_identically():
    import json
    import pickle

    rng = np.random.default_rng(11)
    p, g = rng.random(600), rng.integers(0, 3, (600, 2))
    a = StreamingLabeler(0.05)
    a.partial_labels(p[:300], g[:300])
    b = StreamingLabeler(0.05).set_state(json.loads(json.dumps(a.get_state())))
    c = pickle.loads(pickle.dumps(a))
    rest = a.partial_labels(p[300:], g[300:])
    np.testing.assert_array_equal(b.partial_labels(p[300:], g[300:]), rest)
    np.testing.assert_array_equal(c.partial_labels(p[300:], g[300:]), rest)
