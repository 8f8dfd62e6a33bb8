"""qpth with a box: the QP over the group shifts of the outputs the box leaves free.

The outputs the box holds come from the exact answer; qpth solves the small QP over
the shifts of the others. Checked from outside: feasibility recomputed in NumPy, the
box, agreement with the exact projection and with the previous (dense) formulation,
and qpth's own gradient against the exact Jacobian and finite differences.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fairsk import FairnessLayer
from fairsk._groups import encode_groups
from fairsk.projection import SolverError, Spec, exact, qpth_solver

from .conftest import make_instance
from .test_layer_properties import small_instances


def spec_of(inst) -> tuple:
    gi = encode_groups(inst.groups)
    targets = gi.means(inst.y.numpy()[:, None]) if inst.criterion == "eer" else None
    if targets is not None and inst.z.shape[1] > 1:
        targets = np.repeat(targets, inst.z.shape[1], 1)
    return gi, Spec(inst.criterion, inst.tolerance, *inst.bounds, targets=targets)


def numpy_violation(out: np.ndarray, inst) -> float:
    """Largest violation of the fairness rows, recomputed here from the outputs."""
    g, y = inst.groups.numpy(), inst.y.numpy()
    worst = 0.0
    for j in range(out.shape[1]):
        for a in range(g.shape[1]):
            codes = np.unique(g[:, a])
            means = np.array([out[g[:, a] == v, j].mean() for v in codes])
            if inst.criterion == "ecp":
                worst = max(worst, means.max() - means.min() - inst.tolerance)
            else:
                targets = np.array([y[g[:, a] == v].mean() for v in codes])
                worst = max(worst, float(np.abs(means - targets).max()) - inst.tolerance)
    return worst


def scale_of(a: np.ndarray) -> float:
    return max(1.0, float(np.abs(a).max())) if a.size else 1.0


boxed = st.builds(
    make_instance,
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 300),
    k=st.integers(1, 6),
    a=st.integers(1, 3),
    c=st.integers(1, 2),
    criterion=st.sampled_from(["ecp", "eer"]),
    # tolerances below 1e-8 are built as equalities (the tolerance-0 projection)
    tolerance=st.one_of(st.just(0.0), st.floats(1e-6, 1.0)),
    box=st.just(True),
)


@given(boxed)
def test_qpth_with_a_box_is_the_projection(inst):
    """qpth's own answer (not the dispatcher's): inside the box, feasible, and the exact
    projection to 1e-9 (relative to the outputs' magnitude above 1)."""
    gi, spec = spec_of(inst)
    out = qpth_solver.solve_qpth(inst.z.clone(), gi, spec).numpy()
    assert out.shape == inst.z.shape
    lb, ub = inst.bounds
    assert out.min() >= lb and out.max() <= ub
    assert numpy_violation(out, inst) <= 1e-9
    ref = exact.project(inst.z.numpy(), gi, spec).out
    np.testing.assert_allclose(out, ref, atol=1e-9 * scale_of(ref), rtol=0)


@given(small_instances)
def test_qpth_with_a_box_matches_the_previous_formulation(inst):
    """On the property tests' instances with a box, the shift-space answer equals the
    previous formulation's (the QP over the outputs with the box's rows) to 1e-9,
    wherever that one was the projection (it was sometimes off, and replaced)."""
    if inst.bounds is None or inst.tolerance != 0.0 and inst.tolerance < 1e-8:
        return
    gi, spec = spec_of(inst)
    ref = exact.project(inst.z.numpy(), gi, spec).out
    out = qpth_solver.solve_qpth(inst.z.clone(), gi, spec).numpy()
    try:
        dense = qpth_solver._solve(inst.z.clone(), gi, spec, None, None).numpy()
    except SolverError:
        dense = None
    scale = scale_of(ref)
    np.testing.assert_allclose(out, ref, atol=1e-9 * scale, rtol=0)
    if dense is not None and np.abs(dense - ref).max() <= 1e-9 * scale:
        np.testing.assert_allclose(out, dense, atol=1e-9 * scale, rtol=0)


def test_the_qp_has_a_variable_per_group_not_per_output(monkeypatch):
    """n = 20,000 with a box: the previous formulation (20,000 variables) was declined
    as too large; in shift space qpth has K + 1 variables and answers itself."""
    sizes = []
    real_qp = qpth_solver._qp

    def recording(Q, *args, **kwargs):
        sizes.append(Q.shape[-1])
        return real_qp(Q, *args, **kwargs)

    def no_dense(*args, **kwargs):
        raise AssertionError("the dense form was used")

    monkeypatch.setattr(qpth_solver, "_qp", recording)
    monkeypatch.setattr(qpth_solver, "_solve_full", no_dense)
    rng = np.random.default_rng(0)
    g = rng.integers(0, 8, 20_000)
    z = torch.tensor(rng.normal(size=20_000) + 0.3 * g)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback
        out = FairnessLayer("ecp", 0.01, "qpth", (-1.0, 1.0))(z, torch.tensor(g)).numpy()
    assert sizes and max(sizes) <= 8 + 1
    ref = FairnessLayer("ecp", 0.01, "exact", (-1.0, 1.0))(z, torch.tensor(g)).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-9, rtol=0)
    assert out.min() >= -1.0 and out.max() <= 1.0


