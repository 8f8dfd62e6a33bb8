"""Fair labels of data spread over partitions: :func:`fairsk.decisions.fair_labels`
(binary targets, one sensitive attribute) from reductions.

In memory, group ``g`` accepts its ``c_g`` rows of highest gain ``w = 2 p - 1`` (ties
by row position), and the counts maximise ``sum_g G_g(c_g)`` (``G_g(c)``: the sum of
the ``c`` largest gains of the group) over the candidate minimum rates ``r``, with
``c_g(r) = clip(u_g, L_g(r), U_g(r))`` (``u_g = #{w > 0}``; ``L_g``, ``U_g`` the counts
whose rate lies in ``[r, r + tol]``, in float64 exactly as the in-memory sweep
computes them). Only ``G_g`` needs the data, and ``G_g`` at a count is a sum of the
gains above a value: a reduction.

:class:`Ranked` holds what is known of one group's gains sorted decreasingly: a list
of *segments* (disjoint value ranges, highest first) with their count, sum, min and
max, and for small ones the values themselves. ``G_g`` is exact at the segments'
ends and inside segments whose values are known (collected, or all equal) and
bounded inside the others (the values there are sorted and lie in ``[min, max]``).
:func:`best_counts` runs a branch and bound over intervals of ``r`` on those
bounds; it returns the optimal counts once every interval that can still hold the
optimum is known exactly, or the segments to refine (the next pass splits each into
``SUB_BINS`` value bins, or fetches its values when it holds at most
``COLLECT_LIMIT``). The first pass bins the gains into ``BINS`` bins of ``[-1, 1]``.

Passes: the first histogram, then refinements (each divides the value range of a
segment still in doubt by ``SUB_BINS + 1``, or ends it by collecting its values:
``ceil(log_257(n_g / 4096 / 512))`` or so for smooth data, at most ``MAX_PASSES``),
then one pass counting, per partition, the rows tied at each group's threshold
(so that a tie block split by the threshold is accepted in row order, as in
memory). Nothing here touches the data: the engine runs the partition functions.
"""

from __future__ import annotations

import math

import numpy as np

from ..decisions import TIE_RTOL, count_window
from ..exceptions import InfeasibleProjectionError

#: value bins of ``[-1, 1]`` in the first pass
BINS = 4096
#: value bins a segment in doubt is split into by a refinement pass
SUB_BINS = 256
#: a segment with at most this many rows has its values fetched, not binned
COLLECT_LIMIT = 512
#: refinement passes before giving up (each divides a value range by 257; the gains
#: are float64 in [-1, 1], so a handful suffice)
MAX_PASSES = 64


def edges(vmin: float, vmax: float, bins: int) -> np.ndarray:
    """Inner bin edges of ``[vmin, vmax]``: ``bins`` equal bins, and ``vmax`` as an edge
    of its own (the values equal to the top form their own bin, so that every split
    makes progress even between adjacent floats)."""
    inner = np.linspace(vmin, vmax, bins + 1)[1:-1]
    inner = inner[(inner > vmin) & (inner < vmax)]
    return np.unique(np.concatenate([inner, [vmax]]))


def first_requests(keys) -> dict:
    """The first pass: every group's gains binned over ``[-1, 1]`` (segment -1: the whole group)."""
    return {(k, -1): ("hist", -1.0, 1.0, edges(-1.0, 1.0, BINS)) for k in keys}


