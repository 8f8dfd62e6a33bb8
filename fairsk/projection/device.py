"""The exact projection kept on the outputs' CUDA device.

On a GPU, the host solvers (:mod:`.exact`, :mod:`.qpth_solver`) copy the
batch to the host and back. The projection only needs per-group statistics, so here
the batch never leaves its device; the host sees ``O(k)`` or ``O(K^2)`` numbers:

* one attribute: group counts and sums by ``index_add_`` on the device; the ``k x c``
  statistics go to the host, where the criterion places the projected group means
  (:meth:`~.criteria.Criterion.project_means`), and the ``k x c`` shifts come back;
  every output moves by its group's shift in one gather;
* one attribute and a box: the outputs it holds at a bound are found by a primal-dual
  active-set iteration: with the held outputs fixed, each group's free outputs share
  one shift, so a step is the no-box problem on the group means with weights
  ``n_g^2 / f_g`` (``f_g`` free outputs of ``n_g``); the step's statistics carry the
  extremes that tell whether its shifts keep the held set, so each step is one read
  (usually 1-3 steps);
* several attributes: the ``K`` slots' means and cross counts (``K x K``) are built
  on the device and read once; the shift QP (:func:`~.kernels.shift_qp`) is solved on
  the host; the output is ``z`` minus each row's slot shifts. With a box, per column,
  the same active-set iteration, each step the shift QP of the free outputs (their
  cross counts, one read);
* the certificate (:mod:`.certificate`'s rule: the output *as returned*, within
  ``CHECK_ATOL``) reads the returned values' group means and range;
* the backward (the projector of :func:`~.kernels.projector_vjp`) is a few group sums,
  a ``K x K`` product per column with several attributes, and a gather, without a
  host transfer.

Anything else (more slots than ``_MAX_SLOTS``, or ``_MAX_BOX_SLOTS`` with a box, a
criterion on label strata, a group the box holds entirely, an iteration that does not
settle, an output that fails the check) is left to the host path:
:func:`project_on_device` then returns ``None``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .certificate import CHECK_ATOL, float32_margin
from .criteria import get_criterion
from .kernels import active_basis, active_tolerance, one_blas_thread, shift_qp

#: codes up to this value index the group table directly (absent codes are empty slots)
_DIRECT_SLOTS = 1 << 16
#: with a box, calls of fewer rows go to the host path: on an H200 the copy there and
#: back (1.9 ms at 10^4 rows) cost less than the device's active-set iteration, whose
#: every step is a read (3.8 ms); from 10^6 rows on the device is 7-11 times faster
_BOX_MIN_ROWS = 1 << 16
#: active-set steps before the host path is asked instead
_MAX_STEPS = 30


def applies(z: Tensor, groups, solver: str, criterion: str, lb: float | None = None,
            ub: float | None = None) -> bool:
    """Whether the call takes the device path: outputs on a CUDA device, the exact
    solver, a criterion on group means, group codes (one column per attribute) as a
    tensor on the same device, and with a box at least ``_BOX_MIN_ROWS`` rows."""
    if not (_on_accelerator(z) and solver == "exact" and isinstance(groups, Tensor) and groups.device == z.device
            and not getattr(get_criterion(criterion), "label_strata", False)):
        return False
    if (lb is not None or ub is not None) and z.shape[0] < _BOX_MIN_ROWS:
        return False
    return groups.dim() == 1 or (groups.dim() == 2 and groups.shape[1] >= 1)


def _on_accelerator(z: Tensor) -> bool:
    # CUDA only: the path computes in float64 on the device, which MPS does not have;
    # other devices take the host path
    return z.device.type == "cuda"


def project_on_device(z: Tensor, groups: Tensor, y: Tensor | None, criterion: str, tol: float,
                      lb: float | None = None, ub: float | None = None) -> Tensor | None:
    """The certified projection of ``z`` (n, c) float32 or float64 onto the
    criterion's set (and the box ``[lb, ub]``) on its device, returned in its dtype;
    ``None`` when the host path must answer instead (empty batch, values or codes it
    rejects with its own message, a case above, a failed check)."""
    n, c = z.shape
    if n == 0 or groups.is_floating_point() or groups.is_complex() or groups.shape[0] != n:
        return None
    dtype, crit = z.dtype, get_criterion(criterion)
    lo = -math.inf if lb is None else float(lb)
    hi = math.inf if ub is None else float(ub)
    slots = groups.reshape(n, -1).long()
    a = slots.shape[1]
    # the one read before solving: the outputs' scale (NaN and inf propagate) and the codes' range
    first = torch.cat([z.detach().abs().max().double().reshape(1), slots.min(0).values.double(),
                       slots.max(0).values.double()]).tolist()
    scale, low, tops = first[0], first[1:1 + a], first[1 + a:]
    if not math.isfinite(scale) or min(low) < 0:
        return None
    if dtype == torch.float32 and tol > 0:  # the float32 rule of the certificate
        tol = max(0.0, tol - float32_margin(scale))
    z64 = z.to(torch.float64)
    if a > 1:
        return _project_several(z64, slots, tops, scale, y, crit, tol, lo, hi, dtype)
    codes, top = slots[:, 0], tops[0]
    if top + 1 > max(2 * n, _DIRECT_SLOTS):  # sparse codes: renumber (one more read)
        _, codes = torch.unique(codes, return_inverse=True)
        top = float(codes.max())
    k = int(top) + 1
    boxed = lb is not None or ub is not None
    stats = _Stats(z64.detach(), codes, k, y)
    if not boxed:
        solved = _solve(stats, None, crit, tol, lo, hi)
        solved = None if solved is None else solved[:3]
    else:
        solved = _solve_boxed(stats, crit, tol, lo, hi)
    if solved is None:
        return None
    shifts, tight, free = solved
    dev = z.device
    counts = stats.counts.clamp(min=1)
    out = _DeviceProjection.apply(z64, torch.from_numpy(shifts).to(dev), codes, counts,
                                  torch.from_numpy(tight).to(dev), free, crit.couples_multipliers, lo, hi)
    return _certified(out.to(dtype), codes.unsqueeze(1), counts, stats.present, [slice(None)], stats.targets, crit,
                      tol, lo, hi)


def _certified(out: Tensor, slots: Tensor, counts: Tensor, present: np.ndarray, blocks: list,
               targets: np.ndarray | None, crit, tol: float, lo: float, hi: float) -> Tensor | None:
    """``out`` if the values as returned (float32 rounding included) meet every
    attribute's constraints and the box (:mod:`.certificate`'s rule), else None. One
    read: the slots' means of ``out`` and, with a box, its range. ``present`` selects
    the slots that have rows, ``blocks`` each attribute's among them."""
    o = out.detach().to(torch.float64)
    table = _slot_sums(o, slots, counts.shape[0]) / counts.unsqueeze(1)
    boxed = math.isfinite(lo) or math.isfinite(hi)
    if boxed:
        table = torch.cat([table, torch.stack([o.min(0).values, o.max(0).values])])
    check = table.cpu().numpy()
    means = check[:counts.shape[0]][present]
    worst = [crit.violation(means[sl], tol, None if targets is None else targets[sl]) for sl in blocks]
    if boxed:
        worst += [lo - float(check[-2].min()), float(check[-1].max()) - hi]
    worst = float(np.max(worst))  # NaN propagates
    return out if np.isfinite(worst) and worst <= CHECK_ATOL[out.dtype] else None


