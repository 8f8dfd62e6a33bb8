"""How the qpth solver shapes its QP: the rows it builds, the scale it solves at, and
the iterations an equality-only QP takes. Each shape is checked from outside against
the exact projection (values to 1e-9, gradients to 1e-6, gradcheck)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from qpth.solvers.pdipm import batch as pdipm

from fairsk import FairnessLayer
from fairsk._groups import encode_groups
from fairsk.projection import Spec, exact, qpth_solver

from .conftest import make_instance


def spec_of(inst, tolerance=None) -> tuple:
    gi = encode_groups(inst.groups)
    tol = inst.tolerance if tolerance is None else tolerance
    return gi, Spec(inst.criterion, tol, *(inst.bounds or (None, None)))


def scale_of(a: np.ndarray) -> float:
    return max(1.0, float(np.abs(a).max())) if a.size else 1.0


def exact_vjp(z: torch.Tensor, gi, spec, w: torch.Tensor) -> torch.Tensor:
    v = z.clone().requires_grad_(True)
    (exact.solve_exact(v, gi, spec) * w).sum().backward()
    return v.grad


def qpth_vjp(z: torch.Tensor, gi, spec, w: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    v = z.clone().requires_grad_(True)
    out = qpth_solver.solve_qpth(v, gi, spec)
    (out * w).sum().backward()
    return out.detach().numpy(), v.grad


@pytest.fixture
def factorisations(monkeypatch):
    """The number of KKT factorisations qpth makes (one before its first iteration,
    one per iteration)."""
    count = []
    real = pdipm.factor_kkt

    def counting(*args, **kwargs):
        count.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(pdipm, "factor_kkt", counting)
    return count


equalities = st.builds(
    make_instance,
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(2, 200),
    k=st.integers(2, 5),
    a=st.integers(1, 3),
    c=st.integers(1, 2),
    criterion=st.just("ecp"),
    tolerance=st.just(0.0),
    box=st.booleans(),
)


@given(equalities)
def test_an_equality_only_qp_is_one_kkt_solve(inst):
    """Tolerance 0 (equal group means): qpth's QP has equality rows only and its
    starting point (its first KKT solve) is the answer, so it stops there: the exact
    projection to 1e-9 and its gradient to 1e-6, from two factorisations per column
    batch at most."""
    count = []
    real = pdipm.factor_kkt

    def counting(*args, **kwargs):
        count.append(1)
        return real(*args, **kwargs)

    pdipm.factor_kkt = counting
    calls = []
    real_forward = pdipm.forward

    def forward(*args, **kwargs):
        calls.append(1)
        return real_forward(*args, **kwargs)

    pdipm.forward = forward
    try:
        gi, spec = spec_of(inst)
        w = torch.tensor(np.random.default_rng(0).normal(size=tuple(inst.z.shape)))
        out, grad = qpth_vjp(inst.z, gi, spec, w)
    finally:
        pdipm.factor_kkt, pdipm.forward = real, real_forward
    ref = exact.project(inst.z.numpy(), gi, spec).out
    np.testing.assert_allclose(out, ref, atol=1e-9 * scale_of(ref), rtol=0)
    ref_grad = exact_vjp(inst.z, gi, spec, w)
    gap = float((grad - ref_grad).abs().max())
    assert gap <= 1e-6 * max(1.0, float(ref_grad.abs().max()))
    # forward: 2 per QP (before the iteration, in it); backward: 1 per QP
    assert len(count) <= 3 * len(calls)


def test_an_equality_only_qp_passes_gradcheck():
    inst = make_instance(seed=4, n=30, k=3, a=2, c=2, criterion="ecp", tolerance=0.0, box=False)
    layer = FairnessLayer("ecp", 0.0, "qpth")
    z = inst.z.clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # qpth's own answer and gradient
        assert torch.autograd.gradcheck(lambda v: layer(v, inst.groups), (z,), atol=1e-6, eps=1e-7)


def test_the_tolerance_zero_layer_no_longer_iterates(factorisations):
    """The default FairnessLayer (tolerance 0) on a batch of 128: qpth stops after its
    starting point (the interior-point iterations only served a dummy row)."""
    gen = torch.Generator().manual_seed(0)
    z, g = torch.randn(128, 1, generator=gen, dtype=torch.float64), torch.randint(0, 2, (128,), generator=gen)
    out = FairnessLayer("ecp", 0.0, "qpth")(z, g)
    means = [float(out[g == v].mean()) for v in (0, 1)]
    assert abs(means[0] - means[1]) <= 1e-12
    assert len(factorisations) == 2


@pytest.mark.parametrize("k, variables", [(2, 2), (3, 3), (4, 5), (6, 7)])
def test_pairwise_rows_below_four_groups(monkeypatch, k, variables):
    """Below 4 groups parity's pairwise rows (k (k - 1) of them, no more than the
    interval rows' 2k) are used: k variables and no auxiliary one; from 4 groups the
    interval rows with their auxiliary variable. Both are the exact projection."""
    sizes = []
    real_qp = qpth_solver._qp

    def recording(Q, *args, **kwargs):
        sizes.append(Q.shape[-1])
        return real_qp(Q, *args, **kwargs)

    monkeypatch.setattr(qpth_solver, "_qp", recording)
    inst = make_instance(seed=k, n=120, k=k, a=1, c=1, criterion="ecp", tolerance=0.05, box=False)
    gi, spec = spec_of(inst)
    out = qpth_solver.solve_qpth(inst.z.clone(), gi, spec).numpy()
    assert sizes == [variables]
    ref = exact.project(inst.z.numpy(), gi, spec).out
    np.testing.assert_allclose(out, ref, atol=1e-9 * scale_of(ref), rtol=0)


scaled = st.builds(
    make_instance,
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(8, 200),
    k=st.integers(2, 5),
    a=st.integers(1, 2),
    c=st.integers(1, 2),
    criterion=st.just("ecp"),
    tolerance=st.floats(0.01, 0.5),
    box=st.just(False),
)


@given(scaled, st.sampled_from([1e-3, 1.0, 1e3]))
def test_every_scale_is_solved_alike(inst, a):
    """Each column is solved at one fixed scale (the shift QP is homogeneous): outputs and
    tolerance scaled by ``a`` give ``a`` times the answer, to 1e-9, and qpth's gradient
    (the same for every scale) is the exact projection's to 1e-6."""
    gi, spec = spec_of(inst)
    gi_a, spec_a = spec_of(inst, a * inst.tolerance)
    w = torch.tensor(np.random.default_rng(1).normal(size=tuple(inst.z.shape)))
    out, grad = qpth_vjp(inst.z, gi, spec, w)
    out_a, grad_a = qpth_vjp(a * inst.z, gi_a, spec_a, w)
    np.testing.assert_allclose(out_a, a * out, atol=1e-9 * scale_of(a * out), rtol=0)
    ref = exact_vjp(a * inst.z, gi_a, spec_a, w)
    assert float((grad_a - ref).abs().max()) <= 1e-6 * max(1.0, float(ref.abs().max()))