# -- what a partition contributes ------------------------------------------------------------
def partition_pass(gains_of, requests: dict, first: bool) -> dict:
    """One partition's share of a pass: ``gains_of(group)`` gives the gains of that group
    here (or None); ``requests[(group, segment)] = ("hist", vmin, vmax, edges)`` or
    ``("collect", vmin, vmax)`` over the gains in ``[vmin, vmax]``. The first pass also
    counts each group's rows and positive gains (key ``(group, "nu")``)."""
    out = {}
    cache = {}

    def sorted_gains(g):
        if g not in cache:
            w = gains_of(g)
            cache[g] = None if w is None or w.shape[0] == 0 else np.sort(w)
        return cache[g]

    for key, req in requests.items():
        g = key[0]
        v = sorted_gains(g)
        if first:
            out[(g, "nu")] = (0, 0) if v is None else (v.shape[0], int(v.shape[0] - np.searchsorted(v, 0.0, "right")))
        sub = np.zeros(0) if v is None else v[np.searchsorted(v, req[1], "left"): np.searchsorted(v, req[2], "right")]
        if req[0] == "collect":
            out[key] = sub
            continue
        e = req[3]
        bounds = np.concatenate(([0], np.searchsorted(sub, e, "left"), [sub.shape[0]]))
        counts = np.diff(bounds)
        sums = np.bincount(np.searchsorted(e, sub, "right"), weights=sub, minlength=e.shape[0] + 1)
        full = counts > 0
        mins = np.where(full, sub[np.minimum(bounds[:-1], max(sub.shape[0] - 1, 0))] if sub.size else 0.0, np.inf)
        maxs = np.where(full, sub[np.maximum(bounds[1:] - 1, 0)] if sub.size else 0.0, -np.inf)
        out[key] = (counts, sums, mins, maxs)
    return out


def merge_passes(parts: list) -> dict:
    out = {}
    for p in parts:
        for key, val in p.items():
            if key not in out:
                out[key] = val
            elif key[1] == "nu":  # (n, u)
                out[key] = (out[key][0] + val[0], out[key][1] + val[1])
            elif isinstance(val, np.ndarray):  # collected values
                out[key] = np.concatenate([out[key], val])
            else:
                c, s, lo, hi = out[key]
                out[key] = (c + val[0], s + val[1], np.minimum(lo, val[2]), np.maximum(hi, val[3]))
    return out


def partition_ties(gains_of, thresholds: dict) -> dict:
    """Per group: the rows of this partition above its threshold, and tied with it."""
    out = {}
    for g, tau in thresholds.items():
        w = gains_of(g)
        out[g] = (0, 0) if w is None else (int((w > tau).sum()), int((w == tau).sum()))
    return out


def accept(w: np.ndarray, tau: float, take: int) -> np.ndarray:
    """One partition's acceptances in one group: gains above ``tau``, and the first
    ``take`` rows (in row order) of those equal to it."""
    tied = w == tau
    return (w > tau) | (tied & (np.cumsum(tied) <= take))


