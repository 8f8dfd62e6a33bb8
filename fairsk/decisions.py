"""Fair decisions: labels whose selection rates are at parity, per call and per stream.

* :func:`fair_labels` turns the probabilities of one call into labels whose
  per-group selection rates lie within ``tolerance`` of each other, for every
  sensitive attribute and every class, choosing the labelling that maximises the
  expected number of correct labels (exactly for binary targets and one sensitive
  attribute; a verified feasible labelling otherwise, see below).
* :class:`StreamingLabeler` emits labels one row at a time so that the selection
  rates of everything emitted so far stay at parity, with a bound that holds after
  every row and reaches ``tolerance`` once every group has ``ceil(1 / tolerance)``
  rows.
* :func:`selection_rates` and :func:`label_gap` recompute the rates and the gap from
  labels; every output of this module is checked with them before it is returned,
  and a violation raises :class:`~fairsk.exceptions.InfeasibleProjectionError`.

Rates and gaps are compared in float64 exactly as a user recomputes them: the rate
of a class in a group is ``count / size`` (correctly rounded) and the gap is
``max - min`` of those rates; ``gap <= tolerance`` holds with no extra slack.

Optimality for binary targets and one attribute
------------------------------------------------
Write ``w_i = 2 p_i - 1``: accepting row ``i`` instead of rejecting it changes the
expected number of correct labels by ``w_i``. Inside a group, for a given number
``c`` of acceptances the best choice is the ``c`` rows of highest probability, with
gain ``G_g(c)`` = sum of the ``c`` largest ``w``. ``G_g`` is concave (its increments
``w`` are sorted decreasingly) and is maximised at ``u_g`` = number of rows with
``p > 1/2``; on an interval ``[L, U]`` of counts it is therefore maximised at
``clip(u_g, L, U)``.

A count vector ``c`` is feasible when ``max_g c_g/n_g - min_g c_g/n_g <= tolerance``.
Let ``c*`` be optimal and ``r* = min_g c*_g / n_g``: ``r*`` is one of the finitely
many rates ``c / n_g``, and every ``c*_g`` lies in ``[L_g(r*), U_g(r*)]``, the
counts whose rate ``rho`` satisfies ``rho >= r*`` and ``rho - r* <= tolerance``. So
``G(c*) <= F(r*) := sum_g max_{[L_g(r*), U_g(r*)]} G_g = sum_g G_g(clip(u_g, L_g, U_g))``.
Conversely, for every candidate ``r`` with all ``[L_g(r), U_g(r)]`` non-empty the
clipped counts are feasible (all their rates lie in ``[r, r + tolerance]``, and in
floating point ``fl(max - min) <= fl(max - r) <= tolerance`` because rounding is
monotone), so ``max_r F(r)`` is the optimum. The candidate ``r = 0`` (nobody
accepted is always feasible) is always among them. :func:`fair_labels` evaluates
``F`` at every candidate with one sweep: ``L_g`` and ``U_g`` are step functions of
``r`` that change ``n_g + 1`` times each, so ``F`` is a sum of piecewise-constant
functions whose jumps are computed per group and accumulated with a cumulative
sum. Cost: ``O(n log n)`` for the sorts, ``O(n + G)`` for the sweep. When the
tolerance exceeds every group's rate step ``1 / n_g``, some optimum has its minimum
rate in ``[min_g u_g/n_g - tolerance, max_g u_g/n_g]`` and the sweep is restricted to
the counts near that window (proof in the user guide, "Fair decisions").

Several attributes or several classes: the labels are feasible and verified, not
always optimal; their measured cost against brute force is in the user guide.

Ties: rows of equal probability are accepted in order of their row index (lower
first); a row with ``p = 1/2`` exactly counts as not improved by acceptance; among
equally good count vectors the one with the lowest minimum rate is returned, two
count vectors being equally good when their expected numbers of correct labels differ
by at most ``TIE_RTOL = 1e-12`` times the number of rows (far above the rounding of
the float64 sums, so the choice does not depend on the order of summation:
:mod:`fairsk.dask` makes the same one). The same call always returns the same labels.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from typing import Any

import numpy as np

from .exceptions import InfeasibleProjectionError

__all__ = ["fair_labels", "selection_rates", "label_gap", "StreamingLabeler"]


# --------------------------------------------------------------------------- checks
def _as_codes(groups: Any, n: int) -> np.ndarray:
    """Integer group codes (n, a), recoded to ``0..k-1`` per attribute."""
    arr = np.asarray(groups)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"groups must be 1-D or 2-D, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"groups has {arr.shape[0]} rows but proba has {n}")
    if arr.shape[1] == 0:
        raise ValueError("groups has no columns")
    if n and arr.dtype.kind not in "biu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"groups must hold integer codes, got dtype {arr.dtype}")
    out = np.empty(arr.shape, dtype=np.int64)
    for j in range(arr.shape[1]):
        out[:, j] = _recode(arr[:, j])
    return out


def _recode(col: np.ndarray) -> np.ndarray:
    """Codes ``0..k-1`` in the sorted order of the distinct values of an integer column."""
    if col.size and col.min() >= 0 and col.max() < 4 * col.size + 1024:  # small codes: a table, O(n)
        present = np.bincount(col) > 0
        return (np.cumsum(present) - 1)[col]
    return np.unique(col, return_inverse=True)[1].reshape(-1)


def _as_proba(proba: Any) -> np.ndarray:
    """Probabilities as float64 (n,) for binary targets or (n, k) with k >= 3."""
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    if p.ndim == 2 and p.shape[1] == 2:
        p = p[:, 1]
    if p.ndim not in (1, 2):
        raise ValueError(f"proba must be 1-D (binary) or 2-D (n, n_classes), got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("proba contains NaN or infinite values")
    if p.size and (p.min() < -1e-9 or p.max() > 1 + 1e-9):
        raise ValueError(f"proba must lie in [0, 1], got values in [{p.min()}, {p.max()}]")
    return np.clip(p, 0.0, 1.0)


def _check_tolerance(tolerance: Any) -> float:
    try:
        tol = float(tolerance)
    except (TypeError, ValueError):
        raise ValueError(f"tolerance must be a number, got {tolerance!r}") from None
    if not tol >= 0.0 or math.isinf(tol):  # also rejects NaN
        raise ValueError(f"tolerance must be finite and >= 0, got {tolerance!r}")
    return tol


def selection_rates(labels: Any, groups: Any, n_classes: int | None = None) -> list[np.ndarray]:
    """Per-group selection rates of every class, one array (n_groups, n_classes) per attribute.

    The rate of class ``k`` in group ``g`` is ``count / size`` in float64, the
    groups being the distinct codes of each attribute in sorted order.

    Examples
    --------
    >>> from fairsk.decisions import selection_rates
    >>> selection_rates([1, 0, 1, 1], [0, 0, 1, 1])[0][:, 1].tolist()
    [0.5, 1.0]
    """
    y = np.asarray(labels).reshape(-1)
    if y.size and (y.dtype.kind not in "biu" or y.min() < 0):
        raise ValueError("labels must be non-negative integer class indices")
    codes = _as_codes(groups, y.shape[0])
    k = int(n_classes) if n_classes is not None else (int(y.max()) + 1 if y.size else 1)
    k = max(k, 2)
    out = []
    for j in range(codes.shape[1]):
        g = codes[:, j]
        n_groups = int(g.max()) + 1 if g.size else 0
        counts = np.bincount(g * k + y, minlength=n_groups * k).reshape(n_groups, k)
        sizes = counts.sum(1, keepdims=True)
        out.append(counts / sizes)
    return out


def label_gap(labels: Any, groups: Any, n_classes: int | None = None) -> float:
    """Largest difference of two groups' selection rates, over attributes and classes.

    For binary labels (two classes) only the positive class (``1``) counts, as in
    ``fairlearn.metrics.demographic_parity_difference``: in float64 the rates of
    class ``0``, ``(n - c) / n``, may round differently from ``1 - c / n``.

    Examples
    --------
    >>> from fairsk.decisions import label_gap
    >>> label_gap([1, 0, 1, 1], [0, 0, 1, 1])
    0.5
    """
    gap = 0.0
    for rates in selection_rates(labels, groups, n_classes):
        if rates.shape[1] == 2:  # binary: the positive class's rates, as users measure them
            rates = rates[:, 1:]
        if rates.shape[0]:
            gap = max(gap, float((rates.max(0) - rates.min(0)).max()))
    return gap


def _verify(labels: np.ndarray, codes: np.ndarray, n_classes: int, tol: float) -> None:
    gap = label_gap(labels, codes, n_classes)
    if not gap <= tol:
        raise InfeasibleProjectionError(
            f"the labels' selection-rate gap {gap!r} exceeds the tolerance {tol!r}; refusing to return them"
        )


# --------------------------------------------------------------------------- one attribute, exact
def _best_counts(w: np.ndarray, starts: np.ndarray, avail: np.ndarray, sizes: np.ndarray, tol: float) -> np.ndarray:
    """Optimal acceptance counts per group under ``max rate - min rate <= tol``.

    ``w`` holds the gains of the rows sorted by group, then decreasingly inside a
    group (group ``g`` occupies ``w[starts[g]:starts[g] + avail[g]]``). Group ``g``
    may accept ``0..avail[g]`` rows and its rate is ``count / sizes[g]``.
    Maximises the sum of the accepted gains (the sweep described in the module
    docstring) and returns the counts.

    When the tolerance exceeds every group's rate step ``1 / size``, some optimum
    has its minimum rate in ``[min_g u_g/n_g - tol, max_g u_g/n_g]`` (``u_g``: the
    unconstrained counts; see "Fair decisions" in the user guide), so only the
    counts whose rates lie within ``tol`` of that window enter the sweep.
    """
    row_gid = np.repeat(np.arange(avail.shape[0]), avail)
    best_free = np.bincount(row_gid, weights=(w > 0), minlength=avail.shape[0]).astype(np.int64)
    window = count_window(best_free, avail, sizes, tol)
    if window is not None:
        counts = _sweep(w, starts, avail, sizes, tol, best_free, *window)
        if counts is not None:
            return counts
    counts = _sweep(w, starts, avail, sizes, tol, best_free, np.zeros_like(avail), avail.copy())
    if counts is None:  # pragma: no cover - r = 0 is always feasible in the full sweep
        raise InfeasibleProjectionError("no feasible minimum rate found")
    return counts


#: candidates whose expected number of correct labels is within this fraction of the
#: number of rows of the best are ties (gains are in [-1, 1]: float64 sums of them are
#: off by far less)
TIE_RTOL = 1e-12


def count_window(best_free: np.ndarray, avail: np.ndarray, sizes: np.ndarray, tol: float):
    """The counts ``(c_lo, c_hi)`` per group the sweep may restrict itself to, or None.

    When the tolerance exceeds every group's rate step ``1 / size``, some optimum has
    its minimum rate in ``[min_g u_g/n_g - tol, max_g u_g/n_g]`` (``u_g = best_free``:
    the unconstrained counts; see "Fair decisions" in the user guide). The window
    depends on the counts only (also used by :mod:`fairsk.dask`, which must choose
    the counts exactly as this module does).
    """
    if not (avail.size and tol > (1 + 1e-6) / sizes.min() + 1e-12):
        return None
    free_rate = best_free / sizes
    slack = 1e-9
    r_lo, r_hi = free_rate.min() - tol - slack, free_rate.max() + tol + slack
    # c_lo: the number of counts whose rate is below r_lo, exactly as the rates are
    # computed, so that every dropped rate lies below every candidate
    c_lo = np.clip(np.ceil(r_lo * sizes).astype(np.int64), 0, best_free)
    for _ in range(8):
        down = (c_lo > 0) & ((c_lo - 1) / sizes >= r_lo)
        up = (c_lo < best_free) & (c_lo / sizes < r_lo)
        if not (down.any() or up.any()):
            break
        c_lo = c_lo - down + up
    c_hi = np.clip(np.floor(r_hi * sizes).astype(np.int64) + 1, best_free, avail)
    return c_lo, c_hi


def _sweep(w, starts, avail, sizes, tol, best_free, c_lo, c_hi):
    """The sweep over candidate minimum rates, for counts restricted to ``[c_lo, c_hi]`` per group.

    Counts below ``c_lo`` have rates below every candidate (they count towards both
    bounds), counts above ``c_hi`` are never allowed. Returns the best counts, or
    ``None`` when no candidate is feasible.
    """
    n_groups = avail.shape[0]
    m1 = c_hi - c_lo + 1  # one "entry" per (group, allowed count)
    gid = np.repeat(np.arange(n_groups), m1)
    off = np.concatenate(([0], np.cumsum(m1)[:-1]))  # first entry of every group
    cnt = np.arange(gid.shape[0]) - off[gid] + c_lo[gid]
    rate = cnt / sizes[gid]  # ascending inside every group

    # value of accepting the top c rows of group g, minus that of its unconstrained best
    csum = np.concatenate(([0.0], np.cumsum(w)))
    prefix = csum[starts[gid] + cnt] - csum[starts[gid]]
    loss_of = prefix - prefix[(off + best_free - c_lo)[gid]]  # <= 0, what a forced count costs

    # candidate minimum rates r: every rate, sorted (a merge of the groups' sorted runs)
    by_rate = np.argsort(rate, kind="stable")
    sorted_rates = rate[by_rate]
    new = np.empty(sorted_rates.shape[0], dtype=bool)
    new[0] = True
    np.not_equal(sorted_rates[1:], sorted_rates[:-1], out=new[1:])
    cands = sorted_rates[new]
    idx = np.empty(rate.shape[0], dtype=np.int64)
    idx[by_rate] = np.cumsum(new) - 1  # position of every entry's rate among the candidates
    n_cand = cands.shape[0]

    # tpos[e]: the first candidate r with fl(rate_e - r) <= tol (monotone in r; rounding fixed up)
    tpos = np.searchsorted(cands, rate - tol, side="left")
    for _ in range(64):
        down = (tpos > 0) & (rate - cands[np.maximum(tpos - 1, 0)] <= tol)
        up = (tpos < n_cand) & ~(rate - cands[np.minimum(tpos, n_cand - 1)] <= tol)
        if not (down.any() or up.any()):
            break
        tpos = tpos - down + up
    else:  # pragma: no cover - rounding never moves a position this far
        raise InfeasibleProjectionError("could not locate the rate thresholds")

    # At candidate j, group g may accept L_g(j) = c_lo + #{c : idx < j} up to
    # U_g(j) = c_lo - 1 + #{c : tpos <= j} rows. Events: entry (g, c) raises L_g at
    # position idx + 1 and U_g at position tpos. Sorting the events by (group,
    # position) and counting them gives L and U after each event; the group's value
    # after its last event at a position is right, and the differences between
    # consecutive events telescope, so the per-position sums of the differences give
    # F(j) after a cumulative sum, ties at one position included.
    span = n_cand + 1
    ev_key = np.concatenate((gid * span + idx + 1, gid * span + tpos))
    ev_is_l = np.concatenate((np.ones(gid.shape[0], bool), np.zeros(gid.shape[0], bool)))
    order = np.argsort(ev_key, kind="stable")  # two sorted runs: a merge
    ev_key, ev_is_l = ev_key[order], ev_is_l[order]
    ev_gid = np.concatenate((gid, gid))[order]
    ev_pos = ev_key - ev_gid * span
    first_ev = np.searchsorted(ev_key, np.arange(n_groups) * span)  # first event of every group
    l_cum = np.cumsum(ev_is_l)
    u_cum = np.arange(1, ev_key.shape[0] + 1) - l_cum
    base = first_ev[ev_gid]
    lo = l_cum - np.where(base > 0, l_cum[base - 1], 0) + c_lo[ev_gid]
    hi = u_cum - np.where(base > 0, u_cum[base - 1], 0) + c_lo[ev_gid] - 1
    feasible = (lo <= hi) & (hi >= c_lo[ev_gid])
    chosen = np.minimum(np.maximum(best_free[ev_gid], lo), np.maximum(hi, c_lo[ev_gid]))
    chosen = np.minimum(chosen, c_hi[ev_gid])
    loss = np.where(feasible, loss_of[off[ev_gid] + chosen - c_lo[ev_gid]], 0.0)
    bad = (~feasible).astype(np.float64)
    # before its first event a group allows no count yet: infeasible
    first = np.zeros(ev_key.shape[0], dtype=bool)
    first[first_ev[first_ev < ev_key.shape[0]]] = True
    d_loss = loss - np.where(first, 0.0, np.roll(loss, 1))
    d_bad = bad - np.where(first, 1.0, np.roll(bad, 1))
    keep = ev_pos < n_cand
    total = np.cumsum(np.bincount(ev_pos[keep], weights=d_loss[keep], minlength=n_cand))
    n_bad = n_groups + np.rint(np.cumsum(np.bincount(ev_pos[keep], weights=d_bad[keep], minlength=n_cand)))
    total = np.where(n_bad == 0, total, -np.inf)
    top = float(total.max())
    if not np.isfinite(top):
        return None
    # the first best candidate (the lowest minimum rate), ties within TIE_RTOL of the
    # largest possible total: a tie is then one in exact arithmetic, whatever the
    # order of the float sums (fairsk.dask, summing in another order, chooses alike)
    j = int(np.flatnonzero(total >= top - TIE_RTOL * (1.0 + w.shape[0]))[0])
    lo_j = c_lo + np.bincount(gid[idx < j], minlength=n_groups)
    hi_j = c_lo + np.bincount(gid[tpos <= j], minlength=n_groups) - 1
    return np.clip(best_free, lo_j, hi_j)


def _group_order(gains: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Rows sorted by group, then by decreasing gain, then by row index (stable sorts)."""
    order = np.argsort(-gains, kind="stable")
    small = codes.astype(np.uint16) if codes.size and codes.max() < 2**16 else codes
    return order[np.argsort(small[order], kind="stable")]  # radix sort for small codes


