"""Cases an adversarial search found: an output that leaves one bound for the other is
not "within rounding" of a bound; reversed NumPy group arrays; groups without columns;
gradients that share memory with the caller's; the float32 message only for float32's
own rounding."""

import numpy as np
import pytest
import torch

from fairsk import FairnessLayer
from fairsk.projection import exact


def _means(out: np.ndarray, codes: np.ndarray) -> list[float]:
    return [out[codes == g].mean() for g in np.unique(codes)]


@pytest.mark.parametrize("groups", [
    [[0, 0], [1, 0]],  # few cells: the cell index
    [[0, 0], [5000, 0]],  # large codes: the per-attribute index
    [[0, 0, 5], [0, 0, 3]],  # three attributes, one of them split
    [[0, 0], [1, 1]],
])
@pytest.mark.parametrize("z, box, want", [
    ([-1.028689036909565, 1.0], (0.0, 1.0), 0.0),  # one output exactly at the upper bound
    ([-0.5, 2.6729203416511482], (-0.5, 0.5), 0.5),  # one output exactly at the lower bound
])
def test_an_output_at_one_bound_and_another_beyond_the_other(groups, z, box, want):
    """Two rows, tolerance 0, several attributes: the projection puts both rows at
    clip(mean(z)). A guess held one row at one bound and the shifted output reached the
    other; that is a move, not rounding (it used to settle on clip(z), which the
    certificate refused)."""
    g = torch.tensor(groups)
    out = FairnessLayer("ecp", 0.0, "exact", box)(torch.tensor(z, dtype=torch.float64), g).numpy()
    np.testing.assert_allclose(out, [want, want], atol=1e-9)
    for a in range(g.shape[1]):  # recomputed here
        means = _means(out, g[:, a].numpy())
        assert max(means) - min(means) <= 1e-9


def test_the_guess_test_reads_the_bound_an_output_left():
    """``_keeps_guess``: a row held at the lower bound that lands on the upper one has
    moved; one that lands within rounding of the lower one has not."""
    lb, ub, delta = 0.0, 1.0, 1e-12
    lower, upper = np.array([True, False]), np.array([False, False])
    moved_across = np.array([1.0, 0.5])
    assert not exact._keeps_guess(moved_across, lower, upper, moved_across <= lb, moved_across >= ub, lb, ub, delta)
    rounding = np.array([1e-13, 0.5])
    assert exact._keeps_guess(rounding, lower, upper, rounding <= lb, rounding >= ub, lb, ub, delta)
    # None masks hold nothing
    beyond = np.array([-0.5, 0.5])
    assert not exact._keeps_guess(beyond, None, None, beyond <= lb, None, lb, ub, delta)


def test_reversed_numpy_groups_equal_their_copy():
    z = torch.tensor([0.1, 0.5, 0.9, 0.3, 0.7, 0.2], dtype=torch.float64)
    G = np.array([[0, 1], [1, 0], [0, 0], [1, 1], [0, 1], [1, 0]])
    layer = FairnessLayer("ecp", 0.0, "exact")
    torch.testing.assert_close(layer(z, G[::-1]), layer(z, G[::-1].copy()), rtol=0, atol=0)
    torch.testing.assert_close(layer(z, np.flip(G, 1)), layer(z, np.flip(G, 1).copy()), rtol=0, atol=0)


def test_groups_without_columns_are_refused():
    z = torch.randn(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="no attribute columns"):
        FairnessLayer("ecp", 0.1, "exact")(z, torch.zeros((4, 0), dtype=torch.int64))


@pytest.mark.parametrize("groups", [torch.tensor([0, 0, 1, 1]), torch.tensor([[0, 1], [0, 0], [1, 1], [1, 0]])])
@pytest.mark.parametrize("bounds", [None, (0.0, 1.0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_gradient_never_shares_the_callers_memory(groups, bounds, dtype):
    """Nothing active (tolerance 10): the backward is the identity, and ``z.grad`` is
    still a tensor of its own (changing the caller's grad_output later leaves it)."""
    z = torch.tensor([0.2, 0.4, 0.6, 0.8], dtype=dtype, requires_grad=True)
    out = FairnessLayer("ecp", 10.0, "exact", bounds)(z, groups)
    go = torch.ones(4, dtype=dtype)
    out.backward(go)
    assert z.grad.data_ptr() != go.data_ptr()
    go.mul_(3)
    torch.testing.assert_close(z.grad, torch.ones(4, dtype=dtype))


def test_an_unfair_float64_answer_is_not_blamed_on_float32():
    """When the float64 answer itself breaks the constraints, the message says so; the
    float32 message is for outputs that only float32's rounding breaks."""
    from fairsk._groups import encode_groups
    from fairsk.projection.certificate import certify
    from fairsk.projection.spec import SolverError, Spec

    groups, spec = encode_groups(np.array([0, 1, 0, 1])), Spec("ecp", 0.1)
    unfair = np.array([[0.0], [1.0], [0.0], [1.0]])  # gap 1 against 0.1
    with pytest.raises(SolverError) as err:
        certify(unfair, groups, spec, torch.float32)
    assert "float32 cannot resolve" not in str(err.value) and "breaks the 'ecp' constraints by 0.9" in str(err.value)
    # fair in float64, broken only by float32's rounding at this magnitude
    big = np.array([[1e7 + 0.4], [1e7 + 0.6], [1e7 + 0.4], [1e7 + 0.6]])  # float32: 1e7 and 1e7 + 1
    with pytest.raises(SolverError, match="float32 cannot resolve"):
        certify(big, groups, Spec("ecp", 0.2), torch.float32)
