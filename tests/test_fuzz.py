"""Fuzzing: random, often odd, inputs through the layer, fit/predict and partial_predict.

CI runs the ``ci`` profile (40 examples per test); the long run is
``HYPOTHESIS_PROFILE=fuzz python -m pytest tests/test_fuzz.py`` (2,000 per test).
Invariant: either a ValueError-family error, or finite outputs that meet the constraint.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fairsk import FairLayerRegressor, FairnessLayer, StreamingFairPredictor
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


@given(layer_inputs(), st.sampled_from(["exact", "qpth"]))
def test_layer_never_breaks_a_constraint(inputs, solver):
    z, g, tol, box, crit, y = inputs
    try:
        out = FairnessLayer(crit, tol, solver, box)(torch.as_tensor(z), torch.as_tensor(g), torch.as_tensor(y))
    except ValueError:  # includes InfeasibleProjectionError
        return
    out = out.numpy()
    assert np.all(np.isfinite(out))
    if len(out) == 0:
        return
    atol = 1e-6 * max(1.0, np.abs(z).max())
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