class _Stats:
    """The batch on the device and its fixed group statistics (read once)."""

    def __init__(self, z: Tensor, codes: Tensor, k: int, y: Tensor | None):
        n, c = z.shape
        self.z, self.codes, self.k, self.c = z, codes, k, c
        # index_add_ rather than bincount: bincount reads the largest code back to size its output
        self.counts = z.new_zeros(k).index_add_(0, codes, z.new_ones(n))
        parts = [self.counts.unsqueeze(1)]
        if y is not None:
            parts.append(_group_sums(y.to(device=z.device, dtype=torch.float64).reshape(n, -1).expand(n, c), codes, k))
        self.fixed = torch.cat(parts, 1)  # read with the first step's statistics
        self.present = self.targets = self.n = None

    def read(self, extra: Tensor) -> np.ndarray:
        """The host copy of ``extra`` (k x m); the first call also reads the fixed part."""
        if self.n is not None:
            return extra.cpu().numpy()
        both = torch.cat([self.fixed, extra], 1).cpu().numpy()
        counts = both[:, 0]
        self.present = counts > 0
        self.n = counts[self.present]
        if self.fixed.shape[1] > 1:
            self.targets = both[self.present, 1:1 + self.c] / self.n[:, None]
        return both[:, self.fixed.shape[1]:]


