"""The group passes of large batches (torch's kernels) against NumPy's ``bincount``."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fairsk._groups import TORCH_MIN_ROWS, group_counts, group_sums

N = TORCH_MIN_ROWS + 3


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.sampled_from([1, 2, 7, 1000, 20000]),
       kind=st.sampled_from(["float64", "float32", "bool", "int32", "broadcast", "reversed", "readonly", "strided"]))
def test_sums_equal_bincount_to_the_bit(seed, k, kind):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, k, N)
    v = rng.normal(size=2 * N) * 10.0 ** rng.integers(-3, 6)
    v = {"float64": v[:N], "float32": v[:N].astype(np.float32), "bool": v[:N] > 0,
         "int32": (v[:N] * 100).astype(np.int32), "broadcast": np.broadcast_to(v[:1], (N,)),
         "reversed": v[:N][::-1], "readonly": v[:N].copy(), "strided": v[::2]}[kind]
    if kind == "readonly":
        v.flags.writeable = False
    got = group_sums(v, codes, k)
    want = np.bincount(codes, weights=v, minlength=k)
    assert got.dtype == np.float64 and got.shape == (k,)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("n", [10, N])
def test_counts_equal_bincount(n):
    codes = np.random.default_rng(n).integers(0, 50, n)
    np.testing.assert_array_equal(group_counts(codes, 60), np.bincount(codes, minlength=60))
    np.testing.assert_array_equal(group_counts(codes), np.bincount(codes))


@pytest.mark.parametrize("n", [10, N])
def test_negative_codes_raise_value_error(n):
    codes = np.zeros(n, dtype=np.int64)
    codes[n // 2] = -1
    with pytest.raises(ValueError):
        group_counts(codes, 3)


def test_code_out_of_range_is_refused():
    """Codes are in range by construction; one that is not raises rather than drop mass."""
    codes = np.zeros(N, dtype=np.int64)
    codes[5] = 9
    with pytest.raises(RuntimeError, match="index"):
        group_sums(np.ones(N), codes, 3)


def test_large_group_tensor_checked_as_the_array_is():
    """A large CPU int64 tensor of codes takes one torch reduction for its checks; it
    answers and refuses as the same codes given as a NumPy array."""
    import torch

    from fairsk import FairnessLayer

    rng = np.random.default_rng(3)
    z = torch.from_numpy(rng.normal(size=(N, 1)))
    codes = rng.integers(0, 4, (N, 2))
    layer = FairnessLayer(tolerance=0.01, solver="exact")
    np.testing.assert_array_equal(layer(z, torch.from_numpy(codes)).numpy(), layer(z, codes).numpy())
    codes[N // 3, 1] = -2
    for groups in (codes, torch.from_numpy(codes)):
        with pytest.raises(ValueError, match="non-negative"):
            layer(z, groups)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 300), attrs=st.integers(1, 3),
       k=st.sampled_from([1, 2, 5, 90]), box=st.booleans(), criterion=st.sampled_from(["ecp", "eer"]),
       dtype=st.sampled_from(["float64", "float32"]), as_tensor=st.booleans())
def test_layer_same_to_the_bit_on_either_kind_of_pass(seed, n, attrs, k, box, criterion, dtype,
                                                       as_tensor):
    """Every size through torch's passes (the rows threshold at 0) and through NumPy's:
    the same outputs and gradients to the bit, and the same refusals."""
    import torch

    import fairsk._groups as groups_module
    import fairsk.layer as layer_module
    from fairsk import FairnessLayer

    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 1)) * 3
    codes = rng.integers(0, k, (n, attrs))
    y = rng.normal(size=n)
    layer = FairnessLayer(criterion, 0.05, "exact", (-2.0, 2.0) if box else None)

    def run(threshold):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(groups_module, "TORCH_MIN_ROWS", threshold)
            mp.setattr(layer_module, "TORCH_MIN_ROWS", threshold)
            return attempt()

    def attempt():
        zt = torch.tensor(z, dtype=getattr(torch, dtype), requires_grad=True)
        g = torch.from_numpy(codes) if as_tensor else codes
        try:
            out = layer(zt, g, torch.from_numpy(y))
        except Exception as err:  # the same refusal either way
            return type(err).__name__
        out.backward(torch.from_numpy(rng.normal(size=(n, 1))).to(zt.dtype))
        return out.detach().numpy(), zt.grad.numpy()

    state = rng.bit_generator.state
    numpy_way = run(1 << 62)
    rng.bit_generator.state = state
    torch_way = run(0)
    if isinstance(numpy_way, str):
        assert torch_way == numpy_way
        return
    np.testing.assert_array_equal(torch_way[0], numpy_way[0])
    np.testing.assert_array_equal(torch_way[1], numpy_way[1])


@pytest.mark.parametrize("n", [TORCH_MIN_ROWS - 1, TORCH_MIN_ROWS])
def test_groups_from_a_structured_array_field(n):
    """A field of a structured array (its stride not a multiple of the item size)."""
    import torch

    from fairsk import FairnessLayer

    rec = np.zeros(n, dtype=[("g", "<i8"), ("w", "<i4")])
    rec["g"] = np.arange(n) % 3
    z = torch.linspace(-1, 1, n, dtype=torch.float64)
    layer = FairnessLayer(tolerance=0.0, solver="exact")
    np.testing.assert_array_equal(layer(z, rec["g"]).numpy(), layer(z, np.ascontiguousarray(rec["g"])).numpy())


@pytest.mark.parametrize("n", [TORCH_MIN_ROWS - 1, TORCH_MIN_ROWS])
def test_cpu_batch_under_another_default_device(n):
    """CPU inputs inside ``with torch.device(...)`` (the meta device stands in for an
    accelerator): the layer's own tensors stay on the CPU with the batch."""
    import torch

    from fairsk import FairnessLayer

    rng = np.random.default_rng(n)
    z = torch.from_numpy(rng.normal(size=n))
    g = torch.from_numpy(rng.integers(0, 3, n))
    layer = FairnessLayer(tolerance=0.01, solver="exact")
    want = layer(z, g)
    with torch.device("meta"):
        got = layer(z, g)
    assert got.device.type == "cpu"
    np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_mismatched_inputs_raise_numpy_errors_not_lose_values():
    """Weights longer than the codes are an error (never silently dropped), as NumPy's."""
    codes = np.zeros(N, dtype=np.int64)
    with pytest.raises(ValueError):
        group_sums(np.ones(N + 5), codes, 2)
    with pytest.raises(ValueError):
        group_counts(codes, -1)
    codes[7] = -4
    with pytest.raises(ValueError, match="negative"):
        group_counts(codes, 2)
