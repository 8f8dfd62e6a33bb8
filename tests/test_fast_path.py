"""The one-attribute fast path (fairsk/solvers/_single.py) equals the general path.

The general path (GroupIndex + torch solver + projector_vjp) is itself checked
against cvxpy and an independent Jacobian in test_layer_properties/test_layer_gradients;
here the fast path must reproduce it, outputs and gradients, on random instances.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fairsk import FairnessLayer
from fairsk.exceptions import InfeasibleProjectionError
from fairsk.solvers import _single

from .conftest import make_instance


def _run(layer, z, groups, y, upstream, general: bool, monkeypatch):
    with monkeypatch.context() as m:
        if general:
            m.setattr(FairnessLayer, "_fast_path_applies", lambda *args: False)
        v = z.clone().requires_grad_(True)
        out = layer(v, groups, y)
        (out * upstream).sum().backward()
    return out.detach(), v.grad


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
def test_fast_path_equals_general_path(seed, n, k, c, criterion, tolerance, dtype, flat, sparse_codes):
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
    with pytest.MonkeyPatch.context() as mp:
        fast = _run(layer, z, groups, y, upstream, False, mp)
        general = _run(layer, z, groups, y, upstream, True, mp)
    atol = 1e-10 if dtype == torch.float64 else 1e-5
    assert fast[0].dtype == dtype and fast[0].shape == z.shape
    torch.testing.assert_close(fast[0], general[0], atol=atol, rtol=0)
    torch.testing.assert_close(fast[1], general[1], atol=atol, rtol=0)


def test_fast_path_is_taken_for_one_attribute_without_a_box(monkeypatch):
    calls = []
    single = FairnessLayer._forward_single
    monkeypatch.setattr(FairnessLayer, "_forward_single", lambda *a: calls.append(1) or single(*a))
    z = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    FairnessLayer(tolerance=0.1, solver="exact")(z, torch.tensor([0, 0, 1, 1]))
    assert calls == [1]
    FairnessLayer(tolerance=0.1, solver="exact", bounds=(0, 3))(z, torch.tensor([0, 0, 1, 1]))
    FairnessLayer(tolerance=0.1, solver="exact")(z, torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]]))
    FairnessLayer(tolerance=0.1, solver="qpth")(z, torch.tensor([0, 0, 1, 1]))
    assert calls == [1]


def test_fast_path_without_grad_returns_a_plain_tensor():
    z = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        out = FairnessLayer(tolerance=0.1, solver="exact")(z, torch.tensor([0, 0, 1, 1]))
    assert out.grad_fn is None and not out.requires_grad


def test_fast_path_nan_and_overflow():
    layer = FairnessLayer(tolerance=0.1, solver="exact")
    g = torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match="NaN or infinite"):
        layer(torch.tensor([0.0, float("nan"), 1.0, 1.0], dtype=torch.float64), g)
    with pytest.raises(ValueError, match="NaN or infinite"):
        layer(torch.tensor([0.0, float("inf"), 1.0, 1.0], dtype=torch.float64), g)
    # finite values whose group sums overflow: handed to the general path, which refuses
    with pytest.raises(InfeasibleProjectionError), np.errstate(all="ignore"):
        layer(torch.tensor([1e308, 1e308, 0.0, 0.0], dtype=torch.float64), g)


def test_interval_start_1d_matches_the_torch_version():
    from fairsk.solvers.exact import _interval_start_torch

    rng = np.random.default_rng(0)
    for _ in range(200):
        k = int(rng.integers(1, 12))
        means, counts, tol = rng.normal(size=k), rng.integers(1, 50, size=k).astype(float), rng.uniform(0, 2)
        expected = _interval_start_torch(torch.tensor(means)[:, None], torch.tensor(counts), tol)
        assert _single.interval_start_1d(means, counts, tol) == pytest.approx(float(expected[0]), abs=1e-12)


@pytest.mark.parametrize("seed", range(8))
def test_numpy_dykstra_equals_the_torch_one(seed):
    """Several attributes without a box run Dykstra on NumPy arrays on the CPU; the
    torch iteration (used on other devices) must give the same projection."""
    from fairsk._groups import encode_groups
    from fairsk.solvers import Spec, exact

    crit = ["ecp", "eer"][seed % 2]
    inst = make_instance(seed, 150, 4, 2 + seed % 2, 1 + seed % 3, crit, [0.0, 0.05, 0.3][seed % 3], False)
    gidx = encode_groups(inst.groups)
    c = inst.z.shape[1]
    targets = gidx.means(inst.y.unsqueeze(1).expand(-1, c).contiguous()) if crit == "eer" else None
    spec = Spec(crit, inst.tolerance, None, None, targets)
    z = inst.z.to(torch.float64)
    via_numpy = exact.project(z, gidx, spec)
    via_torch, converged = exact._dykstra(z, lambda a, x: exact._project_attribute(x, gidx, a, spec),
                                          gidx.n_attributes, lambda v: float(v.abs().max()))
    assert converged
    torch.testing.assert_close(via_numpy, via_torch, atol=1e-9, rtol=0)


@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 200),
    k=st.integers(1, 6),
    c=st.integers(1, 2),
    criterion=st.sampled_from(["ecp", "eer"]),
    tolerance=st.sampled_from([0.0, 0.01, 0.2]),
    ends=st.sampled_from(["both", "lower", "upper"]),
)
def test_numpy_box_projection_equals_the_torch_one(seed, n, k, c, criterion, tolerance, ends):
    """With a box, one attribute's projection runs in NumPy on the CPU (breakpoints per
    group, Python-float bisection); the torch version (other devices) must agree."""
    from fairsk._groups import encode_groups
    from fairsk.exceptions import InfeasibleProjectionError
    from fairsk.solvers import Spec, exact

    rng = np.random.default_rng(seed)
    groups = torch.tensor(rng.choice(k, size=n, p=rng.dirichlet(np.ones(k))))
    z = torch.tensor(rng.normal(size=(n, c)) * 1.5 + rng.normal(size=k)[groups.numpy()][:, None])
    lb, ub = {"both": (-1.0, 1.2), "lower": (-0.5, None), "upper": (None, 0.5)}[ends]
    gidx = encode_groups(groups)
    targets = None
    if criterion == "eer":
        y = torch.tensor(rng.uniform(-0.4, 0.4, size=(n, c)))
        targets = gidx.means(y)
    spec = Spec(criterion, tolerance, lb, ub, targets)
    try:
        via_numpy = exact._project_attribute(z, gidx, 0, spec)
    except InfeasibleProjectionError:
        with pytest.raises(InfeasibleProjectionError):
            exact._project_box_torch(z, gidx.gid[:, 0], gidx.counts, gidx.sizes[0], spec, targets)
        return
    if criterion == "ecp" and gidx.sizes[0] < 2:
        via_torch = spec.clip(z)
    else:
        via_torch = exact._project_box_torch(z, gidx.gid[:, 0], gidx.counts, gidx.sizes[0], spec, targets)
    torch.testing.assert_close(via_numpy, via_torch, atol=1e-9, rtol=0)


def test_stalled_dykstra_falls_back_to_the_qp():
    """Found by the long fuzz run: three attributes, EER, tolerance 6e-5. Dykstra's
    algorithm stops at its sweep limit 2.5e-5 outside the constraints; the layer then
    solves the QP with qpth (over the group shifts), warns, and the answer meets them."""
    from fairsk.metrics import residual_gap

    inst = make_instance(1707, 88, 9, 3, 2, "eer", 6.103515625e-05, False)
    with pytest.warns(RuntimeWarning, match="Dykstra"):
        out = FairnessLayer("eer", inst.tolerance, "exact")(inst.z, inst.groups, inst.y)
    target = inst.y.unsqueeze(1).expand(-1, 2).numpy()
    assert residual_gap(target, out.detach().numpy(), inst.groups.numpy()) <= inst.tolerance + 1e-9