# -- what is known of one group ----------------------------------------------------------------
class Ranked:
    """One group's gains sorted decreasingly, as segments ``[count, sum, min, max,
    values or None]`` (highest values first)."""

    def __init__(self, n: int, u: int):
        self.n, self.u = int(n), int(u)
        self.segments: list[list] = []

    def add_bins(self, index: int | None, counts, sums, mins, maxs) -> None:
        """Replace segment ``index`` (None: the whole group) by the non-empty bins."""
        new = [[int(c), float(s), float(lo), float(hi), None] for c, s, lo, hi in zip(counts, sums, mins, maxs) if c]
        new = new[::-1]
        for seg in new:
            if seg[2] == seg[3]:  # one value: known exactly
                seg[4] = np.full(seg[0], seg[2])
        self._replace(index, new)

    def add_values(self, index: int, values: np.ndarray) -> None:
        v = np.sort(np.asarray(values, dtype=np.float64))[::-1]
        seg = self.segments[index]
        if v.shape[0] != seg[0]:
            raise RuntimeError("a refinement pass found a different number of rows: is the data deterministic?")
        self._replace(index, [[seg[0], seg[1], seg[2], seg[3], v]])

    def _replace(self, index, new) -> None:
        if index is None:
            self.segments = new
        else:
            self.segments[index: index + 1] = new
        counts = np.array([s[0] for s in self.segments], dtype=np.int64)
        self.ends = np.concatenate(([0], np.cumsum(counts)))  # G is exact at these counts
        self.at_ends = np.concatenate(([0.0], np.cumsum([s[1] for s in self.segments])))
        if self.ends[-1] != self.n:
            raise RuntimeError("a pass found a different number of rows: is the data deterministic?")

    def exact(self, s: int) -> bool:
        return self.segments[s][4] is not None

    def segment_of(self, c: int) -> int | None:
        """The segment holding count ``c`` strictly inside (None at an end)."""
        s = int(np.searchsorted(self.ends, c, "right")) - 1
        return None if self.ends[s] == c else s

    def bounds(self, c: int) -> tuple[float, float]:
        """Lower and upper bounds of ``G(c)`` (equal where it is known)."""
        s = self.segment_of(c)
        if s is None:
            v = float(self.at_ends[int(np.searchsorted(self.ends, c))])
            return v, v
        m, total, lo, hi, values = self.segments[s]
        k = c - int(self.ends[s])
        base = float(self.at_ends[s])
        if values is not None:
            v = base + float(values[:k].sum())
            return v, v
        # the k largest of m sorted values in [lo, hi] summing to ``total``
        upper = min(k * hi, total - (m - k) * lo)
        lower = max(k * total / m, total - (m - k) * hi, k * lo)
        return base + lower, base + upper

    def value_at(self, rank: int) -> float | None:
        """The gain at ``rank`` (0-based, decreasing order), where known."""
        s = int(np.searchsorted(self.ends, rank, "right")) - 1
        m, _, lo, _, values = self.segments[s]
        if values is not None:
            return float(values[rank - int(self.ends[s])])
        if rank == int(self.ends[s + 1]) - 1:
            return lo  # the last of a segment is its minimum
        return None


# -- the counts ------------------------------------------------------------------------------------
class _Counts:
    """``c_g(r)`` and the candidate rates of the in-memory sweep (float64 exactly as it
    computes them: rates ``c / n_g``, ``L_g(r)`` the first count whose rate is ``>= r``,
    ``U_g(r)`` the last whose rate minus ``r`` is ``<= tol``), in a window of counts."""

    def __init__(self, ns: list[int], us: list[int], tol: float, lo: list[int], hi: list[int]):
        self.n = [float(n) for n in ns]
        self.ni = [int(n) for n in ns]
        self.u, self.tol, self.lo, self.hi = us, tol, lo, hi

    def first_at_least(self, g: int, r: float, strict: bool = False) -> int:
        n, ni = self.n[g], self.ni[g]
        c = min(max(int(math.ceil(r * n)), 0), ni + 1)
        below = (lambda x: x / n <= r) if strict else (lambda x: x / n < r)
        while c > 0 and not below(c - 1):
            c -= 1
        while c <= ni and below(c):
            c += 1
        return c

    def last_within(self, g: int, r: float) -> int:
        n, ni, tol = self.n[g], self.ni[g], self.tol
        c = min(max(int(math.floor((r + tol) * n)), -1), ni)
        while c < ni and (c + 1) / n - r <= tol:
            c += 1
        while c >= 0 and c / n - r > tol:
            c -= 1
        return c

    def limits(self, g: int, r: float) -> tuple[int, int]:
        """The counts group ``g`` may take at candidate ``r``: ``[L, U]`` in the window."""
        lo = min(max(self.first_at_least(g, r), self.lo[g]), self.hi[g] + 1)
        hi = min(max(self.last_within(g, r), self.lo[g] - 1), self.hi[g])
        return lo, hi

    def snap_up(self, r: float) -> float | None:
        """The smallest candidate rate ``>= r``."""
        best = None
        for g in range(len(self.n)):
            c = max(self.first_at_least(g, r), self.lo[g])
            if c <= self.hi[g]:
                rate = c / self.n[g]
                best = rate if best is None else min(best, rate)
        return best

    def snap_down(self, r: float) -> float | None:
        """The largest candidate rate ``<= r``."""
        best = None
        for g in range(len(self.n)):
            c = min(self.first_at_least(g, r, strict=True) - 1, self.hi[g])
            if c >= self.lo[g]:
                rate = c / self.n[g]
                best = rate if best is None else max(best, rate)
        return best