def _solve_one(
    gains: np.ndarray, codes: np.ndarray, sizes: np.ndarray, tol: float
) -> np.ndarray:
    """Accept/reject (bool) maximising the accepted gains, rates count/sizes within tol.

    ``codes`` are group codes ``0..G-1`` of the rows given; ``sizes`` the
    denominators of the rates (at least the number of rows of each group).
    """
    n = gains.shape[0]
    order = _group_order(gains, codes)
    n_groups = sizes.shape[0]
    avail = np.bincount(codes, minlength=n_groups)
    starts = np.concatenate(([0], np.cumsum(avail)[:-1]))
    counts = _best_counts(gains[order], starts, avail, sizes.astype(np.float64), tol)
    # rank of every sorted row inside its group; accept the top `counts`
    sorted_codes = codes[order]
    rank = np.arange(n) - starts[sorted_codes]
    accept = np.zeros(n, dtype=bool)
    accept[order] = rank < counts[sorted_codes]
    return accept


def _binary_one(p: np.ndarray, g: np.ndarray, tol: float) -> np.ndarray:
    sizes = np.bincount(g)
    return _solve_one(2.0 * p - 1.0, g, sizes, tol).astype(np.int64)


# --------------------------------------------------------------------------- several classes
def _expected(proba2d: np.ndarray, labels: np.ndarray) -> float:
    return float(proba2d[np.arange(labels.shape[0]), labels].sum())


