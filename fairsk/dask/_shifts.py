"""The fairness projection from group statistics, whatever engine holds the data.

At the optimum every sample of group g moves by one scalar before the box clips it,
``y_i = clip(z_i - t_g, lb, ub)``, so the projection of data spread over many
partitions (Dask) or processes (torch.distributed) is found from reductions:

* no box, one attribute: the group sums and counts give the group means; the new
  means are the old ones clipped into ``[c, c + tol]`` (``c`` from the interval-start
  kernel), and ``t_g`` is the difference;
* no box, several attributes: the output differs from ``z`` by one value per *cell*
  (one group of every attribute), and the in-memory solver's QP over the group shifts
  (:func:`~fairsk.projection.kernels.shift_qp`) needs only the group means and the
  cross counts, both sums over the cells (``C`` numbers, not ``n``);
* a box, one attribute: each group's clipped sum ``S_g(t) = sum_i clip(z_i - t, lb,
  ub)`` is non-increasing and piecewise linear in ``t`` with breakpoints ``z_i - ub``
  and ``z_i - lb``. :class:`Knots` holds what is known of ``S_g``: its values at some
  shifts and the number of breakpoints between them. The solution is computed from the
  linear interpolation of those values; where a group's shift falls between two knots
  with breakpoints in between, the next pass evaluates ``S_g`` at many more shifts
  there (or, when few breakpoints are left, fetches those breakpoints); once every
  shift sits on a knot or in a segment without breakpoints, the interpolation is
  ``S_g`` itself there and the solution is exact.

The criterion objects of :mod:`fairsk.projection.criteria` place the group means
(and, with a box, search the interval through ``shifts_for``), exactly as in memory;
what is specific here is only what is known of each ``S_g`` (:class:`Knots`, from
the passes) instead of the whole group (:class:`~fairsk.projection.kernels.BoxSum`).
Nothing here touches the data: the engines provide the reductions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..exceptions import InfeasibleProjectionError
from ..projection.criteria import get_criterion
from ..projection.kernels import BoxSum, active_tolerance, one_blas_thread, shift_qp

#: shifts evaluated per group and column in one refinement pass of the box search
EVAL_POINTS = 256
#: a segment with at most this many breakpoints has them fetched, not refined
COLLECT_LIMIT = 512
#: passes of the box search before it gives up (never reached in practice: each pass
#: divides the segment holding a shift by EVAL_POINTS + 1)
MAX_BOX_PASSES = 64


@dataclass(frozen=True)
class Spec:
    """What the projection must satisfy (one attribute's view of the layer's spec)."""

    criterion: str
    tolerance: float
    lb: float = -math.inf
    ub: float = math.inf

    @property
    def has_box(self) -> bool:
        return math.isfinite(self.lb) or math.isfinite(self.ub)


def new_means(m: list, w: list, spec: Spec, targets: list | None = None) -> list:
    """Projected group means of one column without a box (the criterion's: ecp clips
    them into one interval of width ``tol``, eer into each group's band around its
    target)."""
    r = None if targets is None else np.asarray(targets, dtype=np.float64)
    new, _ = get_criterion(spec.criterion).project_means(np.asarray(m, dtype=np.float64),
                                                         np.asarray(w, dtype=np.float64), spec.tolerance, r, 0.0)
    return np.asarray(new, dtype=np.float64).tolist()


# -- no box ------------------------------------------------------------------------------
def cell_offsets(cell_groups: list[np.ndarray], counts: np.ndarray, sums: np.ndarray, spec: Spec,
                 scale: float) -> tuple[np.ndarray, int, bool]:
    """Offsets (C, c) to add to each cell's outputs, for ``ecp`` without a box.

    ``cell_groups[a]`` (C,) numbers the groups of attribute ``a`` of each cell,
    ``counts`` (C,) and ``sums`` (C, c) are the cells' counts and sums of ``z``, and
    ``scale`` is ``max |z|``. One attribute: closed form. Several: the in-memory
    solver's QP over the group shifts (:func:`~fairsk.projection.kernels.shift_qp`),
    from the group means and the cross counts of the groups, with its feasibility
    tolerance. Returns ``(offsets, steps, converged)``.
    """
    n_cells, c = sums.shape
    d = np.zeros((n_cells, c))
    if n_cells == 0:
        return d, 0, True
    if len(cell_groups) == 1:
        g = cell_groups[0]
        n_g = np.bincount(g, weights=counts)
        for j in range(c):
            m = np.bincount(g, weights=sums[:, j], minlength=n_g.shape[0]) / n_g
            d[:, j] = (np.asarray(new_means(m.tolist(), n_g.tolist(), spec)) - m)[g]
        return d, 1, True
    slot, blocks, n_slot = _cell_slots(cell_groups, counts)
    K = n_slot.shape[0]
    n_inv = 1.0 / n_slot
    metric = _cross_counts(slot, K, counts) * n_inv[:, None] * n_inv[None, :]
    crit, tol = get_criterion(spec.criterion), spec.tolerance
    delta = active_tolerance(scale + tol)  # as the in-memory solver

    def most_violated(b, m):
        return crit.most_violated(m, tol, None)

    with one_blas_thread():
        for j in range(c):
            m0 = np.bincount(slot.reshape(-1), weights=np.repeat(sums[:, j], slot.shape[1]), minlength=K) * n_inv
            w, reason = shift_qp(m0, metric, blocks, most_violated, delta)
            if w is None:
                raise InfeasibleProjectionError(f"the projection over the cells failed: {reason}")
            d[:, j] = -(w * n_inv)[slot].sum(1)
    return d, 1, True


def _cell_slots(cell_groups: list[np.ndarray], counts: np.ndarray) -> tuple[np.ndarray, list, np.ndarray]:
    """Each cell's slot per attribute (C, a) in the layer's numbering (attribute after
    attribute), the attributes' slot ranges, and each slot's row count."""
    sizes = [int(g.max()) + 1 for g in cell_groups]
    starts = np.concatenate(([0], np.cumsum(sizes)))
    slot = np.stack([g + starts[a] for a, g in enumerate(cell_groups)], 1)
    n_slot = np.bincount(slot.reshape(-1), weights=np.repeat(counts, slot.shape[1]), minlength=int(starts[-1]))
    if not (n_slot > 0).all():
        raise ValueError("cell_groups must number each attribute's groups 0..k-1, every group with rows")
    return slot, [slice(int(starts[a]), int(starts[a + 1])) for a in range(len(sizes))], n_slot


def _cross_counts(slot: np.ndarray, K: int, weights: np.ndarray) -> np.ndarray:
    """(K, K): for every pair of slots, the summed ``weights`` of the cells in both."""
    cross = np.zeros((K, K))
    for a in range(slot.shape[1]):
        for b in range(slot.shape[1]):
            np.add.at(cross, (slot[:, a], slot[:, b]), weights)
    return cross


# -- a box -----------------------------------------------------------------------------
class Knots:
    """What is known of ``S(t) = sum_i clip(z_i - t, lb, ub)`` over one group's samples
    (one column): its values ``s`` at the shifts ``t`` (increasing), the sample counts
    ``cnt`` (4, m) ``#{z < t+lb}, #{z <= t+lb}, #{z < t+ub}, #{z <= t+ub}`` at each
    (NaN where not needed), and the number of breakpoints strictly inside each segment.

    Built from the group's count, sum, min and max of ``z``: two knots below and above
    every breakpoint, where ``S`` is known in closed form.
    """

    def __init__(self, n: float, total: float, clipped_total: float, zmin: float, zmax: float, cnt0, lb: float,
                 ub: float):
        self.n, self.lb, self.ub = float(n), lb, ub
        pad = 1.0 + (zmax - zmin)
        lo = zmin - (ub if math.isfinite(ub) else lb) - pad
        hi = zmax - (lb if math.isfinite(lb) else ub) + pad
        s_lo = self.n * ub if math.isfinite(ub) else total - self.n * lo
        s_hi = self.n * lb if math.isfinite(lb) else total - self.n * hi
        self.t = np.array([lo, hi])
        self.s = np.array([s_lo, s_hi])
        full = [self.n if math.isfinite(b) else 0.0 for b in (lb, lb, ub, ub)]
        self.cnt = np.array([[0.0, 0.0, 0.0, 0.0], full]).T  # (4, 2)
        self.inside = np.array([self.n * (math.isfinite(lb) + math.isfinite(ub))])
        if lo < 0.0 < hi:
            # S(0) (the clipped sum) is known from the first pass: with this knot the
            # interpolation meets S where a group keeps its outputs, so the balance
            # sum_g n_g t_g(c) searched over c has no jump there
            self.add_evaluations(0, np.zeros(1), np.array([clipped_total]), np.asarray(cnt0, dtype=np.float64)
                                 .reshape(4, 1))

    # the slopes beyond the outer knots: every sample free on an unbounded side
    def _slope_below(self) -> float:
        return -self.n if not math.isfinite(self.ub) else 0.0

    def _slope_above(self) -> float:
        return -self.n if not math.isfinite(self.lb) else 0.0

    def shift_for(self, total: float) -> float:
        """The shift ``t`` where the interpolation of ``S`` equals ``total``."""
        t, s = self.t, self.s
        if total >= s[0]:
            slope = self._slope_below()
            return float(t[0]) if slope == 0 else float(t[0]) + (total - s[0]) / slope
        if total <= s[-1]:
            slope = self._slope_above()
            return float(t[-1]) if slope == 0 else float(t[-1]) + (total - s[-1]) / slope
        j = int(np.searchsorted(-s, -total, side="left"))  # s[j-1] > total >= s[j]
        t0, t1, s0, s1 = float(t[j - 1]), float(t[j]), float(s[j - 1]), float(s[j])
        if total == s1:
            return t1
        return t0 + (s0 - total) * (t1 - t0) / (s0 - s1)

    def segment_of(self, shift: float) -> int | None:
        """Index of the segment holding ``shift`` where the interpolation may differ
        from ``S`` (breakpoints inside); None where it is exact."""
        t = self.t
        if shift <= t[0] or shift >= t[-1]:
            return None
        j = int(np.searchsorted(t, shift, side="right")) - 1
        if t[j] == shift or self.inside[j] == 0:
            return None
        a, b = float(t[j]), float(t[j + 1])
        if b - a <= 4 * math.ulp(max(abs(a), abs(b))):  # ties at one point: nothing to refine
            return None
        return j

    def free_right(self, j: int) -> float:
        """Free samples just right of knot ``j`` (``t + lb < z <= t + ub``)."""
        le_ub = self.cnt[3, j] if math.isfinite(self.ub) else self.n
        le_lb = self.cnt[1, j] if math.isfinite(self.lb) else 0.0
        return le_ub - le_lb

    def add_evaluations(self, j: int, points: np.ndarray, s: np.ndarray, cnt: np.ndarray) -> None:
        """Insert the values of ``S`` at ``points`` (inside segment ``j``)."""
        t = np.concatenate([self.t[: j + 1], points, self.t[j + 1 :]])
        sv = np.concatenate([self.s[: j + 1], s, self.s[j + 1 :]])
        cv = np.concatenate([self.cnt[:, : j + 1], cnt, self.cnt[:, j + 1 :]], 1)
        lo = slice(j, j + len(points) + 1)
        c_lo, c_hi = cv[:, lo], cv[:, j + 1 : j + len(points) + 2]
        inside = np.zeros(len(points) + 1)
        if math.isfinite(self.lb):
            inside += c_hi[0] - c_lo[1]
        if math.isfinite(self.ub):
            inside += c_hi[2] - c_lo[3]
        self.inside = np.concatenate([self.inside[:j], inside, self.inside[j + 1 :]])
        self.t, self.s, self.cnt = t, sv, cv

    def add_breakpoints(self, j: int, at_lb: np.ndarray, at_ub: np.ndarray) -> None:
        """Insert every breakpoint inside segment ``j`` (``z - lb`` where a sample
        reaches the lower bound, ``z - ub`` where it leaves the upper one): ``S`` is
        then linear between consecutive knots there, and known exactly."""
        points = np.concatenate([at_lb, at_ub])
        change = np.concatenate([-np.ones(len(at_lb)), np.ones(len(at_ub))])
        order = np.argsort(points, kind="stable")
        points, change = points[order], change[order]
        uniq, first = np.unique(points, return_index=True)
        delta = np.add.reduceat(change, first) if len(uniq) else np.zeros(0)
        free = self.free_right(j)
        prev_t, prev_s = float(self.t[j]), float(self.s[j])
        s_new = np.empty(len(uniq))
        for i, (p, d) in enumerate(zip(uniq.tolist(), delta.tolist())):
            prev_s = prev_s - free * (p - prev_t)
            s_new[i], prev_t = prev_s, p
            free += d
        self.t = np.concatenate([self.t[: j + 1], uniq, self.t[j + 1 :]])
        self.s = np.concatenate([self.s[: j + 1], s_new, self.s[j + 1 :]])
        nan = np.full((4, len(uniq)), np.nan)
        self.cnt = np.concatenate([self.cnt[:, : j + 1], nan, self.cnt[:, j + 1 :]], 1)
        self.inside = np.concatenate([self.inside[:j], np.zeros(len(uniq) + 1), self.inside[j + 1 :]])


def clipped_sums(box: BoxSum, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``S(t)`` at ``points`` over one partition's values of a group (``box``), and
    the counts ``#{z < t+lb}, #{z <= t+lb}, #{z < t+ub}, #{z <= t+ub}`` (4, m) there."""
    v, lb, ub = box.z, box.lb, box.ub
    cnt = np.zeros((4, points.shape[0]))
    if math.isfinite(lb):
        cnt[0], cnt[1] = np.searchsorted(v, points + lb, "left"), np.searchsorted(v, points + lb, "right")
    if math.isfinite(ub):
        cnt[2], cnt[3] = np.searchsorted(v, points + ub, "left"), np.searchsorted(v, points + ub, "right")
    return box.sums(points), cnt


