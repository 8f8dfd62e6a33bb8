"""StreamingFairPredictor: the pooled guarantee, the paper's mode, state, threads, bad input."""

from __future__ import annotations

import pickle
import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fairsk import FairLayerClassifier, FairLayerRegressor, StreamingFairPredictor
from fairsk.metrics import parity_gap

TOL = 0.03


def make_data(n=400, k=3, attributes=1, seed=0):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, k, size=(n, attributes))
    X = rng.normal(size=(n, 4)) + 0.7 * s[:, :1]
    y = X[:, 0] + 0.5 * s[:, 0] + 0.1 * rng.normal(size=n)
    return X, y, s if attributes > 1 else s[:, 0]


@pytest.fixture(scope="module")
def fitted():
    X, y, s = make_data()
    reg = FairLayerRegressor(tolerance=TOL, max_epochs=5, random_state=0, solver="exact")
    return StreamingFairPredictor(reg).fit(X, y, sensitive_features=s)


def fresh(fitted, **params):
    stream = pickle.loads(pickle.dumps(fitted))
    stream.set_params(**params)
    return stream.reset()


@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 300),
    max_batch=st.integers(1, 16),
    k=st.integers(2, 5),
    drift=st.booleans(),
)
def test_pooled_gap_never_exceeds_tolerance(fitted, seed, n, max_batch, k, drift):
    """After every call, the gap of everything emitted so far (measured from outside)
    is within the tolerance: any stream, any batch sizes, groups appearing mid-stream."""
    rng = np.random.default_rng(seed)
    stream = fresh(fitted)
    X = rng.normal(size=(n, 4)) * rng.uniform(0.5, 3)
    share = np.linspace(0.1, 0.9, n) if drift else np.full(n, 0.5)
    s = np.where(rng.uniform(size=n) < share, 0, rng.integers(0, k, size=n))
    emitted, groups, start = [], [], 0
    while start < n:
        b = int(rng.integers(1, max_batch + 1))
        rows = slice(start, start + b)
        emitted.append(stream.partial_predict(X[rows], sensitive_features=s[rows]))
        groups.append(s[rows])
        start += b
        outside = parity_gap(np.concatenate(emitted), np.concatenate(groups))
        assert outside <= TOL + 1e-9
        assert stream.pooled_gap_ == pytest.approx(outside, abs=1e-9)
    assert stream.n_seen_ == n


def test_pooled_mode_stays_close_to_the_batch_projection(fitted):
    X, y, s = make_data(n=2000, seed=3)
    stream = fresh(fitted)
    out = np.concatenate([stream.partial_predict(X[i : i + 1], sensitive_features=s[i : i + 1]) for i in range(2000)])
    batch = fitted.predict(X, sensitive_features=s)
    raw = fitted.estimator_.raw_output(X, s)[0][:, 0]
    # much closer to the offline projection than to the raw outputs, on the late stream
    late = slice(1000, None)
    assert np.abs(out[late] - batch[late]).mean() < 0.25 * np.abs(raw[late] - batch[late]).mean()


def test_several_attributes_stream(fitted):
    X, y, s = make_data(n=300, attributes=2, seed=1)
    reg = FairLayerRegressor(tolerance=TOL, max_epochs=3, random_state=0, solver="exact")
    stream = StreamingFairPredictor(reg).fit(X, y, sensitive_features=s)
    out = np.concatenate([stream.partial_predict(X[i : i + 4], sensitive_features=s[i : i + 4])
                          for i in range(0, 300, 4)])
    assert stream.pooled_gap_ == pytest.approx(max(parity_gap(out, s[:, 0]), parity_gap(out, s[:, 1])), abs=1e-9)
    assert stream.pooled_gap_ <= TOL + 1e-6


