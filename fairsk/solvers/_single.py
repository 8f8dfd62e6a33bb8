"""The exact solver's fast path: one attribute, no box, on the CPU, in NumPy.

This is the case every training step and most predict calls hit. The general path
(:mod:`fairsk.solvers.exact` and :func:`fairsk.solvers._problem.projector_vjp`) builds a
:class:`~fairsk._groups.GroupIndex` and runs some forty small torch operations per call:
at training batch sizes torch's per-operation overhead, not arithmetic, is the cost.
Here the batch is touched only by ``bincount`` and gather passes, the ``k`` group
means are handled as Python floats (cheaper than array calls for a few groups, and
``O(k log k)`` for many), and the means computed by the output check are reused by
the backward pass. The maths is the general path's, step for step; the tests compare
the two (``tests/test_fast_path.py``).

Data passes at large ``n``: recode (one ``bincount``; no lookup when every code is
present), group sums, output, output check; backward: group sums and one gather.
A NaN or infinity in ``z`` shows up in the group sums, so it costs no extra pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ._problem import Spec


def recode(codes: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense codes of the present values (int64) and their counts (float64).

    ``top`` is the largest code. NumPy twin of :func:`fairsk._groups._recode`: one
    ``bincount``, and the lookup pass is skipped when every code up to ``top`` is
    present (the usual case).
    """
    n = codes.shape[0]
    if top >= max(4 * n, 1024):
        _, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
        return inverse.reshape(-1), counts.astype(np.float64)
    counts = np.bincount(codes, minlength=top + 1)
    if counts.all():
        return codes, counts.astype(np.float64)
    present = counts > 0
    return (np.cumsum(present) - 1)[codes], counts[present].astype(np.float64)


