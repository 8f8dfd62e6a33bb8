"""Gradients of the fairness layer: gradcheck, and the projector structure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fairsk import FairnessLayer

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
    (16, 3, 2, 1, "ecp", 0.05, True),  # several attributes and a box (Dykstra)
    (14, 3, 3, 2, "eer", 0.01, False),  # several attributes, eer (the shift QP)
]


@pytest.mark.parametrize("solver", ["exact", "qpth"])
@pytest.mark.parametrize("case", CASES)
def test_gradcheck(solver, case):
    n, k, a, c, criterion, tol, box = case
    if solver == "qpth" and n < 5:
        pytest.skip("degenerate: identical rows make qpth's KKT derivative singular")
    inst = make_instance(7, n, k, a, c, criterion, tol, box)
    layer = FairnessLayer(criterion, tol, solver, inst.bounds)
    z = inst.z.clone().requires_grad_(True)
    atol = 1e-5 if solver == "qpth" and box else 1e-6
    assert torch.autograd.gradcheck(lambda v: layer(v, inst.groups, inst.y), (z,), atol=atol, eps=1e-7)


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
