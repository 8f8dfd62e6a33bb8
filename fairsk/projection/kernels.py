"""The projection's numerical kernels, each written once, in NumPy.

They work on the small per-group statistics of a batch (``k`` group means, counts,
the ``K x K`` cross counts) or, for the few passes over the data, on NumPy arrays
with ``bincount``/gather; the solvers and the streaming predictor call them.

* :func:`interval_start`: the interval ``[c, c + tol]`` closest to weighted means;
* :func:`bisect_decreasing`: the root of a non-increasing function, to machine precision;
* :class:`BoxSum`: one group's clipped sum as a function of its shift, and its inverse;
  :class:`GroupShifts`: those of one attribute's groups together;
* :func:`boundary_decreasing`: the root of a non-increasing piecewise-linear function
  whose breakpoints are known, in one or two array evaluations;
* :func:`dykstra`: Dykstra's algorithm over a list of projections;
* :func:`shift_qp`: the projection onto group-mean constraints of several attributes,
  solved exactly in the space of group shifts (a dual active-set method);
* :func:`projector_vjp`: the backward pass (the Jacobian of every projection here is
  the orthogonal projector onto the null space of the active rows, restricted to the
  coordinates the box leaves free);
* :func:`active_tolerance`: the one threshold that calls a constraint active.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from .._groups import GroupIndex, group_sums

__all__ = ["BoxSum", "GroupShifts", "active_basis", "active_tolerance", "bisect_decreasing", "boundary_decreasing",
           "dykstra", "interval_start", "one_blas_thread", "projector_vjp", "shift_qp"]


_BLAS = []


def one_blas_thread():
    """A context in which BLAS/LAPACK run on one thread: the kernels make many tiny
    LAPACK calls, where threads only add synchronisation (solves measured 10-100x
    slower on a busy machine with torch's threads alive). The thread pools are
    inspected once, on first use."""
    if not _BLAS:
        from threadpoolctl import ThreadpoolController

        _BLAS.append(ThreadpoolController())
    return _BLAS[0].limit(limits=1, user_api="blas")


def clip(x: np.ndarray, lb: float, ub: float, out: np.ndarray | None = None) -> np.ndarray:
    """``np.clip(x, lb, ub)`` (NaN stays NaN), through torch's vectorised ``clamp``:
    NumPy's clip measured 3x slower on large arrays. ``out``: where to write (else a
    fresh array)."""
    if out is None:
        out = np.empty_like(x)
    torch.clamp(torch.from_numpy(x), lb, ub, out=torch.from_numpy(out))
    return out


def active_tolerance(scale: float) -> float:
    """Slack below which a constraint counts as active, for outputs of magnitude
    ``scale``: group means computed in float64 carry rounding of about ``1e-16 * scale``
    (times a modest factor for long sums); ``1e-12`` relative leaves room for that and
    no more, so a constraint with real slack is never called active."""
    return 1e-12 * (1.0 + scale)


def interval_start(m: Sequence[float], w: Sequence[float], tol: float, e: Sequence[float] | None = None) -> float:
    """Lower end ``c`` of the interval ``[c, c + tol]`` closest to the means ``m``
    (weights ``w``): the projection of the means onto "all within ``tol``" clips them
    to ``[c, c + tol]``.

    Root of ``F(c) = sum_g w_g ((m_g - tol - c)_+ - (c - m_g)_+)``: non-increasing and
    linear between the breakpoints ``m_g - tol`` and ``m_g``. Bisection over the
    sorted breakpoints finds the segment (``O(k log k)``); one linear step lands on the
    root. Works on Python floats (cheaper than array calls for a few groups).

    With per-group slacks ``e``, the bands ``[c - e_g, c + tol + e_g]`` instead (the
    streaming predictor's pooled rule): ``F(c) = sum_g w_g ((m_g - tol - e_g - c)_+ -
    (c - e_g - m_g)_+)``, with breakpoints ``m_g - tol - e_g`` and ``m_g + e_g``.

    >>> interval_start([0.0, 1.0], [1.0, 1.0], 0.5)
    0.25
    """
    if len(m) > _PYTHON_MAX_GROUPS:
        return _interval_start_sorted(m, w, tol, e)
    m = [float(x) for x in m]
    w = [float(x) for x in w]
    e = [0.0] * len(m) if e is None else [float(x) for x in e]

    def f(c: float) -> float:
        total = 0.0
        for mg, wg, eg in zip(m, w, e):
            above = mg - tol - eg - c
            if above > 0:
                total += wg * above
            elif c - eg > mg:
                total -= wg * (c - eg - mg)
        return total

    bps = sorted([mg - tol - eg for mg, eg in zip(m, e)] + [mg + eg for mg, eg in zip(m, e)])
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


#: above this many groups :func:`interval_start` evaluates ``F`` at every breakpoint at
#: once with NumPy (sorting and prefix sums, ``O(k log k)``) instead of bisecting with
#: ``O(k)`` Python loops (at 10,000 groups, 1 ms instead of 100)
_PYTHON_MAX_GROUPS = 64


def _interval_start_sorted(m, w, tol: float, e=None) -> float:
    """:func:`interval_start` for many groups: ``F`` at all breakpoints by prefix sums."""
    m = np.asarray(m, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    if e is None:  # both ends follow the order of the means: one sort serves both
        up, down = m - tol, m  # F gains w (up - c) for up > c, loses w (c - down) for down < c
        ou = od = np.argsort(m)
    else:
        e = np.asarray(e, dtype=np.float64)
        up, down = m - tol - e, m + e
        ou, od = np.argsort(up), np.argsort(down)
    up_s, wu = up[ou], w[ou]
    down_s, wd = down[od], w[od]
    both = np.concatenate([up_s, down_s])
    order = np.argsort(both, kind="stable")  # a merge of two sorted runs
    bps = both[order]
    # at each breakpoint, the ups counted above c are those after it in the merged order
    # and the downs counted below c those before it: a term whose end equals c is zero
    # either way, so the order among ties does not change F
    is_down = order >= up_s.shape[0]
    iu = np.cumsum(~is_down)
    id_ = np.cumsum(is_down) - is_down
    cw_u = np.concatenate(([0.0], np.cumsum(wu[::-1])))[::-1]  # sum of w over up_s[i:]
    cwu_u = np.concatenate(([0.0], np.cumsum((wu * up_s)[::-1])))[::-1]
    cw_d = np.concatenate(([0.0], np.cumsum(wd)))  # sum of w over down_s[:i]
    cwd_d = np.concatenate(([0.0], np.cumsum(wd * down_s)))
    F = (cwu_u[iu] - bps * cw_u[iu]) - (bps * cw_d[id_] - cwd_d[id_])
    nonneg = np.flatnonzero(F >= 0)
    lo = int(nonneg[-1]) if nonneg.size else 0  # F at the first breakpoint is >= 0 by construction
    if lo == bps.size - 1:
        return float(bps[lo])
    f_lo, f_hi, b0, b1 = float(F[lo]), float(F[lo + 1]), float(bps[lo]), float(bps[lo + 1])
    if f_lo > 0 and f_lo > f_hi and b1 > b0:
        return b0 + f_lo / ((f_lo - f_hi) / (b1 - b0))
    return b0


def bisect_decreasing(f: Callable[[float], float], lo: float, hi: float, steps: int = 200) -> float:
    """Root of a non-increasing ``f`` in ``[lo, hi]`` (the boundary between ``f > 0``
    and ``f <= 0``), to machine precision.

    The functions solved here are piecewise linear, so each step tries the secant
    point of the bracket (false position, with the Illinois rule halving the value of
    an end that stays put, which keeps it converging), and bisects when that point
    would not shrink the bracket. Once the bracket lies within one linear piece the
    secant point is the root; a few steps then close the bracket to adjacent floats,
    where plain bisection needs about 60.
    """
    f_lo, f_hi = f(lo), f(hi)
    if not f_lo > 0:
        return lo
    if f_hi > 0:
        return hi
    stale = 0  # which end stayed put last step (-1 lo, +1 hi)
    for _ in range(steps):
        mid = lo + f_lo * (hi - lo) / (f_lo - f_hi) if f_lo > f_hi else 0.5 * (lo + hi)
        if not lo < mid < hi:
            mid = 0.5 * (lo + hi)
            if not lo < mid < hi:
                break
        f_mid = f(mid)
        if f_mid > 0:
            lo, f_lo = mid, f_mid
            if stale == 1:
                f_hi *= 0.5
            stale = 1
        else:
            hi, f_hi = mid, f_mid
            if stale == -1:
                f_lo *= 0.5
            stale = -1
    return 0.5 * (lo + hi)


class BoxSum:
    """The sum ``S(t) = sum_i clip(z_i - t, lb, ub)`` over one group's samples, and its
    exact inverse.

    ``S`` is continuous, non-increasing and linear between the breakpoints ``z_i - ub``
    and ``z_i - lb``; it is evaluated at all breakpoints once, in O(n) from the sorted
    samples: the breakpoints are two sorted runs, and merging them counts, at each
    breakpoint, the samples held at ``lb`` and those not held at ``ub`` (ties between
    the runs do not matter: ``S`` is continuous). An inversion is one
    ``searchsorted`` plus a linear step.
    """

    def __init__(self, z_sorted: np.ndarray, lb: float, ub: float):
        self.z, self.lb, self.ub = z_sorted, lb, ub
        n = z_sorted.shape[0]
        self.prefix = np.concatenate(([0.0], np.cumsum(z_sorted)))
        upper, lower = np.isfinite(ub), np.isfinite(lb)
        runs = ([z_sorted - ub] if upper else []) + ([z_sorted - lb] if lower else [])
        if not runs:  # no box: S is linear, without breakpoints
            self.bps, self.neg_sums = np.zeros(0), np.zeros(0)
            return
        both = np.concatenate(runs)
        order = np.argsort(both, kind="stable")  # two sorted runs: a merge, O(n)
        bps = both[order]
        rank = np.arange(1, bps.shape[0] + 1)
        if upper and lower:
            not_above = np.cumsum(order < n)  # samples with z_i - ub <= t: not held at ub
            at_lower = rank - not_above  # samples with z_i - lb <= t: held at lb
        elif upper:
            not_above, at_lower = rank, np.zeros(bps.shape[0], dtype=np.int64)
        else:
            not_above, at_lower = np.full(bps.shape[0], n), rank
        keep = np.isfinite(bps)
        if not keep.all():
            bps, not_above, at_lower = bps[keep], not_above[keep], at_lower[keep]
        total = (self.prefix[not_above] - self.prefix[at_lower]) - bps * (not_above - at_lower)
        if upper:
            total += ub * (n - not_above)
        if lower:
            total += lb * at_lower
        self.bps, self.neg_sums = bps, -total  # neg_sums non-decreasing

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

    def shifts_for(self, totals: np.ndarray) -> np.ndarray:
        """:meth:`shift_for` of every entry of ``totals`` (the same pieces; each piece's
        slope is computed once, so the last bits may differ)."""
        if self.bps.shape[0] == 0:
            return np.zeros(totals.shape)
        base, start, slope = self._pieces()
        j = np.searchsorted(self.neg_sums, -totals, side="left")
        return base[j] + (start[j] - totals) * slope[j]

    def _pieces(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per piece of the inverse (``searchsorted`` position ``j`` in ``neg_sums``,
        ``0..B``): the shift and the sum at its start, and ``-dt/dS`` (0 on a flat)."""
        pieces = self.__dict__.get("_pieces_")
        if pieces is None:
            bps, s = self.bps, -self.neg_sums
            n = self.z.shape[0]
            db, ds = np.diff(bps), -np.diff(s)
            inner = np.divide(db, ds, out=np.zeros(db.shape), where=(ds != 0) & (db != 0))
            # beyond the first / last breakpoint: flat, or linear without that bound
            first, last = (0.0 if np.isfinite(self.ub) else 1.0 / n), (0.0 if np.isfinite(self.lb) else 1.0 / n)
            pieces = (np.concatenate((bps[:1], bps)), np.concatenate((s[:1], s)),
                      np.concatenate(([first], inner, [last])))
            self._pieces_ = pieces
        return pieces

    def kinks(self) -> np.ndarray:
        """The group means (totals divided by the group's size) at which :meth:`shift_for`
        changes slope or jumps, ascending."""
        return (self.neg_sums / -self.z.shape[0])[::-1]


