"""The exact solver with a box: each group's clipped sum and its inverse, built from
the group's sorted values (a radix sort of the group codes, then one sort per group)
and one merge of the breakpoints' two sorted runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
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


# -- the one-attribute box path: the closed-form active-set steps and the root on the
# -- sorted breakpoints, each against the bisection they replaced -----------------------
class BisectedShifts(kernels.GroupShifts):
    """The shifts without their array form: the criterion then bisects on the interval's
    start with scalar evaluations (the previous search)."""

    many = None


one_attribute_boxed = st.builds(
    make_instance,
    seed=st.integers(0, 2**32 - 1),
    n=st.one_of(st.integers(1, 64), st.integers(65, 2048)),
    k=st.integers(1, 9),
    a=st.just(1),
    c=st.integers(1, 2),
    criterion=st.sampled_from(["ecp", "eer"]),
    tolerance=st.one_of(st.just(0.0), st.sampled_from([1e-3, 0.05]), st.floats(0.0, 1.0)),
    box=st.just(True),
)


def _one_attribute_answers(inst, ends, rounded):
    """The projection by each route: (active-set steps, root on the breakpoints, bisection)."""
    lb, ub = inst.bounds
    lb, ub = (lb, None) if ends == "lower" else (None, ub) if ends == "upper" else (lb, ub)
    z = inst.z.numpy()
    if rounded:  # many outputs at the bounds and ties within groups
        z = np.clip(z, -1.0, 1.0).round(1)
    gi = encode_groups(inst.groups)
    targets = None
    if inst.criterion == "eer":
        targets = np.repeat(gi.means(inst.y.numpy()[:, None]), z.shape[1], 1)
    spec = Spec(inst.criterion, inst.tolerance, lb, ub, targets=targets)
    answers = []
    with pytest.MonkeyPatch.context() as m:
        answers.append(exact.project(z, gi, spec))
        m.setattr(exact, "ONE_ATTRIBUTE_BOX_STEPS", 0)
        answers.append(exact.project(z, gi, spec))
        m.setattr(exact, "GroupShifts", BisectedShifts)
        answers.append(exact.project(z, gi, spec))
    return answers


@given(one_attribute_boxed, st.sampled_from(["both", "lower", "upper"]), st.booleans())
def test_one_attribute_box_routes_equal_the_bisection(inst, ends, rounded):
    """The active-set steps (when they settle) and the root found on the sorted
    breakpoints give the bisection's projection to 1e-9, with the same active groups and
    the same outputs held by the box (so the same backward)."""
    settled, root, bisected = _one_attribute_answers(inst, ends, rounded)
    scale = max(1.0, float(np.abs(bisected.out).max()))
    for answer in (settled, root):
        np.testing.assert_allclose(answer.out, bisected.out, atol=1e-9 * scale, rtol=0)
        np.testing.assert_array_equal(answer.tight, bisected.tight)
        np.testing.assert_array_equal(answer.free, bisected.free)


@pytest.mark.parametrize("seed", [24851, 1, 2, 3])
def test_one_group_steps_equal_the_bisection(seed):
    """One group with targets: a later step can find no shift at all (the guess already
    balances the group), which is not the first guess's "nothing moves"; the steps must
    still check that guess against the outputs."""
    inst = make_instance(seed=seed, n=200, k=1, a=1, c=1, criterion="eer", tolerance=0.125, box=True)
    settled, root, bisected = _one_attribute_answers(inst, "both", False)
    scale = max(1.0, float(np.abs(bisected.out).max()))
    for answer in (settled, root):
        np.testing.assert_allclose(answer.out, bisected.out, atol=1e-9 * scale, rtol=0)
        np.testing.assert_array_equal(answer.free, bisected.free)


def test_the_active_set_steps_settle_on_an_easy_batch_and_give_way_on_a_hard_one():
    """The steps answer alone when the projection moves no output across a bound, and
    hand over (None) when a guess holds a whole group, where the sorted path answers."""
    spec = Spec("ecp", 0.0, 0.0, 1.0)
    codes = np.array([0, 0, 1, 1])
    counts = np.array([2.0, 2.0])
    easy = exact._settle_attribute(np.array([0.4, 0.5, 0.6, 0.7]), codes, counts, spec, None, 8)
    assert easy is not None
    np.testing.assert_allclose(easy[0], [0.5, 0.6, 0.5, 0.6])
    # group 1 sits at the upper bound: the first guess holds all of it
    assert exact._settle_attribute(np.array([0.1, 0.2, 1.0, 1.5]), codes, counts, spec, None, 8) is None
    gi = encode_groups(codes)
    out = exact.project(np.array([[0.1], [0.2], [1.0], [1.5]]), gi, spec).out[:, 0]
    means = [out[:2].mean(), out[2:].mean()]
    assert means[0] == pytest.approx(means[1], abs=1e-12) and out.min() >= 0 and out.max() <= 1


@given(values, bounds, st.lists(st.floats(-400, 400), min_size=1, max_size=30))
def test_array_inverse_equals_the_scalar_inverse(z, box, totals):
    z = np.sort(np.asarray(z))
    s = kernels.BoxSum(z, *box)
    totals = np.asarray(totals)
    scale = 1.0 + float(np.abs(z).max()) + float(np.abs(totals).max())
    many = s.shifts_for(totals)
    np.testing.assert_allclose(many, [s.shift_for(float(t)) for t in totals], atol=1e-9 * scale, rtol=0)


@given(st.lists(st.tuples(st.floats(-3, 3), st.floats(-2, 0), st.floats(-1, 1)), min_size=1, max_size=12),
       st.floats(-4, 4))
def test_boundary_of_a_piecewise_linear_function_is_found_exactly(pieces, offset):
    """A non-increasing piecewise-linear function with jumps at known points: the
    boundary between ``f > 0`` and ``f <= 0`` against the one read off its pieces."""
    knots = np.unique(np.array([p[0] for p in pieces]))
    slopes = np.array([p[1] for p in pieces])[: knots.shape[0] + 1]
    slopes = np.concatenate((slopes, np.full(knots.shape[0] + 1 - slopes.shape[0], -1.0)))
    jumps = -np.abs(np.array([p[2] for p in pieces]))[: knots.shape[0]]
    jumps = np.concatenate((jumps, np.zeros(knots.shape[0] - jumps.shape[0])))
    # f just after knot i (its jump included), from the pieces and jumps before it
    after = offset + np.cumsum(jumps + np.concatenate(([0.0], slopes[1:-1] * np.diff(knots))))

    def f(c):
        piece = np.searchsorted(knots, c, side="right")  # a jump takes effect at its knot
        before = np.maximum(piece - 1, 0)
        return np.where(piece == 0, offset + slopes[0] * (c - knots[0]),
                        after[before] + slopes[piece] * (c - knots[before]))

    lo, hi = float(knots[0]) - 5.0, float(knots[-1]) + 5.0
    found = kernels.boundary_decreasing(f, [knots], lo, hi)
    # the reference, piece by piece from the left: the first place where f <= 0
    expected = hi
    for x0, x1 in zip(np.concatenate(([lo], knots)), np.concatenate((knots, [hi]))):
        v0, slope = float(f(np.array([x0]))[0]), float(slopes[np.searchsorted(knots, x0, side="right")])
        if not v0 > 0:
            expected = float(x0)
            break
        if slope < 0 and x0 + v0 / -slope < x1:
            expected = float(x0 + v0 / -slope)
            break
    assert found == pytest.approx(expected, abs=1e-9 * (1 + abs(expected)))
    if lo < found < hi:  # f on either side of the boundary has the right sign
        assert float(f(np.array([found - 1e-7]))[0]) > -1e-9 and float(f(np.array([found + 1e-7]))[0]) <= 1e-9


@pytest.mark.parametrize("steps", [0, 8])
@pytest.mark.parametrize("criterion", ["ecp", "eer"])
def test_one_attribute_box_gradcheck_on_each_route(monkeypatch, steps, criterion):
    from fairsk import FairnessLayer

    monkeypatch.setattr(exact, "ONE_ATTRIBUTE_BOX_STEPS", steps)
    inst = make_instance(11, 14, 3, 1, 2, criterion, 0.05, True)
    layer = FairnessLayer(criterion, 0.05, "exact", inst.bounds)
    z = inst.z.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: layer(v, inst.groups, inst.y), (z,), atol=1e-6, eps=1e-7)