def breakpoints_in(values_sorted: np.ndarray, a: float, b: float, lb: float, ub: float):
    """Breakpoints of one partition's group strictly inside ``(a, b)``: ``(z - lb
    ..., z - ub ...)``."""
    v = values_sorted
    out = []
    for bound in (lb, ub):
        if not math.isfinite(bound):
            out.append(np.zeros(0))
            continue
        i0 = np.searchsorted(v, a + bound, "right")
        i1 = np.searchsorted(v, b + bound, "left")
        out.append(v[i0:i1] - bound)
    return out[0], out[1]


def box_group_shifts(knots: list[Knots], m0: list, n_g: list, spec: Spec, targets: list | None) -> list:
    """Per-group shifts of one column given what is known of each ``S_g``: the
    criterion's search of the in-memory solver (eer: each group into its band; ecp:
    the bisection on the interval), with ``S_g`` inverted on the knots."""
    if len(m0) < 2 and spec.criterion == "ecp":
        return [0.0] * len(m0)
    m0a, w = np.asarray(m0, dtype=np.float64), np.asarray(n_g, dtype=np.float64)

    def shifts_for(target: np.ndarray) -> np.ndarray:
        return np.array([0.0 if tg == mg else kn.shift_for(tg * ng)
                         for kn, tg, mg, ng in zip(knots, target.tolist(), m0, n_g)])

    r = None if targets is None else np.asarray(targets, dtype=np.float64)
    delta = active_tolerance(float(np.abs(m0a).max()) + spec.tolerance)  # as the in-memory solver
    target, _ = get_criterion(spec.criterion).box_means(m0a, w, spec.tolerance, r, spec.lb, spec.ub, shifts_for,
                                                        delta)
    return shifts_for(np.asarray(target, dtype=np.float64)).tolist()


