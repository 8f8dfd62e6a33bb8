"""Gradients of the fairness layer: gradcheck, and the projector structure."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from fairsk import FairnessLayer
from fairsk.exceptions import InfeasibleProjectionError

from .conftest import make_instance

CASES = [
    # (n, k, a, c, criterion, tolerance, box)
    (12, 3, 1, 1, "ecp", 0.05, False),
    (12, 3, 1, 2, "ecp", 0.0, False),
    (15, 3, 2, 1, "ecp", 0.1, False),
    (12, 2, 1, 1, "eer", 0.05, False),
    (14, 3, 2, 1, "eer", 0.0, False),
    (12, 3, 1, 1, "ecp", 0.05, True),
    (16, 3, 2, 1, "eer", 0.05, True),
    (3, 12, 2, 2, "ecp", 0.5, False),  # two attributes splitting a tiny batch alike
    (16, 3, 2, 1, "ecp", 0.05, True),  # several attributes and a box (active set over the box)
    (14, 3, 3, 2, "eer", 0.01, False),  # several attributes, eer (the shift QP)
]


@pytest.mark.parametrize("solver", ["exact", "qpth"])
@pytest.mark.parametrize("case", CASES)
def test_gradcheck(solver, case):
    n, k, a, c, criterion, tol, box = case
    inst = make_instance(7, n, k, a, c, criterion, tol, box)
    layer = FairnessLayer(criterion, tol, solver, inst.bounds)
    z = inst.z.clone().requires_grad_(True)
    # qpth's own gradient is used when it is within 1e-6 of the projection's, else the
    # exact one (with a warning): either way the gradient is held to 1e-6, including
    # the degenerate case (two attributes splitting 3 rows alike: a singular KKT system)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert torch.autograd.gradcheck(lambda v: layer(v, inst.groups, inst.y), (z,), atol=1e-6, eps=1e-7)


def dense_rows(groups: torch.Tensor, n: int) -> dict:
    """Group-mean functionals s_g / n_g as dense rows, per (attribute, code)."""
    rows = {}
    for a in range(groups.shape[1]):
        for g in groups[:, a].unique().tolist():
            mask = (groups[:, a] == g).to(torch.float64)
            rows[(a, g)] = mask / mask.sum()
    return rows


@pytest.mark.parametrize("seed", range(5))
def test_jacobian_is_projector_onto_null_space_of_active_rows(seed):
    """Built independently from dense rows: J = I - A^T (A A^T)^+ A on the active set."""
    n = 40
    inst = make_instance(seed, n, 3, 1, 1, "ecp", 0.05, False)
    layer = FairnessLayer("ecp", 0.05, "exact")
    out = layer(inst.z, inst.groups)
    J = torch.autograd.functional.jacobian(lambda v: layer(v, inst.groups), inst.z).reshape(n, n)
    rows = dense_rows(inst.groups, n)
    means = {key: float(r @ out[:, 0]) for key, r in rows.items()}
    hi, lo = max(means.values()), min(means.values())
    assert hi - lo == pytest.approx(0.05, abs=1e-9), "instance must have an active gap"
    top = [rows[key] for key, m in means.items() if m > hi - 1e-9]
    bottom = [rows[key] for key, m in means.items() if m < lo + 1e-9]
    A = torch.stack([t - b for t in top for b in bottom])
    P = torch.eye(n, dtype=torch.float64) - torch.linalg.pinv(A) @ A
    torch.testing.assert_close(J, P, atol=1e-9, rtol=0)
    # gradient suppression: nothing flows along an active unfairness direction
    torch.testing.assert_close(J @ A.T, torch.zeros_like(A.T), atol=1e-9, rtol=0)
    # and J is an orthogonal projector
    torch.testing.assert_close(J @ J, J, atol=1e-9, rtol=0)
    torch.testing.assert_close(J, J.T, atol=1e-9, rtol=0)


@pytest.mark.parametrize("solver", ["exact", "qpth"])
def test_jacobian_is_identity_when_nothing_is_active(solver):
    inst = make_instance(3, 30, 3, 2, 1, "ecp", 100.0, False)
    layer = FairnessLayer("ecp", 100.0, solver)
    J = torch.autograd.functional.jacobian(lambda v: layer(v, inst.groups), inst.z).reshape(30, 30)
    torch.testing.assert_close(J, torch.eye(30, dtype=torch.float64), atol=1e-7, rtol=0)


def test_box_clipped_coordinates_get_no_gradient():
    inst = make_instance(5, 30, 2, 1, 1, "ecp", 0.05, True)
    layer = FairnessLayer("ecp", 0.05, "exact", inst.bounds)
    z = inst.z.clone().requires_grad_(True)
    out = layer(z, inst.groups)
    out.sum().backward()
    at_bound = (out.detach() <= inst.bounds[0]) | (out.detach() >= inst.bounds[1])
    assert at_bound.any()
    assert torch.all(z.grad[at_bound] == 0)


def dense_projector(out, z, groups, criterion, tol, bounds, y=None, delta=1e-9):
    """The Jacobian expected at a solution, built from dense rows alone: the projector
    onto the null space of the active group-mean rows restricted to the free
    coordinates (zero on coordinates at a bound)."""
    n = out.shape[0]
    free = torch.ones(n, dtype=torch.bool)
    if bounds is not None:
        free = (out > bounds[0] + delta) & (out < bounds[1] - delta)
    rows = []
    for a in range(groups.shape[1]):
        present = groups[:, a].unique().tolist()
        dense = {g: (groups[:, a] == g).to(torch.float64) / (groups[:, a] == g).sum() for g in present}
        means = {g: float(r @ out) for g, r in dense.items()}
        if criterion == "ecp":
            hi, lo = max(means.values()), min(means.values())
            if len(present) < 2 or hi - lo < tol - delta:
                continue
            top = [dense[g] for g in present if means[g] > hi - delta]
            bottom = [dense[g] for g in present if means[g] < lo + delta]
            rows += [t - b for t in top for b in bottom]
        else:
            for g in present:
                r = float(dense[g] @ y)
                if abs(means[g] - r) >= tol - delta:
                    rows.append(dense[g])
    P = torch.diag(free.to(torch.float64))
    if rows:
        A = torch.stack(rows) * free.to(torch.float64)  # rows restricted to the free coordinates
        P = P - torch.linalg.pinv(A) @ A
    return P


def boxed_instance_with_clipped_active_group(seed):
    """Small boxed ECP batches (n 4-23, k 2-5, bounds (0, 1)) where some group has
    every sample above the box: its constraint is active with no free coordinate."""
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(4, 24)), int(rng.integers(2, 6))
    groups = rng.integers(0, k, size=n)
    groups[:k] = np.arange(k)
    z = rng.uniform(-0.5, 1.2, size=n)
    z[groups == 0] = rng.uniform(2.0, 6.0, size=(groups == 0).sum())  # all clipped at 1
    return torch.tensor(z), torch.tensor(groups[:, None]), float(rng.choice([0.05, 0.1, 0.3]))


def test_box_gradient_with_a_fully_clipped_active_group():
    """The reported instance: group 0 sits at the upper bound, its parity constraint is
    active, and group 1's block of the Jacobian is I - 11^T/2 (the projector removing
    group 1's mean), not the identity; central finite differences and gradcheck agree."""
    layer = FairnessLayer("ecp", 0.1, "exact", (0.0, 1.0))
    z = torch.tensor([5.0, 5.0, 0.0, 0.1], dtype=torch.float64)
    g = torch.tensor([0, 0, 1, 1])
    torch.testing.assert_close(layer(z, g), torch.tensor([1.0, 1.0, 0.85, 0.95], dtype=torch.float64))
    J = torch.autograd.functional.jacobian(lambda v: layer(v, g), z)
    expected = torch.zeros(4, 4, dtype=torch.float64)
    expected[2:, 2:] = torch.tensor([[0.5, -0.5], [-0.5, 0.5]])
    torch.testing.assert_close(J, expected, atol=1e-12, rtol=0)
    eps = 1e-6
    fd = torch.stack([(layer(z + eps * e, g) - layer(z - eps * e, g)) / (2 * eps)
                      for e in torch.eye(4, dtype=torch.float64)], 1)
    torch.testing.assert_close(J, fd, atol=1e-8, rtol=0)
    assert torch.autograd.gradcheck(lambda v: layer(v, g), (z.clone().requires_grad_(True),), eps=1e-7, atol=1e-6)


