"""The layer's input handling on the training path: group codes in every accepted
form give the same projection and gradient, parameters changed between calls take
effect, non-finite outputs are refused (by the layer and by the certificate), and an
exact solver's failure still falls through to the next solver."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fairsk import FairnessLayer
from fairsk.exceptions import InfeasibleProjectionError
from fairsk.projection import SOLVERS, SolverError

N = 40
RNG = np.random.default_rng(0)
Z = torch.as_tensor(RNG.normal(size=N))
CODES = RNG.integers(0, 3, size=N)


def _gap(out: np.ndarray, codes: np.ndarray) -> float:
    means = [out[codes == g].mean() for g in np.unique(codes)]
    return max(means) - min(means)


def _project(groups, z=Z, **kwargs):
    v = z.clone().requires_grad_(True)
    out = FairnessLayer(tolerance=0.05, solver="exact", **kwargs)(v, groups)
    (out * torch.linspace(-1, 1, len(z), dtype=z.dtype)).sum().backward()
    return out.detach().numpy(), v.grad.numpy()


@pytest.mark.parametrize(
    "groups",
    [
        torch.as_tensor(CODES),
        torch.as_tensor(CODES).reshape(-1, 1),
        torch.as_tensor(CODES, dtype=torch.int32),
        torch.as_tensor(CODES, dtype=torch.uint8),
        CODES.astype(np.uint16),
        CODES.reshape(-1, 1).astype(np.int8),
        CODES.tolist(),
    ],
    ids=["long", "long (n, 1)", "int32", "uint8 tensor", "uint16 array", "int8 (n, 1) array", "list"],
)
def test_every_form_of_the_codes_gives_the_same_projection_and_gradient(groups):
    ref_out, ref_grad = _project(torch.as_tensor(CODES))
    out, grad = _project(groups)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(grad, ref_grad)
    assert _gap(out, CODES) <= 0.05 + 1e-9


def test_boolean_codes_are_two_groups():
    flags = CODES == 1
    out, _ = _project(torch.as_tensor(flags))
    ref, _ = _project(torch.as_tensor(flags.astype(np.int64)))
    np.testing.assert_array_equal(out, ref)
    assert _gap(out, flags.astype(int)) <= 0.05 + 1e-9


def test_a_changed_tolerance_takes_effect_on_the_next_call():
    layer = FairnessLayer(tolerance=0.5, solver="exact")
    groups = torch.as_tensor(CODES)
    z = Z * 3
    loose = layer(z, groups).numpy()
    layer.tolerance = 0.01
    tight = layer(z, groups).numpy()
    assert _gap(tight, CODES) <= 0.01 + 1e-9 < _gap(loose, CODES)
    layer.tolerance = -1.0
    with pytest.raises(ValueError, match="tolerance must be"):
        layer(z, groups)
    layer.tolerance, layer.bounds = 0.01, [-0.5, 0.5]  # a list is as good as a tuple
    boxed = layer(z, groups).numpy()
    assert boxed.min() >= -0.5 - 1e-12 and boxed.max() <= 0.5 + 1e-12


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("where", [0, N // 2, N - 1])
def test_non_finite_outputs_of_the_body_are_refused(dtype, bad, where):
    z = torch.as_tensor(RNG.normal(size=(N, 2))).to(dtype)
    z[where, 1] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        FairnessLayer(solver="exact")(z, torch.as_tensor(CODES))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("groups", [CODES, np.stack([CODES, CODES % 2], 1)], ids=["one", "two attributes"])
@pytest.mark.parametrize("bounds", [None, (-5.0, 5.0)])
def test_the_certificate_refuses_non_finite_solver_outputs(monkeypatch, bad, groups, bounds):
    def broken(z, groups, spec):
        out = z.detach().clone()
        out[3, 0] = bad
        return out

    for name in list(SOLVERS):
        monkeypatch.setitem(SOLVERS, name, broken)
    with pytest.raises(InfeasibleProjectionError, match="non-finite"):
        FairnessLayer(tolerance=0.1, solver="exact", bounds=bounds)(Z, torch.as_tensor(groups))


def test_a_failing_exact_solver_falls_through_to_the_next(monkeypatch):
    def failing(z, groups, spec):
        raise SolverError("declined")

    failing.exact = True
    qpth_out = FairnessLayer(tolerance=0.05, solver="qpth")(Z, torch.as_tensor(CODES))
    monkeypatch.setitem(SOLVERS, "exact", failing)
    with pytest.warns(RuntimeWarning, match="'exact' solver failed.*declined"):
        out = FairnessLayer(tolerance=0.05, solver="exact")(Z, torch.as_tensor(CODES))
    torch.testing.assert_close(out, qpth_out, atol=1e-6, rtol=0)
    assert _gap(out.numpy(), CODES) <= 0.05 + 1e-6


@pytest.mark.parametrize("shape", ["flat", "column"])
@pytest.mark.parametrize("codes", [[0, 1, 1, 0, 2], [3, 3, 7, 0, 7], [5, 5, 5, 5, 5], [0, 2000, 1, 1, 0]])
def test_the_one_column_index_equals_the_general_one(shape, codes):
    """A CPU int64 tensor of one column is indexed by its own short route: the same slots
    and counts as the general checks and encoding (absent codes, one group, and codes
    too sparse for it, which it hands on)."""
    from fairsk._groups import encode_groups
    from fairsk.layer import _as_group_codes, _one_column_index

    t = torch.tensor(codes) if shape == "flat" else torch.tensor(codes)[:, None]
    general = encode_groups(*_as_group_codes(t, len(codes)))
    short = _one_column_index(t, len(codes))
    if max(codes) >= 1024:
        assert short is None
        return
    np.testing.assert_array_equal(short.gid, general.gid)
    np.testing.assert_array_equal(short.counts, general.counts)
    assert short.sizes == general.sizes


def test_a_negative_code_is_refused_on_the_one_column_route():
    with pytest.raises(ValueError, match="non-negative integer codes"):
        FairnessLayer("ecp", 0.1, "exact")(torch.zeros(4), torch.tensor([0, 1, -1, 0]))