#: one pass of the box search: ``run_pass(evaluations, collections)`` with
#: ``evaluations = {(group, column): points}`` and ``collections = {(group, column):
#: (a, b)}`` returns ``({key: (S (m,), counts (4, m))}, {key: (at_lb, at_ub)})`` summed /
#: gathered over the whole data
PassFn = Callable[[dict, dict], tuple[dict, dict]]


def box_shifts(stats: dict, spec: Spec, run_pass: PassFn, targets: dict | None = None) -> tuple[dict, int]:
    """Exact per-group shifts with a box, one attribute, from passes over the data.

    ``stats[(group, column)] = (count, sum of z, sum of clip(z), min z, max z, counts
    (4,) at shift 0)`` (the first pass, see :func:`zero_counts`); ``targets[(group,
    column)]`` the target means for eer. Returns ``({(group, column): t}, number of
    further passes)``.
    """
    keys = sorted(stats, key=lambda k: (k[1], k[0]))
    columns = sorted({k[1] for k in keys})
    knots = {k: Knots(*stats[k], spec.lb, spec.ub) for k in keys}
    passes = 0
    while True:
        shifts = {}
        for j in columns:
            ks = [k for k in keys if k[1] == j]
            n_g = [float(stats[k][0]) for k in ks]
            m0 = [stats[k][2] / stats[k][0] for k in ks]
            tg = None if targets is None else [targets[k] for k in ks]
            for k, t in zip(ks, box_group_shifts([knots[k] for k in ks], m0, n_g, spec, tg)):
                shifts[k] = t
        evals, collects = {}, {}
        for k, t in shifts.items():
            j = None if t == 0.0 else knots[k].segment_of(t)
            if j is None:
                continue
            kn = knots[k]
            a, b = float(kn.t[j]), float(kn.t[j + 1])
            if kn.inside[j] <= COLLECT_LIMIT:
                collects[k] = (j, a, b)
            else:
                points = np.unique(np.linspace(a, b, EVAL_POINTS + 2)[1:-1])
                evals[k] = (j, points[(points > a) & (points < b)])
        if not evals and not collects:
            _check_balance(shifts, stats, spec)
            return shifts, passes
        if passes >= MAX_BOX_PASSES:
            raise InfeasibleProjectionError(f"the box search did not settle in {MAX_BOX_PASSES} passes")
        got_evals, got_collects = run_pass({k: v[1] for k, v in evals.items()},
                                           {k: v[1:] for k, v in collects.items()})
        passes += 1
        for k, (j, points) in evals.items():
            s, cnt = got_evals[k]
            knots[k].add_evaluations(j, points, np.asarray(s, dtype=np.float64), np.asarray(cnt, dtype=np.float64))
        for k, (j, _, _) in collects.items():
            at_lb, at_ub = got_collects[k]
            knots[k].add_breakpoints(j, np.asarray(at_lb, dtype=np.float64), np.asarray(at_ub, dtype=np.float64))


