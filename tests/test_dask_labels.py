"""fairsk.dask's fair labels from reductions (fairsk.dask._labels), without a cluster: the
passes run here over in-memory partitions, and the labels must be exactly those of
fairsk.decisions.fair_labels on the concatenated rows."""

import numpy as np
import pytest

from fairsk.dask import _labels
from fairsk.decisions import _binary_one, fair_labels, label_gap


def _distributed_labels(p, g, tol, cuts):
    """The passes of fairsk.dask over the partitions cut at ``cuts``; also returns the
    number of passes and the per-partition number of accepted tied rows."""
    w = 2.0 * p - 1.0
    parts = np.split(np.arange(len(p)), cuts)
    keys = sorted(set(g.tolist()))

    def gains(ix):
        return lambda k: w[ix][g[ix] == k] if (g[ix] == k).any() else None

    def run_pass(requests, first):
        return _labels.merge_passes([_labels.partition_pass(gains(ix), requests, first) for ix in parts])

    counts, passes = _labels.solve(keys, run_pass, tol)
    ties = [_labels.partition_ties(gains(ix), {k: counts[k][1] for k in keys}) for ix in parts]
    take = _labels.takes(counts, ties)
    out = np.zeros(len(p), dtype=np.int64)
    for ix, t in zip(parts, take):
        for k in keys:
            rows = g[ix] == k
            out[ix[rows]] = _labels.accept(w[ix][rows], counts[k][1], t[k])
    return out, passes, take, ties


def _instance(rng, kind):
    n = int(rng.integers(1, 2500))
    g = np.unique(rng.integers(0, int(rng.integers(1, 5)), n), return_inverse=True)[1].reshape(-1)
    p = np.clip(rng.normal(0.3 + 0.15 * g, 0.25), 0, 1)
    if kind == "rounded":  # many ties, and count vectors equally good in exact arithmetic
        p = np.round(p, 2)
    elif kind == "saturated":  # tie blocks at 0 and 1, as the box [0, 1] makes them
        p[rng.random(n) < 0.3] = 1.0
        p[rng.random(n) < 0.3] = 0.0
    elif kind == "tiny":  # distinct p, equal gains 2p - 1 after rounding
        p = p * 1e-3
    return p, g


@pytest.mark.parametrize("kind", ["smooth", "rounded", "saturated", "tiny"])
def test_labels_equal_fair_labels(monkeypatch, kind):
    rng = np.random.default_rng(["smooth", "rounded", "saturated", "tiny"].index(kind))
    split_ties = 0
    for _ in range(40):
        monkeypatch.setattr(_labels, "COLLECT_LIMIT", int(rng.choice([4, 64, 512])))
        p, g = _instance(rng, kind)
        tol = float(rng.choice([0.0, 0.01, 0.05, 0.2, 1.0]))
        cuts = np.sort(rng.integers(0, len(p), 4))  # unequal partitions, some empty
        got, passes, take, ties = _distributed_labels(p, g, tol, cuts)
        np.testing.assert_array_equal(got, _binary_one(p, g, tol))
        np.testing.assert_array_equal(got, fair_labels(p, g, tol))
        assert label_gap(got, g) <= tol
        assert passes <= 12
        # a tie block split by the threshold across partitions: the first rows in row order
        for k in ties[0]:
            tied = [t[k][1] for t in ties]
            taken = [t[k] for t in take]
            if 0 < sum(taken) < sum(tied) and sum(1 for x in tied if x) >= 2:
                split_ties += 1
    if kind == "rounded":
        assert split_ties > 0


def test_refinement_passes_with_coarse_bins(monkeypatch):
    # few bins and a tiny collect limit: the search needs several refinement passes
    monkeypatch.setattr(_labels, "BINS", 4)
    monkeypatch.setattr(_labels, "SUB_BINS", 2)
    monkeypatch.setattr(_labels, "COLLECT_LIMIT", 2)
    rng = np.random.default_rng(5)
    g = rng.integers(0, 3, 3000)
    p = np.clip(rng.normal(0.3 + 0.2 * g, 0.2), 0, 1)
    for tol in (0.0, 0.02):
        got, passes, _, _ = _distributed_labels(p, g, tol, [5, 5, 1000, 2999])
        np.testing.assert_array_equal(got, _binary_one(p, g, tol))
        assert passes >= 4


def test_group_missing_from_partitions_and_one_group():
    rng = np.random.default_rng(2)
    p = rng.random(500)
    g = np.r_[np.zeros(250, int), np.ones(250, int)]  # each partition below holds one group only
    got, *_ = _distributed_labels(p, g, 0.02, [250])
    np.testing.assert_array_equal(got, _binary_one(p, g, 0.02))
    got, *_ = _distributed_labels(p, np.zeros(500, int), 0.0, [100, 100])
    np.testing.assert_array_equal(got, (p > 0.5).astype(int))
