"""The projection package from its public seams: the import graph, the solver
registry and its fallback chain, the kernels, and the regression instances of the
defects found by an adversarial review (each fails on the previous solvers)."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import cvxpy as cp
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fairsk import FairnessLayer
from fairsk._groups import encode_groups
from fairsk.exceptions import InfeasibleProjectionError
from fairsk.metrics import parity_gap, residual_gap
from fairsk.projection import SOLVERS, SolverError, Spec, kernels

PACKAGE = Path(__file__).resolve().parents[1] / "fairsk"


# -- the import graph ----------------------------------------------------------------
def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set) -> set:
    """fairsk modules imported by ``path`` (any import statement, lazy ones included)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for t in targets:
            while t and t not in modules:  # "pkg.mod.func" -> "pkg.mod"
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def import_graph() -> dict:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: _imports(path, set(files)) for name, path in files.items()}


def find_cycle(graph: dict) -> list | None:
    """A cycle of the graph (a list of modules), or None. A package importing its own
    submodules is not a cycle unless a submodule imports the package back."""
    state, stack = {}, []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt.startswith(node + "."):  # a package's own submodule
                pass
            if state.get(nxt) == 1 and not node.startswith(nxt + "."):
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_fairsk_has_no_import_cycle():
    graph = import_graph()
    assert "fairsk.projection.exact" in graph and "fairsk.projection.kernels" in graph["fairsk.projection.exact"]
    assert find_cycle(graph) is None, find_cycle(graph)


# -- the fallback chain --------------------------------------------------------------
def test_each_solver_is_tried_at_most_once_and_every_reason_is_reported(monkeypatch):
    calls = []

    def failing(name):
        def solve(z, groups, spec):
            calls.append(name)
            raise SolverError(f"{name} forced to fail")
        return solve

    for name in list(SOLVERS):
        monkeypatch.setitem(SOLVERS, name, failing(name))
    z = torch.tensor([0.0, 0.1, 2.0, 2.1], dtype=torch.float64)
    for solver in SOLVERS:
        calls.clear()
        with pytest.raises(InfeasibleProjectionError) as err:
            FairnessLayer(tolerance=0.01, solver=solver)(z, torch.tensor([0, 0, 1, 1]))
        assert sorted(calls) == sorted(SOLVERS) and calls[0] == solver
        for name in SOLVERS:
            assert f"{name} forced to fail" in str(err.value)


def test_a_feasible_but_wrong_answer_is_replaced_by_the_exact_one(monkeypatch):
    """A non-exact solver's feasible answer that is not the projection is caught by
    comparison with the exact solver, and the exact answer is returned (with a warning)."""
    from fairsk.projection.exact import solve_exact

    def feasible_but_far(z, groups, spec):
        return solve_exact(z, groups, spec) + 0.01

    monkeypatch.setitem(SOLVERS, "qpth", feasible_but_far)
    z = torch.tensor([0.0, 0.1, 2.0, 2.1], dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="away from the projection"):
        out = FairnessLayer(tolerance=0.01, solver="qpth")(z, torch.tensor([0, 0, 1, 1]))
    torch.testing.assert_close(out, FairnessLayer(tolerance=0.01, solver="exact")(z, torch.tensor([0, 0, 1, 1])))