def _check_balance(shifts: dict, stats: dict, spec: Spec) -> None:
    """ecp's optimality condition ``sum_g n_g t_g = 0`` (per column), where a group moves."""
    if spec.criterion != "ecp":
        return
    for j in {k[1] for k in shifts}:
        terms = [float(stats[k][0]) * t for k, t in shifts.items() if k[1] == j]
        scale = sum(abs(x) for x in terms)
        if abs(sum(terms)) > 1e-9 * (1.0 + scale):
            raise InfeasibleProjectionError(f"the box search ended off its optimality condition (balance "
                                            f"{sum(terms):.3g} over {scale:.3g})")


def zero_counts(v: np.ndarray, lb: float, ub: float) -> np.ndarray:
    """``#{z < lb}, #{z <= lb}, #{z < ub}, #{z <= ub}`` (4, c) of the values ``v`` (n, c)."""
    out = np.zeros((4, v.shape[1]))
    if math.isfinite(lb):
        out[0], out[1] = (v < lb).sum(0), (v <= lb).sum(0)
    if math.isfinite(ub):
        out[2], out[3] = (v < ub).sum(0), (v <= ub).sum(0)
    return out


# -- what a partition (or a rank's shard) contributes ----------------------------------------
def partition_box_pass(z_col_by_key: Callable[[tuple], np.ndarray | None], evals: dict, collects: dict,
                       lb: float, ub: float) -> tuple[dict, dict]:
    """One partition's share of a box-search pass; ``z_col_by_key(key)`` gives the
    values of that group and column in this partition (or None)."""
    out_e, out_c = {}, {}
    cache = {}

    def sorted_values(k):
        if k not in cache:
            v = z_col_by_key(k)
            cache[k] = None if v is None or v.shape[0] == 0 else BoxSum(np.sort(v), lb, ub)
        return cache[k]

    for k, points in evals.items():
        box = sorted_values(k)
        if box is None:
            out_e[k] = (np.zeros(len(points)), np.zeros((4, len(points))))
        else:
            out_e[k] = clipped_sums(box, np.asarray(points, dtype=np.float64))
    for k, (a, b) in collects.items():
        box = sorted_values(k)
        out_c[k] = (np.zeros(0), np.zeros(0)) if box is None else breakpoints_in(box.z, a, b, lb, ub)
    return out_e, out_c


