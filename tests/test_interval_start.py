"""The interval of the parity projection for many groups (NumPy, prefix sums) against
the loop over Python floats used for a few groups: the same projected means."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fairsk.projection import kernels


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 300), tol=st.sampled_from([0.0, 1e-9, 0.01, 0.5, 5.0]),
       scale=st.sampled_from([1e-3, 1.0, 100.0]), slack=st.sampled_from([None, 0.0, 0.01, 1.0]),
       rounded=st.booleans())
def test_many_groups_give_the_projection_of_the_loop(seed, k, tol, scale, slack, rounded):
    rng = np.random.default_rng(seed)
    m = rng.normal(size=k) * scale
    if rounded:  # ties among the breakpoints
        m = np.round(m, 1)
    w = rng.integers(1, 50, k).astype(float)
    e = None if slack is None else rng.random(k) * slack
    band = np.zeros(k) if e is None else e
    saved = kernels._PYTHON_MAX_GROUPS
    kernels._PYTHON_MAX_GROUPS = 10**9  # the loop, whatever k
    try:
        loop = kernels.interval_start(m, w, tol, e)
    finally:
        kernels._PYTHON_MAX_GROUPS = saved
    fast = kernels._interval_start_sorted(m, w, tol, e)
    # where F is zero on a stretch every point of it is a root: compare the projections
    np.testing.assert_allclose(np.clip(m, fast - band, fast + tol + band), np.clip(m, loop - band, loop + tol + band),
                               rtol=0, atol=1e-12 * (1 + np.abs(m).max()))
    # and the root itself: F(c) = 0 up to rounding
    F = np.sum(w * (np.maximum(m - tol - band - fast, 0) - np.maximum(fast - band - m, 0)))
    assert abs(F) <= 1e-9 * (1 + np.abs(m).max()) * w.sum()
