"""The one-column route of the layer (fairsk.projection.column): the usual training
batch (one output column, one attribute of a few groups, the exact solver, on the
CPU) is projected and certified with fewer array calls than the general route. It
must give what the general route gives, bit for bit, forward and backward; it must
refuse (hand over to the general route) whatever it does not certify; and it must
actually be taken on the batches it is for."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fairsk.layer as layer_module
import fairsk.projection.column as column
from fairsk import FairnessLayer
from fairsk.projection import get_criterion

from .conftest import forward_backward


def _general(monkeypatch_context):
    monkeypatch_context.setattr(layer_module, "project_column", lambda *args: None)


def _batch(seed, n, k, dtype, box, saturate, gaps, one_dim):
    rng = np.random.default_rng(seed)
    codes = rng.choice(k, size=n, p=rng.dirichlet(np.ones(k))) * (2 if gaps else 1)
    z = rng.normal(size=(n, 1)) * rng.choice([0.1, 1.0, 5.0]) + rng.normal(scale=1.0, size=k)[codes // (2 if gaps
                                                                                                       else 1)][:, None]
    if box == "proba":
        z = 1 / (1 + np.exp(-3 * z))
        if saturate:  # probabilities at exactly 0 and 1 (float32 sigmoids saturate)
            z[: n // 4] = 1.0
            z[n // 4: n // 3] = 0.0
    bounds = {"none": None, "proba": (0.0, 1.0), "lower": (-0.5, None), "upper": (None, 0.3),
              "narrow": (-0.4, 0.6)}[box]
    zt = torch.tensor(z, dtype=dtype)
    return (zt[:, 0] if one_dim else zt), torch.tensor(codes).reshape(n, 1) if not one_dim else torch.tensor(codes), \
        bounds


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 200),
    k=st.integers(1, 6),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    box=st.sampled_from(["none", "proba", "lower", "upper", "narrow"]),
    tolerance=st.sampled_from([0.0, 1e-3, 0.01, 0.2]),
    saturate=st.booleans(),
    gaps=st.booleans(),
    one_dim=st.booleans(),
)
def test_the_column_route_equals_the_general_route(seed, n, k, dtype, box, tolerance, saturate, gaps, one_dim):
    z, groups, bounds = _batch(seed, n, k, dtype, box, saturate, gaps, one_dim)
    layer = FairnessLayer("ecp", tolerance, "exact", bounds)
    upstream = torch.tensor(np.random.default_rng(seed + 1).normal(size=z.shape), dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        route = forward_backward(layer, z, groups, None, upstream)
        with pytest.MonkeyPatch.context() as m:
            _general(m)
            general = forward_backward(layer, z, groups, None, upstream)
    assert route[0].dtype == dtype and route[0].shape == z.shape and route[1].dtype == dtype
    torch.testing.assert_close(route[0], general[0], atol=0, rtol=0)
    torch.testing.assert_close(route[1], general[1], atol=0, rtol=0)


@pytest.mark.parametrize("bounds", [None, (0.0, 1.0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_route_answers_the_usual_training_batch(monkeypatch, bounds, dtype):
    """128 outputs of two groups far from parity (probabilities for the box): the route
    answers itself, with a certified output (checked here in NumPy)."""
    answered = []
    real = column.project_column

    def spy(*args):
        out = real(*args)
        answered.append(out is not None)
        return out

    monkeypatch.setattr(layer_module, "project_column", spy)
    rng = np.random.default_rng(0)
    groups = torch.tensor(rng.integers(0, 2, 128)).reshape(-1, 1)
    z = torch.tensor(rng.normal(size=(128, 1)) + 0.8 * groups.numpy(), dtype=dtype)
    if bounds:
        z = torch.sigmoid(z)
    out = FairnessLayer("ecp", 0.01, "exact", bounds)(z.requires_grad_(True), groups)
    assert answered == [True]
    y, g = out.detach().double().numpy()[:, 0], groups.numpy()[:, 0]
    assert abs(y[g == 0].mean() - y[g == 1].mean()) <= 0.01 + 1e-6
    assert abs(z.detach().numpy()[g == 0].mean() - z.detach().numpy()[g == 1].mean()) > 0.1  # it had work to do
    if bounds:
        assert y.min() >= 0.0 and y.max() <= 1.0


def test_the_route_certifies_its_answer(monkeypatch):
    """An unfair answer of the route's solve is refused by its certificate (the route
    hands the batch to the general route, whose answer is fair)."""
    real = column._unboxed

    def unfair(col, codes, counts, criterion, tol, scale):
        out, tight, free, extremes, bound = real(col, codes, counts, criterion, tol, scale)
        out = out.copy()
        out[codes == 0] += 1.0
        return out, tight, free, extremes, bound + 1.0

    monkeypatch.setattr(column, "_unboxed", unfair)
    z = torch.tensor([[0.0], [1.0], [2.0], [3.0]], dtype=torch.float64)
    groups = torch.tensor([0, 0, 1, 1])
    crit = get_criterion("ecp")
    assert column.project_column(z, groups, crit, 0.1, None, None) is None
    out = FairnessLayer("ecp", 0.1, "exact")(z, groups)
    assert abs(float(out[:2].mean() - out[2:].mean())) <= 0.1 + 1e-9


@pytest.mark.parametrize("case", ["nan", "inf", "negative", "large"])
def test_the_route_hands_bad_input_to_the_general_route(case):
    """Values or codes the route does not take: None from the route, and the layer's
    usual error (or answer) from the general route."""
    z = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    groups = torch.tensor([0, 0, 1, 1])
    if case == "nan":
        z[1, 0] = float("nan")
    elif case == "inf":
        z[1, 0] = float("inf")
    elif case == "negative":
        groups = torch.tensor([0, -1, 1, 1])
    else:
        groups = torch.tensor([0, 0, 10**12, 10**12])
    assert column.project_column(z, groups, get_criterion("ecp"), 0.1, None, None) is None
    if case == "large":  # the general route recodes sparse codes
        out = FairnessLayer("ecp", 0.1, "exact")(z, groups)
        assert abs(float(out[:2].mean() - out[2:].mean())) <= 0.1 + 1e-5
        return
    match = "NaN or infinite" if case in ("nan", "inf") else "non-negative"
    with pytest.raises(ValueError, match=match):
        FairnessLayer("ecp", 0.1, "exact")(z, groups)


@pytest.mark.parametrize("bounds", [None, (0.0, 1.0)])
def test_the_route_backward_matches_finite_differences(bounds):
    rng = np.random.default_rng(3)
    groups = torch.tensor(rng.integers(0, 3, 40))
    z = torch.tensor(rng.normal(size=(40, 1)) + 0.7 * groups.numpy()[:, None], dtype=torch.float64)
    if bounds:
        z = torch.sigmoid(z)
    layer = FairnessLayer("ecp", 0.05, "exact", bounds)
    assert column.project_column(z, groups, get_criterion("ecp"), 0.05, *(bounds or (None, None))) is not None
    torch.autograd.gradcheck(lambda v: layer(v, groups), (z.clone().requires_grad_(True),), eps=1e-7, atol=1e-6)


def _plain_settle(col, codes, counts, crit, tol, lb, ub, steps):
    """The box's active-set iteration written plainly (masks at every step, the full
    settle test): the reference for the shortcuts of ``settle_column``."""
    from fairsk.projection.kernels import active_tolerance

    k, n = counts.shape[0], counts.tolist()
    lower, upper = col <= lb, col >= ub
    delta = None
    for _ in range(steps):
        if delta is None and not (lower.any() or upper.any()):
            held, n_free = col, n
        else:
            held = np.where(lower, lb, np.where(upper, ub, col))
            n_free = np.bincount(codes, weights=~(lower | upper), minlength=k).tolist()
        a = (np.bincount(codes, weights=held, minlength=k) / counts).tolist()
        if delta is None:
            if not all(np.isfinite(a)):
                return None
            delta = active_tolerance(max(map(abs, a)) + tol)
        if not all(n_free):
            return None
        u, tight = crit.project_values(a, [ng * ng / f for ng, f in zip(n, n_free)], tol, None, delta)
        shift = np.array([ng / f * (ag - ug) for ng, f, ag, ug in zip(n, n_free, a, u)])
        shifted = col - shift.take(codes)
        new_lower, new_upper = shifted <= lb, shifted >= ub
        moved = (new_lower != lower) | (new_upper != upper)
        if not moved.any() or not (moved & (np.minimum(np.abs(shifted - lb), np.abs(shifted - ub)) > delta)).any():
            return shifted, list(tight), delta
        lower, upper = new_lower, new_upper
    return None


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 150), k=st.integers(1, 5),
       tolerance=st.sampled_from([0.0, 1e-3, 0.05, 0.3]), saturate=st.booleans(),
       bounds=st.sampled_from([(0.0, 1.0), (-0.3, 0.4), (-np.inf, 0.5), (0.2, np.inf)]),
       steps=st.integers(1, 8))
def test_the_box_iteration_equals_the_plain_iteration(seed, n, k, tolerance, saturate, bounds, steps):
    from fairsk.projection.exact import settle_column

    rng = np.random.default_rng(seed)
    codes = rng.integers(0, k, n)
    codes = (np.cumsum(np.bincount(codes, minlength=k) > 0) - 1)[codes]  # every group present
    counts = np.bincount(codes).astype(np.float64)
    col = 1 / (1 + np.exp(-(rng.normal(size=n) * 2 + rng.normal(size=k)[codes] * 2)))
    if saturate:
        col[rng.random(n) < 0.2] = 1.0
    crit = get_criterion("ecp")
    ours = settle_column(col, codes, counts, crit, tolerance, *bounds, None, steps)
    ref = _plain_settle(col, codes, counts, crit, tolerance, *bounds, steps)
    assert (ours is None) == (ref is None)
    if ours is not None:
        np.testing.assert_array_equal(ours[0], ref[0])
        assert list(ours[1]) == ref[1] and ours[2] == ref[2]
        assert (ours[3], ours[4]) == (float(ours[0].min()), float(ours[0].max()))


@pytest.mark.parametrize("bounds", [None, (-10.0, 10.0)])
def test_output_never_aliases_the_input(bounds):
    """A fair batch inside its box moves nothing: the output is still a new tensor (an
    in-place change of it leaves ``z`` alone)."""
    from fairsk import FairnessLayer

    z = torch.tensor([0.1, 0.2, 0.15, 0.12], dtype=torch.float64)
    groups = torch.tensor([0, 0, 1, 1])
    before = z.clone()
    out = FairnessLayer("ecp", 0.5, "exact", bounds)(z, groups)
    torch.testing.assert_close(out, before)  # nothing moved
    out.add_(1.0)
    torch.testing.assert_close(z, before)


def test_large_batches_take_the_general_route(monkeypatch):
    """Above MAX_ROWS the route declines at once (the general route reads the batch),
    and the layer's answer is still fair."""
    from fairsk import FairnessLayer

    monkeypatch.setattr(column, "MAX_ROWS", 8)
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(9, 1, dtype=torch.float64, generator=gen)
    groups = torch.tensor([0, 1] * 4 + [0])
    assert column.project_column(z, groups, get_criterion("ecp"), 0.05, None, None) is None
    assert column.project_column(z[:8], groups[:8], get_criterion("ecp"), 0.05, None, None) is not None
    out = FairnessLayer("ecp", 0.05, "exact")(z, groups).numpy()[:, 0]
    g = groups.numpy()
    assert abs(out[g == 0].mean() - out[g == 1].mean()) <= 0.05 + 1e-9