def _multiclass_one(P: np.ndarray, g: np.ndarray, tol: float) -> np.ndarray:
    """Several classes, one (possibly intersectional) attribute: a feasible labelling.

    Classes are assigned one after the other (the class predicted least often
    first, the most frequent last); each but the last selects rows among those
    left with the exact binary sweep, under a per-class tolerance; the last class
    takes the remaining rows. With the per-class tolerance ``tol / (k - 1)`` the
    last class's gap is at most the sum of the others', so the result is feasible.
    The best verified candidate (also among "every row to one class") is returned.
    """
    n, k = P.shape
    sizes = np.bincount(g)
    argmax = np.argmax(P, axis=1)
    candidates = []
    if label_gap(argmax, g, k) <= tol:
        return argmax  # the unconstrained optimum is feasible: nothing to trade
    for c in range(k):
        candidates.append(np.full(n, c, dtype=np.int64))
    freq = np.bincount(argmax, minlength=k)
    by_freq = list(np.lexsort((np.arange(k), freq)))  # least predicted first
    orders = [by_freq[:i] + by_freq[i + 1 :] + [by_freq[i]] for i in range(k)]  # each class last once
    shares = (tol, max(0.0, tol / (k - 1) * (1 - 1e-12) - 1e-15))
    for order, share in itertools.product(orders, shares):
        labels = np.full(n, -1, dtype=np.int64)
        left = np.ones(n, dtype=bool)
        remaining = list(order)
        for cls in order[:-1]:
            remaining.remove(cls)
            rows = np.flatnonzero(left)
            if rows.size == 0:
                break
            sub = P[rows]
            gain = sub[:, cls] - sub[:, remaining].max(1)
            take = _solve_one(gain, g[rows], sizes, share)
            labels[rows[take]] = cls
            left[rows[take]] = False
        labels[left] = order[-1]
        candidates.append(labels)
    best, best_val = None, -np.inf
    for labels in candidates:
        if label_gap(labels, g, k) <= tol:
            val = _expected(P, labels)
            if val > best_val:
                best, best_val = labels, val
    return best


