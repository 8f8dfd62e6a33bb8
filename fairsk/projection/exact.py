"""The exact solver: the projection in the space of per-group shifts, in NumPy.

At the optimum every sample of group g moves by the same scalar ``-t_g`` before the
box clips it: ``y_i = clip(z_i - t_g(i), lb, ub)``.

* one attribute, no box: the criterion maps the ``k`` group means to their projected
  values in closed form (parity: clip into the interval of :func:`~.kernels.interval_start`);
  the batch is touched by one ``bincount`` and one gather per column;
* one attribute, a box: first a few closed-form active-set steps over the outputs
  the box holds (:func:`_settle_attribute`: each step is the no-box projection of the
  means with the held outputs fixed; one step when the projection crosses no bound);
  where they do not settle, each group's clipped sum is inverted exactly
  (:class:`~.kernels.GroupShifts`) and the criterion places the targets (parity: the
  root of the piecewise-linear balance on its sorted breakpoints,
  :func:`~.kernels.boundary_decreasing`);
* several attributes, no box: the small QP over the group shifts whose matrix comes
  from the cell counts (:func:`~.kernels.shift_qp`), solved exactly;
* several attributes and a box: an active-set iteration over the outputs the box
  holds, each step the shift-space QP above (:func:`_project_boxed_shifts`), with
  Dykstra's algorithm (:func:`~.kernels.dykstra`) to supply its guesses where it
  does not settle alone; if neither answers, the solver reports a failure and the
  dispatcher tries the next solver.

The forward pass records which constraints it made active and which outputs it
clipped; the backward pass (:func:`~.kernels.projector_vjp`) uses exactly those, so
forward and backward agree on the active set. Tensors on other devices are solved on
the host and returned to their device. The dispatcher takes the float64 answer
(:func:`answer_of`), certifies it, and makes it one graph node in the input's dtype
(:func:`output_of`).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .._groups import GroupIndex, group_sums
from .kernels import (
    BoxSum,
    GroupShifts,
    active_tolerance,
    clip,
    dykstra,
    max_abs,
    one_blas_thread,
    projector_vjp,
    shift_qp,
)
from .spec import SolverError, Spec, to_host

DYKSTRA_MAX_SWEEPS = 20000
PDAS_MAX_STEPS = 50
DYKSTRA_CHECK = 25
DENSE_MAX_ROWS = 512
#: closed-form active-set steps tried per column on the one-attribute box path before
#: each group's clipped sum is inverted
ONE_ATTRIBUTE_BOX_STEPS = 8


@dataclass
class ExactAnswer:
    """The projection and what its backward pass needs."""

    out: np.ndarray  # (n, c) float64
    tight: np.ndarray  # (K, c) bool: slots whose constraint is active
    free: np.ndarray | None  # (n, c) bool: outputs strictly inside the box (None: no box)


def solve_exact(z: Tensor, groups: GroupIndex, spec: Spec) -> Tensor:
    """Project ``z`` (n, c) float64, differentiably (the solver protocol)."""
    answer = _take_remembered(z, groups, spec)
    if answer is None:
        answer = project(to_host(z), groups, spec)
    return output_of(z, answer, groups, spec)


def answer_of(z: Tensor, groups: GroupIndex, spec: Spec) -> ExactAnswer:
    """The projection of ``z`` (n, c), float32 or float64 on any device, solved in
    float64 on the host (the dispatcher certifies it before :func:`output_of`)."""
    host = to_host(z)
    return project(host if host.dtype == np.float64 else host.astype(np.float64), groups, spec)


def output_of(z: Tensor, answer: ExactAnswer, groups: GroupIndex, spec: Spec) -> Tensor:
    """``answer`` as a tensor in ``z``'s dtype and on its device, differentiable in
    ``z`` when ``z`` requires grad (one graph node: the dtype conversions included)."""
    if z.requires_grad and torch.is_grad_enabled():
        return _ExactProjection.apply(z, answer, groups, spec)
    return _to_device(answer.out, z.device, z.dtype)


def _to_device(a: np.ndarray, device, dtype: torch.dtype = torch.float64) -> Tensor:
    t = torch.from_numpy(a if dtype == torch.float64 else a.astype(_NUMPY[dtype]))
    return t if device.type == "cpu" else t.to(device)


_NUMPY = {torch.float32: np.float32, torch.float64: np.float64}

solve_exact.exact = True  # its answers are the projection by construction
# the dispatcher takes the float64 answer (answer_of), certifies it, and builds one
# graph node from z in its own dtype (output_of), instead of converting z to float64
# and the output back in two more nodes
solve_exact.answer_of, solve_exact.output_of = answer_of, output_of

_MEMO = "exact answer"


def exact_answer(z: Tensor, groups: GroupIndex, spec: Spec) -> ExactAnswer:
    """The exact projection of the tensor ``z`` (n, c), remembered for this batch.

    Another solver that builds on the exact answer (qpth takes the outputs the box
    holds and the interval's position from it) calls this; the dispatcher's reference
    call to :func:`solve_exact` on the same ``z`` and ``spec`` then takes the answer
    instead of solving again. The memo lives in the batch's
    :class:`~fairsk._groups.GroupIndex`, holds ``z`` only weakly, is keyed on its
    version counter (an in-place change invalidates it) and is used once. A
    :class:`~.spec.SolverError` is remembered and raised again the same way.
    """
    try:
        answer = project(to_host(z), groups, spec)
    except SolverError as err:
        answer = err
    groups._cache[_MEMO] = (weakref.ref(z), z._version, spec, answer)
    if isinstance(answer, SolverError):
        raise answer
    return answer


def _take_remembered(z: Tensor, groups: GroupIndex, spec: Spec) -> ExactAnswer | None:
    """The answer :func:`exact_answer` left for this ``z`` and ``spec`` (removed), or None."""
    memo = groups._cache.pop(_MEMO, None)
    if memo is None:
        return None
    ref, version, memo_spec, answer = memo
    if ref() is not z or version != z._version or memo_spec is not spec:
        return None
    if isinstance(answer, SolverError):
        raise SolverError(str(answer))
    return answer


class _ExactProjection(torch.autograd.Function):
    """Carries a precomputed projection into the graph; backward: the projector."""

    @staticmethod
    def forward(ctx, z, answer, groups, spec):
        ctx.answer, ctx.groups, ctx.spec = answer, groups, spec
        return _to_device(answer.out, z.device, z.dtype)

    @staticmethod
    def backward(ctx, grad):
        a = ctx.answer
        res = projector_vjp(to_host(grad), a.tight, a.free, ctx.groups, ctx.spec.criterion.couples_multipliers)
        return _to_device(res, grad.device, grad.dtype), None, None, None


def project(z: np.ndarray, groups: GroupIndex, spec: Spec) -> ExactAnswer:
    """The projection of ``z`` (n, c) float64, without autograd."""
    K = groups.n_slots
    if z.shape[0] == 0 or groups.n_attributes == 0:
        return _clipped(z, spec, K)
    if groups.n_attributes == 1:
        return _project_attribute(z, groups, 0, spec)
    if not spec.has_box:
        return _project_shifts(z, groups, spec)
    return _project_boxed_shifts(z, groups, spec)


def _clipped(z: np.ndarray, spec: Spec, K: int) -> ExactAnswer:
    lb, ub = spec.box
    out = np.clip(z, lb, ub) if spec.has_box else z.copy()
    free = ((z > lb) & (z < ub)) if spec.has_box else None
    return ExactAnswer(out, np.zeros((K, z.shape[1]), dtype=bool), free)


def _answer_from_output(out: np.ndarray, groups: GroupIndex, spec: Spec) -> ExactAnswer:
    """Active set read off an output of an iterative method (within :func:`active_tolerance`)."""
    delta = active_tolerance(max_abs(out) + spec.tolerance)
    free = None
    if spec.has_box:
        lb, ub = spec.box
        free = (out > lb + delta) & (out < ub - delta)
    return ExactAnswer(out, _tight_at(groups.means(out), groups, spec, delta), free)


def _tight_at(means: np.ndarray, groups: GroupIndex, spec: Spec, delta: float) -> np.ndarray:
    """Slots (K, c) whose constraint is active at the group ``means`` (within ``delta``)."""
    tight = np.zeros(means.shape, dtype=bool)
    for a in range(groups.n_attributes):
        sl = groups.attribute(a)
        r = None if spec.targets is None else spec.targets[sl]
        tight[sl] = spec.criterion.active(means[sl], spec.tolerance, r, delta)
    return tight


def _project_attribute(z: np.ndarray, groups: GroupIndex, a: int, spec: Spec) -> ExactAnswer:
    """Exact projection onto the box and the constraints of attribute ``a`` alone."""
    sl = groups.attribute(a)
    codes, counts = groups.codes(a), groups.counts[sl]
    crit, tol = spec.criterion, spec.tolerance
    tight = np.zeros((groups.n_slots, z.shape[1]), dtype=bool)
    out = np.empty(z.shape)  # the one fresh (n, c) array: large temporaries cost page faults
    if not spec.has_box and counts.shape[0] <= 64:
        # a few groups (the usual batch): the means as Python floats, one array call per step
        for j in range(z.shape[1]):
            r = spec.targets_of(sl, j)
            shifted = shift_column(z[:, j], codes, counts, crit, tol, None if r is None else r.tolist(), out[:, j])
            if shifted is None:
                raise SolverError("the group sums of z are not finite (overflow)")
            tight[sl, j] = shifted[1]
        return ExactAnswer(out, tight, None)
    if not spec.has_box:
        for j in range(z.shape[1]):
            means = group_sums(z[:, j], codes, counts.shape[0]) / counts
            scale = _finite_scale(means)
            if scale is None:
                raise SolverError("the group sums of z are not finite (overflow)")
            delta = active_tolerance(scale + tol)
            new, tight[sl, j] = crit.project_means(means, counts, tol, spec.targets_of(sl, j), delta)
            col = out[:, j]
            # mode="clip": the codes are in range by construction, and the default
            # mode buffers the whole output to be able to raise
            np.take(np.subtract(new, means), codes, out=col, mode="clip")
            col += z[:, j]
        return ExactAnswer(out, tight, None)
    lb, ub = spec.box
    order = bounds = None
    free = np.empty(z.shape, dtype=bool)
    for j in range(z.shape[1]):
        col = z[:, j]
        settled = _settle_attribute(col, codes, counts, spec, spec.targets_of(sl, j), ONE_ATTRIBUTE_BOX_STEPS)
        if settled is not None:
            shifted, tight[sl, j], delta = settled
            free[:, j] = (shifted > lb + delta) & (shifted < ub - delta)
            clip(shifted, lb, ub, out=out[:, j])
            continue
        if order is None:
            bounds = np.concatenate(([0], np.cumsum(counts.astype(np.int64))))
            order = _by_group(codes, counts.shape[0])
        ranked = col[order]
        for g in range(counts.shape[0]):  # each group's values sorted in place
            ranked[bounds[g]: bounds[g + 1]].sort()
        sums = [BoxSum(ranked[bounds[g]: bounds[g + 1]], lb, ub) for g in range(counts.shape[0])]
        m0 = group_sums(np.clip(col, lb, ub), codes, counts.shape[0]) / counts
        if not np.isfinite(m0).all():
            raise SolverError("the group sums of z are not finite (overflow)")

        shifts_for = GroupShifts(sums, m0, counts)
        delta = active_tolerance(float(np.abs(m0).max()) + tol)
        target, tight[sl, j] = crit.box_means(m0, counts, tol, spec.targets_of(sl, j), lb, ub, shifts_for, delta)
        shifted = col - np.take(shifts_for(target), codes, mode="clip")
        # an output within rounding of a bound is at the bound (a group held by the
        # box can be moved by a rounding error's worth, which must not free it)
        free[:, j] = (shifted > lb + delta) & (shifted < ub - delta)
        np.clip(shifted, lb, ub, out=out[:, j])
    return ExactAnswer(out, tight, free)


def shift_column(col: np.ndarray, codes: np.ndarray, counts: np.ndarray, crit, tol: float, r: list | None,
                 out: np.ndarray | None = None) -> tuple[np.ndarray, list, list] | None:
    """One column, one attribute of a few groups, no box: the projection in closed
    form on the group means as Python floats (one ``bincount``, one gather);
    ``(outputs, tight groups, shifts)``, or None when a group sum is not finite.
    ``out``: where to write the outputs (else a fresh array)."""
    n = counts.tolist()
    values = [s / c for s, c in zip(group_sums(col, codes, len(n)).tolist(), n)]
    if not all(map(math.isfinite, values)):
        return None
    delta = active_tolerance(max(map(abs, values)) + tol)
    new, tight = crit.project_values(values, n, tol, r, delta)
    shift = [a - b for a, b in zip(new, values)]
    out = np.take(np.array(shift), codes, out=out, mode="clip")
    out += col
    return out, tight, shift


def _settle_attribute(col: np.ndarray, codes: np.ndarray, counts: np.ndarray, spec: Spec, r: np.ndarray | None,
                      steps: int) -> tuple[np.ndarray, np.ndarray, float] | None:
    """One attribute and a box, one column: the primal-dual active-set iteration over
    which outputs the box holds, each step in closed form; ``(z - shift, tight groups,
    delta)`` once the guess reproduces itself, or None (the caller then inverts each
    group's clipped sum, which always answers). See :func:`settle_column`."""
    lb, ub = spec.box
    settled = settle_column(col, codes, counts, spec.criterion, spec.tolerance, lb, ub, r, steps)
    if settled is None:
        return None
    shifted, tight, delta, _, _ = settled
    return shifted, np.array(tight, dtype=bool), delta


def settle_column(col: np.ndarray, codes: np.ndarray, counts: np.ndarray, crit, tol: float, lb: float, ub: float,
                  r: np.ndarray | None, steps: int, low: float | None = None, high: float | None = None
                  ) -> tuple[np.ndarray, list, float, float, float] | None:
    """The active-set iteration of :func:`_settle_attribute` on the box ``[lb, ub]``
    (infinite ends where there is none): ``(z - shift, tight groups (list), delta,
    min, max of z - shift)``, or None; ``z - shift`` is ``col`` itself when nothing
    moves. ``low``/``high``: ``min``/``max`` of ``col`` when the caller has them.

    For a guess of the held outputs, the free outputs of group g move together by
    ``t_g`` and the held ones stay at their bounds, so the group's mean is ``a_g -
    (f_g / n_g) t_g`` (``a_g`` the mean with the guess applied, ``f_g`` its free
    outputs) and the cost is ``sum_g f_g t_g^2``: in terms of the means ``u``, the
    criterion's projection of ``a`` with weights ``n_g^2 / f_g``
    (:meth:`~.criteria.Criterion.project_means`), then ``t_g = (n_g / f_g)(a_g - u_g)``.
    When ``clip(z - t)`` holds the outputs the guess held, it meets every optimality
    condition of the boxed problem (the reasoning of :func:`_settle`): it is the
    projection. The first guess holds what ``clip(z)`` holds: when the projection moves
    no output across a bound, one step answers.
    """
    k = counts.shape[0]
    n = counts.tolist()
    targets = None if r is None else r.tolist()
    if low is None:
        low, high = float(col.min()), float(col.max())
    # the guess as two masks, each None while it holds nothing (the usual start, and
    # the usual side of a box that holds outputs at one bound only): the min and max
    # of the outputs answer that mask's questions, and its array calls are skipped
    lower = (col <= lb) if low <= lb else None
    upper = (col >= ub) if high >= ub else None
    delta = None
    for step in range(steps):
        if lower is None and upper is None:
            held, n_free = col, n
        else:
            if step == 0:  # the first guess holds what clip(z) holds: held = clip(z), one pass
                held = clip(col, lb, ub)
                held_mask = lower if upper is None else upper if lower is None else lower | upper
            elif upper is None:
                held, held_mask = np.where(lower, lb, col), lower
            elif lower is None:
                held, held_mask = np.where(upper, ub, col), upper
            else:
                held, held_mask = np.where(lower, lb, np.where(upper, ub, col)), lower | upper
            n_free = [ng - h for ng, h in zip(n, group_sums(held_mask, codes, k).tolist())]
        # the means as Python floats (the same divisions as NumPy's, one array call fewer)
        a = [s / ng for s, ng in zip(group_sums(held, codes, k).tolist(), n)]
        if step == 0:  # the first guess: a is the mean of clip(z), as in the sorted path
            if not all(map(math.isfinite, a)):
                return None
            delta = active_tolerance(max(map(abs, a)) + tol)
        if not all(n_free):  # a group the guess holds whole cannot move its mean
            return None
        u, tight = crit.project_values(a, [ng * ng / f for ng, f in zip(n, n_free)], tol, targets, delta)
        shift = [ng / f * (ag - ug) for ng, f, ag, ug in zip(n, n_free, a, u)]
        if step == 0 and not any(shift):  # nothing moves: z keeps the first guess, its own (exactly)
            return col, tight, delta, low, high
        shifted = np.take(np.array(shift), codes, mode="clip")
        np.subtract(col, shifted, out=shifted)
        s_low, s_high = float(shifted.min()), float(shifted.max())
        new_lower = (shifted <= lb) if s_low <= lb else None
        new_upper = (shifted >= ub) if s_high >= ub else None
        if lower is None and upper is None and (
                (s_low <= lb and s_low < lb - delta) or (s_high >= ub and s_high > ub + delta)):
            # from a guess holding nothing, the extreme output beyond a bound went
            # beyond it by more than rounding: the test below would say "not settled"
            # (the same floats, without the arrays)
            lower, upper = new_lower, new_upper
            continue
        if _keeps_guess(shifted, lower, upper, new_lower, new_upper, lb, ub, delta):
            return shifted, tight, delta, s_low, s_high
        lower, upper = new_lower, new_upper
    return None


def _keeps_guess(shifted: np.ndarray, lower, upper, new_lower, new_upper, lb: float, ub: float,
                 delta: float) -> bool:
    """Whether the outputs ``shifted`` keep the guess of the held ones (``lower`` /
    ``upper``: the guess, ``new_lower`` / ``new_upper``: where ``shifted`` lies; a None
    mask holds nothing): every output whose side changed must lie within rounding
    (``delta``) of the bound it left or reached. An output that leaves one bound for
    the other, or goes beyond a bound by more than rounding, has moved."""
    for old, new, bound in ((lower, new_lower, lb), (upper, new_upper, ub)):
        change = old if new is None else new if old is None else new != old
        if change is None:
            continue
        at = np.flatnonzero(change)  # only the outputs whose side changed are read
        if at.size and (np.abs(shifted[at] - bound) > delta).any():
            return False
    return True


def _finite_scale(means: np.ndarray) -> float | None:
    """``max |means|`` of a few group means, or None when one is not finite (a few
    groups: Python floats beat array reductions)."""
    if means.shape[0] > 64:
        return float(np.abs(means).max()) if np.isfinite(means).all() else None
    values = means.tolist()
    if not all(map(math.isfinite, values)):
        return None
    return max(map(abs, values), default=0.0)


def _by_group(codes: np.ndarray, k: int) -> np.ndarray:
    """Indices (n,) that put the samples in group order (stable). A sort of small
    integer keys is a radix sort in NumPy (one O(n) pass), several times faster than
    sorting by group and value at once; the values are then sorted group by group."""
    if k <= 1 << 16:
        return np.argsort(codes.astype(np.uint16), kind="stable")
    return np.argsort(codes, kind="stable")


def _project_shifts(z: np.ndarray, groups: GroupIndex, spec: Spec) -> ExactAnswer:
    """Several attributes, no box: the QP over the group shifts (:func:`shift_qp`).

    The active set is read off the means the QP ends at (``m0 - metric @ w``, the
    group means of the output up to rounding), which spares a pass over the output;
    the certificate still reads the output itself."""
    n_inv = 1.0 / groups.counts
    metric = groups.cross_counts() * n_inv[:, None] * n_inv[None, :]
    means = groups.means(z)
    if not np.isfinite(means).all():
        raise SolverError("the group sums of z are not finite (overflow)")
    blocks = [groups.attribute(a) for a in range(groups.n_attributes)]
    # the QP and its active set live on the means: their magnitude sets the slack
    # (as on the one-attribute path)
    delta = active_tolerance(float(np.abs(means).max(initial=0.0)) + spec.tolerance)
    shifts = np.empty(means.shape)
    with one_blas_thread():
        _solve_columns(means, metric, blocks, spec, delta, shifts, n_inv)
    ends = means - metric @ (shifts / n_inv[:, None])
    out = groups.expand(shifts)
    np.subtract(z, out, out=out)
    return ExactAnswer(out, _tight_at(ends, groups, spec, delta), None)


def _project_boxed_shifts(z: np.ndarray, groups: GroupIndex, spec: Spec) -> ExactAnswer:
    """Several attributes and a box: a primal-dual active-set (semismooth Newton)
    iteration over which outputs the box holds at a bound (:func:`_settle`).

    It starts from the outputs ``clip(z)`` holds; when it cycles or a guess leaves no
    feasible point, Dykstra's algorithm over the exact one-attribute projections
    (:func:`~.kernels.dykstra`) supplies better guesses: its iterates find which outputs
    the box holds long before their values converge, and every ``DYKSTRA_CHECK``
    sweeps the iteration is restarted from them. Its answer is the exact projection
    (its optimality conditions hold); where it never settles (degenerate cases where
    many outputs sit exactly at a bound) Dykstra's converged iterate is the answer,
    and when Dykstra does not converge within ``DYKSTRA_MAX_SWEEPS`` sweeps the
    solver reports a failure.
    """
    lb, ub = spec.box
    delta = active_tolerance(float(np.abs(np.clip(z, lb, ub)).max()) + spec.tolerance)
    out = np.empty(z.shape)
    with one_blas_thread():
        for j in range(z.shape[1]):
            col, cspec = z[:, j], _column_spec(spec, j)
            settled = _settle(col, col <= lb, col >= ub, groups, cspec, delta, PDAS_MAX_STEPS)
            if settled is None and col.shape[0] <= DENSE_MAX_ROWS:
                settled = _dense_active_set(col, groups, cspec, delta)
            if settled is None:
                def from_dykstra(x, col=col, cspec=cspec):
                    x = x[:, 0]
                    return _settle(col, x <= lb + delta, x >= ub - delta, groups, cspec, delta, 5)

                def projection(a, cspec=cspec):
                    return lambda x: _project_attribute(x, groups, a, cspec).out

                settled, converged = dykstra(col[:, None], [projection(a) for a in range(groups.n_attributes)],
                                             DYKSTRA_MAX_SWEEPS, check=from_dykstra, check_every=DYKSTRA_CHECK)
                if not converged:
                    raise SolverError("the active-set iteration over the box did not settle, nor did Dykstra's "
                                      f"algorithm in {DYKSTRA_MAX_SWEEPS} sweeps")
                settled = settled.reshape(-1)
            out[:, j] = settled
    return _answer_from_output(out, groups, spec)


def _settle(col, lower, upper, groups, spec, delta, steps) -> np.ndarray | None:
    """The primal-dual active-set iteration for one column, from a guess of the
    outputs held at the lower and upper bounds; the projection, or None.

    For a guess, the outputs it holds stay at their bounds and the others solve the
    no-box problem exactly in shift space (:func:`shift_qp`, with the cross counts of
    the free outputs and the held ones' contribution in the means). The shifts give a
    new guess ``clip(col - shift)``; when the guess reproduces itself, ``clip(col -
    shift)`` meets every optimality condition of the boxed problem with the same
    multipliers, so it is the projection.
    """
    lb, ub = spec.box
    blocks = [groups.attribute(a) for a in range(groups.n_attributes)]
    for _ in range(steps):
        free = ~(lower | upper)
        try:
            shifts = _held_shifts(col, lower, upper, free, groups, blocks, spec, delta)
        except SolverError:
            # a guess that holds every output of a group cannot move that group's
            # mean: release such groups once and solve again
            stuck = _fully_held(free, groups)
            if not stuck.any():
                return None
            lower, upper, free = lower & ~stuck, upper & ~stuck, free | stuck
            try:
                shifts = _held_shifts(col, lower, upper, free, groups, blocks, spec, delta)
            except SolverError:
                return None
        shifted = col - groups.expand(shifts)[:, 0]
        new_lower, new_upper = shifted <= lb, shifted >= ub
        # a guess that changes only within rounding of the bounds involved has settled
        if _keeps_guess(shifted, lower, upper, new_lower, new_upper, lb, ub, delta):
            return np.clip(shifted, lb, ub)
        lower, upper = new_lower, new_upper
    return None


def _dense_active_set(col: np.ndarray, groups: GroupIndex, spec: Spec, delta: float) -> np.ndarray | None:
    """The boxed problem of one column solved exactly by :func:`shift_qp` with every
    output as a slot of its own (a group of size 1, whose "mean" is the output): the
    box's rows are rows on those slots, the metric is dense ``(K + n)^2``. For small
    batches, where the active-set iteration over the box can cycle (many outputs at
    their bounds, tolerance 0); None when it does not finish."""
    lb, ub = spec.box
    n, K = col.shape[0], groups.n_slots
    inv_n = 1.0 / groups.counts
    metric = np.empty((K + n, K + n))
    metric[:K, :K] = groups.cross_counts() * inv_n[:, None] * inv_n[None, :]
    member = np.zeros((n, K))  # S D: sample i in slot g, weighted 1/n_g
    for a in range(groups.n_attributes):
        member[np.arange(n), groups.gid[:, a]] = inv_n[groups.gid[:, a]]
    metric[K:, :K], metric[:K, K:], metric[K:, K:] = member, member.T, np.eye(n)
    means = np.concatenate([groups.means(col[:, None])[:, 0], col])
    blocks = [groups.attribute(a) for a in range(groups.n_attributes)] + [slice(K, K + n)]

    def most_violated(b, m):
        if b < groups.n_attributes:
            return spec.criterion.most_violated(m, spec.tolerance, spec.targets_of(blocks[b], 0))
        over, under = m - ub, lb - m  # the box: y_i <= ub and -y_i <= -lb
        i, j = int(np.argmax(over)), int(np.argmax(under))
        if over[i] >= under[j]:
            return float(over[i]), {i: 1.0}, ub
        return float(under[j]), {j: -1.0}, -lb

    w, _ = shift_qp(means, metric, blocks, most_violated, delta, max_iter=20 * (K + n) + 100)
    if w is None:
        return None
    return np.clip(col - groups.expand((w[:K] * inv_n)[:, None])[:, 0] - w[K:], lb, ub)


def _held_shifts(col, lower, upper, free, groups, blocks, spec, delta) -> np.ndarray:
    """Shifts (K, 1) of the shift-space QP with the ``lower``/``upper`` outputs held at
    the box's bounds and the ``free`` ones moving."""
    lb, ub = spec.box
    n_inv = 1.0 / groups.counts
    held = np.where(lower, lb, np.where(upper, ub, col))
    means = groups.means(held[:, None])
    if not np.isfinite(means).all():
        raise SolverError("the group sums of z are not finite (overflow)")
    metric = groups.cross_counts(free.astype(np.float64)) * n_inv[:, None] * n_inv[None, :]
    shifts = np.empty(means.shape)
    _solve_columns(means, metric, blocks, spec, delta, shifts, n_inv)
    return shifts


def _fully_held(free: np.ndarray, groups: GroupIndex) -> np.ndarray:
    """Outputs (n,) in a group none of whose outputs is free (any attribute)."""
    stuck = np.zeros(free.shape[0], dtype=bool)
    for a in range(groups.n_attributes):
        sl = groups.attribute(a)
        n_free = group_sums(free.astype(np.float64), groups.codes(a), sl.stop - sl.start)
        stuck |= (n_free == 0)[groups.codes(a)]
    return stuck


def _column_spec(spec: Spec, j: int) -> Spec:
    """``spec`` restricted to output column ``j`` (its targets' column)."""
    if spec.targets is None or spec.targets.shape[1] == 1:
        return spec
    return Spec(spec.criterion, spec.tolerance, spec.lb, spec.ub, spec.targets[:, j:j + 1])


def _solve_columns(means, metric, blocks, spec, delta, shifts, n_inv) -> None:
    for j in range(means.shape[1]):
        def most_violated(b, m, j=j):
            return spec.criterion.most_violated(m, spec.tolerance, spec.targets_of(blocks[b], j))

        w, reason = shift_qp(means[:, j], metric, blocks, most_violated, delta)
        if w is None:
            raise SolverError(reason)
        shifts[:, j] = w * n_inv