def column_means(v: np.ndarray, codes: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Group means (k,) of one column ``v`` (n,)."""
    return np.bincount(codes, weights=v, minlength=counts.shape[0]) / counts


def group_means(v: np.ndarray, codes: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    """Group means of each column of ``v`` (n, c): a list of c arrays (k,)."""
    return [column_means(v[:, j], codes, counts) for j in range(v.shape[1])]


def interval_start_1d(m, w, tol: float) -> float:
    """Lower end ``c`` of the interval ``[c, c + tol]`` closest to the means ``m``.

    Root of ``F(c) = sum_g w_g ((m_g - tol - c)_+ - (c - m_g)_+)``: non-increasing and
    linear between the breakpoints ``m_g - tol`` and ``m_g``. Bisection over the
    sorted breakpoints finds the segment (``O(k log k)``); one linear step lands on the
    root. ``m`` and ``w`` are sequences of floats.
    """
    m = [float(x) for x in m]
    w = [float(x) for x in w]

    def f(c: float) -> float:
        total = 0.0
        for mg, wg in zip(m, w):
            above = mg - tol - c
            if above > 0:
                total += wg * above
            elif c > mg:
                total -= wg * (c - mg)
        return total

    bps = sorted([x - tol for x in m] + m)
    # last breakpoint with F >= 0 (F at the first one is >= 0 by construction)
    lo, hi = 0, len(bps) - 1
    f_hi = f(bps[hi])
    if f_hi >= 0:
        return bps[hi]
    f_lo = f(bps[lo])
    while hi - lo > 1:
        mid = (lo + hi) // 2
        f_mid = f(bps[mid])
        if f_mid >= 0:
            lo, f_lo = mid, f_mid
        else:
            hi, f_hi = mid, f_mid
    b0, b1 = bps[lo], bps[hi]
    if f_lo > 0 and f_lo > f_hi and b1 > b0:
        return b0 + f_lo / ((f_lo - f_hi) / (b1 - b0))
    return b0


def new_column_means(m: list, w: list, spec: Spec, targets: list | None) -> list:
    """The projected group means of one column: clipped into one interval (ecp) or
    into each group's band around its target (eer)."""
    tol = spec.tolerance
    if spec.criterion == "eer":
        return [min(max(mg, r - tol), r + tol) for mg, r in zip(m, targets)]
    if len(m) < 2:
        return m
    c = interval_start_1d(m, w, tol)
    return [min(max(mg, c), c + tol) for mg in m]


def worst_violation(means: list[np.ndarray], spec: Spec, targets: list[np.ndarray] | None) -> float:
    """Largest constraint violation given the output's group means per column (nan
    if one is not finite); as :func:`~fairsk.solvers._problem.violation`."""
    worst = 0.0
    for j, col in enumerate(means):
        m = col.tolist()
        if not math.isfinite(sum(m)):
            return math.nan
        if spec.criterion == "eer":
            worst = max(worst, max(abs(a - b) for a, b in zip(m, targets[j].tolist())) - spec.tolerance)
        elif len(m) >= 2:
            worst = max(worst, max(m) - min(m) - spec.tolerance)
    return worst


@dataclass
class Solution:
    """What the backward pass needs from the forward (the output's group means, not
    the output itself)."""

    codes: np.ndarray
    counts: np.ndarray
    out_means: list[np.ndarray]  # group means of each column of ``out``
    scale: float  # max |output| (float64): the scale of the rounding allowed in "tight"
    spec: Spec
    targets: list[np.ndarray] | None


def project(z: np.ndarray, codes: np.ndarray, counts: np.ndarray, spec: Spec, targets: list[np.ndarray] | None,
            with_means: bool = True) -> tuple[np.ndarray | None, list | None]:
    """Projection of ``z`` (n, c) float64 onto one attribute's constraints:
    ``(output, output group means or None)``.

    Returns ``(None, None)`` when the group sums of ``z`` are not finite (NaN/inf in
    ``z``, or an overflow); the caller decides what that means.
    """
    w = counts.tolist()
    out = np.empty(z.shape)  # the one fresh (n, c) array: large temporaries cost page faults
    for j in range(z.shape[1]):
        means = column_means(z[:, j], codes, counts)
        m = means.tolist()
        if not math.isfinite(sum(m)):
            return None, None
        new = new_column_means(m, w, spec, None if targets is None else targets[j].tolist())
        col = out[:, j]
        # mode="clip": the codes are in range by construction, and the default
        # mode buffers the whole output to be able to raise
        np.take(np.subtract(new, means), codes, out=col, mode="clip")
        col += z[:, j]
    return out, (group_means(out, codes, counts) if with_means else None)


def tight_groups(sol: Solution, j: int, delta: float) -> list[bool]:
    """Groups of column ``j`` whose constraint is active at the output (within
    ``delta``); as :func:`~fairsk.solvers._problem.tight_slots`."""
    m, tol = sol.out_means[j].tolist(), sol.spec.tolerance
    if sol.spec.criterion == "eer":
        return [abs(a - r) >= tol - delta for a, r in zip(m, sol.targets[j].tolist())]
    hi, lo = max(m), min(m)
    if len(m) < 2 or hi - lo < tol - delta:
        return [False] * len(m)
    return [a >= hi - delta or a <= lo + delta for a in m]


def vjp(grad: np.ndarray, sol: Solution) -> np.ndarray:
    """``J grad`` (n, c): remove from ``grad`` its projection onto the active rows.

    As ``_single_attribute_correction`` with every coordinate free: on each tight
    group the correction is the group mean ``m_g`` of ``grad``, less (ecp) the
    count-weighted mean ``lam`` of those means, so that the multipliers sum to zero.
    """
    # as projector_vjp: rounding of the means is relative to the outputs' magnitude
    delta = 1e-9 * (1.0 + sol.scale + abs(sol.spec.tolerance))
    n = sol.counts.tolist()
    corrections = []
    for j in range(grad.shape[1]):
        tight = tight_groups(sol, j, delta)
        if not any(tight):
            corrections.append(None)
            continue
        m = column_means(grad[:, j], sol.codes, sol.counts).tolist()
        corr = [mg if t else 0.0 for mg, t in zip(m, tight)]
        if sol.spec.criterion == "ecp":
            lam = sum(ng * c for ng, c in zip(n, corr)) / sum(ng for ng, t in zip(n, tight) if t)
            corr = [c - lam if t else 0.0 for c, t in zip(corr, tight)]
        corrections.append(corr)
    if all(corr is None for corr in corrections):
        return grad
    out = np.empty(grad.shape)
    for j, corr in enumerate(corrections):
        col = out[:, j]
        if corr is None:
            col[:] = grad[:, j]
        else:
            np.take(np.asarray(corr), sol.codes, out=col, mode="clip")
            np.subtract(grad[:, j], col, out=col)
    return out


class SingleAttributeProjection(torch.autograd.Function):
    """Carries a precomputed projection ``out`` (a NumPy array in ``z``'s dtype) into
    the graph; the backward pass is :func:`vjp`."""

    @staticmethod
    def forward(ctx, z: Tensor, out: np.ndarray, sol: Solution) -> Tensor:
        ctx.sol = sol
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad: Tensor):
        g = grad.detach().numpy()
        out = vjp(g if g.dtype == np.float64 else g.astype(np.float64), ctx.sol)
        return torch.from_numpy(out if out.dtype == g.dtype else out.astype(g.dtype)), None, None