@pytest.mark.parametrize("seed", range(40))
def test_box_jacobian_with_fully_clipped_active_groups(seed):
    """Random boxed batches built to contain a fully clipped group: the Jacobian is the
    dense projector, and matches central finite differences."""
    z, g, tol = boxed_instance_with_clipped_active_group(seed)
    layer = FairnessLayer("ecp", tol, "exact", (0.0, 1.0))
    out = layer(z, g)
    J = torch.autograd.functional.jacobian(lambda v: layer(v, g), z)
    torch.testing.assert_close(J, dense_projector(out, z, g, "ecp", tol, (0.0, 1.0)), atol=1e-9, rtol=0)
    eps = 1e-7
    fd = torch.stack([(layer(z + eps * e, g) - layer(z - eps * e, g)) / (2 * eps)
                      for e in torch.eye(z.shape[0], dtype=torch.float64)], 1)
    torch.testing.assert_close(J, fd, atol=1e-5, rtol=0)


@pytest.mark.parametrize("seed", range(16))
def test_jacobian_is_the_dense_projector_on_every_path(seed):
    """One or several attributes, box or not, ecp or eer: autograd's Jacobian of the
    exact solver equals the projector built from dense rows."""
    crit = ["ecp", "eer"][seed % 2]
    a = 1 + (seed // 2) % 2
    box = seed % 4 >= 2
    inst = make_instance(seed, 30, 3, a, 1, crit, [0.0, 0.05, 0.2][seed % 3], box)
    layer = FairnessLayer(crit, inst.tolerance, "exact", inst.bounds)
    z = inst.z[:, 0]
    out = layer(z, inst.groups, inst.y)
    J = torch.autograd.functional.jacobian(lambda v: layer(v, inst.groups, inst.y), z)
    P = dense_projector(out, z, inst.groups, crit, inst.tolerance, inst.bounds, inst.y)
    torch.testing.assert_close(J, P, atol=1e-8, rtol=0)


def _hard_instance(seed, n, k, a, criterion, box, dtype):
    """An instance on any path, built to be hard for a backward pass: with a box, one
    group of the first attribute pushed entirely beyond the upper bound (fully
    clipped), and a tolerance just below the current gap, so constraints are nearly
    tight."""
    inst = make_instance(seed, n, k, a, 1, criterion, 0.0, box)
    groups = inst.groups.numpy()
    z = inst.z.numpy().copy()
    if box:
        z[groups[:, 0] == groups[0, 0], 0] = inst.bounds[1] + 1.0 + np.abs(z[groups[:, 0] == groups[0, 0], 0])
    # the largest group-mean gap (or residual gap) of the clipped input, times 0.9
    col = z[:, 0] if not box else np.clip(z[:, 0], *inst.bounds)
    gaps = []
    for j in range(a):
        present = np.unique(groups[:, j])
        if criterion == "ecp":
            means = [col[groups[:, j] == g].mean() for g in present]
            gaps.append(max(means) - min(means))
        else:
            y = inst.y.numpy()
            gaps += [abs(col[groups[:, j] == g].mean() - y[groups[:, j] == g].mean()) for g in present]
    inst.tolerance = 0.9 * max(gaps)
    inst.z = torch.tensor(z, dtype=dtype)
    return inst


@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(4, 40),
    k=st.integers(2, 4),
    a=st.integers(1, 3),
    criterion=st.sampled_from(["ecp", "eer"]),
    box=st.booleans(),
    dtype=st.sampled_from([torch.float64, torch.float32]),
)
def test_gradient_matches_finite_differences_on_every_path(seed, n, k, a, criterion, box, dtype):
    """Every exact path (one or several attributes, box or not, ECP or EER, float64 or
    float32) on instances with fully clipped groups and nearly tight constraints: the
    vector-Jacobian product equals central finite differences of the float64 layer.
    Points where the active set changes within the step (a kink, seen as two step
    sizes disagreeing) carry no derivative and are skipped."""
    inst = _hard_instance(seed, n, k, a, criterion, box, dtype)
    layer = FairnessLayer(criterion, inst.tolerance, "exact", inst.bounds)
    w = torch.randn(inst.z.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed % 1000))
    z = inst.z.clone().requires_grad_(True)
    try:
        out = layer(z, inst.groups, inst.y)
    except InfeasibleProjectionError:  # EER with a box may be infeasible; ECP never is
        assume(criterion == "eer" and box)
        return
    (out.double() * w).sum().backward()
    z64 = inst.z.double()

    def fd(eps):
        return ((layer(z64 + eps * w, inst.groups, inst.y) - layer(z64 - eps * w, inst.groups, inst.y)) / (2 * eps)
                * w).sum()

    d1, d2 = float(fd(1e-6)), float(fd(1e-7))
    assume(abs(d1 - d2) < 1e-5 * (1 + abs(d1)))  # no kink within the step
    vjp = float((z.grad.double() * w).sum())
    atol = 1e-6 if dtype == torch.float64 else 1e-4
    assert abs(vjp - d1) <= atol * (1 + abs(d1))


@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 60), k=st.integers(1, 6), box=st.booleans(),
       couples=st.booleans(), stuck=st.booleans())
def test_one_attribute_backward_for_a_few_groups_equals_the_array_formulas(seed, n, k, box, couples, stuck):
    """The backward's per-group values on Python floats (a few groups) against the same
    formulas on arrays (many groups), tight groups without a free output included."""
    from fairsk._groups import encode_groups
    from fairsk.projection import kernels

    rng = np.random.default_rng(seed)
    gi = encode_groups(rng.integers(0, k, n))
    K = gi.n_slots
    g = rng.normal(size=(n, 1))
    tight = rng.random((K, 1)) < 0.6
    free = (rng.random((n, 1)) < 0.7) if box else None
    if box and stuck:  # every output of a tight group held by the box
        free[gi.codes(0) == int(np.flatnonzero(tight[:, 0])[0]) if tight.any() else 0] = False
    few = kernels.projector_vjp(g, tight, free, gi, couples)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(kernels, "_PYTHON_MAX_GROUPS", 0)
        many = kernels.projector_vjp(g, tight, free, gi, couples)
    np.testing.assert_allclose(few, many, atol=1e-12, rtol=0)
