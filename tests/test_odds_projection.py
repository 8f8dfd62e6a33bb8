"""The training projection of equal opportunity / equalized odds (fairsk.odds)."""

import cvxpy as cp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fairsk.odds import ErrorRateLayer, project_error_rates

CRITERIA = ["equal_opportunity", "equalized_odds"]


def _instance(seed, n, k, a, c=None, p_pos=0.5):
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, k, (n, a))
    if c is None:
        y = (rng.random(n) < p_pos).astype(int)
        # group-dependent scores so that the constraints bind
        p = np.clip(rng.random(n) * 0.6 + 0.3 * (groups[:, 0] % 2) + 0.1 * y, 0, 1)
    else:
        y = rng.integers(0, c, n)
        p = rng.dirichlet(np.ones(c), n)
    return p, groups, y


def _strata(y, c, criterion):
    """(column, mask) pairs the criterion constrains, recomputed independently."""
    out = []
    for k in ([1] if c is None else range(c)):
        col = 0 if c is None else k
        out.append((col, y == k))
        if criterion == "equalized_odds":
            out.append((col, y != k))
    return out


def _worst_gap(out, groups, y, c, criterion):
    out2 = out[:, None] if out.ndim == 1 else out
    worst = 0.0
    for col, mask in _strata(y, c, criterion):
        for a in range(groups.shape[1]):
            means = [out2[mask & (groups[:, a] == g), col].mean() for g in np.unique(groups[mask, a])]
            if means:
                worst = max(worst, max(means) - min(means))
    return worst


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(1, 60), k=st.integers(1, 4), a=st.integers(1, 2),
       c=st.sampled_from([None, 3]), tol=st.sampled_from([0.0, 0.01, 0.1]), criterion=st.sampled_from(CRITERIA))
def test_feasible_and_boxed_recomputed_in_numpy(seed, n, k, a, c, tol, criterion):
    p, groups, y = _instance(seed, n, k, a, c)
    out = project_error_rates(p, groups, y, criterion=criterion, tolerance=tol)
    assert out.shape == p.shape
    assert out.min() >= -1e-12 and out.max() <= 1 + 1e-12
    assert _worst_gap(out, groups, y, c, criterion) <= tol + 1e-6
    # rows in no constrained stratum are untouched (the negatives, under equal opportunity)
    if criterion == "equal_opportunity" and c is None:
        np.testing.assert_array_equal(out[y == 0], p[y == 0])


def _cvxpy_projection(p, groups, y, c, criterion, tol):
    p2 = p[:, None] if p.ndim == 1 else p
    x = cp.Variable(p2.shape)
    cons = [x >= 0, x <= 1]
    constrained = np.zeros(p2.shape, bool)
    for col, mask in _strata(y, c, criterion):
        constrained[mask, col] = True
        for a in range(groups.shape[1]):
            present = np.unique(groups[mask, a])
            means = [cp.sum(x[np.flatnonzero(mask & (groups[:, a] == g)), col]) / (mask & (groups[:, a] == g)).sum()
                     for g in present]
            cons += [mi - mj <= tol for i, mi in enumerate(means) for j, mj in enumerate(means) if i != j]
    if (~constrained).any():
        cons.append(x[~constrained] == p2[~constrained])
    cp.Problem(cp.Minimize(cp.sum_squares(x - p2)), cons).solve(solver=cp.CLARABEL, tol_gap_abs=1e-10,
                                                                  tol_gap_rel=1e-10, tol_feas=1e-10)
    return x.value.reshape(p.shape)


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_cvxpy_on_the_joint_problem(criterion, seed):
    """The decomposition by strata solves the joint QP (all strata, attributes and the box at once)."""
    c = None if seed % 2 == 0 else 3
    a = 1 + seed % 3 // 2
    p, groups, y = _instance(seed, 14, 3, a, c)
    tol = [0.0, 0.05][seed % 2]
    out = project_error_rates(p, groups, y, criterion=criterion, tolerance=tol)
    ref = _cvxpy_projection(p, groups, y, c, criterion, tol)
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_absent_groups_and_strata_add_no_constraint():
    p, groups, y = _instance(7, 40, 3, 1)
    # group 2 only among the negatives: the positive stratum is the same problem without it
    groups[(y == 1) & (groups[:, 0] == 2), 0] = 0
    out = project_error_rates(p, groups, y, criterion="equalized_odds", tolerance=0.0)
    pos = y == 1
    alone = project_error_rates(p[pos], groups[pos], y[pos], criterion="equalized_odds", tolerance=0.0)
    np.testing.assert_allclose(out[pos], alone, atol=1e-12)
    # no positive row at all: equal opportunity leaves the batch unchanged
    none = project_error_rates(p, groups, np.zeros_like(y), criterion="equal_opportunity", tolerance=0.0)
    np.testing.assert_array_equal(none, p)
    # one group only: nothing to equalise
    one = project_error_rates(p, np.zeros_like(groups), y, criterion="equalized_odds", tolerance=0.0)
    np.testing.assert_allclose(one, p, atol=1e-12)


