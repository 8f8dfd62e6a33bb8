"""The qpth solver: the projection as a batched differentiable QP (one QP per column).

qpth's interior-point method stops on absolute residuals, so rows scaled by ``1/n``
(group means) make it stop early at infeasible points. Well-conditioned formulations
avoid that:

* without a box, the optimum is ``y = z + S d`` with ``S`` the (n, K) group-indicator
  matrix, so the QP is solved over the group shifts ``d`` (in an orthonormal basis of
  the range of ``S^T S``, which keeps ``Q`` positive definite when attributes
  overlap): ``K`` variables and O(1)-sized rows, whatever ``n``;
* with a box, the outputs the box holds at a bound are taken from the exact
  projection; the others are ``z_i + sum_a d_{a, g_a(i)}``, so the QP is again over
  the group shifts, with the free outputs' cross counts and the held outputs'
  values as constants in the group means (``K`` variables, no box rows);
* only when the exact solver cannot say which outputs the box holds, the QP is
  solved over ``y`` itself with every fairness row scaled to unit norm next to the
  unit box rows (``n`` variables).

The rows come from the criterion (:meth:`~.criteria.Criterion.rows`, or ``O(k)``
interval rows placed by the exact answer). Gradients are qpth's (implicit
differentiation of the KKT conditions). The exact answer qpth builds on is
remembered for the dispatcher's reference (:func:`~.exact.exact_answer`), so a batch
is solved exactly once. Problems too large for a dense QP are declined with a
:class:`~.spec.SolverError` before any memory is taken.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from qpth.qp import QPFunction
from torch import Tensor

from .._groups import GroupIndex
from .exact import ExactAnswer, exact_answer
from .kernels import active_tolerance, one_blas_thread
from .spec import SolverError, Spec, to_host

#: the magnitude each column of the shift QP is solved at (its largest slack at no
#: shift): qpth stops on absolute residuals and its backward clamps multipliers and
#: slacks at 1e-8 in absolute terms, so at this scale the clamp is 1e-11 of the
#: problem's and no longer limits the gradient (measured on 432 random batches: the
#: largest gap to the exact gradient 7e-8, against 9e-7 at scale 1)
SOLVE_SCALE = 1e3

# qpth's options for the shift QP: the stopping threshold is the complementarity gap
# (times the rows) and residuals, 1e-11 of the scale squared (the gap scales with it)
_QP_OPTIONS = dict(eps=1e-11 * SOLVE_SCALE**2, maxIter=60, notImprovedLim=5, verbose=-1, check_Q_spd=False)
# (every Hessian built here is positive definite by construction: qpth's Cholesky check
# of it is skipped)

#: qpth's stopping threshold for the dense QP over the outputs (solved at their own scale)
DENSE_EPS = 1e-14
# Note: qpth's backward clamps multipliers and slacks at 1e-8 (a TODO in qpth), which
# leaks ~1e-8 / slack of gradient through inactive rows near their bound.

#: tolerances below this (times 1 + the targets' scale) are built as equality rows
EQUALITY_BELOW = 1e-8

#: Hessian weight of the auxiliary variables of :meth:`~.criteria.Criterion.interval_rows`
AUX_WEIGHT = 1e-8

#: fewest groups of an attribute for which the interval rows (``2k`` rows and one
#: auxiliary variable) replace the criterion's own rows: parity's pairwise rows number
#: ``k (k - 1)``, no more than ``2k`` below 4 groups, and need neither the auxiliary
#: variable nor the exact answer's centres
INTERVAL_ROWS_FROM = 4

#: largest dense KKT system (variables + rows) qpth is asked to factorise
MAX_QP_SIZE = 6000


def _fairness_rows(groups: GroupIndex, spec: Spec, c: int, centres: list | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Rows over slot means and auxiliary variables, ``coef @ means + aux @ d <= rhs``:
    ``coef`` (R, K), ``aux`` (R, D), ``rhs`` (R, c), and whether they are equalities.
    Each attribute's rows come from the criterion, side by side; with ``centres`` (the
    exact projection's per-attribute values, see :meth:`~.criteria.Criterion.interval_rows`)
    a criterion whose plain rows are quadratic in ``k`` gives ``O(k)`` rows instead."""
    tol = _rows_tolerance(groups, spec)
    coefs, auxes, rhss, equality = [], [], [], False
    K = groups.n_slots
    for a in range(groups.n_attributes):
        sl = groups.attribute(a)
        k = sl.stop - sl.start
        r = None if spec.targets is None else spec.targets[sl]
        compact = None
        if centres is not None and tol > 0 and k >= INTERVAL_ROWS_FROM:
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


