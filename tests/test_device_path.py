"""The device path of the exact layer (fairsk.projection.device), run here on the CPU.

On an accelerator the layer keeps one-attribute, no-box batches on the device; the
same code runs on CPU tensors, so it is checked against the host solver here: equal
outputs and gradients, constraints recomputed in NumPy, gradcheck, and the fallback
to the host path's errors."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fairsk import FairnessLayer
from fairsk.metrics import parity_gap, residual_gap
from fairsk.projection import device


@pytest.fixture
def everywhere(monkeypatch):
    """The layer takes the device path for CPU tensors too."""
    calls = []

    def on(z):
        calls.append(z.shape)
        return True

    monkeypatch.setattr(device, "_on_accelerator", on)
    return calls


def _host(z, g, y, crit, tol, w):
    v = z.detach().clone().requires_grad_(True)
    out = FairnessLayer(crit, tol, "exact")(v, g, y)
    (out * w).sum().backward()
    return out.detach(), v.grad


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 60), c=st.integers(1, 3), k=st.integers(1, 5), crit=st.sampled_from(["ecp", "eer"]),
       tol=st.sampled_from([0.0, 0.01, 0.3]), f32=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_equals_host_solver(n, c, k, crit, tol, f32, seed):
    gen = torch.Generator().manual_seed(seed)
    dtype = torch.float32 if f32 else torch.float64
    z = (torch.randn(n, c, generator=gen, dtype=torch.float64) * 2).to(dtype)
    g = torch.randint(0, k, (n,), generator=gen) * 3  # codes with gaps, as unseen-free batches have
    y = torch.rand(n, c, generator=gen, dtype=torch.float64)
    w = torch.randn(n, c, generator=gen, dtype=torch.float64).to(dtype)
    ref_out, ref_grad = _host(z, g, y, crit, tol, w)
    with pytest.MonkeyPatch.context() as mp:
        taken = []
        mp.setattr(device, "_on_accelerator", lambda t: taken.append(1) or True)
        out, grad = _host(z, g, y, crit, tol, w)
    assert taken, "the device path was not taken"
    atol = 1e-6 if f32 else 1e-12
    np.testing.assert_allclose(out.numpy(), ref_out.numpy(), atol=atol, rtol=0)
    np.testing.assert_allclose(grad.numpy(), ref_grad.numpy(), atol=atol, rtol=0)
    o = out.double().numpy()
    gaps = [parity_gap(o[:, j], g.numpy()) if crit == "ecp" else residual_gap(y[:, j].numpy(), o[:, j], g.numpy())
            for j in range(c)]
    assert max(gaps) <= tol + (1e-5 if f32 else 1e-6)


def test_gradcheck(everywhere):
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(30, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    g = torch.randint(0, 3, (30,), generator=gen)
    for crit, tol in (("ecp", 0.0), ("ecp", 0.05), ("eer", 0.05)):
        y = torch.rand(30, 2, generator=gen, dtype=torch.float64)
        layer = FairnessLayer(crit, tol, "exact")
        assert torch.autograd.gradcheck(lambda v, layer=layer, y=y: layer(v, g, y), (z,))
    assert everywhere


def test_not_taken_for_box_attributes_or_qpth(everywhere):
    z = torch.randn(20, dtype=torch.float64)
    g = torch.arange(20) % 2
    FairnessLayer("ecp", 0.01, "exact", bounds=(-1.0, 1.0))(z, g)
    FairnessLayer("ecp", 0.01, "exact")(z, torch.stack([g, g], 1))
    FairnessLayer("ecp", 0.01, "qpth")(z, g)
    assert not device.applies(z, g, "qpth", None, None)
    assert not device.applies(z, g, "exact", -1.0, None)
    assert not device.applies(z, torch.stack([g, g], 1), "exact", None, None)


def test_bad_codes_get_the_host_errors(everywhere):
    z = torch.randn(6, dtype=torch.float64)
    with pytest.raises(ValueError, match="non-negative"):
        FairnessLayer("ecp", 0.01, "exact")(z, torch.tensor([0, 1, -1, 0, 1, 0]))
    with pytest.raises(ValueError, match="integer codes"):
        FairnessLayer("ecp", 0.01, "exact")(z, torch.zeros(6))
    with pytest.raises(ValueError, match="to match z"):
        FairnessLayer("ecp", 0.01, "exact")(z, torch.zeros(5, dtype=torch.int64))
    with pytest.raises(ValueError, match="needs the targets"):
        FairnessLayer("eer", 0.01, "exact")(z, torch.zeros(6, dtype=torch.int64))


def test_empty_batch(everywhere):
    out = FairnessLayer("ecp", 0.01, "exact")(torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.int64))
    assert out.shape == (0,)


def test_nan_and_sparse_codes(everywhere):
    layer = FairnessLayer("ecp", 0.0, "exact")
    with pytest.raises(ValueError, match="NaN or infinite"):
        layer(torch.tensor([0.0, float("nan"), 1.0], dtype=torch.float64), torch.tensor([0, 1, 1]))
    # codes far above the batch size: renumbered on the device, same answer as the host
    z = torch.randn(40, dtype=torch.float64)
    g = torch.tensor([0, 10**7, 5 * 10**6, 10**7] * 10)
    out = layer(z, g)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(device, "_on_accelerator", lambda t: False)
        ref = layer(z, g)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=1e-12, rtol=0)
    assert parity_gap(out.numpy(), g.numpy()) <= 1e-9