def _solve(stats: _Stats, held: tuple | None, crit, tol: float, lo: float, hi: float):
    """One step: with the ``held`` outputs (masks at ``lo``/``hi``, or None) fixed, the
    shifts of the free outputs; ``(shifts (k, c), tight (k, c), free or None)``, the
    shifts of absent groups 0. None when a present group has no free output."""
    z, codes, k, c = stats.z, stats.codes, stats.k, stats.c
    if held is None:
        raw = stats.read(_group_sums(z, codes, k))
        f = np.repeat(stats.n[:, None], c, 1)
        a = raw[stats.present] / f
    else:
        at_lo, at_hi = held
        free = ~(at_lo | at_hi)
        parts = [free.to(z.dtype), torch.where(free, z, 0.0)]
        if math.isfinite(lo):
            parts.append(at_lo.to(z.dtype))
        if math.isfinite(hi):
            parts.append(at_hi.to(z.dtype))
        sums = _group_sums(torch.cat(parts, 1), codes, k)
        # the extremes that tell, on the host, whether the step's shifts keep this held set
        inf = torch.tensor(math.inf, dtype=z.dtype, device=z.device)
        highest = _group_max(torch.cat([torch.where(free, z, -inf), torch.where(at_lo, z, -inf)], 1), codes, k)
        lowest = -_group_max(torch.cat([torch.where(free, -z, -inf), torch.where(at_hi, -z, -inf)], 1), codes, k)
        raw = stats.read(torch.cat([sums, highest, lowest], 1))[stats.present]
        f, s = raw[:, :c], raw[:, c:2 * c]
        if not (f > 0).all():
            return None
        total = s.copy()
        col = 2 * c
        if math.isfinite(lo):
            total += lo * raw[:, col:col + c]
            col += c
        if math.isfinite(hi):
            total += hi * raw[:, col:col + c]
            col += c
        extremes = raw[:, col:]
        a = total / stats.n[:, None]  # the group means with every free output unshifted
    if not np.isfinite(a).all():
        return None
    n = stats.n
    shifts, tight = np.zeros((k, c)), np.zeros((k, c), dtype=bool)
    for j in range(c):
        w = n * n / f[:, j]  # moving the free outputs' shift by t moves the mean by t f / n
        delta = active_tolerance(max(-float(a[:, j].min()), float(a[:, j].max())) + tol)
        r = None if stats.targets is None else stats.targets[:, j]
        new, tight[stats.present, j] = crit.project_means(a[:, j], w, tol, r, delta)
        shifts[stats.present, j] = (a[:, j] - new) * n / f[:, j]
    if held is None:
        return shifts, tight, None, True
    t = shifts[stats.present]
    free_max, lo_max, free_min, hi_min = (extremes[:, i * c:(i + 1) * c] for i in range(4))
    # the same float64 operations as z - t on the device: the same decisions
    settled = bool(((free_min - t > lo) & (free_max - t < hi) & (lo_max - t <= lo) & (hi_min - t >= hi)).all())
    return shifts, tight, ~(held[0] | held[1]), settled


