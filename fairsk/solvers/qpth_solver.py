"""The qpth solver: the projection as a batched differentiable QP (one QP per column).

qpth's interior-point method stops on absolute residuals, so rows scaled by ``1/n``
(group means) make it stop early at infeasible points. Two well-conditioned
formulations avoid that:

* without a box, the optimum is ``y = z + S d`` with ``S`` the (n, K) group-indicator
  matrix, so the QP is solved over the group shifts ``d`` (in an orthonormal basis of
  the range of ``S^T S``, which keeps ``Q`` positive definite when attributes
  overlap): ``K`` variables and O(1)-sized rows, whatever ``n``;
* with a box, the QP is solved over ``y`` itself with every fairness row scaled to
  unit norm next to the unit box rows.

Gradients are qpth's (implicit differentiation of the KKT conditions). Every answer is
still checked by the layer before it is returned.
"""

from __future__ import annotations

import warnings

import torch
from qpth.qp import QPFunction
from torch import Tensor

from .._groups import GroupIndex
from ._problem import Spec

_QP_OPTIONS = dict(eps=1e-14, maxIter=60, notImprovedLim=5, verbose=-1)
# Note: qpth's backward clamps multipliers and slacks at 1e-8 (a TODO in qpth), which
# leaks ~1e-8 / slack of gradient through inactive rows near their bound. Scaling Q
# up shrinks the leak but makes its interior-point method fail on some instances,
# so the natural scale is kept (tests/test_layer_properties.py measures the effect).


def _fairness_rows(groups: GroupIndex, spec: Spec) -> tuple[Tensor, bool]:
    """Rows over slot means, ``coef @ means <= rhs`` (R, K), and whether they are equalities.

    ecp: ``mean_g - mean_h <= tol`` for ordered pairs within an attribute;
    eer: ``+-(mean_g - target_g) <= tol``. With ``tol = 0`` the pairs of opposite
    inequalities leave the interior-point method no interior, so they are passed as
    equalities instead (ecp: ``mean_g = mean_g0``; eer: ``mean_g = target_g``).
    """
    K = groups.n_slots
    eye = torch.eye(K, dtype=torch.float64, device=groups.counts.device)
    equality = spec.tolerance == 0
    if spec.criterion == "eer":
        return (eye if equality else torch.cat([eye, -eye], 0)), equality
    rows = []
    for a in range(groups.n_attributes):
        sl = groups.attribute(a)
        idx = torch.arange(sl.start, sl.stop, device=eye.device)
        if equality:
            rows.append(eye[idx[1:]] - eye[idx[:1]])
            continue
        g, h = torch.meshgrid(idx, idx, indexing="ij")
        keep = g != h
        rows.append(eye[g[keep]] - eye[h[keep]])
    return (torch.cat(rows, 0) if rows else eye[:0]), equality


def _rhs(coef: Tensor, means: Tensor, spec: Spec) -> Tensor:
    """Right-hand sides (c, R) of ``coef @ (new means) <= rhs`` given current means."""
    rhs = spec.tolerance - coef @ means  # (R, c)
    if spec.criterion == "eer":
        rhs = rhs + coef @ spec.targets
    return rhs.T