def merge_box_passes(parts: list[tuple[dict, dict]]) -> tuple[dict, dict]:
    """Sum the evaluations and gather the breakpoints of several partitions."""
    evals, collects = {}, {}
    for e, c in parts:
        for k, (s, cnt) in e.items():
            if k in evals:
                evals[k] = (evals[k][0] + s, evals[k][1] + cnt)
            else:
                evals[k] = (np.asarray(s, dtype=np.float64), np.asarray(cnt, dtype=np.float64))
        for k, (x, y) in c.items():
            if k in collects:
                collects[k] = (np.concatenate([collects[k][0], x]), np.concatenate([collects[k][1], y]))
            else:
                collects[k] = (np.asarray(x), np.asarray(y))
    return evals, collects


# -- a box and several attributes --------------------------------------------------------
#: what a pass of the active-set iteration returns, per cell: ``(n_lower, n_upper,
#: free_sum, moved)``, each (c,): the outputs the box holds at each bound when every
#: output of the cell moves by ``-T``, the sum of the free ones' ``z``, and how many
#: changed their status since the previous guess by more than ``delta``
CellPassFn = Callable[[dict, dict | None, dict | None, float], dict]


def boxed_cell_offsets(cells: list, cell_groups: list[np.ndarray], counts: np.ndarray, sums: np.ndarray,
                       spec: Spec, scale: float, run_pass: CellPassFn) -> tuple[np.ndarray, int]:
    """Offsets (C, c) for several attributes and a box: the in-memory solver's
    primal-dual active-set iteration (:func:`fairsk.projection.exact._settle`), run
    on the cells, one pass over the data per step.

    Every output of a cell moves by the same total shift ``T_c`` (the sum of its
    groups' shifts) before the box clips it, so each guess of which outputs the box
    holds is ``z_i - T_c`` beyond a bound, and all the shift-space QP of a step needs
    (the groups' means with the held outputs at their bounds, the free outputs' cross
    counts) are sums over the cells. ``run_pass(T, T_prev, released, delta)`` returns
    them per cell at the shifts ``T`` (dicts cell -> (c,)), and counts the outputs
    whose status differs from the previous guess (``T_prev``; ``released`` cells
    counted free) by more than ``delta``: none such means the guess reproduced
    itself and ``clip(z - T)`` is the projection, as in memory. ``scale`` is ``max
    |clip(z)|``. Returns ``(offsets, passes)``; raises
    :class:`~fairsk.exceptions.InfeasibleProjectionError` when the iteration does
    not settle (the in-memory solver then has fallbacks that need the rows
    themselves).
    """
    from ..projection.exact import PDAS_MAX_STEPS, _solve_columns
    from ..projection.spec import SolverError
    from ..projection.spec import Spec as ProjectionSpec

    n_cells, c = sums.shape
    lb, ub = spec.lb, spec.ub
    pspec = ProjectionSpec(spec.criterion, spec.tolerance, lb if math.isfinite(lb) else None,
                           ub if math.isfinite(ub) else None)
    delta = active_tolerance(scale + spec.tolerance)
    slot, blocks, n_slot = _cell_slots(cell_groups, counts)
    K = n_slot.shape[0]
    n_inv = 1.0 / n_slot

    def slot_sums(v: np.ndarray) -> np.ndarray:
        return np.bincount(slot.reshape(-1), weights=np.repeat(v, slot.shape[1]), minlength=K)

    def step(n_lower, n_upper, free_sum, j) -> tuple[np.ndarray, np.ndarray] | None:
        """One column's new cell shifts (C,) and released cells (C,), or None."""
        released = np.zeros(n_cells, dtype=bool)
        for _ in range(2):
            lo = np.where(released, 0.0, n_lower)
            hi = np.where(released, 0.0, n_upper)
            fs = np.where(released, sums[:, j], free_sum)
            held = fs + (lo * lb if math.isfinite(lb) else 0.0) + (hi * ub if math.isfinite(ub) else 0.0)
            means = (slot_sums(held) * n_inv)[:, None]
            cross = _cross_counts(slot, K, counts - lo - hi)  # of the free outputs
            shifts = np.empty((K, 1))
            try:
                with one_blas_thread():
                    _solve_columns(means, cross * n_inv[:, None] * n_inv[None, :], blocks, pspec, delta, shifts,
                                   n_inv)
            except SolverError:
                # a guess holding every output of a group cannot move its mean: release
                # such groups' cells once, as in memory
                stuck = np.diag(cross) == 0
                newly = stuck[slot].any(1) & ~released
                if not newly.any():
                    return None
                released |= newly
                continue
            return shifts[:, 0][slot].sum(1), released
        return None

    def as_dict(a: np.ndarray) -> dict:
        return {cell: a[i] for i, cell in enumerate(cells)}

    def as_array(d: dict, key: int) -> np.ndarray:
        return np.stack([np.asarray(d[cell][key], dtype=np.float64) for cell in cells])

    T = np.zeros((n_cells, c))
    stats, passes = run_pass(as_dict(T), None, None, delta), 1
    todo = np.ones(c, dtype=bool)
    seen: set = set()
    for _ in range(PDAS_MAX_STEPS):
        n_lower, n_upper, free_sum = as_array(stats, 0), as_array(stats, 1), as_array(stats, 2)
        # a guess determines the next one: a guess seen before means a cycle, which more
        # passes would only repeat
        guess = (n_lower[:, todo].tobytes(), n_upper[:, todo].tobytes(), free_sum[:, todo].tobytes())
        if guess in seen:
            raise InfeasibleProjectionError("the active-set iteration over the box cycles between guesses; compute "
                                            "this call in memory")
        seen.add(guess)
        T_new, released = T.copy(), np.zeros((n_cells, c), dtype=bool)
        for j in np.flatnonzero(todo):
            answer = step(n_lower[:, j], n_upper[:, j], free_sum[:, j], j)
            if answer is None:
                raise InfeasibleProjectionError("the active-set iteration over the box found a guess it cannot "
                                                "solve; compute this call in memory")
            T_new[:, j], released[:, j] = answer
        stats, passes = run_pass(as_dict(T_new), as_dict(T), as_dict(released), delta), passes + 1
        todo &= as_array(stats, 3).sum(0) > 0
        T = T_new
        if not todo.any():
            return -T, passes
    raise InfeasibleProjectionError(f"the active-set iteration over the box did not settle in {PDAS_MAX_STEPS} "
                                    "passes; compute this call in memory")


