"""The stream labeler's per-row check on Python numbers (a few cells) against the
array check it replaces: the same answer on random and boundary states, the same
labels on whole streams."""


import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fairsk import decisions
from fairsk.decisions import StreamingLabeler


def _array_check(lab, cell, a_new, n_new):
    saved = decisions._FEW_CELLS
    decisions._FEW_CELLS = -1  # the array path
    try:
        return lab._keeps_invariant(cell, a_new, n_new)
    finally:
        decisions._FEW_CELLS = saved


@settings(max_examples=400, deadline=None)
@given(tol=st.sampled_from([0.0, 0.01, 0.05, 0.1, 1 / 3, 0.5]), cells=st.integers(1, 8), seed=st.integers(0, 2**31 - 1),
       boundary=st.booleans())
def test_same_answer_as_the_array_check(tol, cells, seed, boundary):
    rng = np.random.default_rng(seed)
    lab = StreamingLabeler(tol).reset()
    lab.counts_ = rng.integers(0, 60, cells).astype(np.int64)
    lab.accepted_ = np.array([rng.integers(0, n + 1) for n in lab.counts_], dtype=np.int64)
    cell = int(rng.integers(0, cells))
    n_new = int(lab.counts_[cell]) + 1
    for a_new in range(n_new + 1):
        assert lab._keeps_invariant(cell, a_new, n_new) == _array_check(lab, cell, a_new, n_new)
    if boundary and tol > 0:  # a pair exactly at the tolerance: the exact fraction decides
        other = (cell + 1) % cells
        if other != cell:
            lab.counts_[other], lab.accepted_[other] = 40, 0
            lab.counts_[cell] = 39
            n_new = 40
            for a_new in range(41):  # cross = 40 a_new against tol * 1600
                assert lab._keeps_invariant(cell, a_new, n_new) == _array_check(lab, cell, a_new, n_new)


def test_boundary_decided_exactly():
    """0.1 * 40 * 40 is 160 in float64 but a little above 160 exactly: a cross of
    160 is within the bound; both checks say so, through the exact fraction."""
    lab = StreamingLabeler(0.1).reset()
    lab.counts_ = np.array([39, 40], dtype=np.int64)
    lab.accepted_ = np.array([0, 0], dtype=np.int64)
    assert lab._keeps_invariant(0, 4, 40) and _array_check(lab, 0, 4, 40)
    assert not lab._keeps_invariant(0, 5, 40) and not _array_check(lab, 0, 5, 40)

@pytest.mark.parametrize("tol", [0.0, 0.02, 0.1])
def test_same_labels_on_a_stream(tol):
    rng = np.random.default_rng(3)
    p = rng.random(3000)
    g = np.stack([rng.integers(0, 3, 3000), rng.integers(0, 2, 3000)], 1)
    fast, slow = StreamingLabeler(tol).reset(), StreamingLabeler(tol).reset()
    out_fast, out_slow = [], []
    for start in range(0, 3000, 250):
        out_fast.append(fast.partial_labels(p[start:start + 250], g[start:start + 250]))
        saved = decisions._FEW_CELLS
        decisions._FEW_CELLS = -1
        try:
            out_slow.append(slow.partial_labels(p[start:start + 250], g[start:start + 250]))
        finally:
            decisions._FEW_CELLS = saved
    np.testing.assert_array_equal(np.concatenate(out_fast), np.concatenate(out_slow))
    labels = np.concatenate(out_fast)
    cells = g[:, 0] * 2 + g[:, 1]
    rates = [labels[cells == c].mean() for c in range(6)]
    assert max(rates) - min(rates) <= max(tol, 1 / np.bincount(cells).min()) + 1e-12
