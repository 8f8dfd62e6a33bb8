"""Several attributes indexed by their cells: every group statistic equals the one
computed attribute by attribute, in plain NumPy, and the projection through the cells
equals the projection through the per-attribute index."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fairsk._groups import GroupIndex, encode_groups
from fairsk.projection import exact
from fairsk.projection.certificate import violation
from fairsk.projection.kernels import projector_vjp
from fairsk.projection.spec import Spec


def by_attribute(codes: np.ndarray) -> GroupIndex:
    """The per-attribute index of ``codes`` (n, a), built here from ``np.unique``."""
    gid, counts, sizes, offset = [], [], [], 0
    for col in codes.T:
        _, inverse, cnt = np.unique(col, return_inverse=True, return_counts=True)
        gid.append(inverse.reshape(-1) + offset)
        counts.append(cnt.astype(float))
        sizes.append(cnt.shape[0])
        offset += cnt.shape[0]
    return GroupIndex(np.stack(gid, 1), np.concatenate(counts), tuple(sizes))


@st.composite
def batches(draw):
    a = draw(st.integers(2, 3))
    m = draw(st.integers(1, 6))  # codes below m, some of them absent
    n = draw(st.integers(1, 60))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    allowed = [rng.choice(m, size=rng.integers(1, m + 1), replace=False) for _ in range(a)]
    codes = np.stack([rng.choice(c, size=n) for c in allowed], 1).astype(np.int64)
    c = draw(st.integers(1, 2))
    return codes, rng.normal(size=(n, c)) * 10 ** rng.uniform(-2, 3), rng


@settings(max_examples=150, deadline=None)
@given(batches())
def test_cell_statistics_equal_per_attribute_ones(batch):
    codes, v, rng = batch
    cells = encode_groups(codes, int(codes.max()))
    assert cells.cells is not None  # a few cells: the cell index
    plain = by_attribute(codes)
    assert cells.sizes == plain.sizes
    np.testing.assert_array_equal(cells.counts, plain.counts)
    np.testing.assert_array_equal(cells.gid, plain.gid)
    for a in range(codes.shape[1]):
        np.testing.assert_array_equal(cells.codes(a), plain.gid[:, a] - plain.attribute(a).start)
    # sums and means against np.add.at on every attribute's slots
    want = np.zeros((plain.n_slots, v.shape[1]))
    for a in range(codes.shape[1]):
        np.add.at(want, plain.gid[:, a], v)
    np.testing.assert_allclose(cells.sums(v), want, rtol=1e-12, atol=1e-12 * np.abs(v).sum())
    np.testing.assert_allclose(cells.means(v), want / plain.counts[:, None], rtol=1e-12,
                               atol=1e-12 * np.abs(v).sum())
    t = rng.normal(size=(plain.n_slots, v.shape[1]))
    np.testing.assert_allclose(cells.expand(t), sum(t[plain.gid[:, a]] for a in range(codes.shape[1])),
                               rtol=1e-14, atol=1e-14)
    w = rng.uniform(size=codes.shape[0])
    S = np.zeros((codes.shape[0], plain.n_slots))
    for a in range(codes.shape[1]):
        S[np.arange(codes.shape[0]), plain.gid[:, a]] = 1.0
    np.testing.assert_allclose(cells.cross_counts(), S.T @ S, rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(cells.cross_counts(w), S.T @ (w[:, None] * S), rtol=1e-13, atol=1e-12)


@settings(max_examples=80, deadline=None)
@given(batches(), st.sampled_from([0.0, 0.05, 0.5]), st.sampled_from([None, (-1.0, 1.0)]))
def test_projection_through_cells_equals_per_attribute(batch, tol, box):
    codes, z, rng = batch
    cells, plain = encode_groups(codes, int(codes.max())), by_attribute(codes)
    spec = Spec("ecp", tol, *(box or (None, None)))
    try:
        want = exact.project(z, plain, spec)
    except exact.SolverError:
        with pytest.raises(exact.SolverError):
            exact.project(z, cells, spec)
        return
    got = exact.project(z, cells, spec)
    scale = 1.0 + np.abs(z).max()
    np.testing.assert_allclose(got.out, want.out, atol=1e-9 * scale)
    assert violation(got.out, plain, spec) <= 1e-9 * scale  # recomputed on the per-attribute index
    g = rng.normal(size=z.shape)
    np.testing.assert_allclose(projector_vjp(g, got.tight, got.free, cells, True),
                               projector_vjp(g, want.tight, want.free, plain, True), atol=1e-9)


def test_cells_only_when_few():
    rng = np.random.default_rng(0)
    few = rng.integers(0, 4, (500, 3))
    assert encode_groups(few, 3).cells is not None  # 64 cells
    many = rng.integers(0, 40, (500, 3))  # 64,000 cells for 500 rows: the per-attribute index
    index = encode_groups(many, 39)
    assert index.cells is None
    np.testing.assert_array_equal(index.gid, by_attribute(many).gid)


def test_layer_on_cells_meets_parity_and_matches_gradcheck():
    from fairsk import FairnessLayer

    gen = torch.Generator().manual_seed(3)
    z = torch.randn(40, 1, dtype=torch.float64, generator=gen, requires_grad=True)
    groups = torch.stack([torch.randint(0, 2, (40,), generator=gen), 2 * torch.randint(0, 3, (40,), generator=gen)], 1)
    layer = FairnessLayer("ecp", 0.05, "exact")
    out = layer(z, groups).detach().numpy()[:, 0]
    for a in range(2):  # recomputed from the outputs, in NumPy
        means = [out[groups[:, a].numpy() == g].mean() for g in np.unique(groups[:, a].numpy())]
        assert max(means) - min(means) <= 0.05 + 1e-9
    assert torch.autograd.gradcheck(lambda v: layer(v, groups), (z,))


def test_negative_codes_refused_with_several_attributes():
    from fairsk import FairnessLayer

    z = torch.randn(6, dtype=torch.float64)
    groups = torch.tensor([[1, 0], [1, -1], [0, 1], [0, 0], [1, 1], [0, 1]])  # (1, -1) would be a valid cell
    with pytest.raises(ValueError, match="non-negative"):
        FairnessLayer("ecp", 0.1, "exact")(z, groups)