# --------------------------------------------------------------------------- several attributes
def _cells(codes: np.ndarray) -> np.ndarray:
    """Intersectional cell of every row (one code per distinct combination)."""
    cells = codes[:, 0]
    for j in range(1, codes.shape[1]):  # combine one column at a time; codes stay below n
        cells = _recode(cells * (int(codes[:, j].max()) + 1) + codes[:, j])
    return cells


def _improve_binary(p: np.ndarray, codes: np.ndarray, labels: np.ndarray, tol: float) -> np.ndarray:
    """Greedy single flips towards the unconstrained labels that keep every gap <= tol.

    Rows are tried by decreasing ``|2p - 1|`` (then row index), in passes until a
    pass changes nothing; every accepted flip raises the expected accuracy. Within
    a pass, once a flip in one direction fails for a combination of groups, that
    combination is not tried again in that direction until the next pass.
    """
    labels = labels.copy()
    n_attr = codes.shape[1]
    sizes = [np.bincount(codes[:, a]).astype(float).tolist() for a in range(n_attr)]
    acc = [np.bincount(codes[:, a], weights=labels, minlength=len(sizes[a])).tolist() for a in range(n_attr)]
    cells = _cells(codes)
    w = 2.0 * p - 1.0
    for _ in range(16):
        todo = np.flatnonzero((w > 0) & (labels == 0) | (w < 0) & (labels == 1))
        if todo.size == 0:
            break
        todo = todo[np.lexsort((todo, -np.abs(w[todo])))]
        blocked = set()
        changed = False
        for i, cell, row_codes in zip(todo.tolist(), cells[todo].tolist(), codes[todo].tolist()):
            step = 1 if labels[i] == 0 else -1
            if (cell, step) in blocked:
                continue
            ok = True
            for a, g in enumerate(row_codes):
                rates = [c / s for c, s in zip(acc[a], sizes[a])]
                rates[g] = (acc[a][g] + step) / sizes[a][g]
                if not max(rates) - min(rates) <= tol:
                    ok = False
                    break
            if ok:
                for a, g in enumerate(row_codes):
                    acc[a][g] += step
                labels[i] += step
                changed = True
            else:
                blocked.add((cell, step))
        if not changed:
            break
    return labels