class GroupShifts:
    """The shifts that bring the groups of one attribute (one :class:`BoxSum` each) to
    target means, with the convention of the box path: a group whose target is its
    current mean ``m0`` (the mean of the clipped column) does not move.

    Calling it on targets (k,) gives the shifts (k,); :meth:`many` does the same for
    many sets of targets at once, and :meth:`kinks` lists, per group, the target means
    where its shift is not linear (between them and ``m0`` it is: the criterion's root
    finding relies on that, :func:`boundary_decreasing`).
    """

    def __init__(self, sums: Sequence[BoxSum], m0: np.ndarray, counts: np.ndarray):
        self.sums, self.m0, self.counts = sums, m0, counts

    def __call__(self, target: np.ndarray) -> np.ndarray:
        return np.array([0.0 if tg == mg else s.shift_for(tg * ng)
                         for s, tg, mg, ng in zip(self.sums, target.tolist(), self.m0.tolist(),
                                                  self.counts.tolist())])

    def many(self, targets: np.ndarray) -> np.ndarray:
        """Shifts (k, P) for targets (k, P): column p as ``self(targets[:, p])``."""
        out = np.empty(targets.shape)
        for g, (s, mg, ng) in enumerate(zip(self.sums, self.m0.tolist(), self.counts.tolist())):
            row = targets[g]
            out[g] = s.shifts_for(row * ng)
            out[g, row == mg] = 0.0
        return out

    def kinks(self) -> list[np.ndarray]:
        """Per group, the target means (ascending) where its shift is not linear, but for
        the group's own mean ``m0`` (where the convention above sets it to 0)."""
        return [s.kinks() for s in self.sums]