class BoxedGroup:
    """The sum ``S(t) = sum_i clip(z_i - t, lb, ub)`` over one group's samples, and its
    exact inverse: NumPy twin of the exact solver's ``_MeanInverse`` for one group.

    ``S`` is continuous, non-increasing and linear between the breakpoints ``z_i - ub``
    and ``z_i - lb``; it is evaluated at all breakpoints once (sorted samples and
    prefix sums), and an inversion is one ``searchsorted`` plus a linear step.
    """

    def __init__(self, z_sorted: np.ndarray, lb: float, ub: float):
        self.z, self.lb, self.ub = z_sorted, lb, ub
        self.prefix = np.concatenate(([0.0], np.cumsum(z_sorted)))
        bps = np.concatenate((z_sorted - ub, z_sorted - lb))
        self.bps = np.sort(bps[np.isfinite(bps)])
        self.neg_sums = -self.sums(self.bps)  # non-decreasing

    def sums(self, t: np.ndarray) -> np.ndarray:
        """``S(t)`` for an array of shifts."""
        n = self.z.shape[0]
        hi = np.searchsorted(self.z, t + self.ub, side="left")  # z_i >= t + ub sit at ub
        lo = np.searchsorted(self.z, t + self.lb, side="right")  # z_i <= t + lb sit at lb
        lo = np.minimum(lo, hi)
        total = (self.prefix[hi] - self.prefix[lo]) - t * (hi - lo)
        if np.isfinite(self.ub):
            total = total + self.ub * (n - hi)
        if np.isfinite(self.lb):
            total = total + self.lb * lo
        return total

    def shift_for(self, total: float) -> float:
        """The shift ``t`` with ``S(t) = total`` (a value S takes)."""
        bps, neg = self.bps, self.neg_sums
        j = int(np.searchsorted(neg, -total, side="left"))
        if j == 0:  # at or above S at the first breakpoint: S is flat (all at ub) or linear before it
            free = self.z.shape[0] if not np.isfinite(self.ub) else 0
            if free == 0 or bps.shape[0] == 0:
                return float(bps[0]) if bps.shape[0] else 0.0
            return float(bps[0]) + (-neg[0] - total) / free
        if j == bps.shape[0]:  # below S at the last breakpoint: linear after it when lb = -inf
            free = self.z.shape[0] if not np.isfinite(self.lb) else 0
            if free == 0:
                return float(bps[-1])
            return float(bps[-1]) + (-neg[-1] - total) / free
        b0, b1, s0, s1 = float(bps[j - 1]), float(bps[j]), -float(neg[j - 1]), -float(neg[j])
        if s0 == s1 or b1 == b0:
            return b0
        return b0 + (s0 - total) * (b1 - b0) / (s0 - s1)


def project_box(z: np.ndarray, codes: np.ndarray, counts: np.ndarray, spec: Spec,
                targets: list[np.ndarray] | None) -> np.ndarray:
    """Exact projection of ``z`` (n, c) float64 onto the box and one attribute's
    constraints: each group shifted by one scalar, then clipped (NumPy twin of the box
    branch of ``exact._project_attribute``)."""
    lb = -np.inf if spec.lb is None else float(spec.lb)
    ub = np.inf if spec.ub is None else float(spec.ub)
    bounds = np.concatenate(([0], np.cumsum(counts.astype(np.int64))))
    out = np.empty_like(z)
    for j in range(z.shape[1]):
        col = z[:, j]
        ranked = col[np.lexsort((col, codes))]  # by group, then value
        groups = [BoxedGroup(ranked[bounds[g] : bounds[g + 1]], lb, ub) for g in range(counts.shape[0])]
        m0 = column_means(np.clip(col, lb, ub), codes, counts).tolist()
        t = _box_shifts(groups, m0, counts.tolist(), spec, lb, ub, None if targets is None else targets[j].tolist())
        np.clip(col - np.take(np.asarray(t), codes, mode="clip"), lb, ub, out=out[:, j])
    return out


def _box_shifts(groups: list[BoxedGroup], m0: list, n_g: list, spec: Spec, lb: float, ub: float,
                targets: list | None) -> list:
    """Per-group shifts of one column (m0: the group means of the clipped column)."""
    tol = spec.tolerance

    def shifts_to(target: list) -> list:
        return [0.0 if tg == mg else grp.shift_for(tg * ng) for grp, tg, mg, ng in zip(groups, target, m0, n_g)]

    if spec.criterion == "eer":
        lo = [max(r - tol, lb) for r in targets]
        hi = [min(r + tol, ub) for r in targets]
        if any(a > b for a, b in zip(lo, hi)):
            from ..exceptions import InfeasibleProjectionError

            raise InfeasibleProjectionError(
                "criterion='eer' asks for group means outside the box bounds="
                f"({spec.lb}, {spec.ub}): no output can meet tolerance={spec.tolerance}"
            )
        return shifts_to([min(max(m, a), b) for m, a, b in zip(m0, lo, hi)])
    if len(m0) < 2:
        return [0.0] * len(m0)

    def ecp_targets(c: float) -> list:
        return [c + tol if m > c + tol else max(m, c) for m in m0]

    # sum_g n_g t_g(c) is non-increasing in c: bisect for its root until the bracket
    # stops shrinking (machine precision)
    c_lo, c_hi = min(m0) - tol, max(m0)
    for _ in range(200):
        mid = 0.5 * (c_lo + c_hi)
        if not c_lo < mid < c_hi:
            break
        if sum(ng * tg for ng, tg in zip(n_g, shifts_to(ecp_targets(mid)))) > 0:
            c_lo = mid
        else:
            c_hi = mid
    return shifts_to(ecp_targets(0.5 * (c_lo + c_hi)))
