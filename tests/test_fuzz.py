"""Fuzzing: random, often odd, inputs through the layer, fit/predict and partial_predict.

CI runs the ``ci`` profile (40 examples per test); the long run is
``HYPOTHESIS_PROFILE=fuzz python -m pytest tests/test_fuzz.py`` (2,000 per test).
Invariant: either a ValueError-family error, or finite outputs that meet the constraint.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fairsk import FairLayerRegressor, FairnessLayer, StreamingFairPredictor
from fairsk.exceptions import InfeasibleProjectionError
from fairsk.metrics import parity_gap, residual_gap

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
anything = st.floats(allow_nan=True, allow_infinity=True, width=64)


@st.composite
def layer_inputs(draw):
    n = draw(st.integers(0, 60))
    a = draw(st.integers(1, 3))
    z = draw(arrays(np.float64, (n,), elements=st.one_of(finite, finite, anything)))
    g = draw(arrays(np.int64, (n, a), elements=st.integers(0, draw(st.integers(0, 6)))))
    tol = draw(st.one_of(st.floats(0, 10), st.just(0.0), st.floats(-1, 0, exclude_max=True)))
    box = draw(st.one_of(st.none(), st.tuples(finite, finite)))
    crit = draw(st.sampled_from(["ecp", "eer"]))
    y = draw(arrays(np.float64, (n,), elements=st.floats(-5, 5)))
    return z, g, tol, box, crit, y


def _eer_box_feasible(y, g, tol, lb, ub) -> bool:
    """Whether some output in [lb, ub] meets EER, decided independently (an LP)."""
    from scipy.optimize import linprog

    n = y.shape[0]
    rows, rhs = [], []
    for a in range(g.shape[1]):
        for code in np.unique(g[:, a]):
            member = (g[:, a] == code) / (g[:, a] == code).sum()
            r = float(member @ y)
            rows += [member, -member]
            rhs += [r + tol, tol - r]
    res = linprog(np.zeros(n), A_ub=np.array(rows), b_ub=np.array(rhs), bounds=[(lb, ub)] * n, method="highs")
    return res.status == 0


@given(layer_inputs(), st.sampled_from(["exact", "qpth"]))
def test_layer_never_breaks_a_constraint(inputs, solver):
    """Either the input is invalid (a ValueError naming it), or the output is finite and
    meets the constraints to an absolute 1e-6 (the certificate's allowance; outputs are
    at most ~1e6, where float64 rounding of a mean is ~1e-10). A feasible problem must
    never be refused: ECP (a constant output is feasible, box or not) and EER without a
    box (the targets are feasible) always are; EER with a box is decided by an LP.
    Beyond |z| ~ 1e8 float64 itself cannot resolve the 1e-6 allowance (its spacing at
    1e16 is 2): a refusal there is the documented limit, not a defect."""
    z, g, tol, box, crit, y = inputs
    valid = np.isfinite(z).all() and tol >= 0 and (box is None or box[0] < box[1])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a solver fallback warns; the answer is checked
            out = FairnessLayer(crit, tol, solver, box)(torch.as_tensor(z), torch.as_tensor(g), torch.as_tensor(y))
    except InfeasibleProjectionError:
        assert valid
        if len(z) and np.abs(z).max() > 1e8:
            return
        feasible = crit == "ecp" or box is None or len(z) == 0 or _eer_box_feasible(y, g, tol, *box)
        assert not feasible, "a feasible problem was refused"
        return
    except ValueError:
        assert not valid
        return
    assert valid
    out = out.numpy()
    assert np.all(np.isfinite(out))
    if len(out) == 0:
        return
    atol = 1e-6 + 1e-9  # the certificate's allowance, and the metric's own rounding
    if crit == "ecp":
        assert parity_gap(out, g) <= tol + atol
    else:
        assert residual_gap(y, out, g) <= tol + atol
    if box is not None:
        assert out.min() >= box[0] - atol and out.max() <= box[1] + atol


_STREAM = {}


def _stream(kind):
    if kind not in _STREAM:
        rng = np.random.default_rng(0)
        X, s = rng.normal(size=(80, 2)), rng.integers(0, 3, 80)
        bounds = (-1.0, 1.0) if kind == "box" else None
        _STREAM[kind] = StreamingFairPredictor(
            FairLayerRegressor(max_epochs=1, random_state=0, solver="exact", bounds=bounds),
            tolerance=0.05).fit(X, np.clip(X[:, 0] + s, -1, 1), sensitive_features=s)
    return _STREAM[kind]


@pytest.mark.parametrize("kind", ["free", "box"])
@pytest.mark.parametrize("slack", [0.0, 1.0])
@given(st.lists(st.tuples(arrays(np.float64, (3, 2),
                                 elements=st.one_of(finite, anything)),
                          arrays(np.int64, (3,), elements=st.integers(0, 5)),
                          st.integers(1, 3)), min_size=1, max_size=20))
def test_stream_never_breaks_the_pooled_bound(kind, slack, calls):
    """Unscaled inputs (up to 1e6, NaN, infinities), with and without a box, both
    rules: an error of the ValueError family, or outputs in the box whose pooled gap
    is within the rule's bound (the tolerance for slack=0)."""
    stream = _stream(kind)
    stream.set_params(slack=slack)
    stream.reset()
    for X, s, b in calls:
        try:
            out = stream.partial_predict(X[:b], sensitive_features=s[:b])
        except ValueError:
            continue
        assert np.all(np.isfinite(out))
        if kind == "box":
            assert out.min() >= -1.0 and out.max() <= 1.0
        # "up to rounding": float64 resolves ~1e-16 of the raw scores' magnitude, and
        # a huge raw score shifted back to the fair interval keeps that absolute error
        state = stream.stream_state_
        raw = [np.abs(r[c > 0] / c[c > 0, None]).max() for r, c in zip(state.raw_sum, state.count) if c.any()]
        scale = max([1.0] + raw)
        bound = 0.05 if slack == 0 else stream.pooled_bound_
        assert np.isfinite(stream.pooled_gap_) and stream.pooled_gap_ <= bound + 1e-12 * scale