def _interior_instance(seed, criterion, c):
    """A random float64 instance away from the box's corners (no group fully clipped)."""
    p, groups, y = _instance(seed, 16, 2, 1, c)
    p = 0.1 + 0.8 * p
    return torch.tensor(p, requires_grad=True), torch.as_tensor(groups[:, 0]), torch.as_tensor(y)


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("c", [None, 3])
def test_gradcheck(criterion, seed, c):
    p, groups, y = _interior_instance(seed, criterion, c)
    layer = ErrorRateLayer(criterion, tolerance=0.02)
    out = layer(p, groups, y).detach().numpy()
    # the instance is smooth there: some constraint is active, no output sits exactly on a kink
    assume_active = _worst_gap(out, groups.numpy()[:, None], y.numpy(), c, criterion)
    assert assume_active == pytest.approx(0.02, abs=1e-9)
    assert torch.autograd.gradcheck(lambda t: layer(t, groups, y), (p,), eps=1e-7, atol=1e-6)


def test_gradcheck_fully_clipped_active_group():
    # scores outside the box: group 0 stays clipped at 1 (every sample) and is the top of an
    # active constraint, which holds group 1 at 0.9
    p = torch.tensor([1.6, 1.7, 0.5, 0.6, 0.95, 0.97], dtype=torch.float64, requires_grad=True)
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    y = torch.ones(6, dtype=torch.long)
    layer = ErrorRateLayer("equal_opportunity", tolerance=0.1)
    out = layer(p, groups, y).detach()
    np.testing.assert_allclose(out[:2].numpy(), [1.0, 1.0], atol=1e-12)
    assert float(out[2:4].mean()) == pytest.approx(0.9)
    assert torch.autograd.gradcheck(lambda t: layer(t, groups, y), (p,), eps=1e-7, atol=1e-6)


def test_float32_and_bad_input():
    p, groups, y = _instance(0, 30, 2, 1)
    out = ErrorRateLayer("equalized_odds", 0.0)(torch.tensor(p, dtype=torch.float32), torch.as_tensor(groups), y)
    assert out.dtype == torch.float32
    assert _worst_gap(out.double().numpy(), groups, y, None, "equalized_odds") <= 1e-5
    with pytest.raises(ValueError, match="criterion"):
        ErrorRateLayer("ecp")
    with pytest.raises(ValueError, match="true labels"):
        ErrorRateLayer()(torch.tensor(p), torch.as_tensor(groups), None)
    with pytest.raises(ValueError, match="class indices"):
        ErrorRateLayer()(torch.tensor(p), torch.as_tensor(groups), y + 1)
    with pytest.raises(ValueError, match="rows"):
        ErrorRateLayer()(torch.tensor(p), torch.as_tensor(groups[:-1]), y)
    with pytest.raises(ValueError, match="tolerance"):
        ErrorRateLayer(tolerance=-1)


@given(seed=st.integers(0, 10**5))
@settings(max_examples=20, deadline=None)
def test_projection_is_idempotent(seed):
    p, groups, y = _instance(seed, 30, 3, 1)
    out = project_error_rates(p, groups, y, tolerance=0.01)
    again = project_error_rates(out, groups, y, tolerance=0.01)
    np.testing.assert_allclose(again, out, atol=1e-9)


def test_a_model_trains_through_the_projection():
    """A logistic model trained through the layer: every batch meets the criterion, the loss falls."""
    rng = np.random.default_rng(0)
    n = 512
    g = rng.integers(0, 2, n)
    y = (rng.random(n) < 0.3 + 0.3 * g).astype(int)
    X = torch.tensor(np.c_[rng.normal(y + 0.8 * g, 1.0), g, np.ones(n)], dtype=torch.float64)
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    layer = ErrorRateLayer("equalized_odds", tolerance=0.02)
    opt = torch.optim.Adam([w], lr=0.1)
    losses, worst = [], 0.0
    for _ in range(40):
        idx = torch.as_tensor(rng.choice(n, 128, replace=False))
        yb = torch.as_tensor(y)[idx]
        out = layer(torch.sigmoid(X[idx] @ w), torch.as_tensor(g)[idx], yb)
        worst = max(worst, _worst_gap(out.detach().numpy(), g[idx.numpy()][:, None], y[idx.numpy()], None,
                                      "equalized_odds"))
        loss = torch.nn.functional.binary_cross_entropy(out.clamp(1e-6, 1 - 1e-6), yb.double())
        opt.zero_grad()
        loss.backward()
        assert torch.isfinite(w.grad).all()
        opt.step()
        losses.append(loss.item())
    assert worst <= 0.02 + 1e-6
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.05