def _binary_several(p: np.ndarray, codes: np.ndarray, cells: np.ndarray, tol: float) -> np.ndarray:
    """Binary targets, several attributes: a verified feasible labelling.

    The exact solution on the intersectional cells (feasible for every attribute:
    each group's rate is an average of its cells' rates), improved by greedy single
    flips (:func:`_improve_binary`).
    """
    labels = _improve_binary(p, codes, _binary_one(p, cells, tol), tol)
    return _swap_search(p, codes, cells, labels, tol, max_steps=4 * (int(cells.max()) + 1) + 20)


def _swap_search(
    p: np.ndarray, codes: np.ndarray, cells: np.ndarray, labels: np.ndarray, tol: float, max_steps: int = 1000
) -> np.ndarray:
    """Steepest-ascent local search over the acceptance counts of the intersectional cells.

    Feasibility depends only on the counts per cell, and for given counts the best
    rows are each cell's most probable ones. Moves: one more or one fewer acceptance
    in a cell, or a change of one in each of two cells (a swap, two more, two fewer:
    moves single flips cannot make when the tolerance is tight). The best improving
    feasible move is applied until none is left (at most ``max_steps`` moves; pairs
    only with at most 100 cells, to bound the work).
    """
    n_cells = int(cells.max()) + 1
    w = 2.0 * p - 1.0
    order = _group_order(w, cells)
    size_c = np.bincount(cells, minlength=n_cells)
    start_c = np.concatenate(([0], np.cumsum(size_c)[:-1]))
    ws = np.concatenate((w[order], [0.0]))
    k = np.bincount(cells, weights=labels, minlength=n_cells).astype(np.int64)
    n_attr = codes.shape[1]
    cell_group = np.zeros((n_attr, n_cells), dtype=np.int64)
    for a in range(n_attr):
        cell_group[a, cells] = codes[:, a]
    sizes = [np.bincount(codes[:, a]).astype(np.float64) for a in range(n_attr)]
    # moves: (c1, d1, c2, d2) changes the count of c1 by d1 and of c2 by d2 (c2 = -1: none)
    ids = np.arange(n_cells)
    c1s, d1s, c2s, d2s = [ids, ids], [np.ones(n_cells, np.int64), -np.ones(n_cells, np.int64)], [], []
    c2s += [np.full(n_cells, -1)] * 2
    d2s += [np.zeros(n_cells, np.int64)] * 2
    if n_cells <= 100:  # pairs of cells: swaps, two more, two fewer
        i, j = np.meshgrid(ids, ids, indexing="ij")
        diff, lower = i != j, i < j
        for d1, d2, mask in ((-1, 1, diff), (1, 1, lower), (-1, -1, lower)):
            c1s.append(i[mask])
            c2s.append(j[mask])
            d1s.append(np.full(int(mask.sum()), d1))
            d2s.append(np.full(int(mask.sum()), d2))
    c1, d1, c2, d2 = (np.concatenate(x) for x in (c1s, d1s, c2s, d2s))
    has2 = c2 >= 0
    c2_safe = np.where(has2, c2, 0)
    for _ in range(max_steps):
        up = np.where(k < size_c, ws[start_c + np.minimum(k, size_c - 1)], -np.inf)
        down = np.where(k > 0, -ws[start_c + np.maximum(k - 1, 0)], -np.inf)
        value = np.where(d1 > 0, up[c1], down[c1]) + np.where(has2, np.where(d2 > 0, up[c2_safe], down[c2_safe]), 0.0)
        good = np.flatnonzero(value > 1e-12)
        if good.size == 0:
            break
        ok = np.ones(good.size, dtype=bool)
        rows = np.arange(good.size)
        for a in range(n_attr):
            counts = np.bincount(cell_group[a], weights=k, minlength=sizes[a].shape[0])
            moved = np.broadcast_to(counts, (good.size, counts.shape[0])).copy()
            np.add.at(moved, (rows, cell_group[a][c1[good]]), d1[good])
            sel = has2[good]
            np.add.at(moved, (rows[sel], cell_group[a][c2[good][sel]]), d2[good][sel])
            rates = moved / sizes[a]
            ok &= rates.max(1) - rates.min(1) <= tol
        if not ok.any():
            break
        best = good[np.flatnonzero(ok)[np.argmax(value[good][ok])]]
        k[c1[best]] += d1[best]
        if has2[best]:
            k[c2[best]] += d2[best]
    # the most probable k_c rows of every cell
    rank = np.empty(len(cells), dtype=np.int64)
    rank[order] = np.arange(len(cells)) - start_c[cells[order]]
    return (rank < k[cells]).astype(np.int64)


