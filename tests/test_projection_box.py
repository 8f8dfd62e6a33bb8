"""The exact solver with a box: each group's clipped sum and its inverse, built from
the group's sorted values (a radix sort of the group codes, then one sort per group)
and one merge of the breakpoints' two sorted runs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fairsk._groups import encode_groups
from fairsk.projection import Spec, exact, kernels

from .conftest import make_instance


class SearchedBoxSum(kernels.BoxSum):
    """The previous construction: the breakpoints sorted, and ``S`` at each of them by
    binary searches in the sorted values (:meth:`~kernels.BoxSum.sums`)."""

    def __init__(self, z_sorted, lb, ub):
        self.z, self.lb, self.ub = z_sorted, lb, ub
        self.prefix = np.concatenate(([0.0], np.cumsum(z_sorted)))
        bps = np.concatenate((z_sorted - ub, z_sorted - lb))
        self.bps = np.sort(bps[np.isfinite(bps)], kind="stable")
        self.neg_sums = -self.sums(self.bps)


values = st.lists(st.one_of(st.floats(-5, 5), st.sampled_from([-1.0, 0.0, 0.5, 1.0])), min_size=1, max_size=80)
bounds = st.sampled_from([(-1.0, 1.0), (-np.inf, 0.5), (-0.5, np.inf), (0.0, 0.0 + 1e-3), (-2.0, 3.0)])


@given(values, bounds)
def test_box_sum_at_its_breakpoints_matches_binary_searches(z, box):
    """Ties (within and across the two runs) included: ``S`` is continuous there."""
    z = np.sort(np.asarray(z))
    new, old = kernels.BoxSum(z, *box), SearchedBoxSum(z, *box)
    np.testing.assert_array_equal(new.bps, old.bps)
    scale = 1.0 + float(np.abs(z).max()) * z.shape[0]
    np.testing.assert_allclose(new.neg_sums, old.neg_sums, atol=1e-12 * scale, rtol=0)
    np.testing.assert_allclose(-new.neg_sums, new.sums(new.bps), atol=1e-12 * scale, rtol=0)
    assert np.all(np.diff(new.neg_sums) >= -1e-12 * scale)
    lo, hi = float(new.sums(np.array([new.bps[-1] if new.bps.size else 0.0]))[0]), \
        float(new.sums(np.array([new.bps[0] if new.bps.size else 0.0]))[0])
    for total in np.linspace(lo, hi, 7):  # the inverse lands on the total
        t = new.shift_for(float(total))
        assert float(new.sums(np.array([t]))[0]) == pytest.approx(float(total), abs=1e-9 * scale)


@pytest.mark.parametrize("k", [1, 7, 300, 70_000])
def test_group_order_then_per_group_sort_is_the_lexsort(k):
    rng = np.random.default_rng(k)
    n = 200_000 if k == 70_000 else 5_000
    codes = rng.integers(0, k, n)
    col = rng.normal(size=n).round(2)  # ties
    counts = np.bincount(codes, minlength=k)
    bounds_ = np.concatenate(([0], np.cumsum(counts)))
    ranked = col[exact._by_group(codes, k)]
    for g in range(k):
        ranked[bounds_[g]: bounds_[g + 1]].sort()
    np.testing.assert_array_equal(ranked, col[np.lexsort((col, codes))])


boxed = st.builds(
    make_instance,
    seed=st.integers(0, 2**32 - 1),
    n=st.one_of(st.integers(1, 64), st.integers(65, 4096)),
    k=st.integers(1, 16),
    a=st.integers(1, 3),
    c=st.integers(1, 2),
    criterion=st.sampled_from(["ecp", "eer"]),
    tolerance=st.one_of(st.just(0.0), st.floats(0.0, 1.0)),
    box=st.just(True),
)


@given(boxed, st.sampled_from(["both", "lower", "upper"]))
def test_exact_box_output_equals_the_previous_construction(inst, ends):
    """On the property tests' instances (one-sided boxes too): the projection with the
    previous construction of each group's clipped sum, to 1e-9."""
    lb, ub = inst.bounds
    lb, ub = (lb, None) if ends == "lower" else (None, ub) if ends == "upper" else (lb, ub)
    gi = encode_groups(inst.groups)
    targets = None
    if inst.criterion == "eer":
        targets = np.repeat(gi.means(inst.y.numpy()[:, None]), inst.z.shape[1], 1)
    spec = Spec(inst.criterion, inst.tolerance, lb, ub, targets=targets)
    z = inst.z.numpy()
    new = exact.project(z, gi, spec)
    real = exact.BoxSum
    exact.BoxSum = SearchedBoxSum
    try:
        old = exact.project(z, gi, spec)
    finally:
        exact.BoxSum = real
    scale = max(1.0, float(np.abs(old.out).max()))
    np.testing.assert_allclose(new.out, old.out, atol=1e-9 * scale, rtol=0)
    np.testing.assert_array_equal(new.tight, old.tight)
