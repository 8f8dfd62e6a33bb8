"""The exact solver: the projection in the space of per-group shifts.

At the optimum every sample of group g moves by the same scalar ``-t_g`` before the
box clips it: ``y_i = clip(z_i - t_g(i), lb, ub)``. For one attribute this leaves a
problem in ``k`` scalars:

* no box, ecp: the new group means are the old ones clipped to an interval
  ``[c, c + tol]``; ``c`` is the root of a monotone piecewise-linear function whose
  breakpoints are ``m_g`` and ``m_g - tol`` (closed form, ``O(k^2)``);
* no box, eer: each mean is clipped to ``[r_g - tol, r_g + tol]``;
* with a box the mean of a group is a monotone piecewise-linear function of its
  shift; it is inverted exactly from its sorted breakpoints ``z_i - ub`` and
  ``z_i - lb``, and ``c`` is found by bisection to machine precision.

Several attributes are combined with Dykstra's algorithm over the exact
single-attribute projections (each including the box), which converges to the
projection onto the intersection; it stops when a whole sweep moves nothing by more
than ``1e-13`` of the scale of ``z``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .._groups import GroupIndex
from . import _single
from ._problem import Spec, projector_vjp, violation
from ._single import interval_start_1d

_DYKSTRA_MAX_SWEEPS = 20000
_BISECTION_STEPS = 100


def solve_exact(z: Tensor, groups: GroupIndex, spec: Spec) -> Tensor:
    """Project ``z`` (n, c), differentiably (float64 in, float64 out)."""
    return _ExactProjection.apply(z, groups, spec)


class _ExactProjection(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: Tensor, groups: GroupIndex, spec: Spec) -> Tensor:
        y = project(z.detach(), groups, spec)
        ctx.save_for_backward(y)
        ctx.groups, ctx.spec = groups, spec
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        (y,) = ctx.saved_tensors
        return projector_vjp(grad, y, ctx.groups, ctx.spec), None, None


def project(z: Tensor, groups: GroupIndex, spec: Spec) -> Tensor:
    """The projection itself, without autograd."""
    if z.shape[0] == 0 or groups.n_attributes == 0:
        return spec.clip(z)
    if groups.n_attributes == 1:
        return _project_attribute(z, groups, 0, spec)
    if z.is_cpu and not spec.has_box:
        # the same iteration on NumPy arrays with the fast path's exact projection per
        # attribute: a sweep then costs a few passes, not ~40 small torch operations each
        attrs = [_numpy_attribute(groups, a) for a in range(groups.n_attributes)]
        targets = None if spec.targets is None else spec.targets.numpy()

        def project_attribute(a, x):
            codes, counts, sl = attrs[a]
            t = None if targets is None else [targets[sl, j] for j in range(targets.shape[1])]
            return _single.project(x, codes, counts, spec, t, with_means=False)[0]

        out, converged = _dykstra(z.numpy(), project_attribute, groups.n_attributes,
                                  lambda v: float(np.abs(v).max()))
        out = torch.from_numpy(out)
    else:
        out, converged = _dykstra(z, lambda a, x: _project_attribute(x, groups, a, spec), groups.n_attributes,
                                  lambda v: float(v.abs().max()))
    return out if converged else _after_stalled_dykstra(z, out, groups, spec)


def _after_stalled_dykstra(z: Tensor, out: Tensor, groups: GroupIndex, spec: Spec) -> Tensor:
    """Dykstra's algorithm can crawl (tight tolerances, several attributes): when it
    stops at its sweep limit, the same projection is solved as a QP with qpth (over
    the group shifts without a box) and the better feasible answer of the two is kept.
    Either way the layer checks the output before returning it."""
    import warnings

    from .qpth_solver import solve_qpth

    with torch.no_grad():
        alternative = solve_qpth(z, groups, spec)
    scale = 1e-9 * (1.0 + float(z.abs().max()))
    if bool(torch.isfinite(alternative).all()) and float(violation(alternative, groups, spec)) <= scale:
        if float(violation(out, groups, spec)) > scale or ((alternative - z) ** 2).sum() < ((out - z) ** 2).sum():
            warnings.warn(f"Dykstra's algorithm stopped after {_DYKSTRA_MAX_SWEEPS} sweeps; the projection was "
                          "solved with qpth instead", RuntimeWarning, stacklevel=5)
            return alternative
    return out


def _dykstra(z, project_attribute, n_attributes: int, max_abs):
    """Dykstra's algorithm: ``x <- P_a(x + p_a)``, ``p_a <- x_old + p_a - x_new``, cycling
    over the attributes, until a sweep moves nothing by more than ``1e-13`` of the scale
    of ``z`` (tensors or arrays alike). Returns ``(x, converged)``."""
    x = z
    incr = [z * 0 for _ in range(n_attributes)]
    tol = 1e-13 * (1.0 + max_abs(z))
    for _ in range(_DYKSTRA_MAX_SWEEPS):
        moved = 0.0
        for a in range(n_attributes):
            shifted = x + incr[a]
            new = project_attribute(a, shifted)
            incr[a] = shifted - new
            moved = max(moved, max_abs(new - x))
            x = new
        if moved <= tol:
            return x, True
    return x, False


def _numpy_attribute(groups: GroupIndex, a: int) -> tuple:
    """``(codes, counts, slots)`` of attribute ``a``: NumPy arrays for ``_single``."""
    sl = groups.attribute(a)
    return (groups.gid[:, a] - sl.start).numpy(), groups.counts[sl].to(torch.float64).numpy(), sl


def _project_attribute(z: Tensor, groups: GroupIndex, a: int, spec: Spec) -> Tensor:
    """Exact projection onto the box and the constraints of attribute ``a`` alone."""
    sl = groups.attribute(a)
    gid = groups.gid[:, a] - sl.start
    counts = groups.counts[sl].to(z.dtype)
    k = groups.sizes[a]
    targets = None if spec.targets is None else spec.targets[sl].to(z.dtype)
    if spec.criterion == "ecp" and k < 2:
        return spec.clip(z)
    if not spec.has_box:
        means = _group_means(z, gid, counts, k)
        if spec.criterion == "eer":
            new = torch.minimum(torch.maximum(means, targets - spec.tolerance), targets + spec.tolerance)
        else:
            c = _interval_start(means, counts, spec.tolerance)
            new = torch.minimum(torch.maximum(means, c), c + spec.tolerance)
        return z + (new - means)[gid]
    if z.is_cpu:  # the same solution in NumPy: no padded tables, Python-float bisection
        t = None if targets is None else targets.numpy()
        cols = None if t is None else [t[:, j] for j in range(t.shape[1])]
        return torch.from_numpy(_single.project_box(z.numpy(), gid.numpy(), counts.numpy(), spec, cols))
    return _project_box_torch(z, gid, counts, k, spec, targets)


def _project_box_torch(z: Tensor, gid: Tensor, counts: Tensor, k: int, spec: Spec, targets: Tensor | None) -> Tensor:
    """The box branch of :func:`_project_attribute` in torch (other devices)."""
    lb = -torch.inf if spec.lb is None else spec.lb
    ub = torch.inf if spec.ub is None else spec.ub
    inverse = _MeanInverse(z, gid, counts, k, lb, ub)
    m0 = inverse.mean_at_zero
    if spec.criterion == "eer":
        lo = torch.clamp(targets - spec.tolerance, min=lb)
        hi = torch.clamp(targets + spec.tolerance, max=ub)
        if bool((lo > hi).any()):
            from ..exceptions import InfeasibleProjectionError

            raise InfeasibleProjectionError(
                "criterion='eer' asks for group means outside the box bounds="
                f"({spec.lb}, {spec.ub}): no output can meet tolerance={spec.tolerance}"
            )
        t = inverse.shift_for(torch.minimum(torch.maximum(m0, lo), hi), m0)
    else:
        # sum_g n_g t_g(c) is non-increasing in c; bisect for its root
        c_lo = m0.min(0).values - spec.tolerance
        c_hi = m0.max(0).values
        for _ in range(_BISECTION_STEPS):
            mid = 0.5 * (c_lo + c_hi)
            balance = (counts.unsqueeze(1) * _ecp_shift(inverse, m0, mid, spec.tolerance)).sum(0)
            up = balance > 0
            c_lo = torch.where(up, mid, c_lo)
            c_hi = torch.where(up, c_hi, mid)
        t = _ecp_shift(inverse, m0, 0.5 * (c_lo + c_hi), spec.tolerance)
    return (z - t[gid]).clamp(min=lb, max=ub)


def _group_means(z: Tensor, gid: Tensor, counts: Tensor, k: int) -> Tensor:
    sums = z.new_zeros((k, z.shape[1])).index_add_(0, gid, z)
    return sums / counts.unsqueeze(1)


def _interval_start(means: Tensor, counts: Tensor, tol: float) -> Tensor:
    """Lower end ``c`` (c,) of the interval ``[c, c + tol]`` closest to the means.

    On the CPU the NumPy twin :func:`interval_start` is used (a handful of groups:
    torch's per-operation overhead would dominate); on other devices, torch.
    """
    if means.device.type == "cpu":
        return torch.from_numpy(interval_start(means.detach().numpy(), counts.detach().numpy(), tol))
    return _interval_start_torch(means, counts, tol)


def _interval_start_torch(means: Tensor, counts: Tensor, tol: float) -> Tensor:
    """Lower end ``c`` (c,) of the interval ``[c, c + tol]`` closest to the means.

    Root of ``F(c) = sum_g n_g ((m_g - tol - c)_+ - (c - m_g)_+)``, non-increasing and
    linear between the breakpoints ``m_g - tol`` and ``m_g``.
    """
    bps = torch.cat([means - tol, means], 0).sort(0).values  # (2k, c)

    def balance(c: Tensor) -> Tensor:  # c (p, c) -> (p, c)
        above = (means.unsqueeze(0) - tol - c.unsqueeze(1)).clamp(min=0)
        below = (c.unsqueeze(1) - means.unsqueeze(0)).clamp(min=0)
        return (counts.view(1, -1, 1) * (above - below)).sum(1)

    f = balance(bps)  # (2k, c), non-increasing down the rows
    # last breakpoint with F >= 0 (F at the first breakpoint is >= 0 by construction)
    j = ((f >= 0).sum(0) - 1).clamp(min=0)
    j_next = (j + 1).clamp(max=bps.shape[0] - 1)
    b0, b1 = bps.gather(0, j.unsqueeze(0))[0], bps.gather(0, j_next.unsqueeze(0))[0]
    f0, f1 = f.gather(0, j.unsqueeze(0))[0], f.gather(0, j_next.unsqueeze(0))[0]
    slope = (f0 - f1) / (b1 - b0)
    step = torch.where((slope > 0) & (f0 > 0), f0 / torch.where(slope > 0, slope, 1.0), 0.0)
    return b0 + step


def interval_start(means: np.ndarray, counts: np.ndarray, tol) -> np.ndarray:
    """NumPy twin of :func:`_interval_start_torch` for few groups, where torch's
    per-operation overhead dominates; ``tol`` may be one width per column."""
    tol = np.broadcast_to(np.asarray(tol, dtype=np.float64), (means.shape[1],))
    return np.array([interval_start_1d(means[:, j], counts, float(tol[j])) for j in range(means.shape[1])])


def _ecp_shift(inverse: _MeanInverse, m0: Tensor, c: Tensor, tol: float) -> Tensor:
    """Smallest shifts that bring every group mean into ``[c, c + tol]``."""
    top = torch.minimum(c + tol, m0)  # groups above the interval come down to its top
    target = torch.where(m0 > c + tol, top, torch.maximum(m0, c))
    return inverse.shift_for(target, m0)


class _MeanInverse:
    """Exact inverse of ``t -> sum_{i in g} clip(z_i - t, lb, ub)`` for every group.

    The function is piecewise linear and non-increasing in ``t`` with breakpoints
    ``z_i - ub`` (sample i leaves the upper bound) and ``z_i - lb`` (it reaches the
    lower bound). The breakpoints of each group are sorted once into a padded table
    ``(c, k, L)``; an inversion is then one ``searchsorted``.
    """

    def __init__(self, z: Tensor, gid: Tensor, counts: Tensor, k: int, lb: float, ub: float):
        n, c = z.shape
        self.counts = counts
        self.mean_at_zero = _group_means(z.clamp(min=lb, max=ub), gid, counts, k)
        # an infinite bound puts its breakpoints at -inf (ub) or +inf (lb)
        enter = z - ub
        leave = z - lb
        bps = torch.cat([enter, leave], 0)  # (2n, c)
        order = torch.argsort(bps, dim=0, stable=True)
        order = order.gather(0, torch.argsort(torch.cat([gid, gid])[order], dim=0, stable=True))
        bps = bps.gather(0, order)
        is_enter = (order < n).to(z.dtype)
        zz = torch.cat([z, z], 0).gather(0, order)
        # Passing an "enter" breakpoint, a sample's value goes from ub to z_i - t: its
        # constant part changes by z_i - ub and one more sample is free. Passing a
        # "leave" breakpoint it goes from z_i - t to lb. With ub = inf the base value
        # is taken as 0 and the constant part as z_i (only t > -inf matters).
        ub_f = 0.0 if ub == torch.inf else ub
        lb_f = 0.0 if lb == -torch.inf else lb
        d_const = is_enter * (zz - ub_f) + (1 - is_enter) * (lb_f - zz)
        d_free = 2 * is_enter - 1
        # pad each group's run of 2 n_g events to length L (padding repeats the last
        # breakpoint with no change, so the tables stay monotone)
        sizes = 2 * counts.to(torch.long)
        starts = torch.cumsum(sizes, 0) - sizes
        L = int(sizes.max())
        group_of_pos = torch.repeat_interleave(torch.arange(k, device=z.device), sizes)
        slot = group_of_pos * L + torch.arange(2 * n, device=z.device) - starts[group_of_pos]
        last = (starts + sizes - 1).repeat_interleave(L)
        table_bp = bps[last].clone()
        table_bp[slot] = bps
        const = bps.new_zeros((k * L, c))
        const[slot] = d_const
        free = bps.new_zeros((k * L, c))
        free[slot] = d_free
        shape = (k, L, c)
        self.bp = table_bp.view(shape).permute(2, 0, 1).contiguous()  # (c, k, L)
        self.const = const.view(shape).cumsum(1).permute(2, 0, 1).contiguous()
        self.free = free.view(shape).cumsum(1).permute(2, 0, 1).contiguous()
        self.base = (counts * ub_f).view(1, k, 1)
        finite = torch.isfinite(self.bp)
        value = self.base + self.const - torch.where(finite, self.bp, 0.0) * self.free
        value = torch.where(finite, value, -torch.sign(self.bp) * torch.inf)
        self.neg_value = -value  # non-decreasing along L

    def shift_for(self, target_mean: Tensor, m0: Tensor) -> Tensor:
        """Shifts (k, c) taking each group mean to ``target_mean``; 0 where unchanged."""
        total = (target_mean * self.counts.unsqueeze(1)).T.unsqueeze(2)  # (c, k, 1)
        j = torch.searchsorted(self.neg_value, -total).clamp(min=1, max=self.bp.shape[2] - 1)
        prev = j - 1
        const = self.const.gather(2, prev)
        free = self.free.gather(2, prev)
        bp = self.bp.gather(2, prev)
        t = (self.base + const - total) / free.clamp(min=1)
        t = torch.where(free > 0, t, bp)
        t = t.squeeze(2).T
        return torch.where(target_mean == m0, torch.zeros_like(t), t)