def test_the_dense_form_is_used_only_when_the_held_set_is_unknown(monkeypatch):
    """Without the exact answer (it raised), qpth solves over the outputs with the
    box's rows, as before, and its answer is still certified."""
    used = []
    real_full = qpth_solver._solve_full

    def recording(*args, **kwargs):
        used.append(True)
        return real_full(*args, **kwargs)

    def unknown(z, groups, spec):
        raise SolverError("no held set")

    monkeypatch.setattr(qpth_solver, "_solve_full", recording)
    monkeypatch.setattr(qpth_solver, "exact_answer", unknown)
    inst = make_instance(seed=1, n=60, k=3, a=1, c=1, criterion="ecp", tolerance=0.05, box=True)
    gi, spec = spec_of(inst)
    out = qpth_solver.solve_qpth(inst.z.clone(), gi, spec).numpy()
    assert used
    np.testing.assert_allclose(out, exact.project(inst.z.numpy(), gi, spec).out, atol=1e-6, rtol=0)


@pytest.mark.parametrize("box", [(-1.0, 1.0), None])
def test_a_batch_is_solved_exactly_once(monkeypatch, box):
    """qpth builds on the exact answer (held set, interval position); the dispatcher's
    reference takes the same answer instead of solving the batch again."""
    calls = []
    real_project = exact.project

    def counting(*args, **kwargs):
        calls.append(True)
        return real_project(*args, **kwargs)

    monkeypatch.setattr(exact, "project", counting)
    rng = np.random.default_rng(0)
    g = torch.tensor(rng.integers(0, 8, 500))
    z = torch.tensor(rng.normal(size=500) + 0.3 * g.numpy(), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        FairnessLayer("ecp", 0.01, "qpth", box)(z, g).sum().backward()
    assert len(calls) == 1


def test_the_remembered_answer_is_used_once_for_the_same_tensor_and_spec():
    inst = make_instance(seed=2, n=50, k=3, a=2, c=1, criterion="ecp", tolerance=0.05, box=True)
    gi, spec = spec_of(inst)
    z = inst.z.clone()
    first = exact.exact_answer(z, gi, spec).out
    np.testing.assert_array_equal(exact.solve_exact(z, gi, spec).numpy(), first)
    # an in-place change after the answer was remembered: solved again
    exact.exact_answer(z, gi, spec)
    z.add_(0.5)
    np.testing.assert_array_equal(exact.solve_exact(z, gi, spec).numpy(), exact.project(z.numpy(), gi, spec).out)
    # another spec (even an equal one) or another tensor: solved again
    exact.exact_answer(z, gi, spec)
    other = Spec("ecp", 0.2, *inst.bounds)
    np.testing.assert_array_equal(exact.solve_exact(z, gi, other).numpy(), exact.project(z.numpy(), gi, other).out)
    exact.exact_answer(z, gi, spec)
    w = z + 1.0
    np.testing.assert_array_equal(exact.solve_exact(w, gi, spec).numpy(), exact.project(w.numpy(), gi, spec).out)
    assert "exact answer" not in gi._cache  # each memo is used (or dropped) once


def test_a_failure_of_the_exact_solver_is_remembered_too(monkeypatch):
    calls = []

    def failing(*args, **kwargs):
        calls.append(True)
        raise SolverError("did not settle")

    monkeypatch.setattr(exact, "project", failing)
    inst = make_instance(seed=2, n=50, k=3, a=2, c=1, criterion="ecp", tolerance=0.05, box=True)
    gi, spec = spec_of(inst)
    z = inst.z.clone()
    with pytest.raises(SolverError, match="did not settle"):
        exact.exact_answer(z, gi, spec)
    with pytest.raises(SolverError, match="did not settle"):
        exact.solve_exact(z, gi, spec)
    assert len(calls) == 1


nondegenerate_boxed = st.builds(
    make_instance,
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(40, 400),
    k=st.integers(1, 4),
    a=st.integers(1, 2),
    c=st.integers(1, 2),
    criterion=st.sampled_from(["ecp", "eer"]),
    tolerance=st.one_of(st.just(0.0), st.floats(0.01, 1.0)),
    box=st.just(True),
)


@given(nondegenerate_boxed)
def test_qpth_gradient_with_a_box_is_the_exact_jacobian(inst):
    """qpth's own vector-Jacobian product (its KKT differentiation of the shift QP,
    without the dispatcher's check) against the exact projection's, to 1e-6 relative
    to its magnitude above 1; and central finite differences of qpth's own output
    along ``w`` against the exact Jacobian (symmetric: ``J w = J^T w``)."""
    gi, spec = spec_of(inst)
    w = torch.randn(inst.z.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    grads = []
    for solve in (qpth_solver.solve_qpth, exact.solve_exact):
        z = inst.z.clone().requires_grad_(True)
        (solve(z, gi, spec) * w).sum().backward()
        grads.append(z.grad.numpy())
    g_qpth, g_exact = grads
    scale = scale_of(g_exact)
    np.testing.assert_allclose(g_qpth, g_exact, atol=1e-6 * scale, rtol=0)
    eps = 1e-6
    plus = qpth_solver.solve_qpth(inst.z + eps * w, gi, spec).numpy()
    minus = qpth_solver.solve_qpth(inst.z - eps * w, gi, spec).numpy()
    np.testing.assert_allclose((plus - minus) / (2 * eps), g_exact, atol=1e-5 * scale, rtol=0)


@pytest.mark.parametrize("case", [
    # (n, k, a, c, criterion, tolerance)
    (12, 3, 1, 1, "ecp", 0.05),
    (30, 3, 2, 1, "ecp", 0.05),
    (20, 2, 1, 2, "eer", 0.1),
    (24, 3, 2, 1, "eer", 0.0),
])
def test_gradcheck_of_qpth_with_a_box(case):
    """The layer with qpth and a box through gradcheck, with qpth's own gradient (a
    replaced gradient warns, and the warning fails the test)."""
    n, k, a, c, criterion, tol = case
    inst = make_instance(11, n, k, a, c, criterion, tol, True)
    layer = FairnessLayer(criterion, tol, "qpth", inst.bounds)
    z = inst.z.clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert torch.autograd.gradcheck(lambda v: layer(v, inst.groups, inst.y), (z,), atol=1e-6, eps=1e-7)


def test_torch_threads_are_restored_after_qpth(monkeypatch):
    """qpth runs its small QPs on one torch thread and restores the setting, also
    when it fails."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        inst = make_instance(seed=3, n=50, k=3, a=1, c=1, criterion="ecp", tolerance=0.05, box=True)
        gi, spec = spec_of(inst)
        seen = []
        real_qp = qpth_solver._qp

        def recording(*args, **kwargs):
            seen.append(torch.get_num_threads())
            return real_qp(*args, **kwargs)

        monkeypatch.setattr(qpth_solver, "_qp", recording)
        qpth_solver.solve_qpth(inst.z.clone(), gi, spec)
        assert seen == [1] and torch.get_num_threads() == 2
        monkeypatch.setattr(qpth_solver, "_qp", lambda *args, **kwargs: None)
        with pytest.raises(SolverError):
            qpth_solver.solve_qpth(inst.z.clone(), gi, spec)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