def best_counts(groups: list[Ranked], tol: float, full: bool = False):
    """The in-memory optimal counts, or the segments to refine.

    Returns ``("counts", [c_g])``, ``("refine", {(group, segment)})`` or
    ``("infeasible", None)`` (no candidate in the window: the caller retries with
    ``full=True``, as the in-memory sweep does).
    """
    ns = np.array([g.n for g in groups], dtype=np.int64)
    us = np.array([g.u for g in groups], dtype=np.int64)
    window = None if full else count_window(us, ns, ns.astype(np.float64), tol)
    lo, hi = (np.zeros_like(ns), ns) if window is None else window
    cc = _Counts(ns.tolist(), us.tolist(), tol, lo.tolist(), hi.tolist())
    k = len(groups)
    margin = 1e-11 * (1.0 + float(ns.sum()))

    def value(counts):
        lows, ups = zip(*(groups[g].bounds(counts[g]) for g in range(k)))
        return math.fsum(lows), math.fsum(ups)

    def clip(u, a, b):
        return max(a, min(u, b))

    items, leaves = [], []  # items: (r, counts, low, up); leaves: (ranges, up)
    best_low = -math.inf
    rates = [(lo[g] / float(ns[g]), hi[g] / float(ns[g])) for g in range(k) if lo[g] <= hi[g]]
    stack = [(min(a for a, _ in rates), max(b for _, b in rates))] if rates else []
    while stack:
        ra, rb = stack.pop()
        ra, rb = cc.snap_up(ra), cc.snap_down(rb)
        if ra is None or rb is None or ra > rb:
            continue
        lim_a = [cc.limits(g, ra) for g in range(k)]
        lim_b = [cc.limits(g, rb) for g in range(k)]
        if any(lim_a[g][0] > lim_b[g][1] for g in range(k)):
            continue  # no candidate of the interval is feasible
        # counts over the feasible candidates of the interval (c_g(r) is non-decreasing)
        ranges = [(max(lim_a[g][0], min(cc.u[g], lim_a[g][1])), max(lim_b[g][0], min(cc.u[g], lim_b[g][1])))
                  for g in range(k)]
        up = math.fsum(groups[g].bounds(clip(cc.u[g], *ranges[g]))[1] for g in range(k))
        if up < best_low - margin:
            continue
        feasible_a = all(a <= b for a, b in lim_a)
        if feasible_a:
            counts = [clip(cc.u[g], *lim_a[g]) for g in range(k)]
            low, up_a = value(counts)
            best_low = max(best_low, low)
            if ra == rb or all(ranges[g][0] == ranges[g][1] for g in range(k)):
                items.append((ra, counts, low, up_a))
                continue
        elif ra == rb:
            continue
        segs = [_segments_between(groups[g], *ranges[g]) for g in range(k)]
        if all(len(s) <= 1 for s in segs) and any(s and not groups[g].exact(s[0]) for g, s in enumerate(segs)):
            leaves.append((segs, up))  # only finer knowledge can tell these candidates apart
            continue
        mid = 0.5 * (ra + rb)
        if mid >= rb:  # adjacent floats
            mid = ra
        right = cc.snap_up(np.nextafter(mid, math.inf))
        stack.append((ra, mid))
        if right is not None:
            stack.append((right, rb))
    if not items and not leaves:
        return "infeasible", None
    best_low = max([it[2] for it in items] + [best_low])
    refine = set()
    for _, counts, low, up in items:
        if up >= best_low - margin and low != up:
            for g in range(k):
                s = groups[g].segment_of(counts[g])
                if s is not None and not groups[g].exact(s):
                    refine.add((g, s))
    for segs, up in leaves:
        if up >= best_low - margin:
            refine.update((g, s[0]) for g, s in enumerate(segs) if s and not groups[g].exact(s[0]))
    if refine:
        return "refine", refine
    # every candidate left is known exactly: the best, the lowest rate among ties (as in memory)
    top = max(it[2] for it in items)
    tie = TIE_RTOL * (1.0 + float(ns.sum()))
    r, counts = min((it[0], it[1]) for it in items if it[2] >= top - tie)
    return "counts", counts