def boundary_decreasing(f: Callable[[np.ndarray], np.ndarray], runs: Sequence[np.ndarray], lo: float, hi: float,
                        max_points: int = 1024) -> float:
    """Boundary between ``f > 0`` and ``f <= 0`` of a non-increasing ``f`` on ``[lo, hi]``,
    to rounding, when ``f`` is linear between the points of the ascending arrays
    ``runs`` (its kinks and jumps: any superset of them will do).

    ``f`` takes an array of points. The points inside the bracket are evaluated at once
    (at most ``max_points`` of them, every s-th of each run, per round: each round
    leaves at most ``s`` points of a run inside the bracket); once no point is left
    inside, ``f`` is linear on the open bracket, and the root of the line through two
    of its inner points, kept within the bracket (where ``f`` jumps at an end), is the
    boundary. Where :func:`bisect_decreasing` evaluates a scalar ``f`` some 30 times,
    this takes one or two array evaluations for a few thousand breakpoints.
    """
    runs = [r for r in runs if r.shape[0]]
    first = True
    while True:
        inside = [r[np.searchsorted(r, lo, side="right"):np.searchsorted(r, hi, side="left")] for r in runs]
        count = sum(r.shape[0] for r in inside)
        if count == 0 and not first:
            break
        step = max(1, -(-count // max_points))
        ends = [np.array([lo, hi])] if first else []
        points = np.unique(np.concatenate([r[step - 1::step] if step > 1 else r for r in inside] + ends))
        values = f(points)
        if first:  # the points lie within [lo, hi], which are among them
            if not values[0] > 0:
                return lo
            if values[-1] > 0:
                return hi
            first = False
        positive = np.flatnonzero(values > 0)
        # f is non-increasing up to rounding: the last point where it is positive and
        # the next one bracket the boundary
        after = int(positive[-1]) + 1 if positive.shape[0] else 0
        if positive.shape[0]:
            lo = float(points[after - 1])
        if after < points.shape[0]:
            hi = float(points[after])
    p = np.array([lo + (hi - lo) / 3.0, hi - (hi - lo) / 3.0])
    if not lo < p[0] < p[1] < hi:  # a bracket a few floats wide
        return 0.5 * (lo + hi)
    f1, f2 = (float(v) for v in f(p))
    if f1 > f2:
        return min(max(float(p[0]) + f1 * float(p[1] - p[0]) / (f1 - f2), lo), hi)
    return hi if f1 > 0 else lo


def dykstra(x0: np.ndarray, projections: Sequence[Callable[[np.ndarray], np.ndarray]], max_sweeps: int = 20000,
            rtol: float = 1e-13, check: Callable[[np.ndarray], np.ndarray | None] | None = None,
            check_every: int = 25) -> tuple[np.ndarray, bool]:
    """Dykstra's algorithm: the projection of ``x0`` onto the intersection of convex
    sets, given the projection onto each.

    ``x <- P_a(x + p_a)``, ``p_a <- x_old + p_a - x_new``, cycling over the sets, until a
    sweep moves nothing by more than ``rtol * (1 + max|x0|)``. Returns ``(x, converged)``.

    With ``check``, the iterate is handed to ``check`` every ``check_every`` sweeps
    and at convergence (an exact method guessing its active set from it); the first
    answer that is not None is returned instead of the iterate.
    """
    x = x0
    incr = [np.zeros_like(x0) for _ in projections]
    tol = rtol * (1.0 + max_abs(x0))
    for sweep in range(1, max_sweeps + 1):
        if check is not None and sweep % check_every == 0:
            answer = check(x)
            if answer is not None:
                return answer, True
        moved = 0.0
        for a, project in enumerate(projections):
            shifted = x + incr[a]
            new = project(shifted)
            incr[a] = shifted - new
            moved = max(moved, max_abs(new - x))
            x = new
        if moved <= tol:
            answer = None if check is None else check(x)
            return (x if answer is None else answer), True
    return x, False


def max_abs(a: np.ndarray) -> float:
    # two reductions beat abs() + max() on large arrays (no temporary), not on small ones
    if a.size == 0:
        return 0.0
    if a.size > 65536:
        return max(float(a.max()), -float(a.min()))
    return float(np.abs(a).max())


def shift_qp(m0: np.ndarray, metric: np.ndarray, blocks: Sequence[slice],
             most_violated: Callable[[int, np.ndarray], tuple[float, dict, float]], feas_tol: float,
             max_iter: int | None = None) -> tuple[np.ndarray | None, str]:
    """Projection onto linear constraints on group means, exactly, in slot space.

    The output is ``y = z - S D w`` (``S`` the (n, K) slot indicator, ``D =
    diag(1/n_g)``), so the group means are ``m0 - metric @ w`` with ``metric = D S^T S
    D`` (from the cell counts) and ``||y - z||^2 = w^T metric w``: the problem lives in
    ``K`` numbers whatever ``n``. It is solved by the dual active-set method of
    Goldfarb and Idnani (the Hessian in ``y`` is the identity): start from ``y = z``,
    add the most violated row (``most_violated(block, means of the block)`` returns
    ``(violation, {slot in block: coefficient}, rhs)``), step until it is active,
    dropping rows whose multiplier would turn negative. Each step is exact; the method
    ends in finitely many steps, when no row is violated by more than ``feas_tol``.

    Returns ``(w, "")`` or ``(None, reason)`` (infeasible, or the step limit).
    """
    K = m0.shape[0]
    max_iter = max_iter or 20 * K + 100
    w = np.zeros(K)
    rows: list[np.ndarray] = []  # the working set: slot coefficients q_r (rows of ``y``: S D q_r)
    rhs: list[float] = []
    u: list[float] = []  # their multipliers (>= 0); w = sum u_r q_r
    for _ in range(max_iter):
        means = m0 - metric @ w
        viol, q_p, b_p = -np.inf, None, 0.0
        for b, sl in enumerate(blocks):
            v, coefs, r = most_violated(b, means[sl])
            if v > viol:
                q = np.zeros(K)
                for g, cg in coefs.items():
                    q[sl.start + g] = cg
                viol, q_p, b_p = v, q, r
        if q_p is None or viol <= feas_tol:
            return w, ""
        u_p = 0.0
        Mq = metric @ q_p
        while True:
            if rows:
                Q = np.stack(rows)
                r_dir = np.linalg.solve(Q @ metric @ Q.T, Q @ Mq)
                qd = q_p - Q.T @ r_dir
            else:
                r_dir, qd = np.zeros(0), q_p
            curv = float(qd @ metric @ qd)
            s = float(q_p @ (m0 - metric @ w)) - b_p
            full = s / curv if curv > 1e-12 * float(q_p @ Mq) else np.inf
            partial, block = np.inf, -1
            for j, rj in enumerate(r_dir):
                if rj > 0 and u[j] / rj < partial:
                    partial, block = u[j] / rj, j
            if not np.isfinite(min(full, partial)):
                return None, "the constraints admit no solution"
            t = min(full, partial)
            w = w + t * qd
            u = [uj - t * rj for uj, rj in zip(u, r_dir)]
            u_p += t
            if t == full:
                rows.append(q_p)
                rhs.append(b_p)
                u.append(u_p)
                break
            del rows[block], rhs[block], u[block]
    return None, f"the active-set method did not finish in {max_iter} steps"


def projector_vjp(grad: np.ndarray, tight: np.ndarray, free: np.ndarray | None, groups: GroupIndex,
                  couples: bool) -> np.ndarray:
    """``J^T grad`` (n, c) for the projection's Jacobian ``J`` at its solution.

    ``J`` is the orthogonal projector onto the null space of the active rows restricted
    to the free coordinates (zero on clipped ones), so it is symmetric. The active rows
    are the group-mean functionals of the ``tight`` slots (K, c); with ``couples``
    (differences of means, as parity) their multipliers within an attribute sum to
    zero, so they span the zero-sum combinations of the tight slots' means.
    ``free`` (n, c) marks the coordinates the box leaves free (None: all). ``grad`` may
    be float32; the product is float64.
    """
    if groups.n_attributes == 1 and grad.shape[1] == 1 and groups.n_slots <= _PYTHON_MAX_GROUPS:
        return _one_column_vjp(grad[:, 0], tight[:, 0], None if free is None else free[:, 0], groups, couples)
    grad = grad.astype(np.float64, copy=False)
    g_free = grad if free is None else grad * free
    if groups.n_slots == 0 or not tight.any():
        # a copy when g_free is the incoming gradient itself (never hand autograd an alias of it)
        return g_free.copy() if g_free is grad else g_free
    out = None if grad.shape[1] == 1 else np.empty_like(grad)
    for j in range(grad.shape[1]):
        f = None if free is None else free[:, j].astype(np.float64)
        if groups.n_attributes == 1:
            corr = _one_attribute_correction(g_free[:, j], f, tight[:, j], groups, couples)
        else:
            with one_blas_thread():
                corr = _general_correction(g_free[:, j], f, tight[:, j], groups, couples)
        if f is not None:
            corr *= f
        # in place (into the correction itself for one column): at large n a fresh
        # array costs page faults on top of the pass
        if out is None:
            return np.subtract(g_free[:, 0], corr, out=corr)[:, None]
        np.subtract(g_free[:, j], corr, out=out[:, j])
    return out


def _one_column_vjp(grad: np.ndarray, tight: np.ndarray, free: np.ndarray | None, groups: GroupIndex,
                    couples: bool) -> np.ndarray:
    """:func:`projector_vjp` of one column, one attribute of a few groups (the usual
    training batch): the same formulas with as few array passes as they allow. A
    float32 ``grad`` needs no float64 copy: the sums are taken in float64 and the
    subtraction promotes it exactly."""
    g = grad if free is None else grad * free
    if not tight.any():
        # a copy when g is the incoming gradient itself (never hand autograd an alias of it)
        return g.astype(np.float64, copy=free is None)[:, None]
    codes = groups.codes(0)
    corr = np.take(one_attribute_values(g, free, tight, codes, groups.counts, couples), codes, mode="clip")
    if free is not None:
        corr *= free
    return np.subtract(g, corr, out=corr)[:, None]  # in place: no fresh (n,) array


def _one_attribute_correction(g: np.ndarray, free: np.ndarray | None, tight: np.ndarray, groups: GroupIndex,
                              couples: bool) -> np.ndarray:
    """Projection of ``g`` onto the active span, one attribute, in closed form.

    The active rows restricted to the free coordinates span the vectors constant
    (``v_g``) on the free samples of each tight group. With coupled multipliers
    (``sum_g alpha_g = 0``, ``v_g = alpha_g / n_g``) least squares gives
    ``v_g = m_g - lam n_g / f_g``, with m_g the mean of ``g`` over the f_g free samples
    of group g and ``lam = sum n_g m_g / sum n_g^2 / f_g``. A tight group with no free
    sample contributes nothing to the span but frees its multiplier, which lifts the
    coupling: then ``v_g = m_g``.
    """
    codes, n = groups.codes(0), groups.counts
    if not tight.any():  # nothing active in this column
        return np.zeros_like(g)
    if n.shape[0] <= _PYTHON_MAX_GROUPS:
        return np.take(one_attribute_values(g, free, tight, codes, n, couples), codes, mode="clip")
    if free is None:  # every sample free: v_g = m_g - lam with lam the n-weighted mean of m over tight groups
        m = group_sums(g, codes, n.shape[0]) / n
        v = np.where(tight, m, 0.0)
        if couples:
            v = np.where(tight, v - float(n @ v) / float(n @ tight), 0.0)
        return np.take(v, codes, mode="clip")  # codes in range by construction
    f = group_sums(free, codes, n.shape[0])
    has_free = tight & (f > 0)
    m = np.where(has_free, group_sums(g, codes, n.shape[0]) / np.maximum(f, 1), 0.0)
    v = m
    if couples and not (tight & (f == 0)).any():
        den = float(np.sum(np.where(has_free, n**2 / np.maximum(f, 1), 0.0)))
        lam = float(np.sum(n * m)) / den if den > 0 else 0.0
        v = m - lam * n / np.maximum(f, 1)
    return np.take(np.where(has_free, v, 0.0), codes, mode="clip")


def one_attribute_values(g: np.ndarray, free: np.ndarray | None, tight: np.ndarray, codes: np.ndarray,
                         n: np.ndarray, couples: bool) -> np.ndarray:
    """The values ``v_g`` of :func:`_one_attribute_correction` (zero off the span), for
    a few groups: the same formulas on Python floats (``tight``: an array or a list)."""
    k = n.shape[0]
    nl, tl = n.tolist(), tight if isinstance(tight, list) else tight.tolist()
    sums = group_sums(g, codes, k).tolist()
    fl = nl if free is None else group_sums(free, codes, k).tolist()
    live = [t and f > 0 for t, f in zip(tl, fl)]
    v = [s / f if on else 0.0 for s, f, on in zip(sums, fl, live)]
    if couples and not any(t and f == 0 for t, f in zip(tl, fl)):
        den = sum(ng * ng / f for ng, f, on in zip(nl, fl, live) if on)
        lam = sum(ng * vg for ng, vg in zip(nl, v)) / den if den > 0 else 0.0
        v = [vg - lam * ng / f if on else 0.0 for vg, ng, f, on in zip(v, nl, fl, live)]
    return np.array(v)


def _general_correction(g: np.ndarray, free: np.ndarray | None, tight: np.ndarray, groups: GroupIndex,
                        couples: bool) -> np.ndarray:
    """Projection of ``g`` onto the active span via a ``K x K`` pseudo-inverse."""
    V = active_basis(tight, [groups.attribute(a) for a in range(groups.n_attributes)], couples)  # (K, r)
    inv_n = 1.0 / groups.counts
    W = groups.cross_counts(free) * inv_n[:, None] * inv_n[None, :]
    gram = V.T @ W @ V
    u = groups.sums(g[:, None])[:, 0] * inv_n  # active-row products
    beta = np.linalg.pinv(gram, rcond=1e-10, hermitian=True) @ (V.T @ u)
    return groups.expand(((V @ beta) * inv_n)[:, None])[:, 0]


def active_basis(tight: np.ndarray, blocks: Sequence[slice], couples: bool) -> np.ndarray:
    """Columns (K, r) spanning the active rows in slot space: ``e_g`` for each tight
    slot, or (coupled) ``e_g - e_g0`` within each attribute's block of slots (g0 its
    first tight slot)."""
    K = tight.shape[0]
    cols = []
    for sl in blocks:
        slots = sl.start + np.flatnonzero(tight[sl])
        for g in (slots[1:] if couples else slots):
            col = np.zeros(K)
            col[g] = 1.0
            if couples:
                col[slots[0]] = -1.0
            cols.append(col)
    return np.stack(cols, 1) if cols else np.zeros((K, 0))