def test_paper_mode_reproduces_the_dual_update(fitted):
    X, y, s = make_data(n=640, seed=2)
    stream = fresh(fitted, mode="paper", eta0=0.5, tolerance=0.0)
    raw = fitted.estimator_.raw_output(X, s)[0][:, 0]
    duals, lam, t = [], 0.0, 0
    for start in range(0, 640, 64):
        rows = slice(start, start + 64)
        out = stream.partial_predict(X[rows], sensitive_features=s[rows])
        # the batch gap never grows, and shrinks once the dual is positive
        assert parity_gap(out, s[rows]) <= parity_gap(raw[rows], s[rows]) + 1e-9
        t += 1
        lam = max(0.0, lam + 0.5 / np.sqrt(t) * 64 * (parity_gap(out, s[rows]) - 0.0))
        duals.append(stream.dual_)
        assert stream.dual_ == pytest.approx(lam)
    assert duals[-1] > 0
    assert parity_gap(out, s[rows]) < parity_gap(raw[rows], s[rows])


def test_paper_mode_skips_single_group_batches(fitted):
    X, y, s = make_data()
    stream = fresh(fitted, mode="paper")
    raw = fitted.estimator_.raw_output(X[:1], s[:1])[0][:, 0]
    np.testing.assert_allclose(stream.partial_predict(X[:1], sensitive_features=s[:1]), raw)
    assert stream.dual_ == 0.0


def test_reset_forgets_the_stream(fitted):
    X, y, s = make_data()
    stream = fresh(fitted)
    first = stream.partial_predict(X[:10], sensitive_features=s[:10])
    stream.partial_predict(X[10:50], sensitive_features=s[10:50])
    stream.reset()
    assert stream.n_seen_ == 0 and stream.group_means_ == {}
    np.testing.assert_array_equal(stream.partial_predict(X[:10], sensitive_features=s[:10]), first)


def test_pickled_mid_stream_continues_identically_in_another_process(fitted, tmp_path):
    X, y, s = make_data()
    stream = fresh(fitted)
    for i in range(0, 100, 3):
        stream.partial_predict(X[i : i + 3], sensitive_features=s[i : i + 3])
    (tmp_path / "stream.pkl").write_bytes(pickle.dumps(stream))
    np.save(tmp_path / "X.npy", X[100:200])
    np.save(tmp_path / "s.npy", s[100:200])
    code = (
        "import pickle, sys, numpy as np; p = sys.argv[1];"
        "st = pickle.load(open(p + '/stream.pkl', 'rb')); X = np.load(p + '/X.npy'); s = np.load(p + '/s.npy');"
        "out = [st.partial_predict(X[i:i + 1], sensitive_features=s[i:i + 1]) for i in range(100)];"
        "np.save(p + '/out.npy', np.concatenate(out)); np.save(p + '/gap.npy', st.pooled_gap_)"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    here = np.concatenate([stream.partial_predict(X[i : i + 1], sensitive_features=s[i : i + 1])
                           for i in range(100, 200)])
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), here)
    assert float(np.load(tmp_path / "gap.npy")) == stream.pooled_gap_


def test_threads_lose_no_update(fitted):
    X, y, s = make_data()
    stream = fresh(fitted)
    outputs, errors = [[] for _ in range(4)], []

    def worker(w):
        try:
            for i in range(w, 200, 4):
                outputs[w].append((i, stream.partial_predict(X[i : i + 1], sensitive_features=s[i : i + 1])[0]))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    rows = sorted(r for part in outputs for r in part)
    assert stream.n_seen_ == 200 and len(rows) == 200
    idx = np.array([i for i, _ in rows])
    out = np.array([v for _, v in rows])
    # the state is exactly the sum of what the threads received
    assert parity_gap(out, s[idx]) == pytest.approx(stream.pooled_gap_, abs=1e-9)
    assert stream.pooled_gap_ <= TOL + 1e-9


def test_classifier_stream_and_new_group():
    X, y, s = make_data()
    clf = FairLayerClassifier(tolerance=TOL, max_epochs=3, random_state=0, solver="exact")
    stream = StreamingFairPredictor(clf).fit(X, (y > np.median(y)).astype(int), sensitive_features=s)
    labels = stream.partial_predict(X[:5], sensitive_features=s[:5])
    assert set(labels) <= {0, 1}
    logits = stream.partial_decision_function(X[5:9], sensitive_features=np.array([7, 7, 0, 1]))
    assert logits.shape == (4,)
    assert (0, 7) in stream.group_means_
    assert stream.pooled_gap_ <= TOL + 1e-9


