"""StreamingFairPredictor: the pooled guarantees (strict and shrinking), the box, the
paper's mode, state, threads, pipelines, bad input."""

from __future__ import annotations

import pickle
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from fairsk import FairLayerClassifier, FairLayerRegressor, StreamingFairPredictor
from fairsk.metrics import parity_gap
from fairsk.streaming import StreamState

TOL = 0.03


def make_data(n=400, k=3, attributes=1, seed=0):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, k, size=(n, attributes))
    X = rng.normal(size=(n, 4)) + 0.7 * s[:, :1]
    y = X[:, 0] + 0.5 * s[:, 0] + 0.1 * rng.normal(size=n)
    return X, y, s if attributes > 1 else s[:, 0]


class Centred(torch.nn.Module):
    """A linear body whose outputs start around 0.5 with a wide spread, so that a
    box (0, 1) clips many of them."""

    def __init__(self, n_features_in, n_outputs):
        super().__init__()
        self.lin = torch.nn.Linear(n_features_in, n_outputs)
        with torch.no_grad():
            self.lin.bias.fill_(0.5)
            self.lin.weight.mul_(3.0)

    def forward(self, X):
        return self.lin(X)


_FITTED: dict = {}


def fitted_stream(kind: str) -> StreamingFairPredictor:
    """Module-level cache (hypothesis tests cannot take function-scoped fixtures)."""
    if kind not in _FITTED:
        X, y, s = make_data()
        if kind == "free":
            reg = FairLayerRegressor(tolerance=TOL, max_epochs=5, random_state=0, solver="exact")
        else:  # a bounded regressor
            reg = FairLayerRegressor(module=Centred, bounds=(0.0, 1.0), tolerance=TOL, max_epochs=1, lr=1e-4,
                                     random_state=0, solver="exact")
            y = np.clip(y / 4 + 0.3, 0, 1)
        _FITTED[kind] = StreamingFairPredictor(reg).fit(X, y, sensitive_features=s)
    return _FITTED[kind]


@pytest.fixture(scope="module")
def fitted():
    return fitted_stream("free")


def fresh(fitted, **params):
    stream = pickle.loads(pickle.dumps(fitted))
    stream.set_params(**params)
    return stream.reset()


def _random_stream(stream, seed, n, max_batch, k, drift, check):
    rng = np.random.default_rng(seed)
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
        check(np.concatenate(emitted), np.concatenate(groups))
    assert stream.n_seen_ == n


@pytest.mark.parametrize("kind", ["free", "box"])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 300),
    max_batch=st.integers(1, 16),
    k=st.integers(2, 5),
    drift=st.booleans(),
)
def test_pooled_gap_never_exceeds_tolerance(kind, seed, n, max_batch, k, drift):
    """slack=0: after every call, the gap of everything emitted so far (measured from
    outside) is within the tolerance: any stream, any batch sizes, groups appearing
    mid-stream, with and without a box (whose bounds every output respects)."""
    stream = fresh(fitted_stream(kind), slack=0.0)

    def check(out, groups):
        outside = parity_gap(out, groups)
        assert outside <= TOL + 1e-9
        assert stream.pooled_gap_ == pytest.approx(outside, abs=1e-9)
        if kind == "box":
            assert out.min() >= 0.0 and out.max() <= 1.0

    _random_stream(stream, seed, n, max_batch, k, drift, check)


@pytest.mark.parametrize("kind", ["free", "box"])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 300),
    max_batch=st.integers(1, 16),
    k=st.integers(2, 5),
    drift=st.booleans(),
    slack=st.sampled_from([0.1, 1.0, 3.0]),
)
def test_shrinking_bound_holds_after_every_call(kind, seed, n, max_batch, k, drift, slack):
    """The default rule: after every call, every two groups' pooled means are within
    tolerance + e_g + e_h, e_g = slack * scale_ / sqrt(N_g), recomputed from outside
    (without a box; with one, within the bound the stream reports, which is never
    below the formula)."""
    stream = fresh(fitted_stream(kind), slack=slack)
    scale = float(stream.scale_[0])

    def check(out, groups):
        labels, counts = np.unique(groups, return_counts=True)
        means = np.array([out[groups == g].mean() for g in labels])
        e = slack * scale / np.sqrt(counts)
        allowed = TOL + e[:, None] + e[None, :]
        if kind == "free":
            assert (np.abs(means[:, None] - means[None, :]) <= allowed + 1e-9).all()
        else:
            assert out.min() >= 0.0 and out.max() <= 1.0
            assert stream.pooled_bound_ >= TOL + np.sort(e)[-2:].sum() - 1e-12 if len(e) > 1 else True
        assert stream.pooled_gap_ == pytest.approx(parity_gap(out, groups), abs=1e-9)
        assert stream.pooled_gap_ <= stream.pooled_bound_ + 1e-9

    _random_stream(stream, seed, n, max_batch, k, drift, check)