# --------------------------------------------------------------------------- public
def fair_labels(proba: Any, groups: Any, tolerance: float) -> np.ndarray:
    """Labels whose per-group selection rates are within ``tolerance``, most accurate in expectation.

    Among all labellings of the rows whose selection rates (the rate of every class
    among each group's rows) lie within ``tolerance`` of each other for every
    sensitive attribute, returns one that maximises the expected number of correct
    labels under ``proba``.

    * binary targets, one attribute: exact (proof in the module docstring), in
      ``O(n log n)``;
    * several attributes: the exact solution on the intersectional cells (every
      combination of groups; at parity on cells means at parity on every
      attribute), improved by greedy single flips and a local search over the
      cells' counts that keep every attribute at parity. Feasible and verified,
      not always optimal;
    * several classes: a verified feasible labelling (classes assigned one after
      the other with the exact binary sweep; see ``docs/user_guide.md`` for its
      measured cost), the unconstrained argmax whenever that is already fair.

    Parameters
    ----------
    proba : array-like of shape (n,), (n, 2) or (n, n_classes)
        Probability of the positive class (1-D), or of every class.
    groups : array-like of shape (n,) or (n, n_attributes)
        Integer group codes, one column per sensitive attribute.
    tolerance : float
        Largest allowed difference between two groups' selection rates, ``>= 0``.

    Returns
    -------
    labels : ndarray of shape (n,), int64
        Class indices (``0``/``1`` for binary targets).

    Raises
    ------
    InfeasibleProjectionError
        If the labels found break the tolerance (never expected: every output is
        checked before it is returned).

    Examples
    --------
    >>> from fairsk.decisions import fair_labels, label_gap
    >>> p = [0.9, 0.8, 0.7, 0.4, 0.3, 0.2]
    >>> g = [0, 0, 0, 1, 1, 1]
    >>> fair_labels(p, g, tolerance=0.0).tolist()  # equal rates: two of three in each group
    [1, 1, 0, 1, 1, 0]
    >>> labels = fair_labels(p, g, tolerance=0.4)  # rates 2/3 and 1/3 are close enough
    >>> labels.tolist(), label_gap(labels, g) <= 0.4
    ([1, 1, 0, 1, 0, 0], True)
    """
    p = _as_proba(proba)
    tol = _check_tolerance(tolerance)
    n = p.shape[0]
    codes = _as_codes(groups, n)
    k = 2 if p.ndim == 1 else p.shape[1]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    cells = _cells(codes)
    free = (p > 0.5).astype(np.int64) if p.ndim == 1 else np.argmax(p, axis=1)
    if p.ndim == 1 and codes.shape[1] == 1:
        labels = _binary_one(p, cells, tol)
    elif label_gap(free, codes, k) <= tol:
        labels = free  # the unconstrained optimum is already fair
    elif p.ndim == 1:
        labels = _binary_several(p, codes, cells, tol)
    else:
        labels = _multiclass_one(p, cells, tol)
    _verify(labels, codes, k, tol)
    return labels


# --------------------------------------------------------------------------- streaming
#: a stream's labeler with at most this many cells checks each row on Python numbers
_FEW_CELLS = 64


