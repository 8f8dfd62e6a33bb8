"""The one-attribute path of the exact solver (closed form in the group means) against
the several-attribute path (the active-set QP over group shifts), through the layer.

Giving the layer the same attribute twice sends the same projection problem down the
general route; both must agree, outputs and gradients, on random instances.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fairsk import FairnessLayer
from fairsk.exceptions import InfeasibleProjectionError

from .conftest import forward_backward, make_instance


@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 300),
    k=st.integers(1, 9),
    c=st.integers(1, 3),
    criterion=st.sampled_from(["ecp", "eer"]),
    tolerance=st.sampled_from([0.0, 1e-3, 0.05, 0.5, 5.0]),
    dtype=st.sampled_from([torch.float64, torch.float32]),
    flat=st.booleans(),
    sparse_codes=st.booleans(),
)
def test_one_attribute_path_equals_the_general_path(seed, n, k, c, criterion, tolerance, dtype, flat, sparse_codes):
    rng = np.random.default_rng(seed)
    codes = rng.choice(k, size=n, p=rng.dirichlet(np.ones(k)))
    if sparse_codes:  # codes with gaps (absent groups) and large values
        codes = codes * 7 + 3
    z = rng.normal(size=(n, c)) + rng.normal(size=codes.max() + 1)[codes][:, None]
    y = torch.tensor(rng.normal(size=n) * 0.5)
    z = torch.tensor(z[:, 0] if flat and c == 1 else z, dtype=dtype)
    groups = torch.tensor(codes if flat else codes[:, None])
    upstream = torch.tensor(rng.normal(size=z.shape), dtype=dtype)
    layer = FairnessLayer(criterion, tolerance, "exact")
    one = forward_backward(layer, z, groups, y, upstream)
    twice = forward_backward(layer, z, torch.tensor(np.stack([codes, codes], 1)), y, upstream)
    atol = 1e-10 if dtype == torch.float64 else 1e-5
    assert one[0].dtype == dtype and one[0].shape == z.shape
    torch.testing.assert_close(one[0], twice[0], atol=atol, rtol=0)
    torch.testing.assert_close(one[1], twice[1], atol=atol, rtol=0)


def test_without_grad_returns_a_plain_tensor():
    z = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        out = FairnessLayer(tolerance=0.1, solver="exact")(z, torch.tensor([0, 0, 1, 1]))
    assert out.grad_fn is None and not out.requires_grad


def test_nan_and_overflow():
    layer = FairnessLayer(tolerance=0.1, solver="exact")
    g = torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match="NaN or infinite"):
        layer(torch.tensor([0.0, float("nan"), 1.0, 1.0], dtype=torch.float64), g)
    with pytest.raises(ValueError, match="NaN or infinite"):
        layer(torch.tensor([0.0, float("inf"), 1.0, 1.0], dtype=torch.float64), g)
    # finite values whose group sums overflow: every solver fails, the layer refuses
    with pytest.raises(InfeasibleProjectionError, match="not finite"), np.errstate(all="ignore"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        layer(torch.tensor([1e308, 1e308, 0.0, 0.0], dtype=torch.float64), g)


def test_the_case_dykstra_could_not_finish_is_solved_exactly():
    """Found by a long fuzz run: three attributes, EER, tolerance 6e-5, where Dykstra's
    algorithm stopped at its sweep limit 2.5e-5 outside the constraints. The shift QP
    solves it exactly, without a warning, and agrees with qpth."""
    from fairsk.metrics import residual_gap

    inst = make_instance(1707, 88, 9, 3, 2, "eer", 6.103515625e-05, False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = FairnessLayer("eer", inst.tolerance, "exact")(inst.z, inst.groups, inst.y)
    target = inst.y.unsqueeze(1).expand(-1, 2).numpy()
    assert residual_gap(target, out.detach().numpy(), inst.groups.numpy()) <= inst.tolerance + 1e-12
    qp = FairnessLayer("eer", inst.tolerance, "qpth")(inst.z, inst.groups, inst.y)
    torch.testing.assert_close(out, qp, atol=1e-6, rtol=0)


def test_columns_with_and_without_an_active_constraint():
    """A 2-column output where only the first column has an active constraint: the
    backward treats each column with its own active set."""
    z = torch.tensor([[0.0, 0.0], [0.0, 0.01], [2.0, 0.0], [2.0, 0.01]], dtype=torch.float64, requires_grad=True)
    g = torch.tensor([0, 0, 1, 1])
    out = FairnessLayer(tolerance=0.1, solver="exact")(z, g)
    out.sum().backward()
    torch.testing.assert_close(z.grad[:, 1], torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(z.grad[:, 0], torch.ones(4, dtype=torch.float64))  # sum direction is not removed
    J = torch.autograd.functional.jacobian(lambda v: FairnessLayer(tolerance=0.1, solver="exact")(v, g), z.detach())
    assert J[:, 0, :, 0].sum(1).tolist() == pytest.approx([1.0] * 4)
