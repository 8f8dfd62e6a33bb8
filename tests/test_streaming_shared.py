"""One stream served by several processes (fairsk.streaming.SharedStream): two spawned
processes emit interleaved calls on one shared state; everything they emitted, gathered
here, meets the pooled bound after every call, and no update is lost. Keeping the
processes' states apart and merging them afterwards does not keep the bound."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import time

import numpy as np
import pytest

from fairsk import FairLayerClassifier, FairLayerRegressor, StreamingFairPredictor
from fairsk.streaming import SharedStream

pytest.importorskip("fcntl")

TOL = 0.05


def _data(n=700, seed=0):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 3, n)
    X = rng.normal(size=(n, 4)) + 0.7 * s[:, None]
    y = X[:, 0] + 0.5 * s + 0.1 * rng.normal(size=n)
    return X, y, s


def _serve(job):
    """A serving process: its own copy of the model, the shared state, calls of 1 to 5 rows."""
    model_path, state_path, X, s, seed = job
    with open(model_path, "rb") as f:
        shared = SharedStream(pickle.load(f), state_path)
    rng = np.random.default_rng(seed)
    # both serving processes start together (a slow start would let one finish alone on a
    # busy machine): each leaves a mark and waits, for at most a minute, for the other's
    open(f"{state_path}.ready{seed}", "w").close()
    other = f"{state_path}.ready{3 - seed}"
    deadline = time.monotonic() + 60
    while not os.path.exists(other) and time.monotonic() < deadline:
        time.sleep(0.01)
    calls, i = [], 0
    while i < len(X):
        b = int(rng.integers(1, 6))
        with shared.session() as stream:
            before = stream.n_seen_  # the position of this call in the one stream
            out = stream.partial_predict(X[i : i + b], sensitive_features=s[i : i + b])
        calls.append((before, np.asarray(out, dtype=np.float64), s[i : i + b]))
        i += b
        time.sleep(0.003 * rng.random())  # let the other process in
    return calls


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    X, y, s = _data()
    reg = StreamingFairPredictor(FairLayerRegressor(tolerance=TOL, max_epochs=5, random_state=0, solver="exact"),
                                 slack=0.0).fit(X, y, sensitive_features=s)
    clf = StreamingFairPredictor(FairLayerClassifier(tolerance=TOL, max_epochs=5, random_state=0, solver="exact")
                                 ).fit(X, (y > np.median(y)).astype(int), sensitive_features=s)
    assert clf.labeler_ is not None  # the classifier's stream emits labels at parity
    folder = tmp_path_factory.mktemp("shared")
    paths = {}
    for name, model in (("scores", reg), ("labels", clf)):
        paths[name] = folder / f"{name}.pkl"
        paths[name].write_bytes(pickle.dumps(model))
    return paths, folder


def _gaps_after_every_call(calls):
    """The calls of all processes in the order of the one stream, with the pooled gap
    (of scores, or of selection rates) and the smallest group count after each."""
    calls = sorted(calls, key=lambda c: c[0])
    seen = 0
    outs, groups, gaps, smallest = [], [], [], []
    for before, out, s in calls:
        assert before == seen  # contiguous: no call overlapped another, no update was lost
        seen += len(out)
        outs.append(out)
        groups.append(s)
        o, g = np.concatenate(outs), np.concatenate(groups)
        means = [o[g == k].mean() for k in np.unique(g)]
        gaps.append(max(means) - min(means))
        smallest.append(min(np.bincount(g)[np.unique(g)]))
    return np.array(gaps), np.array(smallest), seen


def test_two_processes_share_one_stream(models):
    paths, folder = models
    X, _, s = _data(n=500, seed=1)
    halves = [(slice(0, 250), 1), (slice(250, 500), 2)]
    jobs = [(paths[name], str(folder / f"{name}.npz"), X[sl], s[sl], seed) for name in ("scores", "labels")
            for sl, seed in halves]
    with mp.get_context("spawn").Pool(2) as pool:
        results = pool.map(_serve, jobs)
    for name, (a, b) in zip(("scores", "labels"), (results[:2], results[2:])):
        positions = sorted((c[0], k) for k, calls in enumerate((a, b)) for c in calls)
        order = [k for _, k in positions]
        switches = sum(1 for u, v in zip(order, order[1:]) if u != v)
        assert switches >= 4  # the two processes' calls interleave
        gaps, smallest, total = _gaps_after_every_call(a + b)
        assert total == 500
        if name == "scores":  # slack=0: the strict pooled bound after every call
            assert gaps.max() <= TOL + 1e-9
        else:  # labels: max(tolerance, 1 / smallest group) after every call
            assert np.all(gaps <= np.maximum(TOL, 1.0 / smallest) + 1e-12)
            assert gaps[-1] <= TOL + 1e-12
        # the shared state holds exactly what was emitted
        with open(paths[name], "rb") as f:
            shared = SharedStream(pickle.load(f), folder / f"{name}.npz")
        with shared.session() as stream:
            assert stream.n_seen_ == 500
            out = np.concatenate([c[1] for c in a + b])
            grp = np.concatenate([c[2] for c in a + b])
            for (_, label), mean in stream.group_means_.items():
                assert mean == pytest.approx(out[grp == label].mean(), abs=1e-12)
            assert stream.pooled_gap_ == pytest.approx(gaps[-1], abs=1e-12)


def test_merging_separate_streams_breaks_the_bound(models):
    paths, _ = models
    with open(paths["scores"], "rb") as f:
        model = pickle.load(f)
    X, _, s = _data(n=4000, seed=3)
    raw = model.estimator_.raw_output(X, s)[0][:, 0]
    low = [np.flatnonzero((s == g) & (raw < np.quantile(raw[s == g], 0.25))) for g in (0, 1)]
    high = [np.flatnonzero((s == g) & (raw > np.quantile(raw[s == g], 0.75))) for g in (0, 1)]
    # process A: many low rows of group 0, few of group 1; process B: the other way round, high
    plans = {"A": np.r_[low[0][:200], low[1][:10]], "B": np.r_[high[1][:200], high[0][:10]]}
    outs, groups = [], []
    for rows in plans.values():
        stream = pickle.loads(pickle.dumps(model)).reset()
        rows = np.random.default_rng(0).permutation(rows)
        out = np.concatenate([stream.partial_predict(X[i : i + 1], sensitive_features=s[i : i + 1]) for i in rows])
        assert stream.pooled_gap_ <= TOL + 1e-9  # each at parity on its own
        outs.append(out)
        groups.append(s[rows])
    o, g = np.concatenate(outs), np.concatenate(groups)
    assert abs(o[g == 0].mean() - o[g == 1].mean()) > 3 * TOL  # together far from it