def _segments_between(ranked: Ranked, a: int, b: int) -> list[int]:
    """Segments holding a count of ``[a, b]`` strictly inside."""
    s0 = int(np.searchsorted(ranked.ends, a, "right")) - 1
    s1 = int(np.searchsorted(ranked.ends, b, "left")) - 1
    return [s for s in range(max(s0, 0), s1 + 1) if ranked.ends[s] < b and ranked.ends[s + 1] > a]


def refinement_requests(groups: list[Ranked], refine: set, keys: list) -> dict:
    out = {}
    for g, s in refine:
        m, _, lo, hi, _ = groups[g].segments[s]
        out[(keys[g], s)] = ("collect", lo, hi) if m <= COLLECT_LIMIT else ("hist", lo, hi, edges(lo, hi, SUB_BINS))
    return out


def apply_refinements(groups: list[Ranked], keys: list, requests: dict, got: dict) -> None:
    index = {key: g for g, key in enumerate(keys)}
    # replace later segments first: indices of earlier ones stay valid
    for key in sorted(requests, key=lambda k: (index[k[0]], -k[1])):
        g, s = index[key[0]], key[1]
        if requests[key][0] == "collect":
            groups[g].add_values(s, got[key])
        else:
            groups[g].add_bins(s, *got[key])


def solve(keys: list, run_pass, tol: float) -> tuple[dict, int]:
    """Optimal counts per group key: ``run_pass(requests, first)`` returns the merged
    partition results. Returns ``({key: (count, threshold)}, passes)``: the group
    accepts its ``count`` rows of highest gain, the threshold being the gain of the
    last one accepted."""
    got = run_pass(first_requests(keys), True)
    groups = []
    for key in keys:
        n, u = got[(key, "nu")]
        groups.append(Ranked(n, u))
        groups[-1].add_bins(None, *got[(key, -1)])
    passes, full = 1, False
    while True:
        status, result = best_counts(groups, tol, full)
        if status == "infeasible":
            if full:  # pragma: no cover - r = 0 is always feasible in the full window
                raise InfeasibleProjectionError("no feasible selection rates found")
            full = True
            continue
        if status == "counts":
            break
        if passes >= MAX_PASSES:
            raise InfeasibleProjectionError(f"the count search did not settle in {MAX_PASSES} passes")
        requests = refinement_requests(groups, result, keys)
        apply_refinements(groups, keys, requests, run_pass(requests, False))
        passes += 1
    out = {}
    for key, ranked, c in zip(keys, groups, result):
        tau = math.inf if c == 0 else ranked.value_at(c - 1)
        if tau is None:  # pragma: no cover - the count search ends where G (so the value) is known
            raise InfeasibleProjectionError("the threshold of a group is not known")
        out[key] = (int(c), tau)
    return out, passes


def takes(counts: dict, ties: list[dict]) -> list[dict]:
    """Per partition and group, how many of its rows tied at the threshold it accepts
    (the first ones in row order overall, as in memory)."""
    above = {g: sum(t[g][0] for t in ties if g in t) for g in counts}
    left = {g: counts[g][0] - above[g] for g in counts}
    tied = {g: sum(t[g][1] for t in ties if g in t) for g in counts}
    for g in counts:
        if not 0 <= left[g] <= tied[g]:
            raise InfeasibleProjectionError("the rows above a group's threshold changed between passes: is the "
                                            "data deterministic?")
    out = []
    for t in ties:
        part = {}
        for g in counts:
            here = t[g][1] if g in t else 0
            part[g] = min(left[g], here)
            left[g] -= part[g]
        out.append(part)
    return out