# -- kernels -------------------------------------------------------------------------
def test_interval_start_is_the_projection_of_the_means():
    """Brute force: the interval's start minimises sum_g w_g dist(m_g, [c, c + tol])^2."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        k = int(rng.integers(1, 12))
        m, w, tol = rng.normal(size=k), rng.integers(1, 50, size=k).astype(float), float(rng.uniform(0, 2))
        c = kernels.interval_start(m, w, tol)

        def cost(c, m=m, w=w, tol=tol):
            return float(np.sum(w * (m - np.clip(m, c, c + tol)) ** 2))

        grid = np.linspace(m.min() - tol - 1, m.max() + 1, 4001)
        assert cost(c) <= min(cost(x) for x in grid) + 1e-12


def test_box_sum_inverts_the_clipped_sum():
    rng = np.random.default_rng(1)
    for _ in range(100):
        z = np.sort(rng.normal(size=int(rng.integers(1, 20))) * 2)
        lb, ub = sorted(rng.normal(size=2))
        box = kernels.BoxSum(z, lb, ub)
        t = float(rng.normal())
        total = float(np.clip(z - t, lb, ub).sum())
        t_back = box.shift_for(total)
        assert np.clip(z - t_back, lb, ub).sum() == pytest.approx(total, abs=1e-10)


def test_dykstra_projects_onto_an_intersection():
    """Two half-planes x <= 0 and y <= 0 from (1, 2): the projection is the origin."""
    half = [lambda v: np.array([min(v[0], 0.0), v[1]]), lambda v: np.array([v[0], min(v[1], 0.0)])]
    x, converged = kernels.dykstra(np.array([1.0, 2.0]), half)
    assert converged
    np.testing.assert_allclose(x, [0.0, 0.0], atol=1e-12)


def test_active_tolerance_is_relative_and_small():
    assert kernels.active_tolerance(0.0) == pytest.approx(1e-12)
    assert kernels.active_tolerance(1e8) < 1e-3


# -- regression instances --------------------------------------------------------------
def cvxpy_projection(z, groups, criterion, tol, bounds=None, y=None):
    """The projection by Clarabel at tight tolerances (one column)."""
    yv = cp.Variable(z.shape[0])
    cons = []
    for a in range(groups.shape[1]):
        present = np.unique(groups[:, a])
        means = [(groups[:, a] == g) / (groups[:, a] == g).sum() @ yv for g in present]
        if criterion == "ecp" and len(present) > 1:
            c = cp.Variable()
            cons += [m >= c for m in means] + [m <= c + tol for m in means]
        elif criterion == "eer":
            for g, m in zip(present, means):
                r = y[groups[:, a] == g].mean()
                cons += [m <= r + tol, m >= r - tol]
    if bounds is not None:
        cons += [yv >= bounds[0], yv <= bounds[1]]
    prob = cp.Problem(cp.Minimize(cp.sum_squares(yv - z)), cons)
    prob.solve(solver="CLARABEL", tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12, tol_ktratio=1e-10)
    assert prob.status == "optimal"
    return yv.value, prob.value


def four_agreeing_attributes(seed=0):
    """EER with 4 attributes that agree on 91-98% of rows, n = 135."""
    rng = np.random.default_rng(seed)
    n = 135
    base = rng.integers(0, 3, n)
    cols = [base]
    for _ in range(3):
        col = base.copy()
        flip = rng.random(n) < rng.uniform(0.02, 0.09)
        col[flip] = rng.integers(0, 3, flip.sum())
        cols.append(col)
    return rng.normal(size=n) + base * 0.8, np.stack(cols, 1), rng.normal(size=n) * 0.5


@pytest.mark.parametrize("solver", ["exact", "qpth"])
def test_feasible_eer_with_agreeing_attributes_is_solved(solver):
    """EER without a box is always feasible; the previous exact solver (Dykstra) stalled
    here, its qpth fallback failed too, and the layer refused the problem."""
    z, g, y = four_agreeing_attributes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = FairnessLayer("eer", 1e-4, solver)(torch.tensor(z), torch.tensor(g), torch.tensor(y)).numpy()
    assert residual_gap(y, out, g) <= 1e-4 + 1e-9
    expected, _ = cvxpy_projection(z, g, "eer", 1e-4, y=y)
    np.testing.assert_allclose(out, expected, atol=1e-6, rtol=0)


def test_qpth_answer_off_the_projection_is_not_returned():
    """n = 5, EER, tolerance 0, box (0, 1): qpth's feasible answer was 0.065 from the
    projection and was returned; now it is certified against the exact projection."""
    z = np.array([-0.6355, -0.4053, 0.0688, -3.54, 0.0361])
    g = np.array([[0], [1], [0], [0], [0]])
    y = np.array([0.6877, 0.1909, 0.413, 0.5134, 0.4445])
    expected, _ = cvxpy_projection(z, g, "eer", 0.0, (0.0, 1.0), y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = FairnessLayer("eer", 0.0, "qpth", (0.0, 1.0))(torch.tensor(z), torch.tensor(g), torch.tensor(y))
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("scale", [1e6, 1e9])
@pytest.mark.parametrize("solver", ["exact", "qpth"])
def test_float32_at_large_magnitudes_meets_the_tolerance_or_refuses(scale, solver):
    """float32 at |z| ~ 1e6 (tolerance 0.01) returned a gap of 0.046, at 1e9 of 38.
    The rule: the float32 output meets the tolerance to 1e-5 as returned, or the
    projection is refused with a message naming float32."""
    rng = np.random.default_rng(0)
    g = np.repeat([0, 1], 50)
    z = torch.tensor(scale + rng.normal(size=100) * scale * 1e-3 + g * 0.5, dtype=torch.float32)
    try:
        out = FairnessLayer("ecp", 0.01, solver)(z, torch.tensor(g))
    except InfeasibleProjectionError as err:
        assert "float32" in str(err)
        return
    assert parity_gap(out.numpy().astype(np.float64), g) <= 0.01 + 1e-5


def test_float32_margin_keeps_moderate_magnitudes_fair():
    """At |z| ~ 1e3 float32 rounding (6e-5 per output) exceeds the 1e-5 allowance; the
    tolerance is reduced by the rounding margin so the returned values still meet it."""
    rng = np.random.default_rng(3)
    g = rng.integers(0, 3, 500)
    z = torch.tensor(1000 + rng.normal(size=500) + g, dtype=torch.float32)
    out = FairnessLayer("ecp", 0.01, "exact")(z, torch.tensor(g))
    assert out.dtype == torch.float32
    assert parity_gap(out.numpy().astype(np.float64), g) <= 0.01 + 1e-5


def test_inactive_constraint_at_large_magnitude_has_identity_jacobian():
    """z ~ 1e8, group gap 0.005 < tolerance 0.01: the projection is the identity, and so
    must be its Jacobian (the previous threshold called the constraint active)."""
    z = torch.tensor([1e8, 1e8, 1e8 + 0.005, 1e8 + 0.005], dtype=torch.float64)
    g = torch.tensor([0, 0, 1, 1])
    for groups in (g, torch.stack([g, g], 1)):
        layer = FairnessLayer("ecp", 0.01, "exact")
        assert torch.equal(layer(z, groups), z)
        J = torch.autograd.functional.jacobian(lambda v, layer=layer, groups=groups: layer(v, groups), z)
        torch.testing.assert_close(J, torch.eye(4, dtype=torch.float64), atol=0, rtol=0)


def test_many_groups_are_solved_by_qpth_with_rows_linear_in_k():
    """k = 200 groups: qpth's pairwise rows (k(k-1) = 39,800) took 24 GB before; with one
    interval variable the parity QP has 2k rows, and qpth answers itself (no fallback)."""
    rng = np.random.default_rng(0)
    g = np.arange(400) % 200
    z = torch.tensor(rng.normal(size=400) + g * 0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        out = FairnessLayer("ecp", 0.01, "qpth")(z, torch.tensor(g))
    assert parity_gap(out.numpy(), g) <= 0.01 + 1e-6
    exact = FairnessLayer("ecp", 0.01, "exact")(z, torch.tensor(g))
    np.testing.assert_allclose(out.numpy(), exact.numpy(), atol=1e-6, rtol=0)


def test_a_qp_too_large_for_qpth_is_declined_not_attempted():
    """k = 3,000 groups: 3,000 variables and 6,000 rows exceed a dense solve; qpth
    declines with a reason and the exact solver answers (with a warning naming it)."""
    rng = np.random.default_rng(0)
    g = np.arange(6000) % 3000
    z = torch.tensor(rng.normal(size=6000) + g * 1e-4)
    with pytest.warns(RuntimeWarning, match="dense"):
        out = FairnessLayer("ecp", 0.01, "qpth")(z, torch.tensor(g))
    assert parity_gap(out.numpy(), g) <= 0.01 + 1e-6


def test_non_finite_output_is_refused_never_returned():
    """Found by the fuzz profile: inputs near 1e306 overflow the group sums and the
    solvers' answers are NaN; the certificate must refuse them (NaN is lost by max())."""
    z = torch.zeros(35, dtype=torch.float64)
    z[0] = -5.28733275e306  # the fuzzer's instance: one huge row in a group of its own
    g = torch.ones(35, dtype=torch.long)
    g[0] = 0
    for solver in ("exact", "qpth"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out = FairnessLayer("ecp", 0.0, solver)(z, g)
        except InfeasibleProjectionError:
            continue
        assert torch.isfinite(out).all()


def test_several_attributes_with_a_box_are_solved_exactly():
    """EER, two attributes, a box, tolerance 1e-10, n = 2,803 (a fuzz run's instance):
    the exact solver's Dykstra stalled at 20,000 sweeps and qpth declined the size, so
    a feasible problem was refused. The active-set iteration over the box solves it
    without a fallback; its cost is no higher than Clarabel's (an independent solver)."""
    from .conftest import make_instance

    inst = make_instance(seed=0, n=2803, k=2, a=2, c=1, criterion="eer", tolerance=1e-10, box=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback, no warning
        out = FairnessLayer("eer", 1e-10, "exact", inst.bounds)(inst.z, inst.groups, inst.y).numpy()[:, 0]
    z, g, y = inst.z.numpy()[:, 0], inst.groups.numpy(), inst.y.numpy()
    assert residual_gap(y, out, g) <= 1e-10 + 1e-9
    assert out.min() >= inst.bounds[0] and out.max() <= inst.bounds[1]
    yv = cp.Variable(z.shape[0])
    cons = [yv >= inst.bounds[0], yv <= inst.bounds[1]]
    for a in range(g.shape[1]):
        for v in np.unique(g[:, a]):
            rows = g[:, a] == v
            cons.append(cp.abs(rows / rows.sum() @ yv - y[rows].mean()) <= 1e-10)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(yv - z)), cons)
    prob.solve(solver="CLARABEL")
    assert float(np.sum((out - z) ** 2)) <= prob.value + 1e-9 * (1.0 + prob.value)


