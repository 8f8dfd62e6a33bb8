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

from .conftest import forward_backward


@pytest.fixture
def everywhere(monkeypatch):
    """The layer takes the device path for CPU tensors too."""
    calls = []

    def on(z):
        calls.append(z.shape)
        return True

    monkeypatch.setattr(device, "_on_accelerator", on)
    monkeypatch.setattr(device, "_BOX_MIN_ROWS", 0)
    return calls


def _host(z, g, y, crit, tol, w, bounds=None):
    return forward_backward(FairnessLayer(crit, tol, "exact", bounds), z, g, y, w)


def _host_and_device(z, g, y, crit, tol, w, box, atol):
    """The layer's output through the device path (run on the CPU), checked equal to
    the host solver's (outputs and gradients); ``(out, device answer or None)``, or
    None when the host refuses the problem (then the device path raises the same)."""
    try:
        ref_out, ref_grad = _host(z, g, y, crit, tol, w, box)
    except Exception as err:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(device, "_on_accelerator", lambda t: True)
            with pytest.raises(type(err)):
                _host(z, g, y, crit, tol, w, box)
        return None
    answered = []
    inner = device.project_on_device
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(device, "_on_accelerator", lambda t: True)
        mp.setattr(device, "_BOX_MIN_ROWS", 0)
        mp.setattr(device, "project_on_device", lambda *a: answered.append(inner(*a)) or answered[-1])
        out, grad = _host(z, g, y, crit, tol, w, box)
    assert answered, "the device path was not tried"
    np.testing.assert_allclose(out.numpy(), ref_out.numpy(), atol=atol, rtol=0)
    np.testing.assert_allclose(grad.numpy(), ref_grad.numpy(), atol=atol, rtol=0)
    return out, answered[-1]


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


def test_not_taken_for_qpth_or_strata(everywhere):
    z = torch.randn(20, dtype=torch.float64)
    g = torch.arange(20) % 2
    FairnessLayer("ecp", 0.01, "qpth")(z, g)
    assert not device.applies(z, g, "qpth", "ecp")
    assert device.applies(z, torch.stack([g, g], 1), "exact", "ecp")
    assert device.applies(z, torch.stack([g, g], 1), "exact", "ecp", 0.0, 1.0)
    assert not device.applies(z, g[:, None][:, :0], "exact", "ecp")
    assert not device.applies(z, g, "exact", "equal_opportunity")
    assert not device.applies(z, g.numpy(), "exact", "ecp")
    assert device.applies(z, g, "exact", "eer")


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


BOXES = [(0.0, 1.0), (-0.5, None), (None, 0.8), (-1.0, 1.5)]