def _compact_rows(groups: GroupIndex, spec: Spec) -> bool:
    """Whether the criterion gives ``O(k)`` rows around centres taken from the exact
    projection (:meth:`~.criteria.Criterion.interval_rows`), which then pays off."""
    if _rows_tolerance(groups, spec) <= 0 or max(groups.sizes, default=0) < INTERVAL_ROWS_FROM:
        return False
    return spec.criterion.interval_rows(2, spec.tolerance, np.zeros(1)) is not None


def _centres(out: np.ndarray, groups: GroupIndex, spec: Spec) -> list:
    """Per attribute (c,): the middle of the range of interval positions the exact
    projection's group means ``out`` allow (the interval itself when it binds)."""
    means = groups.means(out)
    return [0.5 * (means[groups.attribute(a)].min(0) + means[groups.attribute(a)].max(0) - spec.tolerance)
            for a in range(groups.n_attributes)]


def _independent_rows(G: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """An orthonormal basis of the rows of the equalities ``G x = h`` (h is (c, R)).

    Equalities of several attributes are dependent (every attribute's group sums add
    up to the same total), and qpth's KKT factorisation needs independent rows.
    """
    U, sig, Vh = torch.linalg.svd(G, full_matrices=False)
    keep = sig > 1e-10 * sig.max()
    T = U[:, keep].T / sig[keep].unsqueeze(1)
    return Vh[keep], h @ T.T


def _qp(Q: Tensor, p: Tensor, G: Tensor, h: Tensor, equality: bool, G_box=None, h_box=None, **options) -> Tensor:
    """qpth with the fairness rows as inequalities or as (independent) equalities
    (``options``: changes to :data:`_QP_OPTIONS`)."""
    empty = p.new_zeros(0)
    solve = _qp_function(**options)
    if G_box is None:  # a dummy row 0 <= 1 when there is no inequality at all
        G_box, h_box = p.new_zeros((1, p.shape[-1])), p.new_ones((1,))
        if not equality:
            return solve(Q, p, G, h, empty, empty)
        # only equalities: qpth's starting point solves their KKT system (the dummy row
        # has no coefficient), and its iterations would only drive the dummy row's
        # complementarity to zero (6 or more of them, 0.6 ms each at this size); its
        # backward does not depend on the dummy row's multiplier either
        solve = _qp_function(**{**options, "maxIter": 1})
    elif not equality:
        return solve(Q, p, torch.cat([G, G_box], 0), torch.cat([h, h_box.expand(h.shape[0], -1)], 1), empty, empty)
    A, b = _independent_rows(G, h)
    return solve(Q, p, G_box, h_box, A, b)


_QP_FUNCTIONS: dict = {}


def _qp_function(**changes):
    """qpth's differentiable QP function with :data:`_QP_OPTIONS` (and ``changes``),
    made once (qpth defines a new autograd class per call); kept per factory, so that
    a replaced ``QPFunction`` (a benchmark timing it) is used."""
    options = {**_QP_OPTIONS, **changes}
    key = (QPFunction, tuple(sorted(options.items())))
    fn = _QP_FUNCTIONS.get(key)
    if fn is None:
        fn = _QP_FUNCTIONS[key] = QPFunction(**options)
    return fn


@contextmanager
def _one_torch_thread():
    """A context in which torch runs on one thread: qpth's QPs here are small (``K``
    variables), and on a busy machine torch's thread pool made them 2-7x slower
    (qpth at k = 64: 116 ms with two threads, 16 ms with one, on a loaded 2-core
    machine). The previous setting is restored on leaving."""
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def solve_qpth(z: Tensor, groups: GroupIndex, spec: Spec) -> Tensor:
    """Project ``z`` (n, c) float64 with qpth, differentiably (the solver protocol)."""
    if z.device.type != "cpu":
        return _solve_qpth(z, groups, spec)
    with _one_torch_thread():
        return _solve_qpth(z, groups, spec)


def _solve_qpth(z: Tensor, groups: GroupIndex, spec: Spec) -> Tensor:
    n, c = z.shape
    if n == 0 or groups.n_slots == 0:
        return z.clamp(*spec.box) if spec.has_box else z
    compact = _compact_rows(groups, spec)
    answer = None
    if spec.has_box or compact:
        try:  # remembered for the dispatcher's reference call: solved once per batch
            answer = exact_answer(z, groups, spec)
        except SolverError:
            answer = None
    centres = _centres(answer.out, groups, spec) if answer is not None and compact else None
    if spec.has_box and answer is None:
        # the outputs the box holds are unknown: the dense QP over the outputs
        # themselves, with the box's rows (n variables; the only use of that form)
        return _solve(z, groups, spec, None, None)
    held = answer if spec.has_box else None
    y = None
    if centres is not None:  # O(k) rows first; the plain rows if qpth misses the projection with them
        y = _solve(z, groups, spec, centres, held)
        scale = max(1.0, float(np.abs(answer.out).max())) if answer.out.size else 1.0
        if float(np.abs(to_host(y) - answer.out).max()) > 1e-7 * scale:
            y = None
    return _solve(z, groups, spec, None, held) if y is None else y


def _solve(z: Tensor, groups: GroupIndex, spec: Spec, centres: list | None, held: ExactAnswer | None) -> Tensor:
    """qpth on the fairness rows (``O(k)`` of them with ``centres``): in the space of
    group shifts without a box or with the outputs it holds known (``held``, the
    exact answer), else over the outputs themselves with the box's rows."""
    n, c = z.shape
    coef, aux, rhs, equality = _fairness_rows(groups, spec, c, centres)
    if coef.shape[0] == 0:
        return z.clamp(*spec.box) if spec.has_box else z
    dense = spec.has_box and held is None
    variables = (n if dense else groups.n_slots) + aux.shape[1]
    size = variables + coef.shape[0] + (2 * n if dense else 0)
    if size > MAX_QP_SIZE:
        raise SolverError(f"the QP has {variables} variables and {size - variables} rows, more than a dense "
                          f"interior-point solve handles (limit {MAX_QP_SIZE} in all)")
    try:
        if dense:
            y = _solve_full(z, groups, spec, coef, aux, rhs, equality)
        elif held is not None:
            y = _solve_held(z, groups, spec, held, coef, aux, rhs, equality)
        else:
            y = _solve_shifts(z, groups, coef, aux, rhs, equality)
    except (RuntimeError, AttributeError) as err:  # qpth's factorisation failed (it then returns None)
        raise SolverError(f"qpth broke down ({type(err).__name__})") from None
    if y is None or not bool(torch.isfinite(y).all()):
        raise SolverError("qpth returned no finite answer")
    return y


def _with_aux(G: np.ndarray, aux: np.ndarray, Q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and Hessian extended by the auxiliary variables (weight ``AUX_WEIGHT``:
    qpth needs a positive definite Hessian; the auxiliaries are 0 at the optimum)."""
    if aux.shape[1] == 0:
        return G, Q
    D = aux.shape[1]
    # scaled like the other columns of the rows, which keeps the interior-point
    # method's systems well conditioned (the auxiliaries' values are not used)
    scale = float(np.linalg.norm(G, axis=1).mean()) or 1.0
    Q_full = np.zeros((Q.shape[0] + D, Q.shape[0] + D))
    Q_full[:Q.shape[0], :Q.shape[0]] = Q
    Q_full[Q.shape[0]:, Q.shape[0]:] = AUX_WEIGHT * np.eye(D)
    return np.concatenate([G, aux * scale], 1), Q_full


def _range_basis(cross: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An orthonormal basis ``U`` (K, r) of the range of the cross counts (scaled to
    a largest diagonal entry of 1) and their eigenvalues ``lam`` (r,) on it. One
    attribute (a diagonal matrix): the slots that have moving outputs."""
    scaled = cross / float(cross.diagonal().max())
    diag = scaled.diagonal()
    if not np.any(scaled - np.diag(diag)):
        keep = diag > 1e-12 * diag.max()
        return np.eye(cross.shape[0])[:, keep], diag[keep]
    evals, evecs = np.linalg.eigh(scaled)
    keep = evals > 1e-12 * evals.max()
    return evecs[:, keep], evals[keep]


def _shift_qp(means: Tensor, cross: np.ndarray, inv_n: np.ndarray, coef: np.ndarray, aux: np.ndarray,
              rhs: np.ndarray, equality: bool) -> Tensor | None:
    """The shifts ``d`` (K, c) of the outputs that move, ``y_i = z_i + sum_a
    d_{g_a(i)}``, with ``S`` their (n, K) slot indicator and ``cross = S^T S``: the new
    group means are ``means + diag(1/n_g) cross d`` and the cost is ``||S d||^2 = d^T
    cross d``. ``d`` is solved for in an orthonormal basis of the range of ``cross``,
    which keeps qpth's Hessian positive definite when attributes overlap or a slot has
    no moving output: ``K`` variables and O(1)-sized rows, whatever ``n``.

    Only the group means ``means`` carry a gradient: every matrix of the QP is a
    constant, built in NumPy and handed to qpth once."""
    if not cross.size or float(cross.diagonal().max()) <= 0:  # no output moves
        return means.new_zeros(means.shape)
    U, lam = _range_basis(cross)
    M = (inv_n[:, None] * cross) @ U  # new means = means + M w
    G, Q = _with_aux(coef @ M, aux, np.diag(lam / lam.min()))
    m_host = to_host(means)
    h = (rhs - coef @ m_host).T  # (c, R): the rows' slacks at w = 0
    norms = np.linalg.norm(G, axis=1)
    # a row on slots none of whose outputs moves is a constant: met (dropped) or not
    # (then no shift meets it)
    fixed = norms <= 1e-12 * float(norms.max())
    if fixed.any():
        bad = np.abs(h[:, fixed]) if equality else -h[:, fixed]
        scale = 1.0 + float(np.abs(rhs).max()) + float(np.abs(m_host).max())
        if float(bad.max()) > active_tolerance(scale):
            return None
        if fixed.all():
            return means.new_zeros(means.shape)
        coef, rhs, G, h, norms = coef[~fixed], rhs[~fixed], G[~fixed], h[:, ~fixed], norms[~fixed]
    G, h = G / norms[:, None], h / norms
    # with p = 0 the answer is positively homogeneous in h (w(a h) = a w(h), a > 0):
    # each column is solved at SOLVE_SCALE, where qpth's absolute stopping rule and its
    # backward's clamping of multipliers and slacks at 1e-8 mean the same for every
    # scale of outputs; the factor is a constant, so the gradient is qpth's own
    unit = np.abs(h).max(1)
    unit = np.where(unit > 0, unit, 1.0)[:, None] / SOLVE_SCALE  # (c, 1)
    dev, dt = means.device, means.dtype
    scaled = torch.from_numpy(coef / norms[:, None]).to(dev, dt)
    # the slacks at SOLVE_SCALE, differentiable in the means: one product, one subtraction
    h_t = torch.from_numpy(rhs.T / norms / unit).to(dev, dt) - (means.T @ scaled.T) / torch.from_numpy(unit).to(dev, dt)
    Q_t, G_t = torch.from_numpy(Q).to(dev, dt), torch.from_numpy(G).to(dev, dt)
    w = _qp(Q_t, means.new_zeros((means.shape[1], Q.shape[0])), G_t, h_t, equality)
    if w is None:
        return None
    w = w * torch.from_numpy(unit).to(dev, dt)
    # the value polished, the gradient qpth's
    w = w + (_polished(Q, G, h, to_host(w), equality, lam.size).to(dev, dt) - w).detach()
    return torch.from_numpy(U).to(dev, dt) @ w[:, :lam.size].T  # (K, c)


def _polished(Qn: np.ndarray, Gn: np.ndarray, hn: np.ndarray, xn: np.ndarray, equality: bool, main: int
              ) -> Tensor:
    """qpth's answer ``xn`` (c, m) to ``min x^T Q x / 2`` subject to ``G x <= h`` (or
    ``== h``), polished on the rows it holds active.

    The interior-point method stops with a complementarity gap ``mu`` of about 1e-11
    of the squared scale it solves at (:data:`SOLVE_SCALE`), which leaves
    an active row with a small multiplier ``lambda`` a slack of about ``mu / lambda``:
    enough to make finite differences of the outputs disagree with their derivative.
    The rows qpth holds within ``1e-9`` (then ``1e-7``, ``1e-5`` where qpth stopped
    short) are solved as equalities (one small KKT system per column); the polished
    point is kept only when it satisfies every row, its multipliers are non-negative
    and it is within ``1e-7`` of qpth's in the ``main`` variables (the auxiliary ones
    after them float freely where their rows are inactive), else qpth's own answer
    stays.
    Only the value changes: the gradient remains qpth's.
    """
    out = xn.copy()
    # tiny systems: BLAS threads only add synchronisation (a 17 x 17 KKT system took
    # 2.4 ms with OpenBLAS's two threads on a busy machine, 32 us on one)
    with one_blas_thread():
        for j in range(xn.shape[0]):
            _polish_column(Qn, Gn, hn[j], xn[j], out[j], equality, main)
    return torch.from_numpy(out)


def _polish_column(Qn: np.ndarray, Gn: np.ndarray, hn: np.ndarray, xn: np.ndarray, out: np.ndarray,
                   equality: bool, main: int) -> None:
    """One column of :func:`_polished`: writes the polished point into ``out``."""
    scale = 1.0 + float(np.abs(hn).max(initial=0.0))
    slack = hn - Gn @ xn
    limit = 1e-7 * (1.0 + float(np.abs(xn[:main]).max(initial=0.0)))
    tried = []
    # the rows qpth holds active; a wider net when it stopped short (slacks ~1e-8 seen)
    for width in (1e-9, 1e-7, 1e-5):
        act = np.ones(slack.shape, dtype=bool) if equality else slack <= width * scale
        if any(np.array_equal(act, t) for t in tried):
            continue
        tried.append(act)
        x_new = _solve_active(Qn, Gn, hn, act, equality, scale)
        if x_new is not None and float(np.abs(x_new[:main] - xn[:main]).max(initial=0.0)) <= limit:
            out[:] = x_new
            return


def _solve_active(Qn: np.ndarray, Gn: np.ndarray, hn: np.ndarray, act: np.ndarray, equality: bool, scale: float
                  ) -> np.ndarray | None:
    """``argmin x^T Q x / 2`` with the rows ``act`` as equalities, when it meets every
    row and (inequalities) its multipliers are non-negative; else None."""
    m = Qn.shape[0]
    E, f = Gn[act], hn[act]
    r = E.shape[0]
    kkt = np.zeros((m + r, m + r))
    kkt[:m, :m], kkt[:m, m:], kkt[m:, :m] = Qn, E.T, E
    rhs = np.concatenate([np.zeros(m), f])
    # one LU first; least squares when active rows are dependent (a singular system)
    for solve in (np.linalg.solve, lambda a, b: np.linalg.lstsq(a, b, rcond=None)[0]):
        try:
            sol = solve(kkt, rhs)
        except np.linalg.LinAlgError:
            continue
        x_new, lam = sol[:m], sol[m:]
        resid = Gn @ x_new - hn
        worst = float(np.abs(resid).max(initial=0.0)) if equality else float(resid.max(initial=0.0))
        if not worst <= 1e-12 * scale:  # (false for NaN too)
            continue
        if not equality and r and not float(lam.min()) >= -1e-9 * (1.0 + float(np.abs(lam).max())):
            continue
        return x_new
    return None


def _solve_shifts(z: Tensor, groups: GroupIndex, coef: np.ndarray, aux: np.ndarray, rhs: np.ndarray,
                  equality: bool) -> Tensor | None:
    """No box: every output moves, ``y = z + S d``."""
    d = _shift_qp(groups.means(z), groups.cross_counts(), 1.0 / groups.counts, coef, aux, rhs, equality)
    return None if d is None else z + groups.expand(d)


def _solve_held(z: Tensor, groups: GroupIndex, spec: Spec, held: ExactAnswer, coef: np.ndarray, aux: np.ndarray,
                rhs: np.ndarray, equality: bool) -> Tensor | None:
    """A box whose held outputs are known (from the exact answer): those stay at their
    bounds, the others move by their groups' shifts, ``y_i = z_i + sum_a d_{g_a(i)}``.

    Given which outputs the box holds, the boxed projection is the projection of the
    free outputs alone onto the fairness rows, with the held ones' values as constants
    in the group means; its solution lies in ``z + range(S_free)``, so it is the shift
    QP of :func:`_shift_qp` with the cross counts of the free outputs. The gradient
    flows through ``z_i`` and the shifts for free outputs; held outputs get none, as in
    the exact projection's Jacobian (almost everywhere: where the held set is stable).
    One column at a time, since each column has its own held set.
    """
    lb, ub = spec.box
    inv_n = 1.0 / groups.counts
    cols = []
    for j in range(z.shape[1]):
        free = held.free[:, j]
        out = held.out[:, j]
        # each held output at the bound it sits at (within rounding)
        bound = np.where(out - lb <= ub - out, lb, ub)
        free_t = torch.from_numpy(free).to(z.device)
        bound_t = torch.from_numpy(bound).to(z.device, z.dtype)
        base = torch.where(free_t, z[:, j], bound_t).unsqueeze(1)
        cross = groups.cross_counts(free.astype(np.float64))
        d = _shift_qp(groups.means(base), cross, inv_n, coef, aux, rhs[:, j:j + 1], equality)
        if d is None:
            return None
        y = torch.where(free_t, z[:, j] + groups.expand(d)[:, 0], bound_t)
        # the interior-point answer can overstep a bound by its own error: values are
        # kept in the box, the gradient is the one of the shifts
        cols.append(y + (y.clamp(lb, ub) - y).detach())
    return torch.stack(cols, 1)


def _solve_full(z: Tensor, groups: GroupIndex, spec: Spec, coef: np.ndarray, aux: np.ndarray, rhs: np.ndarray,
                equality: bool) -> Tensor:
    n, c = z.shape
    inv_n = 1.0 / groups.counts
    # row r over samples: sum_a coef[r, gid_a(i)] / n_gid
    A = sum((coef * inv_n)[:, groups.gid[:, a]] for a in range(groups.n_attributes))
    A, Q = _with_aux(A, aux, np.eye(n))
    A, Q = torch.from_numpy(A).to(z.device, z.dtype), torch.from_numpy(Q).to(z.device, z.dtype)
    rhs = torch.from_numpy(rhs).to(z.device, z.dtype)
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
    y = _qp(Q, p, A / norms, rhs.T / norms.T, equality, box_G, box_h, eps=DENSE_EPS)
    return None if y is None else y[:, :n].T  # (n, c)


solve_qpth.exact = False  # an interior-point answer: certified against the exact one