def _solve_boxed(stats: _Stats, crit, tol: float, lo: float, hi: float):
    """The active-set iteration over the outputs the box holds (module docstring)."""
    z, codes = stats.z, stats.codes
    held = (z <= lo, z >= hi)
    previous = None
    for _ in range(_MAX_STEPS):
        step = _solve(stats, held, crit, tol, lo, hi)
        if step is None:
            return None
        shifts, tight, free, settled = step
        if settled:  # the step's shifts hold exactly the outputs it held fixed
            return shifts, tight, free
        key = shifts.tobytes()
        if key == previous:
            return None
        moved = z - torch.from_numpy(shifts).to(z.device).index_select(0, codes)
        previous, held = key, (moved <= lo, moved >= hi)
    return None


def _group_sums(v: Tensor, codes: Tensor, k: int) -> Tensor:
    return v.new_zeros((k, v.shape[1])).index_add_(0, codes, v)


def _group_max(v: Tensor, codes: Tensor, k: int) -> Tensor:
    """Largest value per group and column (-inf for none)."""
    return v.new_full((k, v.shape[1]), -math.inf).scatter_reduce_(0, codes.unsqueeze(1).expand_as(v), v, "amax")


class _DeviceProjection(torch.autograd.Function):
    """``clip(z - shifts[codes], lo, hi)``; backward: the projector onto the null space
    of the tight groups' mean functionals over the free outputs (coupled within the
    attribute for differences of means), zero on the outputs the box holds."""

    @staticmethod
    def forward(ctx, z, shifts, codes, counts, tight, free, couples, lo, hi):
        ctx.save_for_backward(codes, counts, tight, free)
        ctx.couples = couples
        out = z.detach() - shifts.index_select(0, codes)
        return out if free is None else out.clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad):
        codes, counts, tight, free = ctx.saved_tensors
        k = counts.shape[0]
        t = tight.to(grad.dtype)
        n = counts.unsqueeze(1)
        if free is None:
            f, g = n.expand_as(t), grad
        else:
            g = grad * free
            f = _group_sums(free.to(grad.dtype), codes, k)
        m = _group_sums(g, codes, k) / f.clamp(min=1) * t
        v = m
        if ctx.couples:
            # multipliers summing to zero: v_g = m_g - lam n_g / f_g over the tight groups
            den = (n * n / f.clamp(min=1) * t).sum(0)
            lam = (n * m).sum(0) / torch.where(den > 0, den, 1.0)
            v = (m - lam * n / f.clamp(min=1)) * t
        out = g - v.index_select(0, codes)
        return (out if free is None else out * free), None, None, None, None, None, None, None, None


#: several attributes: largest number of group slots whose cross counts (K x K) are
#: built on the device
_MAX_SLOTS = 2048