@settings(max_examples=80, deadline=None)
@given(n=st.integers(2, 80), c=st.integers(1, 2), k=st.integers(1, 4), crit=st.sampled_from(["ecp", "eer"]),
       tol=st.sampled_from([0.0, 0.01, 0.2]), box=st.sampled_from(BOXES), f32=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_box_equals_host_solver(n, c, k, crit, tol, box, f32, seed):
    """With a box: the active-set iteration on the device answers the host's exact
    projection (or leaves the batch to it), outputs and gradients."""
    gen = torch.Generator().manual_seed(seed)
    dtype = torch.float32 if f32 else torch.float64
    z = (torch.randn(n, c, generator=gen, dtype=torch.float64) * 1.5 + 0.3).to(dtype)
    g = torch.randint(0, k, (n,), generator=gen)
    y = torch.rand(n, c, generator=gen, dtype=torch.float64) * 0.6 + 0.1
    w = torch.randn(n, c, generator=gen, dtype=torch.float64).to(dtype)
    both = _host_and_device(z, g, y, crit, tol, w, box, atol=1e-5 if f32 else 1e-9)
    if both is None:
        return
    o = both[0].double().numpy()
    lo, hi = (-np.inf if box[0] is None else box[0]), (np.inf if box[1] is None else box[1])
    assert o.min() >= lo - 1e-7 and o.max() <= hi + 1e-7
    gaps = [parity_gap(o[:, j], g.numpy()) if crit == "ecp" else residual_gap(y[:, j].numpy(), o[:, j], g.numpy())
            for j in range(c)]
    assert max(gaps) <= tol + (1e-5 if f32 else 1e-6)


def test_box_path_answers_typical_batches(everywhere):
    """Probabilities of a training batch (sigmoid of logits, box [0, 1]): answered on
    the device, equal to the host, gradcheck."""
    gen = torch.Generator().manual_seed(5)
    answered = []
    inner = device.project_on_device
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(device, "project_on_device", lambda *a: answered.append(inner(*a)) or answered[-1])
        for trial in range(20):
            p = torch.sigmoid(torch.randn(128, 1, generator=gen, dtype=torch.float64) * 3 + (trial % 3))
            g = torch.randint(0, 2 + trial % 3, (128,), generator=gen)
            FairnessLayer("ecp", 0.01, "exact", (0.0, 1.0))(p, g)
        assert sum(a is not None for a in answered) == 20
        z = torch.rand(40, 1, generator=gen, dtype=torch.float64, requires_grad=True)
        g = torch.randint(0, 3, (40,), generator=gen)
        layer = FairnessLayer("ecp", 0.02, "exact", (0.1, 0.9))
        assert torch.autograd.gradcheck(lambda v: layer(v, g), (z,))
        assert answered[-1] is not None


def test_box_cases_mostly_answered_on_the_device():
    """Of 200 random boxed cases, the device answers at least 90% (the rest go to the
    host: a group held entirely by the box, or an iteration that does not settle),
    each equal to the host's projection."""
    gen = torch.Generator().manual_seed(1)
    answered, worst = 0, 0.0
    for t in range(200):
        n = int(torch.randint(2, 200, (1,), generator=gen))
        box, crit, tol = BOXES[t % 4], ["ecp", "eer"][t % 2], [0.0, 0.01, 0.2][t % 3]
        z = torch.randn(n, 1, generator=gen, dtype=torch.float64) * 1.5 + 0.3
        g = torch.randint(0, 1 + t % 4, (n,), generator=gen)
        y = torch.rand(n, 1, generator=gen, dtype=torch.float64) * 0.6 + 0.1
        z64 = z.clone()
        got = device.project_on_device(z64, g, y if crit == "eer" else None, crit, tol, *box)
        if got is None:
            continue
        answered += 1
        ref = FairnessLayer(crit, tol, "exact", box)(z, g, y)
        worst = max(worst, float((ref - got).abs().max()))
    assert answered >= 180, answered
    assert worst <= 1e-12, worst


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 80), c=st.integers(1, 2), sizes=st.lists(st.integers(1, 4), min_size=2, max_size=3),
       crit=st.sampled_from(["ecp", "eer"]), tol=st.sampled_from([0.0, 0.01, 0.2]), f32=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_several_attributes_equal_host_solver(n, c, sizes, crit, tol, f32, seed):
    """Several attributes without a box: the shift QP from statistics built on the
    device answers the host's exact projection, outputs and gradients."""
    gen = torch.Generator().manual_seed(seed)
    dtype = torch.float32 if f32 else torch.float64
    z = (torch.randn(n, c, generator=gen, dtype=torch.float64) * 2).to(dtype)
    g = torch.stack([torch.randint(0, s, (n,), generator=gen) * 2 for s in sizes], 1)  # codes with gaps
    y = torch.rand(n, c, generator=gen, dtype=torch.float64)
    w = torch.randn(n, c, generator=gen, dtype=torch.float64).to(dtype)
    both = _host_and_device(z, g, y, crit, tol, w, None, atol=1e-5 if f32 else 1e-9)
    if both is None:
        return
    assert both[1] is not None, "not answered on the device"
    o = both[0].double().numpy()
    for col in range(g.shape[1]):
        gaps = [parity_gap(o[:, j], g[:, col].numpy()) if crit == "ecp"
                else residual_gap(y[:, j].numpy(), o[:, j], g[:, col].numpy()) for j in range(c)]
        assert max(gaps) <= tol + (1e-5 if f32 else 1e-6)


