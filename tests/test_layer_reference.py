"""The layer's outputs and gradients against those of the previous implementation.

``fixtures/layer_reference.npz`` holds, for 60 instances (``make_fixtures.layer_instances``:
both criteria, boxes, tolerance 0, several attributes and columns), the outputs and the
gradients of ``sum(outputs)`` that the layer gave before the projection package was
rebuilt. The rebuilt layer must give the same to 1e-12 (qpth: outputs to 1e-9, and
gradients no farther from the exact ones than before, its rows having changed).

Known, justified exceptions (each checked to hold, so that a new difference is seen):
the previous exact solver's backward was wrong with a box when an active group had no
free output (its gradient is then compared with central finite differences instead),
and the previous qpth could return a feasible output off the projection (then compared
with the exact reference). No instance of this fixture hits either; the lists below
are empty and the test says so.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from fairsk import FairnessLayer

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
from make_fixtures import layer_instances  # noqa: E402

REFERENCE = np.load(FIXTURES / "layer_reference.npz")
INSTANCES = list(layer_instances())
#: qpth (unchanged but for its rows' source) is an interior-point method whose last
#: digits depend on the process (the same call gave 0 and 6.8e-11 differences from the
#: fixture in a plain interpreter and under pytest); the exact solver is held to 1e-12
ATOL = {"exact": 1e-12, "qpth": 1e-9}
#: instances whose reference gradient is the previous backward's wrong box gradient
WRONG_BOX_GRADIENT: set = set()
#: instances where the previous qpth returned a feasible output off the projection
QPTH_OFF_PROJECTION: set = set()


@pytest.mark.parametrize("solver", ["exact", "qpth"])
@pytest.mark.parametrize("i", range(len(INSTANCES)))
def test_layer_matches_the_reference(i, solver):
    inst = INSTANCES[i]
    layer = FairnessLayer(inst["criterion"], inst["tol"], solver, inst["box"])
    z = torch.tensor(inst["z"], requires_grad=True)
    key = f"{i}_{solver}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback may be taken silently on these
        if f"{key}_error" in REFERENCE:
            with pytest.raises(Exception) as err:
                layer(z, torch.as_tensor(inst["groups"]), torch.as_tensor(inst["y"]))
            assert type(err.value).__name__ == str(REFERENCE[f"{key}_error"])
            return
        out = layer(z, torch.as_tensor(inst["groups"]), torch.as_tensor(inst["y"]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out.backward(torch.ones_like(out))
    # the checked backward replaces a qpth gradient more than 1e-6 off, with a warning
    replaced = [w for w in caught if issubclass(w.category, RuntimeWarning) and "gradient" in str(w.message)]
    assert not replaced or solver == "qpth", [str(w.message) for w in replaced]
    expected_out = REFERENCE[f"{key}_out"]
    if solver == "qpth" and i in QPTH_OFF_PROJECTION:
        expected_out = REFERENCE[f"{i}_exact_out"]
    np.testing.assert_allclose(out.detach().numpy(), expected_out, atol=ATOL[solver], rtol=0)
    if i in WRONG_BOX_GRADIENT:
        return
    if solver == "exact":
        np.testing.assert_allclose(z.grad.numpy(), REFERENCE[f"{key}_grad"], atol=ATOL[solver], rtol=0)
    else:
        # qpth's parity rows are now 2k with an interval variable instead of k(k-1)
        # pairs: its gradient, an interior-point approximation, changed in the last
        # digits. It must be no farther from the exact gradient than before (+1e-7).
        # With a box qpth now solves a different QP (the group shifts of the outputs
        # the box leaves free): there its gradient is held to the checked backward's
        # rule, 1e-6 relative above 1 (farther, and it would have been replaced with a
        # warning, which this test turns into an error).
        exact = REFERENCE[f"{i}_exact_grad"]
        before = float(np.abs(REFERENCE[f"{key}_grad"] - exact).max())
        allowed = before + 1e-7
        if inst["box"] is not None:
            allowed = max(allowed, 1e-6 * max(1.0, float(np.abs(exact).max())))
        if replaced:  # farther than 1e-6: the exact gradient, with a warning
            allowed = 1e-9
        assert float(np.abs(z.grad.numpy() - exact).max()) <= allowed


def test_the_exception_lists_are_what_they_claim():
    """Empty here; if an instance is ever listed, it must really differ from the
    reference (so the exception is not a silent loosening)."""
    assert not WRONG_BOX_GRADIENT and not QPTH_OFF_PROJECTION
    assert len(INSTANCES) == 60 and sum(k.endswith("_out") for k in REFERENCE.files) >= 100
