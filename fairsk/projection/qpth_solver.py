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

The rows come from the criterion (:meth:`~.criteria.Criterion.rows`). Gradients are
qpth's (implicit differentiation of the KKT conditions). Problems too large for a
dense QP are declined with a :class:`~.spec.SolverError` before any memory is taken.
"""

from __future__ import annotations

import numpy as np
import torch
from qpth.qp import QPFunction
from torch import Tensor

from .._groups import GroupIndex
from .spec import SolverError, Spec

_QP_OPTIONS = dict(eps=1e-14, maxIter=60, notImprovedLim=5, verbose=-1)
# Note: qpth's backward clamps multipliers and slacks at 1e-8 (a TODO in qpth), which
# leaks ~1e-8 / slack of gradient through inactive rows near their bound.

#: largest dense KKT system (variables + rows) qpth is asked to factorise
MAX_QP_SIZE = 6000


def _fairness_rows(groups: GroupIndex, spec: Spec, c: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Rows over slot means ``coef @ means <= rhs`` (R, K), (R, c), and whether they
    are equalities: each attribute's rows from the criterion, side by side."""
    coefs, rhss, equality = [], [], False
    K = groups.n_slots
    for a in range(groups.n_attributes):
        sl = groups.attribute(a)
        r = None if spec.targets is None else spec.targets[sl]
        coef, rhs, equality = spec.criterion.rows(sl.stop - sl.start, spec.tolerance, r, c)
        full = np.zeros((coef.shape[0], K))
        full[:, sl] = coef
        coefs.append(full)
        rhss.append(rhs)
    return np.concatenate(coefs), np.concatenate(rhss), equality


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
    """Project ``z`` (n, c) float64 with qpth, differentiably (the solver protocol)."""
    n, c = z.shape
    if n == 0 or groups.n_slots == 0:
        return z.clamp(*spec.box) if spec.has_box else z
    coef, rhs, equality = _fairness_rows(groups, spec, c)
    if coef.shape[0] == 0:
        return z.clamp(*spec.box) if spec.has_box else z
    variables = n if spec.has_box else groups.n_slots
    size = variables + coef.shape[0] + (2 * n if spec.has_box else 0)
    if size > MAX_QP_SIZE:
        raise SolverError(f"the QP has {variables} variables and {size - variables} rows, more than a dense "
                          f"interior-point solve handles (limit {MAX_QP_SIZE} in all)")
    coef_t = torch.from_numpy(coef).to(z.device)
    rhs_t = torch.from_numpy(rhs).to(z.device, z.dtype)
    solve = _solve_full if spec.has_box else _solve_shifts
    try:
        y = solve(z, groups, spec, coef_t, rhs_t, equality)
    except (RuntimeError, AttributeError) as err:  # qpth's factorisation failed (it then returns None)
        raise SolverError(f"qpth broke down ({type(err).__name__})") from None
    if y is None or not bool(torch.isfinite(y).all()):
        raise SolverError("qpth returned no finite answer")
    return y


def _solve_shifts(z: Tensor, groups: GroupIndex, spec: Spec, coef: Tensor, rhs: Tensor, equality: bool) -> Tensor:
    n = z.shape[0]
    dev = dict(device=z.device, dtype=z.dtype)
    inv_n = torch.from_numpy(1.0 / groups.counts).to(**dev)
    cross = torch.from_numpy(groups.cross_counts()).to(**dev)  # S^T S, (K, K)
    evals, evecs = torch.linalg.eigh(cross / n)
    keep = evals > 1e-12 * evals.max()
    U, lam = evecs[:, keep], evals[keep]
    # new means = means + diag(1/n_g) S^T S U w
    M = (inv_n.unsqueeze(1) * cross) @ U
    G = coef @ M
    norms = G.norm(dim=1, keepdim=True).clamp(min=1e-300)
    means = groups.means(z)
    h = (rhs - coef @ means).T / norms.T
    Q = torch.diag(lam / lam.min())
    p = z.new_zeros((z.shape[1], lam.numel()))
    w = _qp(Q, p, G / norms, h, equality)  # (c, r)
    d = U @ w.T  # (K, c)
    return z + groups.expand(d)


def _solve_full(z: Tensor, groups: GroupIndex, spec: Spec, coef: Tensor, rhs: Tensor, equality: bool) -> Tensor:
    n, c = z.shape
    inv_n = torch.from_numpy(1.0 / groups.counts).to(z.device, z.dtype)
    gid = groups.gid_on(z.device)
    # row r over samples: sum_a coef[r, gid_a(i)] / n_gid
    A = (coef * inv_n.unsqueeze(0))[:, gid[:, 0]]
    for a in range(1, groups.n_attributes):
        A = A + (coef * inv_n.unsqueeze(0))[:, gid[:, a]]
    norms = A.norm(dim=1, keepdim=True).clamp(min=1e-300)
    rows, bounds = [], []
    eye = torch.eye(n, dtype=z.dtype, device=z.device)
    if spec.ub is not None:
        rows.append(eye)
        bounds.append(torch.full((n,), spec.ub, dtype=z.dtype, device=z.device))
    if spec.lb is not None:
        rows.append(-eye)
        bounds.append(torch.full((n,), -spec.lb, dtype=z.dtype, device=z.device))
    box_G, box_h = torch.cat(rows, 0), torch.cat(bounds, 0)
    y = _qp(eye, -z.T, A / norms, rhs.T / norms.T, equality, box_G, box_h)
    return None if y is None else y.T  # (n, c)


solve_qpth.exact = False  # an interior-point answer: certified against the exact one
