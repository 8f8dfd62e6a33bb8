"""The layer's interface: shapes, dtypes, devices, groups, and bad input."""

from __future__ import annotations

import pytest
import torch

from fairsk import FairnessLayer
from fairsk.exceptions import InfeasibleProjectionError
from fairsk.metrics import parity_gap

from .conftest import make_instance


@pytest.mark.parametrize("shape", [(50,), (50, 1), (50, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("solver", ["exact", "qpth"])
def test_shape_and_dtype_are_kept(shape, dtype, solver):
    z = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(0)) + 1
    groups = torch.arange(50) % 3
    out = FairnessLayer(tolerance=0.01, solver=solver)(z, groups)
    assert out.shape == z.shape and out.dtype == dtype
    cols = out.reshape(50, -1).double().numpy()
    for j in range(cols.shape[1]):
        assert parity_gap(cols[:, j], groups.numpy()) <= 0.01 + (1e-5 if dtype == torch.float32 else 1e-6)


def test_single_group_passes_through_unchanged():
    z = torch.randn(20, dtype=torch.float64)
    out = FairnessLayer(tolerance=0.0, solver="exact")(z, torch.zeros(20, dtype=torch.long))
    assert torch.equal(out, z)


@pytest.mark.parametrize("solver", ["exact", "qpth"])
def test_absent_group_codes_add_no_constraint(solver):
    inst = make_instance(1, 40, 2, 1, 1, "ecp", 0.02, False)
    layer = FairnessLayer("ecp", 0.02, solver)
    dense = layer(inst.z, inst.groups)
    sparse = layer(inst.z, inst.groups * 7 + 3)  # codes 3 and 10, none of 0..9 in between
    torch.testing.assert_close(dense, sparse, atol=1e-9, rtol=0)


def test_several_attributes_are_constrained_separately():
    inst = make_instance(2, 300, 4, 3, 1, "ecp", 0.01, False)
    out = FairnessLayer("ecp", 0.01, "exact")(inst.z, inst.groups)
    for a in range(3):
        assert parity_gap(out.numpy(), inst.groups[:, a].numpy()) <= 0.01 + 1e-6


def test_empty_batch_returns_empty():
    out = FairnessLayer(solver="exact")(torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.long))
    assert out.shape == (0,)


def test_gradient_reaches_float32_input():
    z = torch.randn(30, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    FairnessLayer(solver="exact")(z, torch.arange(30) % 2).sum().backward()
    assert z.grad is not None and z.grad.dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("solver", ["exact", "qpth"])
def test_cuda(solver):
    inst = make_instance(0, 500, 4, 2, 1, "ecp", 0.01, False)
    cpu = FairnessLayer("ecp", 0.01, solver)(inst.z, inst.groups)
    gpu = FairnessLayer("ecp", 0.01, solver)(inst.z.cuda(), inst.groups.cuda())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-6, rtol=0)


# -- bad input --------------------------------------------------------------------
Z = torch.randn(10, dtype=torch.float64)
G = torch.arange(10) % 2


@pytest.mark.parametrize(
    "kwargs, z, groups, y, match",
    [
        ({}, Z, G[:9], None, "groups must have shape"),
        ({}, Z.clone().index_fill_(0, torch.tensor([3]), float("nan")), G, None, "NaN or infinite"),
        ({}, Z.clone().index_fill_(0, torch.tensor([3]), float("inf")), G, None, "NaN or infinite"),
        ({}, Z, G.double() + 0.5, None, "integer codes"),
        ({}, Z, G - 1, None, "non-negative"),
        ({"criterion": "eer"}, Z, G, None, "needs the targets"),
        ({"criterion": "eer"}, Z, G, torch.zeros(9), "y must have shape"),
        ({}, Z.reshape(2, 5, 1), G, None, "shape"),
        ({}, Z.half(), G, None, "float32 or float64"),
    ],
)
@pytest.mark.parametrize("solver", ["exact", "qpth"])
def test_bad_input_raises_value_error(kwargs, z, groups, y, match, solver):
    with pytest.raises(ValueError, match=match):
        FairnessLayer(solver=solver, **kwargs)(z, groups, y)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tolerance": -0.1}, "tolerance must be"),
        ({"tolerance": float("nan")}, "tolerance must be"),
        ({"criterion": "dp"}, "criterion must be"),
        ({"solver": "scs"}, "solver must be"),
        ({"bounds": (1.0, 0.0)}, "lb < ub"),
        ({"bounds": 3.0}, "pair"),
    ],
)
def test_bad_parameters_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FairnessLayer(**kwargs)


@pytest.mark.parametrize("solver", ["exact", "qpth"])
def test_unreachable_eer_targets_raise_infeasible(solver):
    y = torch.full((10,), 5.0, dtype=torch.float64)
    with pytest.raises(InfeasibleProjectionError):
        FairnessLayer("eer", 0.1, solver, bounds=(0.0, 1.0))(Z, G, y)


@pytest.mark.parametrize("groups", [[0, 0, 1, 1], [[0, 0], [0, 1], [1, 0], [1, 1]]], ids=["one", "several"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_solver_that_returns_an_unfair_answer_is_refused(monkeypatch, groups, dtype):
    """The check after the solve is real: solvers returning their input (registered
    through the solver registry) are caught, whichever path they would take."""
    from fairsk.projection import SOLVERS

    for name in list(SOLVERS):
        monkeypatch.setitem(SOLVERS, name, lambda z, groups, spec: z)
    z = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=dtype)
    with pytest.raises(InfeasibleProjectionError, match="breaks"):
        FairnessLayer(tolerance=0.1, solver="exact")(z, torch.tensor(groups))