def test_bounded_regressor_batches_of_three():
    """A bounded regressor (bounds (0, 1), tolerance 0.05), batches of 3: the pooled
    step works inside the box (clipping after it broke the pooled bound)."""
    X, y, s = make_data(n=300)
    reg = FairLayerRegressor(module=Centred, bounds=(0, 1), tolerance=0.05, max_epochs=1, lr=1e-4, random_state=0,
                             solver="exact")
    stream = StreamingFairPredictor(reg, slack=0.0).fit(X, np.clip(y / 4 + 0.3, 0, 1), sensitive_features=s)
    raw = stream.estimator_.raw_output(X, s)[0]
    assert ((raw < 0) | (raw > 1)).mean() > 0.3  # the box binds often
    out = []
    for i in range(0, 300, 3):
        out.append(stream.partial_predict(X[i : i + 3], sensitive_features=s[i : i + 3]))
        both = np.concatenate(out)
        assert parity_gap(both, s[: len(both)]) <= 0.05 + 1e-9
        assert both.min() >= 0 and both.max() <= 1


def test_one_sample_calls_stay_informative_at_tolerance_zero():
    """Batch size 1, tolerance 0: the default rule emits the model's information
    (distinct outputs, labels as the batch call's) while its bound shrinks; the
    strict rule is refused at fit for this case."""
    X, y, s = make_data(n=2400, k=2, seed=5)
    labels = (y > np.median(y)).astype(int)
    clf = FairLayerClassifier(tolerance=0.0, max_epochs=5, random_state=0, solver="exact", enforce_on="logits")
    stream = StreamingFairPredictor(clf).fit(X[:1200], labels[:1200], sensitive_features=s[:1200])
    Xs, ys, ss = X[1200:], labels[1200:], s[1200:]
    logits = np.concatenate([stream.partial_decision_function(Xs[i : i + 1], sensitive_features=ss[i : i + 1])
                             for i in range(1200)])
    batch = stream.decision_function(Xs, sensitive_features=ss)
    assert len(np.unique(logits)) == 1200
    assert np.corrcoef(logits, batch)[0, 1] > 0.99
    acc_stream, acc_batch = ((logits > 0) == ys).mean(), ((batch > 0) == ys).mean()
    assert abs(acc_stream - acc_batch) <= 0.01
    counts = np.bincount(ss)
    e = stream.slack * stream.scale_[0] / np.sqrt(counts)
    assert parity_gap(logits, ss) <= e.sum() + 1e-9
    with pytest.raises(ValueError, match="emit constants"):
        StreamingFairPredictor(clf, slack=0.0).fit(X[:1200], labels[:1200], sensitive_features=s[:1200])


def test_state_to_arrays_round_trip(fitted):
    X, y, s = make_data()
    stream = fresh(fitted)
    stream.partial_predict(X[:30], sensitive_features=s[:30])
    stream.partial_predict(X[30:33], sensitive_features=np.array([0, 9, 9]))  # a new group
    arrays = stream.stream_state_.to_arrays()
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in arrays.values())
    copy = fresh(fitted)
    copy.stream_state_ = StreamState.from_arrays(arrays)
    assert copy.group_means_ == stream.group_means_ and copy.n_seen_ == 33
    np.testing.assert_array_equal(copy.dual_, stream.dual_)
    for i in range(40, 80, 2):
        np.testing.assert_array_equal(copy.partial_predict(X[i : i + 2], sensitive_features=s[i : i + 2]),
                                      stream.partial_predict(X[i : i + 2], sensitive_features=s[i : i + 2]))


