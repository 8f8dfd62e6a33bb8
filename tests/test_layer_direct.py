"""The exact solver's direct route through the dispatcher: its float64 answer is
certified, then becomes one graph node in the input's dtype (no float64 copy of the
input in the graph, no conversion node after it). It must give what the general route
gives (the input converted to float64, solved, the output converted back), bit for bit,
forward and backward, and its answer must pass the certificate like any other."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import fairsk.layer as layer_module
from fairsk import FairnessLayer
from fairsk.projection import SOLVERS, exact

from .conftest import forward_backward, make_instance


def _general_exact(z, groups, spec):  # the exact solver without its direct route
    return exact.solve_exact(z, groups, spec)


_general_exact.exact = True


@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 200),
    k=st.integers(1, 6),
    a=st.integers(1, 3),
    c=st.integers(1, 2),
    criterion=st.sampled_from(["ecp", "eer"]),
    tolerance=st.sampled_from([0.0, 1e-3, 0.05, 0.5]),
    box=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_the_direct_route_equals_the_general_route(seed, n, k, a, c, criterion, tolerance, box, dtype):
    inst = make_instance(seed, n, k, a, c, criterion, tolerance, box, dtype=dtype)
    layer = FairnessLayer(criterion, tolerance, "exact", inst.bounds)
    upstream = torch.tensor(np.random.default_rng(seed).normal(size=inst.z.shape), dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            direct = forward_backward(layer, inst.z, inst.groups, inst.y, upstream)
        except Exception as err:  # an infeasible box for eer: the same refusal both ways
            with pytest.raises(type(err)), pytest.MonkeyPatch.context() as m:
                m.setitem(SOLVERS, "exact", _general_exact)
                forward_backward(layer, inst.z, inst.groups, inst.y, upstream)
            return
        with pytest.MonkeyPatch.context() as m:
            m.setitem(SOLVERS, "exact", _general_exact)
            general = forward_backward(layer, inst.z, inst.groups, inst.y, upstream)
    assert direct[0].dtype == dtype and direct[1].dtype == dtype
    torch.testing.assert_close(direct[0], general[0], atol=0, rtol=0)
    torch.testing.assert_close(direct[1], general[1], atol=0, rtol=0)


def test_the_direct_route_adds_one_graph_node():
    z = torch.randn(20, 1, dtype=torch.float32, requires_grad=True)
    groups = torch.arange(20) % 2
    out = FairnessLayer("ecp", 0.0, "exact")(z, groups)
    assert out.dtype == torch.float32
    assert out.grad_fn.next_functions[0][0].variable is z  # straight from z, no conversion node


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_direct_answer_that_breaks_the_constraints_is_refused(monkeypatch, dtype):
    """The direct route's answer goes through the certificate: an unfair one is refused,
    the next solver answers (with a warning), and its answer is fair. (The one-column
    route, which does not call ``exact.project``, is switched off: it has its own test
    in test_layer_column.py.)"""
    monkeypatch.setattr(layer_module, "project_column", lambda *args: None)
    real = exact.project

    def unfair(z, groups, spec):
        answer = real(z, groups, spec)
        answer.out[groups.codes(0) == 0] += 1.0
        return answer

    monkeypatch.setattr(exact, "project", unfair)
    z = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=dtype)
    groups = torch.tensor([0, 0, 1, 1])
    with pytest.warns(RuntimeWarning, match="'exact' solver failed.*breaks the 'ecp' constraints"):
        out = FairnessLayer("ecp", 0.1, "exact")(z, groups)
    assert out.dtype == dtype
    assert abs(float(out[:2].mean() - out[2:].mean())) <= 0.1 + 1e-5