def _project_several(z64: Tensor, groups: Tensor, tops: list, scale: float, y: Tensor | None, crit, tol: float,
                     lo: float, hi: float, dtype: torch.dtype) -> Tensor | None:
    """Several attributes: the shift QP (:func:`~.kernels.shift_qp`) on the host from
    the slots' means and cross counts built on the device, the output and the backward
    (the projector, through a ``K x K`` matrix per column) on the device. With a box,
    per column, the active-set iteration over the outputs it holds: each step the
    shift QP of the free outputs (their cross counts, the held outputs' values in the
    means), until the held set reproduces itself. ``z64`` is ``z`` in float64, ``tops``
    each attribute's largest code and ``scale`` the largest ``|z|`` (the first read)."""
    n, c = z64.shape
    a = groups.shape[1]
    boxed = math.isfinite(lo) or math.isfinite(hi)
    sizes = [int(t) + 1 for t in tops]
    K = sum(sizes)
    if K > (_MAX_BOX_SLOTS if boxed else _MAX_SLOTS):
        return None
    offsets = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    slots = groups + torch.as_tensor(offsets, device=z64.device)  # (n, a) slot of each row per attribute
    parts = [z64.detach(), z64.new_ones(n, 1)] + ([] if y is None else [y.to(device=z64.device, dtype=torch.float64)
                                                                          .reshape(n, -1).expand(n, c)])
    table = _slot_sums(torch.cat(parts, 1), slots, K)
    host = torch.cat([table.reshape(-1), _cross(slots, None, K).reshape(-1)]).cpu().numpy()
    table, cross = host[:table.numel()].reshape(K, -1), host[table.numel():].reshape(K, K)
    counts = table[:, c]
    present = np.flatnonzero(counts > 0)
    inv_n = 1.0 / counts[present]
    means = table[present, :c] * inv_n[:, None]
    if not np.isfinite(means).all():
        return None
    targets = None if y is None else table[present, c + 1:2 * c + 1] * inv_n[:, None]
    # each attribute's present slots, contiguous in the present-slot numbering
    bounds = np.searchsorted(present, np.concatenate((offsets, [K])))
    blocks = [slice(int(bounds[i]), int(bounds[i + 1])) for i in range(a)]
    delta = active_tolerance(scale + tol)
    shifts, project = np.zeros((K, c)), np.zeros((c, K, K))
    free = torch.ones((n, c), dtype=torch.bool, device=z64.device) if boxed else None
    with one_blas_thread():
        for j in range(c):
            r = None if targets is None else targets[:, j]
            if not boxed:
                step = _shift_step(means[:, j], cross[np.ix_(present, present)], inv_n, blocks, crit, tol, r, delta)
            else:
                step = _boxed_column(z64.detach()[:, j], slots, K, present, inv_n, blocks, crit, tol, r, delta, lo, hi)
            if step is None:
                return None
            shifts[present, j], P = step[0], step[1]
            project[j][np.ix_(present, present)] = P
            if boxed:
                free[:, j] = step[2]
    dev = z64.device
    counts_d = torch.from_numpy(np.maximum(counts, 1.0)).to(dev)
    out = _SeveralProjection.apply(z64, torch.from_numpy(shifts).to(dev), slots, counts_d,
                                   torch.from_numpy(project).to(dev), free, lo, hi).to(dtype)
    return _certified(out, slots, counts_d, present, blocks, targets, crit, tol, lo, hi)


#: several attributes with a box: largest number of group slots (each active-set step
#: reads the free outputs' K x K cross counts)
_MAX_BOX_SLOTS = 256


def _shift_step(m: np.ndarray, cross: np.ndarray, inv_n: np.ndarray, blocks: list, crit, tol: float,
                r: np.ndarray | None, delta: float):
    """One column's shift QP over the present slots: ``(shifts, P)`` with ``P`` the
    backward's slot matrix (``diag(1/n) V pinv(V^T W V) V^T``, ``V`` spanning the
    active rows), or None when the QP does not finish."""
    metric = cross * inv_n[:, None] * inv_n[None, :]

    def most_violated(b, mb):
        return crit.most_violated(mb, tol, None if r is None else r[blocks[b]])

    w, _ = shift_qp(m, metric, blocks, most_violated, delta)
    if w is None:
        return None
    out_means = m - metric @ w
    tight = np.zeros(m.shape[0], dtype=bool)
    for sl in blocks:
        rb = None if r is None else r[sl, None]
        tight[sl] = crit.active(out_means[sl, None], tol, rb, delta)[:, 0]
    P = np.zeros((m.shape[0], m.shape[0]))
    if tight.any():
        V = active_basis(tight, blocks, crit.couples_multipliers)
        gram = V.T @ metric @ V
        P = (V * inv_n[:, None]) @ np.linalg.pinv(gram, rcond=1e-10, hermitian=True) @ V.T
    return w * inv_n, P


