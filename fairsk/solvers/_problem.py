"""The projection problem shared by both solvers, its check and its Jacobian.

Problem, for each output column independently::

    minimise ||y - z||^2  subject to  lb <= y <= ub  and, per attribute,
        ecp: max_g mean_g(y) - min_g mean_g(y) <= tolerance
        eer: |mean_g(y) - mean_g(target)| <= tolerance  for every group g

Every constraint row is a combination of group-mean functionals ``s_g / n_g``. Hence
the Jacobian of the projection is the orthogonal projector onto the null space of the
active rows restricted to the coordinates that are not clipped by the box
(:func:`projector_vjp`), which both the exact solver's backward and the tests use.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .._groups import GroupIndex


@dataclass(frozen=True)
class Spec:
    """What the projection must satisfy."""

    criterion: str  # "ecp" or "eer"
    tolerance: float
    lb: float | None = None
    ub: float | None = None
    targets: Tensor | None = None  # (K, c) group means of the targets, for "eer"

    @property
    def has_box(self) -> bool:
        return self.lb is not None or self.ub is not None

    def clip(self, y: Tensor) -> Tensor:
        if not self.has_box:
            return y
        return y.clamp(min=self.lb, max=self.ub)


def violation(y: Tensor, groups: GroupIndex, spec: Spec) -> Tensor:
    """Largest violation of any constraint by ``y`` (n, c), as a float64 scalar."""
    y = y.to(torch.float64)
    worst = y.new_zeros(())
    if spec.lb is not None and y.numel():
        worst = torch.maximum(worst, (spec.lb - y).max())
    if spec.ub is not None and y.numel():
        worst = torch.maximum(worst, (y - spec.ub).max())
    if y.shape[0] == 0 or groups.n_slots == 0:
        return worst
    means = groups.means(y)
    if spec.criterion == "eer":
        dev = (means - spec.targets.to(torch.float64)).abs() - spec.tolerance
        return torch.maximum(worst, dev.max())
    for a in range(groups.n_attributes):
        m = means[groups.attribute(a)]
        gap = m.max(0).values - m.min(0).values
        worst = torch.maximum(worst, (gap - spec.tolerance).max())
    return worst


def tight_slots(y: Tensor, groups: GroupIndex, spec: Spec, delta: float) -> Tensor:
    """Slots (K, c) whose fairness constraints are active at ``y`` (within ``delta``).

    ecp: when an attribute's gap is at the tolerance, its groups at the top and at
    the bottom of the interval; eer: groups at either end of their band.
    """
    means = groups.means(y)
    if spec.criterion == "eer":
        return (means - spec.targets).abs() >= spec.tolerance - delta
    tight = torch.zeros_like(means, dtype=torch.bool)
    for a in range(groups.n_attributes):
        sl = groups.attribute(a)
        if groups.sizes[a] < 2:
            continue
        m = means[sl]
        hi, lo = m.max(0).values, m.min(0).values
        active = (hi - lo) >= spec.tolerance - delta
        tight[sl] = active & ((m >= hi - delta) | (m <= lo + delta))
    return tight


def active_basis(tight: Tensor, groups: GroupIndex, spec: Spec) -> Tensor:
    """Columns spanning the active constraint directions in slot space, (c, K, K).

    ecp: for each attribute, ``e_g - e_g0`` for its tight groups g (g0 the first
    one): all pairs of tight groups are tight together, so their span is the
    zero-sum vectors on the tight set. eer: ``e_g`` for each tight group.
    Unused columns are zero, which leaves the spanned space unchanged.
    """
    K, c = tight.shape
    eye = torch.eye(K, dtype=torch.float64, device=tight.device)
    basis = eye.unsqueeze(0) * tight.T.unsqueeze(1).to(torch.float64)  # (c, K, K)
    if spec.criterion == "eer":
        return basis
    for a in range(groups.n_attributes):
        sl = groups.attribute(a)
        t = tight[sl].T  # (c, k)
        if t.shape[1] == 0:
            continue
        first = torch.argmax(t.to(torch.int8), dim=1)  # first tight group per column
        g0 = first + sl.start
        cols = torch.arange(sl.start, sl.stop, device=tight.device)
        others = t & (cols.unsqueeze(0) != g0.unsqueeze(1))  # (c, k)
        # column g (for g tight, not g0) gets -1 in row g0
        sub = basis[:, :, sl]  # view (c, K, k)
        sub[torch.arange(c), g0, :] -= others.to(torch.float64)
        basis[torch.arange(c).unsqueeze(1), g0.unsqueeze(1), g0.unsqueeze(1)] = 0.0
    return basis


def projector_vjp(grad: Tensor, y: Tensor, groups: GroupIndex, spec: Spec) -> Tensor:
    """``J^T grad`` for the projection's Jacobian J at the solution ``y``.

    J is the orthogonal projector onto the null space of the active fairness rows
    and the clipped coordinates, so it is symmetric and ``J^T grad = J grad``.
    One attribute: closed form (a few group reductions). Several: a few group
    reductions plus one batched ``K x K`` pseudo-inverse.
    """
    grad = grad.to(torch.float64)
    y = y.to(torch.float64)
    if y.shape[0] == 0:
        return grad
    # iterative solves land on a bound only to ~1e-13; treat those as clipped
    delta = 1e-9 * (1.0 + float(y.abs().max()) + abs(spec.tolerance))
    free = None  # no box: every coordinate is free (and no mask pass is needed)
    if spec.has_box:
        free = torch.ones_like(y)
        if spec.lb is not None:
            free = free * (y > spec.lb + delta)
        if spec.ub is not None:
            free = free * (y < spec.ub - delta)
    g_free = grad if free is None else grad * free
    if groups.n_slots == 0:
        return g_free
    tight = tight_slots(y, groups, spec, delta=delta)
    if not bool(tight.any()):
        return g_free
    if groups.n_attributes == 1:
        corr = _single_attribute_correction(g_free, free, tight, groups, spec)
    else:
        corr = _general_correction(g_free, torch.ones_like(y) if free is None else free, tight, groups, spec)
    return g_free - (corr if free is None else corr * free)


def _single_attribute_correction(g_free, free, tight, groups: GroupIndex, spec: Spec) -> Tensor:
    """Projection of ``g_free`` onto the active span, for one attribute, in closed form.

    The active rows restricted to the free coordinates span the vectors that are
    constant (``v_g``) on the free samples of each tight group; for ecp the
    multipliers also sum to zero, i.e. ``sum_g n_g v_g = 0`` (n_g the whole group).
    Least squares: ``v_g = m_g - lam n_g / f_g``, with m_g the mean of ``g_free`` over
    the f_g free samples of g and ``lam = sum n_g m_g / sum n_g^2 / f_g``.
    """
    n = groups.counts.to(torch.float64).unsqueeze(1)  # (K, 1)
    f = n.expand_as(tight).to(g_free.dtype) if free is None else groups.sums(free)  # free samples per group
    has_free = tight & (f > 0)
    m = torch.where(has_free, groups.sums(g_free) / f.clamp(min=1), 0.0)
    v = m
    if spec.criterion == "ecp":
        num = torch.where(has_free, n * m, 0.0).sum(0)
        den = torch.where(has_free, n**2 / f.clamp(min=1), 0.0).sum(0)
        lam = torch.where(den > 0, num / den.clamp(min=1e-300), 0.0)
        v = m - lam * n / f.clamp(min=1)
    return groups.expand(torch.where(has_free, v, 0.0))


def _general_correction(g_free, free, tight, groups: GroupIndex, spec: Spec) -> Tensor:
    """Projection onto the active span via a batched ``K x K`` pseudo-inverse."""
    V = active_basis(tight, groups, spec)  # (c, K, K)
    inv_n = 1.0 / groups.counts.to(torch.float64)
    W = groups.cross_sums(free) * inv_n.unsqueeze(0).unsqueeze(2) * inv_n.view(1, 1, -1)
    gram = V.transpose(1, 2) @ W @ V
    u = groups.sums(g_free) * inv_n.unsqueeze(1)  # (K, c): active-row products
    alpha = (V.transpose(1, 2) @ u.T.unsqueeze(2)).squeeze(2)  # (c, K)
    beta = (torch.linalg.pinv(gram, hermitian=True, rtol=1e-10) @ alpha.unsqueeze(2)).squeeze(2)
    corr = (V @ beta.unsqueeze(2)).squeeze(2).T * inv_n.unsqueeze(1)  # (K, c)
    return groups.expand(corr)