class StreamingLabeler:
    """Binary labels for a stream, with the pooled selection rates kept at parity.

    State: for every group (the intersectional cell of the sensitive attributes)
    the number of rows seen ``counts_`` and of rows accepted ``accepted_``, and a
    histogram of the probabilities seen. Each row's label is the "informative"
    one, ``p >= threshold_g``, where the thresholds come from the exact batch
    optimum of :func:`fair_labels` on the histogram of everything seen so far
    (refreshed as the stream grows); it is overridden only when it would break
    the invariant below.

    Invariant (checked after every row; a violation raises
    :class:`~fairsk.exceptions.InfeasibleProjectionError`): for every two groups
    ``g, h`` with rates ``rho = accepted / counts``::

        |rho_g - rho_h| <= max(tolerance, 1 / min(N_g, N_h))

    Hence the pooled selection-rate gap of everything emitted is at most
    ``max(tolerance, 1 / min_g N_g)`` after every row, and at most ``tolerance``
    once every group (every cell, with several attributes) has at least
    ``ceil(1 / tolerance)`` rows. The proof that one of the two labels always keeps
    the invariant is in the user guide ("Fair decisions"). The invariant is exact
    in rational arithmetic; float64 rates may exceed it by rounding (< 1e-15).

    Parameters
    ----------
    tolerance : float
        Target gap of the pooled selection rates.
    n_bins : int, default=1024
        Bins of the per-group histogram of probabilities used for the thresholds.
    refresh : float, default=0.02
        The thresholds are recomputed when the number of rows seen has grown by
        this fraction (and at least every 32 rows) since the last time.

    Attributes
    ----------
    counts_, accepted_ : ndarray of shape (n_cells,)
        Rows seen and accepted per cell.
    cells_ : dict
        Tuple of group codes -> cell index.
    n_seen_ : int
        Rows seen.

    Examples
    --------
    >>> import numpy as np
    >>> from fairsk.decisions import StreamingLabeler
    >>> rng = np.random.default_rng(0)
    >>> stream = StreamingLabeler(tolerance=0.1)
    >>> for _ in range(300):
    ...     g = rng.integers(0, 2, size=1)
    ...     _ = stream.partial_labels(np.clip(0.3 + 0.3 * g + rng.normal(0, 0.2, 1), 0, 1), g)
    >>> bool(stream.pooled_gap() <= stream.bound())
    True
    """

    def __init__(self, tolerance: float = 0.0, *, n_bins: int = 1024, refresh: float = 0.02):
        self.tolerance = tolerance
        self.n_bins = n_bins
        self.refresh = refresh
        self.reset()

    def reset(self) -> StreamingLabeler:
        """Forget the stream."""
        self.tol_ = _check_tolerance(self.tolerance)
        if int(self.n_bins) < 2:
            raise ValueError(f"n_bins must be >= 2, got {self.n_bins!r}")
        self.cells_: dict = {}
        self.n_attributes_: int | None = None
        self.counts_ = np.zeros(0, dtype=np.int64)
        self.accepted_ = np.zeros(0, dtype=np.int64)
        self.hist_ = np.zeros((0, int(self.n_bins)), dtype=np.int64)
        self.thresholds_ = np.zeros(0, dtype=np.float64)
        self.n_seen_ = 0
        self._next_refresh = 1
        return self

    # -- state helpers
    def _cell(self, key: tuple) -> int:
        cell = self.cells_.get(key)
        if cell is None:
            cell = len(self.cells_)
            self.cells_[key] = cell
            self.counts_ = np.append(self.counts_, 0)
            self.accepted_ = np.append(self.accepted_, 0)
            self.hist_ = np.vstack((self.hist_, np.zeros((1, self.hist_.shape[1]), np.int64)))
            self.thresholds_ = np.append(self.thresholds_, 0.5)
        return cell

    def _refresh_thresholds(self) -> None:
        """Thresholds from the batch optimum on the histogram of everything seen."""
        bins = self.hist_.shape[1]
        centers = (np.arange(bins) + 0.5) / bins
        cells = np.flatnonzero(self.hist_.sum(1) > 0)
        hist = self.hist_[cells]
        # pseudo-rows: every bin's center repeated by its count
        codes = np.repeat(np.repeat(np.arange(cells.size), bins), hist.reshape(-1))
        probs = np.repeat(np.tile(centers, cells.size), hist.reshape(-1))
        accept = _binary_one(probs, codes, self.tol_)
        target = np.bincount(codes, weights=accept, minlength=cells.size).astype(np.int64)
        # threshold: the lowest bin edge whose count from the top reaches the target
        for c, cell in enumerate(cells):
            from_top = np.cumsum(hist[c][::-1])
            if target[c] == 0:
                self.thresholds_[cell] = np.inf
            else:
                b = bins - 1 - int(np.searchsorted(from_top, target[c]))
                self.thresholds_[cell] = b / bins
        self._next_refresh = self.n_seen_ + max(32, int(self.refresh * self.n_seen_))

    def _within(self, cross: np.ndarray, n_a: np.ndarray, n_b: np.ndarray) -> np.ndarray:
        """Exactly whether ``cross / (n_a n_b) <= max(tolerance, 1 / min(n_a, n_b))``.

        ``cross = |A_a n_b - A_b n_a|`` (integers). The granularity part is an integer
        comparison; the tolerance part is decided in floating point when clear and
        with exact fractions (the float64 tolerance's exact value) near the boundary.
        """
        ok = cross <= np.maximum(n_a, n_b)
        rhs = self.tol_ * n_a.astype(np.float64) * n_b
        lhs = cross.astype(np.float64)
        ok |= lhs < rhs * (1 - 1e-9)
        near = ~ok & (lhs <= rhs * (1 + 1e-9))
        if near.any():
            tol = Fraction(self.tol_)
            for i in zip(*np.nonzero(near)):
                ok[i] = Fraction(int(cross[i])) <= tol * int(n_a[i]) * int(n_b[i])
        return ok

    def _keeps_invariant(self, cell: int, a_new: int, n_new: int) -> bool:
        """Whether ``a_new`` accepted of ``n_new`` in ``cell`` keeps every pair of cells
        within the bound (:meth:`_within`). A stream decides row by row: with a few
        cells, the same comparisons on Python ints and floats cost a fraction of the
        array calls (:meth:`_keeps_invariant_few`)."""
        if self.counts_.shape[0] <= _FEW_CELLS:
            return self._keeps_invariant_few(cell, a_new, n_new)
        others = self.counts_ > 0
        others[cell] = False
        n_h = self.counts_[others]
        if n_h.size == 0:
            return True
        cross = np.abs(a_new * n_h - self.accepted_[others] * n_new)
        return bool(self._within(cross, np.full_like(n_h, n_new), n_h).all())

    def _keeps_invariant_few(self, cell: int, a_new: int, n_new: int) -> bool:
        """:meth:`_keeps_invariant` on Python numbers, the same operations in the same
        order as :meth:`_within` (the float products included), so the same answers."""
        tol = self.tol_
        for h, (n_h, a_h) in enumerate(zip(self.counts_.tolist(), self.accepted_.tolist())):
            if n_h == 0 or h == cell:
                continue
            cross = abs(a_new * n_h - a_h * n_new)
            if cross <= max(n_new, n_h):
                continue
            rhs = tol * float(n_new) * float(n_h)
            lhs = float(cross)
            if lhs < rhs * (1 - 1e-9):
                continue
            if lhs <= rhs * (1 + 1e-9) and Fraction(cross) <= Fraction(tol) * n_new * n_h:
                continue
            return False
        return True

    def partial_labels(self, proba: Any, groups: Any) -> np.ndarray:
        """Labels (0/1) for the next rows of the stream, in order.

        Parameters
        ----------
        proba : array-like of shape (n,) or (n, 2)
            Probability of the positive class.
        groups : array-like of shape (n,) or (n, n_attributes)
            Integer group codes; the number of attributes must stay the same.

        Returns
        -------
        labels : ndarray of shape (n,), int64
        """
        p = _as_proba(proba)
        if p.ndim != 1:
            raise ValueError("StreamingLabeler handles binary targets: pass the positive class's probability")
        n = p.shape[0]
        raw = np.asarray(groups)
        if raw.ndim == 1:
            raw = raw[:, None]
        if raw.ndim != 2 or raw.shape[0] != n:
            raise ValueError(f"groups must have shape (n,) or (n, a) with n = {n}, got {np.shape(groups)}")
        if n and raw.dtype.kind not in "biu":
            raise ValueError(f"groups must hold integer codes, got dtype {raw.dtype}")
        if self.n_attributes_ is None:
            self.n_attributes_ = raw.shape[1]
        elif raw.shape[1] != self.n_attributes_:
            raise ValueError(f"groups has {raw.shape[1]} attributes, the stream has {self.n_attributes_}")
        labels = np.zeros(n, dtype=np.int64)
        bins = self.hist_.shape[1]
        for i in range(n):
            cell = self._cell(tuple(int(v) for v in raw[i]))
            b = min(int(p[i] * bins), bins - 1)
            self.hist_[cell, b] += 1
            self.n_seen_ += 1
            if self.n_seen_ >= self._next_refresh:
                self._refresh_thresholds()
            preferred = 1 if p[i] >= self.thresholds_[cell] else 0
            n_new = int(self.counts_[cell]) + 1
            a_old = int(self.accepted_[cell])
            choice = None
            for y in (preferred, 1 - preferred):
                if self._keeps_invariant(cell, a_old + y, n_new):
                    choice = y
                    break
            if choice is None:  # pragma: no cover - impossible by the invariant's proof
                raise InfeasibleProjectionError("no label keeps the pooled selection rates within their bound")
            self.counts_[cell] = n_new
            self.accepted_[cell] = a_old + choice
            labels[i] = choice
        self._check()
        return labels

    # -- persistence
    def get_state(self) -> dict:
        """The stream's state as JSON-able values (lists, ints, floats); see :meth:`set_state`."""
        return {
            "cells": [list(key) for key in self.cells_],
            "n_attributes": self.n_attributes_,
            "counts": self.counts_.tolist(),
            "accepted": self.accepted_.tolist(),
            "hist": self.hist_.tolist(),
            "thresholds": [None if not np.isfinite(t) else float(t) for t in self.thresholds_],
            "n_seen": int(self.n_seen_),
            "next_refresh": int(self._next_refresh),
        }

    def set_state(self, state: dict) -> StreamingLabeler:
        """Continue the stream from :meth:`get_state`'s output (same parameters)."""
        self.reset()
        self.cells_ = {tuple(int(v) for v in key): i for i, key in enumerate(state["cells"])}
        self.n_attributes_ = state["n_attributes"]
        self.counts_ = np.asarray(state["counts"], dtype=np.int64).reshape(-1)
        self.accepted_ = np.asarray(state["accepted"], dtype=np.int64).reshape(-1)
        self.hist_ = np.asarray(state["hist"], dtype=np.int64).reshape(len(self.cells_), int(self.n_bins))
        self.thresholds_ = np.array([np.inf if t is None else t for t in state["thresholds"]], dtype=np.float64)
        self.n_seen_ = int(state["n_seen"])
        self._next_refresh = int(state["next_refresh"])
        self._check()
        return self

    # -- reporting
    def rates(self) -> np.ndarray:
        """Pooled selection rate of every cell seen (NaN for none)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.accepted_ / self.counts_

    def pooled_gap(self) -> float:
        """Gap of the pooled selection rates over the cells seen (bounds every attribute's gap)."""
        seen = self.counts_ > 0
        if not seen.any():
            return 0.0
        r = self.accepted_[seen] / self.counts_[seen]
        return float(r.max() - r.min())

    def bound(self) -> float:
        """The bound the pooled gap obeys now: ``max(tolerance, 1 / min_g N_g)``."""
        seen = self.counts_ > 0
        if not seen.any():
            return self.tol_
        return max(self.tol_, 1.0 / float(self.counts_[seen].min()))

    def _check(self) -> None:
        seen = np.flatnonzero(self.counts_ > 0)
        n, a = self.counts_[seen], self.accepted_[seen]
        cross = np.abs(a[:, None] * n[None, :] - a[None, :] * n[:, None])
        if not np.all(self._within(cross, np.broadcast_to(n[:, None], cross.shape), np.broadcast_to(n, cross.shape))):
            raise InfeasibleProjectionError("the pooled selection rates broke their bound")