def partition_cell_pass(z_by_cell: Callable[[tuple], np.ndarray | None], T: dict, T_prev: dict | None,
                        released: dict | None, delta: float, lb: float, ub: float) -> dict:
    """One partition's part of a pass of :func:`boxed_cell_offsets`."""
    out = {}
    for cell, t in T.items():
        z = z_by_cell(cell)
        if z is None or not len(z):
            continue
        shifted = z - t
        lower, upper = shifted <= lb, shifted >= ub
        free = ~(lower | upper)
        moved = np.zeros(z.shape[1])
        if T_prev is not None:
            before = z - T_prev[cell]
            was_lower, was_upper = before <= lb, before >= ub
            rel = released[cell]
            was_lower &= ~rel
            was_upper &= ~rel
            far = np.minimum(np.abs(shifted - lb), np.abs(shifted - ub)) > delta
            moved = (((lower != was_lower) | (upper != was_upper)) & far).sum(0).astype(np.float64)
        out[cell] = [lower.sum(0).astype(np.float64), upper.sum(0).astype(np.float64),
                     np.where(free, z, 0.0).sum(0), moved]
    return out


def merge_cell_passes(parts: list[dict]) -> dict:
    out: dict = {}
    for p in parts:
        for cell, values in p.items():
            out[cell] = values if cell not in out else [a + b for a, b in zip(out[cell], values)]
    return out