def _independent_rows(G: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """An orthonormal basis of the rows of the equalities ``G x = h`` (h is (c, R)).

    Equalities of several attributes are dependent (every attribute's group sums add
    up to the same total), and qpth's KKT factorisation needs independent rows.
    """
    U, sig, Vh = torch.linalg.svd(G, full_matrices=False)
    keep = sig > 1e-10 * sig.max()
    T = U[:, keep].T / sig[keep].unsqueeze(1)
    return Vh[keep], h @ T.T


def _qp(Q: Tensor, p: Tensor, G: Tensor, h: Tensor, equality: bool, G_box=None, h_box=None) -> Tensor:
    """qpth with the fairness rows as inequalities or as (independent) equalities."""
    empty = p.new_zeros(0)
    solve = QPFunction(**_QP_OPTIONS)
    if G_box is None:  # a dummy row 0 <= 1 when there is no inequality at all
        G_box, h_box = p.new_zeros((1, p.shape[-1])), p.new_ones((1,))
        if not equality:
            return solve(Q, p, G, h, empty, empty)
    elif not equality:
        return solve(Q, p, torch.cat([G, G_box], 0), torch.cat([h, h_box.expand(h.shape[0], -1)], 1), empty, empty)
    A, b = _independent_rows(G, h)
    return solve(Q, p, G_box, h_box, A, b)


def solve_qpth(z: Tensor, groups: GroupIndex, spec: Spec) -> Tensor:
    """Project ``z`` (n, c) with qpth (float64 in, float64 out, differentiable)."""
    n, c = z.shape
    if n == 0 or groups.n_slots == 0:
        return spec.clip(z)
    coef, equality = _fairness_rows(groups, spec)
    if coef.shape[0] == 0:
        return spec.clip(z)
    solve = _solve_full if spec.has_box else _solve_shifts
    try:
        y = solve(z, groups, spec, coef, equality)
    except (RuntimeError, AttributeError):  # qpth's factorisation failed (it then returns None)
        y = None
    if y is None or not bool(torch.isfinite(y).all()):
        # qpth breaks down on some degenerate problems (e.g. a box that pins every
        # output); the exact solver answers instead, and the layer checks its answer
        warnings.warn("qpth failed on this batch; the exact solver was used instead", RuntimeWarning, stacklevel=4)
        from .exact import solve_exact

        return solve_exact(z, groups, spec)
    return y


def _solve_shifts(z: Tensor, groups: GroupIndex, spec: Spec, coef: Tensor, equality: bool) -> Tensor:
    n = z.shape[0]
    inv_n = 1.0 / groups.counts
    cross = groups.cross_sums(z.new_ones((n, 1)))[0]  # S^T S, (K, K)
    evals, evecs = torch.linalg.eigh(cross / n)
    keep = evals > 1e-12 * evals.max()
    U, lam = evecs[:, keep], evals[keep]
    # new means = means + diag(1/n_g) S^T S U w
    M = (inv_n.unsqueeze(1) * cross) @ U
    G = coef @ M
    norms = G.norm(dim=1, keepdim=True).clamp(min=1e-300)
    means = groups.means(z)
    h = _rhs(coef, means, spec) / norms.T
    Q = torch.diag(lam / lam.min())
    p = z.new_zeros((z.shape[1], lam.numel()))
    w = _qp(Q, p, G / norms, h, equality)  # (c, r)
    d = (U @ w.T)  # (K, c)
    return z + groups.expand(d)


def _solve_full(z: Tensor, groups: GroupIndex, spec: Spec, coef: Tensor, equality: bool) -> Tensor:
    n, c = z.shape
    inv_n = 1.0 / groups.counts
    # row r over samples: sum_a coef[r, gid_a(i)] / n_gid
    A = (coef * inv_n.unsqueeze(0))[:, groups.gid[:, 0]]
    for a in range(1, groups.n_attributes):
        A = A + (coef * inv_n.unsqueeze(0))[:, groups.gid[:, a]]
    norms = A.norm(dim=1, keepdim=True).clamp(min=1e-300)
    h_fair = spec.tolerance * torch.ones((c, A.shape[0]), dtype=z.dtype, device=z.device)
    if spec.criterion == "eer":
        h_fair = h_fair + (coef @ spec.targets).T
    rows, rhs = [], []
    eye = torch.eye(n, dtype=z.dtype, device=z.device)
    if spec.ub is not None:
        rows.append(eye)
        rhs.append(torch.full((n,), spec.ub, dtype=z.dtype, device=z.device))
    if spec.lb is not None:
        rows.append(-eye)
        rhs.append(torch.full((n,), -spec.lb, dtype=z.dtype, device=z.device))
    box_G, box_h = torch.cat(rows, 0), torch.cat(rhs, 0)
    y = _qp(eye, -z.T, A / norms, h_fair / norms.T, equality, box_G, box_h)
    return None if y is None else y.T  # (n, c)