@pytest.mark.parametrize(
    "kwargs, X_rows, groups, match",
    [
        ({}, slice(0, 0), np.array([], dtype=int), "empty batch"),
        ({}, slice(0, 2), None, "needs sensitive_features"),
        ({"unknown_group": "error"}, slice(0, 2), np.array([0, 9]), "not seen in fit"),
        ({}, slice(0, 2), np.array([0, 1, 2]), "rows"),
    ],
)
def test_bad_input(fitted, kwargs, X_rows, groups, match):
    X, y, s = make_data()
    stream = fresh(fitted, **kwargs)
    with pytest.raises(ValueError, match=match):
        stream.partial_predict(X[X_rows], sensitive_features=groups)


def test_nan_in_stream(fitted):
    X, y, s = make_data()
    X[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fresh(fitted).partial_predict(X[:2], sensitive_features=s[:2])


def test_paper_mode_rejects_several_attributes():
    X, y, s = make_data(attributes=2)
    reg = FairLayerRegressor(tolerance=TOL, max_epochs=2, random_state=0, solver="exact")
    stream = StreamingFairPredictor(reg, mode="paper").fit(X, y, sensitive_features=s)
    with pytest.raises(ValueError, match="one sensitive attribute"):
        stream.partial_predict(X[:4], sensitive_features=s[:4])


@pytest.mark.parametrize("kind", ["str-object", "str-unicode", "int", "float", "bool", "two-attributes"])
def test_direct_label_lookup_equals_the_general_route(kind, monkeypatch):
    """partial_predict maps known labels by direct lookup; the general route
    (encode_sensitive + _slots) must give the same stream, new labels included."""
    rng = np.random.default_rng(1)
    n = 300
    base = rng.integers(0, 3, size=n)
    make = {
        "str-object": lambda c: np.array(["a", "b", "c", "d"], dtype=object)[c],
        "str-unicode": lambda c: np.array(["a", "b", "c", "d"])[c],
        "int": lambda c: c * 10,
        "float": lambda c: c * 0.5,
        "bool": lambda c: c % 2 == 1,
        "two-attributes": lambda c: np.stack([c, (c + 1) % 2], 1),
    }[kind]
    X = rng.normal(size=(n, 4)) + 0.5 * base[:, None]
    y = X[:, 0] + base
    reg = FairLayerRegressor(tolerance=TOL, max_epochs=3, random_state=0, solver="exact")
    fitted = StreamingFairPredictor(reg).fit(X, y, sensitive_features=make(base))
    stream_codes = np.where(rng.uniform(size=120) < 0.1, 3, rng.integers(0, 3, size=120))  # label 3 is new
    X_stream = rng.normal(size=(120, 4))
    fast, general = fresh(fitted), fresh(fitted)
    monkeypatch.setattr(type(general), "_known_slots", lambda self, sensitive, n: None)
    outs = []
    for stream in (general, fast):
        if stream is fast:
            monkeypatch.undo()
        out = [stream.partial_predict(X_stream[i : i + 2], sensitive_features=make(stream_codes[i : i + 2]))
               for i in range(0, 120, 2)]
        outs.append(np.concatenate(out))
    np.testing.assert_array_equal(outs[0], outs[1])
    assert fast.group_means_.keys() == general.group_means_.keys()
    assert fast.pooled_gap_ == general.pooled_gap_


def test_direct_label_lookup_leaves_missing_values_to_the_general_route(fitted):
    stream = fresh(fitted)
    X = np.zeros((2, 4))
    stream.partial_predict(X, sensitive_features=np.array([0, 1]))
    with pytest.raises(ValueError, match="missing"):
        stream.partial_predict(X, sensitive_features=np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="missing"):
        stream.partial_predict(X, sensitive_features=np.array([0, None], dtype=object))