@pytest.mark.parametrize("seed", range(40))
def test_several_attributes_with_a_box_match_clarabel(seed):
    """Small instances (2-3 attributes, a box, both criteria, tolerances from 0): the
    exact solver's answer is feasible and costs no more than Clarabel's, and where
    Clarabel is as good, the outputs agree to 1e-6."""
    from .conftest import make_instance

    rng = np.random.default_rng(seed)
    criterion, tol = ["ecp", "eer"][seed % 2], [0.0, 1e-4, 0.05, 0.3][seed // 2 % 4]
    inst = make_instance(seed=seed, n=int(rng.integers(3, 60)), k=int(rng.integers(2, 5)), a=int(rng.integers(2, 4)),
                         c=1, criterion=criterion, tolerance=tol, box=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback
        out = FairnessLayer(criterion, tol, "exact", inst.bounds)(inst.z, inst.groups, inst.y).numpy()[:, 0]
    z, g, y = inst.z.numpy()[:, 0], inst.groups.numpy(), inst.y.numpy()
    gap = parity_gap(out, g) if criterion == "ecp" else residual_gap(y, out, g)
    assert gap <= tol + 1e-9
    expected, ref_cost = cvxpy_projection(z, g, criterion, tol, inst.bounds, y)
    cost = float(np.sum((out - z) ** 2))
    assert cost <= ref_cost + 1e-9 * (1.0 + ref_cost)
    if cost >= ref_cost - 1e-12 * (1.0 + ref_cost):
        np.testing.assert_allclose(out, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("n, k", [(201, 10), (200, 9)])
def test_a_vanishing_tolerance_gives_qpth_equalities(n, k):
    """Tolerance 8.6e-25, three attributes (a fuzz run's instances): qpth's two opposite
    rows 1e-24 apart left no interior, its backward hit a singular KKT matrix (a
    RuntimeError out of ``backward``) or gave gradients 3e9 off. Rows with a tolerance
    below the active-set threshold are equalities now; outputs and gradients agree
    with the exact solver's."""
    from .conftest import make_instance

    inst = make_instance(seed=0, n=n, k=k, a=3, c=1, criterion="ecp", tolerance=8.582322265414357e-25, box=False)
    w = torch.randn(inst.z.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    results = []
    for solver in ("exact", "qpth"):
        z = inst.z.clone().requires_grad_(True)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # no fallback
            out = FairnessLayer("ecp", inst.tolerance, solver)(z, inst.groups)
        (out * w).sum().backward()
        results.append((out.detach().numpy(), z.grad.numpy()))
    assert parity_gap(results[1][0], inst.groups.numpy()) <= 1e-9
    np.testing.assert_allclose(results[1][0], results[0][0], atol=1e-9, rtol=0)
    np.testing.assert_allclose(results[1][1], results[0][1], atol=1e-6, rtol=0)


def _gradients(inst, solver, w):
    z = inst.z.clone().requires_grad_(True)
    out = FairnessLayer(inst.criterion, inst.tolerance, solver, inst.bounds)(z, inst.groups, inst.y)
    (out * w).sum().backward()
    return out.detach().numpy(), z.grad.numpy()


@pytest.mark.parametrize("seed, n", [(3, 468), (2, 200)])
def test_a_tiny_positive_tolerance_gives_qpth_equalities_too(seed, n):
    """Tolerance 1e-10, two attributes (a fuzz run): the interval rows 1e-10 wide made
    qpth's backward singular or 0.07 off. Tolerances below 1e-8 are built as
    equalities: qpth answers, within 1e-9 of the projection, with its own gradient."""
    from .conftest import make_instance

    inst = make_instance(seed=seed, n=n, k=7, a=2, c=1, criterion="ecp", tolerance=1e-10, box=False)
    w = torch.randn(inst.z.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out_e, g_e = _gradients(inst, "exact", w)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # neither output nor gradient replaced
        out_q, g_q = _gradients(inst, "qpth", w)
    assert parity_gap(out_q, inst.groups.numpy()) <= 1e-10 + 1e-12
    np.testing.assert_allclose(out_q, out_e, atol=1e-9, rtol=0)
    np.testing.assert_allclose(g_q, g_e, atol=1e-6, rtol=0)


def test_a_qpth_gradient_off_the_projection_is_replaced(monkeypatch):
    """EER, one attribute, box, n = 114 (a fuzz run): qpth's backward over the outputs
    (the dense form, used when the outputs the box holds are unknown) leaked 2e-4
    through inactive rows near their bound. Its gradient is checked against the exact
    projection's like its output, and replaced (with a warning) when more than 1e-6
    away."""
    from fairsk.projection import qpth_solver

    from .conftest import make_instance

    def unknown(z, groups, spec):
        raise SolverError("no held set")

    inst = make_instance(seed=38696, n=114, k=2, a=1, c=1, criterion="eer", tolerance=0.3437612480317634, box=True)
    w = torch.randn(inst.z.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    _, g_e = _gradients(inst, "exact", w)
    with monkeypatch.context() as m:
        m.setattr(qpth_solver, "exact_answer", unknown)  # the dense form
        with pytest.warns(RuntimeWarning, match="gradient was not used"):
            _, g_q = _gradients(inst, "qpth", w)
    np.testing.assert_allclose(g_q, g_e, atol=1e-6, rtol=0)
    # in the space of group shifts (the held set known), qpth's own gradient is the projection's
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        _, g_q = _gradients(inst, "qpth", w)
    np.testing.assert_allclose(g_q, g_e, atol=1e-6, rtol=0)


def test_a_backward_that_breaks_down_falls_back_to_the_exact_gradient(monkeypatch):
    """A non-exact solver whose backward raises (qpth's singular KKT factorisation on a
    degenerate batch raised out of ``loss.backward()``): the exact gradient is used."""
    from fairsk.projection import dispatch

    class Broken(torch.autograd.Function):
        @staticmethod
        def forward(ctx, z):
            return z.clone()

        @staticmethod
        def backward(ctx, g):
            raise RuntimeError("torch.linalg.lu_factor: U[3,3] is zero")

    def solve_broken(z, groups, spec):
        return Broken.apply(kernels_exact_output(z, groups, spec))

    def kernels_exact_output(z, groups, spec):  # the exact answer, detached, so the forward is certified
        return dispatch.SOLVERS["exact"](z.detach(), groups, spec).to(z.dtype) + 0 * z

    monkeypatch.setitem(dispatch.SOLVERS, "broken", solve_broken)
    z = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    g = torch.tensor([0, 0, 1, 1])
    with pytest.warns(RuntimeWarning, match="broke down"):
        FairnessLayer("ecp", 0.5, "broken")(z, g).sum().backward()
    z2 = z.detach().clone().requires_grad_(True)
    FairnessLayer("ecp", 0.5, "exact")(z2, g).sum().backward()
    np.testing.assert_allclose(z.grad.numpy(), z2.grad.numpy(), atol=1e-12)


def test_qpth_giving_no_answer_is_a_solver_failure_not_a_crash(monkeypatch):
    """qpth returns None when its factorisation fails (a fuzz run: |z| ~ 1e21, three
    identical attributes); the shift formulation indexed that None and a TypeError
    escaped the layer. Now it is a solver failure with a reason, and the exact solver
    answers."""
    from fairsk.projection import qpth_solver

    monkeypatch.setattr(qpth_solver, "_qp", lambda *args, **kwargs: None)
    g = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [0, 0]])
    z = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    with pytest.raises(SolverError, match="no finite answer"):
        qpth_solver.solve_qpth(z[:, None], encode_groups(g), Spec("ecp", 0.1))
    with pytest.warns(RuntimeWarning, match="no finite answer"):
        out = FairnessLayer("ecp", 0.1, "qpth")(z, torch.tensor(g))
    assert parity_gap(out.numpy(), g) <= 0.1 + 1e-9


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=70), st.floats(0, 10), st.sampled_from(["ecp", "eer"]))
def test_a_criterion_on_python_floats_equals_it_on_arrays(values, tol, name):
    """The certificate's few-group question (one column as Python floats) gives the
    violation the array form gives."""
    from fairsk.projection import get_criterion

    crit = get_criterion(name)
    r = [v * 0.5 - 1.0 for v in values] if crit.needs_targets else None
    array = crit.violation(np.array(values)[:, None], tol, None if r is None else np.array(r)[:, None])
    assert crit.violation_of_column(values, tol, r) == array


@given(st.lists(st.tuples(st.floats(-50, 50), st.floats(1, 100)), min_size=1, max_size=80),
       st.sampled_from([0.0, 1e-3, 0.5, 5.0]), st.sampled_from(["ecp", "eer"]))
def test_a_criterion_projects_python_floats_as_arrays(groups, tol, name):
    """The few-group projection of the means (lists) against the array formulas."""
    from fairsk.projection import get_criterion

    crit = get_criterion(name)
    m = np.array([g[0] for g in groups])
    w = np.array([g[1] for g in groups])
    delta = kernels.active_tolerance(float(np.abs(m).max()) + tol)
    r = m * 0.3 + 1.0 if crit.needs_targets else None
    new, tight = crit.project_values(m.tolist(), w.tolist(), tol, None if r is None else r.tolist(), delta)
    if name == "eer":
        expected, active = np.clip(m, r - tol, r + tol), np.abs(m - r) >= tol - delta
    elif m.shape[0] < 2 or m.max() - m.min() < tol - delta:
        expected, active = m, np.zeros(m.shape, dtype=bool)
    else:
        c = kernels._interval_start_sorted(m, w, tol)
        expected, active = np.clip(m, c, c + tol), (m <= c + delta) | (m >= c + tol - delta)
    np.testing.assert_allclose(new, expected, atol=1e-9 * (1 + np.abs(m).max()), rtol=0)
    if name == "eer":
        np.testing.assert_array_equal(tight, active)
