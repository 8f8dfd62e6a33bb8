"""``kernels.clip`` (torch's clamp on NumPy arrays) is ``np.clip``, NaN and infinities
included, into fresh or strided output arrays."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fairsk.projection.kernels import clip

values = st.floats(allow_nan=True, allow_infinity=True, width=64)
bounds = st.sampled_from([(-1.0, 1.0), (0.0, 0.0), (-np.inf, 0.5), (0.25, np.inf), (-np.inf, np.inf)])


@given(arrays(np.float64, st.integers(0, 50), elements=values), bounds)
def test_clip_is_numpy_clip(x, box):
    lb, ub = box
    np.testing.assert_array_equal(clip(x, lb, ub), np.clip(x, lb, ub))


@given(arrays(np.float64, (20, 3), elements=values), bounds, st.integers(0, 2))
def test_clip_into_a_column(x, box, j):
    lb, ub = box
    out = np.full((20, 3), 7.0)
    clip(x[:, j], lb, ub, out=out[:, j])  # strided input and output
    want = np.full((20, 3), 7.0)
    want[:, j] = np.clip(x[:, j], lb, ub)
    np.testing.assert_array_equal(out, want)


def test_clip_float32():
    x = np.array([-2.0, 0.5, np.nan, 3.0], dtype=np.float32)
    got = clip(x, -1.0, 1.0)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.clip(x, -1.0, 1.0))