def test_several_attributes_gradcheck(everywhere):
    gen = torch.Generator().manual_seed(7)
    z = torch.randn(40, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    g = torch.stack([torch.randint(0, 3, (40,), generator=gen), torch.randint(0, 2, (40,), generator=gen)], 1)
    answered = []
    inner = device.project_on_device
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(device, "project_on_device", lambda *a: answered.append(inner(*a)) or answered[-1])
        for crit, tol in (("ecp", 0.0), ("ecp", 0.05), ("eer", 0.05)):
            y = torch.rand(40, 2, generator=gen, dtype=torch.float64)
            layer = FairnessLayer(crit, tol, "exact")
            assert torch.autograd.gradcheck(lambda v, layer=layer, y=y: layer(v, g, y), (z,))
    assert answered and all(a is not None for a in answered)


def test_several_attributes_with_a_box_equal_host_solver():
    """Several attributes and a box: the active-set iteration with the shift QP of the
    free outputs answers most random cases on the device, each equal to the host's
    exact projection (outputs, gradients), within the box and the constraints."""
    gen = torch.Generator().manual_seed(11)
    answered, worst = 0, 0.0
    for t in range(120):
        n = int(torch.randint(4, 150, (1,), generator=gen))
        box, crit, tol = BOXES[t % 4], ["ecp", "eer"][t % 2], [0.0, 0.01, 0.2][t % 3]
        z = torch.randn(n, 1, generator=gen, dtype=torch.float64) * 1.5 + 0.3
        g = torch.stack([torch.randint(0, 2 + t % 3, (n,), generator=gen), torch.randint(0, 2, (n,), generator=gen)],
                        1)
        y = torch.rand(n, 1, generator=gen, dtype=torch.float64) * 0.6 + 0.1
        w = torch.randn(n, 1, generator=gen, dtype=torch.float64)
        try:
            ref_out, ref_grad = _host(z, g, y, crit, tol, w, box)
        except Exception:
            continue
        got = device.project_on_device(z.clone(), g, y if crit == "eer" else None, crit, tol, *box)
        if got is None:
            continue
        answered += 1
        v = z.clone().requires_grad_(True)
        out = device.project_on_device(v, g, y if crit == "eer" else None, crit, tol, *box)
        (out * w).sum().backward()
        worst = max(worst, float((out.detach() - ref_out).abs().max()), float((v.grad - ref_grad).abs().max()))
        lo, hi = (-np.inf if box[0] is None else box[0]), (np.inf if box[1] is None else box[1])
        o = out.detach().numpy()[:, 0]
        assert o.min() >= lo - 1e-9 and o.max() <= hi + 1e-9
        for a in range(2):
            gap = parity_gap(o, g[:, a].numpy()) if crit == "ecp" else residual_gap(y[:, 0].numpy(), o,
                                                                                  g[:, a].numpy())
            assert gap <= tol + 1e-6
    assert answered >= 90, answered
    assert worst <= 1e-9, worst


def test_several_attributes_with_a_box_gradcheck():
    gen = torch.Generator().manual_seed(13)
    z = torch.rand(40, 1, generator=gen, dtype=torch.float64, requires_grad=True)
    g = torch.stack([torch.randint(0, 3, (40,), generator=gen), torch.randint(0, 2, (40,), generator=gen)], 1)
    assert device.project_on_device(z.detach(), g, None, "ecp", 0.02, 0.1, 0.9) is not None
    assert torch.autograd.gradcheck(lambda v: device.project_on_device(v, g, None, "ecp", 0.02, 0.1, 0.9), (z,))


def test_small_boxed_calls_go_to_the_host(monkeypatch):
    """With a box, calls under ``_BOX_MIN_ROWS`` rows take the host path (measured
    faster there); larger ones and calls without a box stay on the device."""
    monkeypatch.setattr(device, "_on_accelerator", lambda t: True)
    g = torch.zeros(1024, dtype=torch.int64)
    small, large = torch.zeros(1024, 1), torch.zeros(device._BOX_MIN_ROWS, 1)
    assert not device.applies(small, g, "exact", "ecp", 0.0, 1.0)
    assert device.applies(small, g, "exact", "ecp")
    assert device.applies(large, torch.zeros(device._BOX_MIN_ROWS, dtype=torch.int64), "exact", "ecp", 0.0, 1.0)


def test_only_cuda_takes_the_device_path():
    """The path computes in float64 on the device: CUDA has it, MPS does not, so only
    CUDA tensors take it (others go to the host path)."""
    assert not device._on_accelerator(torch.zeros(1))
    assert not device._on_accelerator(torch.zeros(1, device="meta"))


def test_several_attributes_an_output_leaving_one_bound_for_the_other():
    """Two rows, tolerance 0, one output exactly at a bound and the other beyond the
    other bound: the device path's answer (when it gives one) and the layer's put both
    rows at clip(mean(z)). (A wrong settle on the device could only cost a fallback: its
    answers are certified before they are returned.)"""
    z = torch.tensor([[-1.028689036909565], [1.0]], dtype=torch.float64)
    g = torch.tensor([[0, 0], [1, 0]])
    got = device.project_on_device(z.clone(), g, None, "ecp", 0.0, 0.0, 1.0)
    if got is not None:
        np.testing.assert_allclose(got.numpy()[:, 0], [0.0, 0.0], atol=1e-9)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(device, "_on_accelerator", lambda t: True)
        mp.setattr(device, "_BOX_MIN_ROWS", 0)
        out = FairnessLayer("ecp", 0.0, "exact", (0.0, 1.0))(z, g)
    np.testing.assert_allclose(out.numpy()[:, 0], [0.0, 0.0], atol=1e-9)