def _boxed_column(zj: Tensor, slots: Tensor, K: int, present: np.ndarray, inv_n: np.ndarray, blocks: list, crit,
                  tol: float, r: np.ndarray | None, delta: float, lo: float, hi: float):
    """One column with a box: ``(shifts, P, free)`` once the held set reproduces
    itself, or None (a group held entirely, no settling within ``_MAX_STEPS``)."""
    lower, upper = zj <= lo, zj >= hi
    for _ in range(_MAX_STEPS):
        free = ~(lower | upper)
        held = torch.where(lower, lo, torch.where(upper, hi, zj))
        stats = torch.cat([_slot_sums(held[:, None], slots, K)[:, 0], _cross(slots, free, K).reshape(-1)])
        stats = stats.cpu().numpy()
        cross = stats[K:].reshape(K, K)[np.ix_(present, present)]
        if not (np.diag(cross) > 0).all():  # a group the guess holds entirely
            return None
        step = _shift_step(stats[:K][present] * inv_n, cross, inv_n, blocks, crit, tol, r, delta)
        if step is None:
            return None
        full = torch.zeros(K, dtype=zj.dtype, device=zj.device)
        full[torch.from_numpy(present).to(zj.device)] = torch.from_numpy(step[0]).to(zj.device)
        shifted = zj - _expand(full[:, None], slots)[:, 0]
        new_lower, new_upper = shifted <= lo, shifted >= hi
        # a guess that changes only within rounding of the bound an output left or
        # reached has settled (leaving one bound for the other is a move)
        moved = (((new_lower != lower) & ((shifted - lo).abs() > delta))
                 | ((new_upper != upper) & ((shifted - hi).abs() > delta)))
        if not bool(moved.any()):
            return step[0], step[1], free
        lower, upper = new_lower, new_upper
    return None


def _cross(slots: Tensor, weights: Tensor | None, K: int) -> Tensor:
    """``S^T diag(w) S`` (K, K) on the device: the weight of the rows in both slots."""
    n, a = slots.shape
    w = torch.ones(n, dtype=torch.float64, device=slots.device) if weights is None else weights.to(torch.float64)
    flat = torch.zeros(K * K, dtype=torch.float64, device=slots.device)
    for p in range(a):
        flat.index_add_(0, slots[:, p] * (K + 1), w)  # the diagonal: each slot's weight
        for q in range(p + 1, a):
            flat.index_add_(0, slots[:, p] * K + slots[:, q], w)
            flat.index_add_(0, slots[:, q] * K + slots[:, p], w)
    return flat.reshape(K, K)


def _expand(v: Tensor, slots: Tensor) -> Tensor:
    """Each row's sum of its slots' values ``v`` (K, c) -> (n, c)."""
    out = v.index_select(0, slots[:, 0])
    for p in range(1, slots.shape[1]):
        out = out + v.index_select(0, slots[:, p])
    return out


def _slot_sums(v: Tensor, slots: Tensor, K: int) -> Tensor:
    out = v.new_zeros((K, v.shape[1]))
    for p in range(slots.shape[1]):
        out.index_add_(0, slots[:, p], v)
    return out


class _SeveralProjection(torch.autograd.Function):
    """``clip(z - sum_a shifts[slot_a], lo, hi)``; backward: ``(g - sum_a (P_j u_j)[slot_a])``
    on the free outputs, with ``g`` the gradient there, ``u`` the slots' mean of ``g`` and
    ``P_j`` the projector's slot matrix of column j; zero on the held outputs."""

    @staticmethod
    def forward(ctx, z, shifts, slots, counts, project, free, lo, hi):
        ctx.save_for_backward(slots, counts, project, free)
        out = z.detach() - _expand(shifts, slots)
        return out if free is None else out.clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad):
        slots, counts, project, free = ctx.saved_tensors
        g = grad if free is None else grad * free
        u = _slot_sums(g, slots, counts.shape[0]) / counts.unsqueeze(1)  # (K, c)
        out = g - _expand(torch.einsum("jkl,lj->kj", project, u), slots)
        return (out if free is None else out * free), None, None, None, None, None, None, None
