"""Gradients of the fairness layer: gradcheck, and the projector structure."""

from __future__ import annotations

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


@pytest.mark.parametrize("seed", range(12))
def test_closed_form_backward_matches_the_general_one(seed):
    """One attribute uses a closed form; it must equal the pseudo-inverse route."""
    from fairsk._groups import encode_groups
    from fairsk.solvers import Spec
    from fairsk.solvers._problem import _general_correction, _single_attribute_correction, tight_slots

    crit = ["ecp", "eer"][seed % 2]
    inst = make_instance(seed, 80, 4, 1, 2, crit, [0.0, 0.05][seed % 3 == 0], seed % 4 < 2)
    layer = FairnessLayer(crit, inst.tolerance, "exact", inst.bounds)
    y = layer(inst.z, inst.groups, inst.y)
    gidx = encode_groups(inst.groups)
    targets = gidx.means(inst.y.unsqueeze(1).expand(-1, 2).contiguous()) if crit == "eer" else None
    spec = Spec(crit, inst.tolerance, *(inst.bounds or (None, None)), targets)
    lb, ub = inst.bounds if inst.bounds else (-float("inf"), float("inf"))
    free = ((y > lb + 1e-9) & (y < ub - 1e-9)).double()
    g = torch.randn(y.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * free
    tight = tight_slots(y, gidx, spec, 1e-9)
    assert tight.any()
    torch.testing.assert_close(_single_attribute_correction(g, free, tight, gidx, spec) * free,
                               _general_correction(g, free, tight, gidx, spec) * free, atol=1e-10, rtol=0)
