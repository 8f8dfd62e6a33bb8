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
from .exact import project as project_exact
from .spec import SolverError, Spec, to_host

_QP_OPTIONS = dict(eps=1e-14, maxIter=60, notImprovedLim=5, verbose=-1)
# Note: qpth's backward clamps multipliers and slacks at 1e-8 (a TODO in qpth), which
# leaks ~1e-8 / slack of gradient through inactive rows near their bound.

#: tolerances below this (times 1 + the targets' scale) are built as equality rows
EQUALITY_BELOW = 1e-8

#: Hessian weight of the auxiliary variables of :meth:`~.criteria.Criterion.interval_rows`
AUX_WEIGHT = 1e-8

#: largest dense KKT system (variables + rows) qpth is asked to factorise
MAX_QP_SIZE = 6000


def _fairness_rows(groups: GroupIndex, spec: Spec, c: int, centres: list | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Rows over slot means and auxiliary variables, ``coef @ means + aux @ d <= rhs``:
    ``coef`` (R, K), ``aux`` (R, D), ``rhs`` (R, c), and whether they are equalities.
    Each attribute's rows come from the criterion, side by side; with ``centres`` (the
    exact projection's per-attribute values, see :meth:`~.criteria.Criterion.interval_rows`)
    a criterion whose plain rows are quadratic in ``k`` gives ``O(k)`` rows instead."""
    coefs, auxes, rhss, equality = [], [], [], False
    K = groups.n_slots
    tol = _rows_tolerance(groups, spec)
    for a in range(groups.n_attributes):
        sl = groups.attribute(a)
        k = sl.stop - sl.start
        r = None if spec.targets is None else spec.targets[sl]
        compact = None
        if centres is not None and tol > 0 and k > 1:
            compact = spec.criterion.interval_rows(k, tol, centres[a])
        if compact is None:
            coef, rhs, equality = spec.criterion.rows(k, tol, r, c)
            aux = None
        else:
            coef, aux, rhs = compact
        full = np.zeros((coef.shape[0], K))
        full[:, sl] = coef
        coefs.append(full)
        auxes.append(aux)
        rhss.append(rhs)
    D = sum(x is not None for x in auxes)
    aux_cols, d = [], 0
    for coef, aux in zip(coefs, auxes):
        block = np.zeros((coef.shape[0], D))
        if aux is not None:
            block[:, d] = aux
            d += 1
        aux_cols.append(block)
    return np.concatenate(coefs), np.concatenate(aux_cols), np.concatenate(rhss), equality


def _rows_tolerance(groups: GroupIndex, spec: Spec) -> float:
    """The tolerance the rows are built with: 0 (equalities) below ``EQUALITY_BELOW``
    (relative to the targets' scale above 1). Pairs of opposite inequalities that close
    (1e-10 or 1e-24 apart, found by fuzzing) leave an interior-point method no
    interior, and qpth's derivative of such a QP is singular or far off; the
    tolerance-0 projection is then within about that tolerance of the requested one
    (and certified against it, forward and backward)."""
    scale = 0.0 if spec.targets is None else float(np.abs(spec.targets).max(initial=0.0))
    return 0.0 if spec.tolerance <= EQUALITY_BELOW * (1.0 + scale) else spec.tolerance


def _centres(z: Tensor, groups: GroupIndex, spec: Spec) -> tuple[list | None, np.ndarray | None]:
    """Per attribute (c,): the middle of the range of interval positions the exact
    projection's group means allow (the interval itself when it binds), and that
    projection; ``(None, None)`` when the criterion's rows are already ``O(k)`` or the
    exact solver cannot answer (the plain rows are used then)."""
    if _rows_tolerance(groups, spec) <= 0 or spec.criterion.interval_rows(2, spec.tolerance, np.zeros(1)) is None:
        return None, None
    try:
        out = project_exact(to_host(z), groups, spec).out
    except SolverError:
        return None, None
    means = groups.means(out)
    centres = [0.5 * (means[groups.attribute(a)].min(0) + means[groups.attribute(a)].max(0) - spec.tolerance)
               for a in range(groups.n_attributes)]
    return centres, out


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
    centres, exact_out = _centres(z, groups, spec)
    y = None
    if centres is not None:  # O(k) rows first; the plain rows if qpth misses the projection with them
        y = _solve(z, groups, spec, centres)
        scale = max(1.0, float(np.abs(exact_out).max())) if exact_out.size else 1.0
        if float(np.abs(to_host(y) - exact_out).max()) > 1e-7 * scale:
            y = None
    return _solve(z, groups, spec, None) if y is None else y


def _solve(z: Tensor, groups: GroupIndex, spec: Spec, centres: list | None) -> Tensor:
    n, c = z.shape
    coef, aux, rhs, equality = _fairness_rows(groups, spec, c, centres)
    if coef.shape[0] == 0:
        return z.clamp(*spec.box) if spec.has_box else z
    variables = (n if spec.has_box else groups.n_slots) + aux.shape[1]
    size = variables + coef.shape[0] + (2 * n if spec.has_box else 0)
    if size > MAX_QP_SIZE:
        raise SolverError(f"the QP has {variables} variables and {size - variables} rows, more than a dense "
                          f"interior-point solve handles (limit {MAX_QP_SIZE} in all)")
    coef_t = torch.from_numpy(coef).to(z.device)
    aux_t = torch.from_numpy(aux).to(z.device, z.dtype)
    rhs_t = torch.from_numpy(rhs).to(z.device, z.dtype)
    solve = _solve_full if spec.has_box else _solve_shifts
    try:
        y = solve(z, groups, spec, coef_t, aux_t, rhs_t, equality)
    except (RuntimeError, AttributeError) as err:  # qpth's factorisation failed (it then returns None)
        raise SolverError(f"qpth broke down ({type(err).__name__})") from None
    if y is None or not bool(torch.isfinite(y).all()):
        raise SolverError("qpth returned no finite answer")
    return y


def _with_aux(G: Tensor, aux: Tensor, Q: Tensor) -> tuple[Tensor, Tensor]:
    """Rows and Hessian extended by the auxiliary variables (weight ``AUX_WEIGHT``:
    qpth needs a positive definite Hessian; the auxiliaries are 0 at the optimum)."""
    if aux.shape[1] == 0:
        return G, Q
    D = aux.shape[1]
    # scaled like the other columns of the rows, which keeps the interior-point
    # method's systems well conditioned (the auxiliaries' values are not used)
    scale = float(G.norm(dim=1).mean()) or 1.0
    Q_full = torch.block_diag(Q, AUX_WEIGHT * torch.eye(D, dtype=Q.dtype, device=Q.device))
    return torch.cat([G, aux * scale], 1), Q_full


def _solve_shifts(z: Tensor, groups: GroupIndex, spec: Spec, coef: Tensor, aux: Tensor, rhs: Tensor,
                  equality: bool) -> Tensor:
    n = z.shape[0]
    dev = dict(device=z.device, dtype=z.dtype)
    inv_n = torch.from_numpy(1.0 / groups.counts).to(**dev)
    cross = torch.from_numpy(groups.cross_counts()).to(**dev)  # S^T S, (K, K)
    evals, evecs = torch.linalg.eigh(cross / n)
    keep = evals > 1e-12 * evals.max()
    U, lam = evecs[:, keep], evals[keep]
    # new means = means + diag(1/n_g) S^T S U w
    M = (inv_n.unsqueeze(1) * cross) @ U
    G, Q = _with_aux(coef @ M, aux, torch.diag(lam / lam.min()))
    norms = G.norm(dim=1, keepdim=True).clamp(min=1e-300)
    means = groups.means(z)
    h = (rhs - coef @ means).T / norms.T
    p = z.new_zeros((z.shape[1], Q.shape[0]))
    w = _qp(Q, p, G / norms, h, equality)
    if w is None:
        return None
    d = U @ w[:, :lam.numel()].T  # (K, c)
    return z + groups.expand(d)


def _solve_full(z: Tensor, groups: GroupIndex, spec: Spec, coef: Tensor, aux: Tensor, rhs: Tensor,
                equality: bool) -> Tensor:
    n, c = z.shape
    inv_n = torch.from_numpy(1.0 / groups.counts).to(z.device, z.dtype)
    gid = groups.gid_on(z.device)
    # row r over samples: sum_a coef[r, gid_a(i)] / n_gid
    A = (coef * inv_n.unsqueeze(0))[:, gid[:, 0]]
    for a in range(1, groups.n_attributes):
        A = A + (coef * inv_n.unsqueeze(0))[:, gid[:, a]]
    eye = torch.eye(n, dtype=z.dtype, device=z.device)
    A, Q = _with_aux(A, aux, eye)
    m = Q.shape[0]
    norms = A.norm(dim=1, keepdim=True).clamp(min=1e-300)
    rows, bounds = [], []
    pick = torch.eye(n, m, dtype=z.dtype, device=z.device)  # the outputs among the variables
    if spec.ub is not None:
        rows.append(pick)
        bounds.append(torch.full((n,), spec.ub, dtype=z.dtype, device=z.device))
    if spec.lb is not None:
        rows.append(-pick)
        bounds.append(torch.full((n,), -spec.lb, dtype=z.dtype, device=z.device))
    box_G, box_h = torch.cat(rows, 0), torch.cat(bounds, 0)
    p = torch.cat([-z.T, z.new_zeros((c, m - n))], 1)
    y = _qp(Q, p, A / norms, rhs.T / norms.T, equality, box_G, box_h)
    return None if y is None else y[:, :n].T  # (n, c)


solve_qpth.exact = False  # an interior-point answer: certified against the exact one