def test_stream_wraps_a_pipeline():
    X, y, s = make_data()
    X = X * 100 + 5  # unscaled: the pipeline's scaler matters
    reg = FairLayerRegressor(tolerance=TOL, max_epochs=3, random_state=0, solver="exact")
    piped = StreamingFairPredictor(Pipeline([("scale", StandardScaler()), ("reg", reg)])).fit(
        X, y, sensitive_features=s)
    scaler = StandardScaler().fit(X)
    bare = StreamingFairPredictor(reg).fit(scaler.transform(X), y, sensitive_features=s)
    for i in range(0, 60, 4):
        rows = slice(i, i + 4)
        np.testing.assert_allclose(piped.partial_predict(X[rows], sensitive_features=s[rows]),
                                   bare.partial_predict(scaler.transform(X[rows]), sensitive_features=s[rows]),
                                   rtol=0, atol=1e-12)
    np.testing.assert_allclose(piped.predict(X, sensitive_features=s),
                               bare.predict(scaler.transform(X), sensitive_features=s), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="fairsk estimator"):
        StreamingFairPredictor(Pipeline([("scale", StandardScaler()), ("lin", LinearRegression())])).fit(X, y)


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
    stream = StreamingFairPredictor(reg, slack=0.0).fit(X, y, sensitive_features=s)
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
    assert stream.pooled_gap_ <= stream.pooled_bound_ + 1e-9


def test_classifier_stream_and_new_group():
    X, y, s = make_data()
    clf = FairLayerClassifier(tolerance=TOL, max_epochs=3, random_state=0, solver="exact")
    stream = StreamingFairPredictor(clf, enforce_on="logits").fit(X, (y > np.median(y)).astype(int),
                                                                  sensitive_features=s)
    labels = stream.partial_predict(X[:5], sensitive_features=s[:5])
    assert set(labels) <= {0, 1}
    logits = stream.partial_decision_function(X[5:9], sensitive_features=np.array([7, 7, 0, 1]))
    assert logits.shape == (4,)
    assert (0, 7) in stream.group_means_
    assert stream.pooled_gap_ <= stream.pooled_bound_ + 1e-9


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


@settings(deadline=None)
@given(seed=st.integers(0, 10_000), tol=st.sampled_from([0.0, 0.01, 0.05, 0.2]),
       sizes=st.lists(st.integers(1, 6), min_size=5, max_size=40))
def test_label_stream_keeps_pooled_selection_rates_within_the_bound(label_stream, seed, tol, sizes):
    """enforce_on="labels": after every call, the pooled selection rates of the emitted
    labels (recomputed from outside) differ by at most max(tol, 1 / smallest group count)."""
    X, s = label_stream["X"], label_stream["s"]
    stream = clone(label_stream["stream"]).set_params(tolerance=tol)
    stream.estimator_, stream.scale_ = label_stream["stream"].estimator_, label_stream["stream"].scale_
    stream.prior_counts_, stream.prior_sums_ = [], []
    stream.reset()
    rng = np.random.default_rng(seed)
    rows = rng.permutation(len(X))
    emitted, groups, start = [], [], 0
    for size in sizes:
        idx = rows[start : start + size]
        start += size
        emitted.append(stream.partial_predict(X[idx], sensitive_features=s[idx]))
        groups.append(s[idx])
        lab, grp = np.concatenate(emitted), np.concatenate(groups)
        counts = np.bincount(grp, minlength=3)
        rates = [lab[grp == g].mean() for g in range(3) if counts[g]]
        bound = max(tol, 1.0 / counts[counts > 0].min())
        assert max(rates) - min(rates) <= bound + 1e-12
        assert stream.pooled_gap_ == pytest.approx(max(rates) - min(rates), abs=1e-12)
        assert stream.pooled_bound_ == pytest.approx(bound)


@pytest.fixture(scope="module")
def label_stream():
    X, y, s = make_data(n=600, k=3, seed=11)
    clf = FairLayerClassifier(tolerance=0.02, max_epochs=3, random_state=0, solver="exact")  # enforce_on="labels"
    stream = StreamingFairPredictor(clf).fit(X, (y > np.median(y)).astype(int), sensitive_features=s)
    assert stream.labeler_ is not None
    with pytest.raises(ValueError, match="partial_predict"):
        stream.partial_decision_function(X[:2], sensitive_features=s[:2])
    return {"X": X, "s": s, "stream": stream}


def test_label_stream_refuses_what_it_cannot_stream():
    X, y, s = make_data(n=300, k=2, seed=12)
    three = np.digitize(y, np.quantile(y, [1 / 3, 2 / 3]))
    clf = FairLayerClassifier(max_epochs=1, random_state=0, solver="exact")
    with pytest.raises(ValueError, match="binary"):
        StreamingFairPredictor(clf).fit(X, three, sensitive_features=s)
    with pytest.raises(ValueError, match="binary"):  # probabilities at parity: binary too
        StreamingFairPredictor(clf.set_params(enforce_on="proba")).fit(X, three, sensitive_features=s)
