"""The training iterator: whole-batch gathering equals skorch's per-sample DataLoader,
and stratified batches keep every stratum's share."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skorch.dataset import Dataset, ValidSplit
from torch.utils.data import DataLoader

from fairsk._net import MLP, ArrayBatches, FairNet, StratifiedBatchSampler, _dataset_arrays


def _dataset(n=103, seed=0):
    rng = np.random.default_rng(seed)
    X = {
        "X": rng.normal(size=(n, 4)).astype(np.float32),
        "groups": rng.integers(0, 3, size=(n, 2)),
        "strata": rng.integers(0, 3, size=(n, 2)),
        "sample_weight": rng.uniform(size=n).astype(np.float32),
    }
    return Dataset(X, rng.integers(0, 2, size=n).astype(np.float32))


def test_array_batches_equal_the_dataloader_batches():
    ds = _dataset()
    X, y, rows = _dataset_arrays(ds)
    batches = [np.random.default_rng(1).permutation(rows)[i : i + 16] for i in range(0, len(rows), 16)]
    loader = DataLoader(ds, batch_sampler=[b.tolist() for b in batches])
    ours = list(ArrayBatches(X, y, batches))
    assert len(ours) == len(batches)
    for (Xa, ya), (Xb, yb) in zip(ours, loader):
        assert Xa.keys() == Xb.keys()
        for key in Xa:
            assert Xa[key].dtype == Xb[key].dtype
            torch.testing.assert_close(Xa[key], Xb[key], rtol=0, atol=0)
        assert ya.dtype == yb.dtype
        torch.testing.assert_close(ya, yb, rtol=0, atol=0)


def test_validation_subsets_are_gathered_in_order():
    ds = _dataset()
    train, valid = ValidSplit(0.25, random_state=0)(ds)
    net = FairNet(MLP(4, 1), criterion=torch.nn.MSELoss, batch_size=10)
    batches = list(net.get_iterator(valid, training=False))
    got = torch.cat([Xb["X"] for Xb, _ in batches])
    torch.testing.assert_close(got, torch.as_tensor(ds.X["X"][np.asarray(valid.indices)]), rtol=0, atol=0)
    seen = torch.cat([Xb["X"] for Xb, _ in net.get_iterator(train, training=True)])
    assert seen.shape[0] == len(train.indices)  # every training row once per epoch


def test_other_datasets_fall_back_to_skorch():
    net = FairNet(MLP(4, 1), criterion=torch.nn.MSELoss, batch_size=10)
    plain = Dataset(np.zeros((20, 4), np.float32), np.zeros(20, np.float32))  # X not a dict
    assert isinstance(net.get_iterator(plain, training=True), DataLoader)
    assert _dataset_arrays(torch.utils.data.TensorDataset(torch.zeros(3))) is None


@pytest.mark.parametrize("seed", range(5))
def test_stratified_batches_keep_each_stratum_share(seed):
    rng = np.random.default_rng(seed)
    strata = rng.choice(4, size=1000, p=[0.6, 0.25, 0.1, 0.05])
    batches = list(StratifiedBatchSampler(strata, 100, seed))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    share = np.bincount(strata, minlength=4)
    for b in batches:
        counts = np.bincount(strata[b], minlength=4)
        # positions (rank + u) / size: a window of the sorted order holds its share +- 2
        assert np.all(np.abs(counts - share / 10) <= 2.0)


@pytest.mark.parametrize("shape", [(500,), (500, 1), (500, 3), (7, 2)])
def test_intersections_rank_rows_as_numpy_unique(shape):
    from fairsk._net import _intersections

    groups = np.random.default_rng(0).integers(0, 4, size=shape) * 3 + 1
    expected = np.unique(groups.reshape(shape[0], -1), axis=0, return_inverse=True)[1].reshape(-1)
    np.testing.assert_array_equal(_intersections(groups), expected)


def test_training_batches_are_redrawn_every_epoch_as_the_dataloader_did():
    """skorch builds the iterator once per fit and iterates it once per epoch: every
    pass must draw new stratified batches, exactly as a DataLoader over the same
    sampler (the previous implementation) did."""
    ds = _dataset(n=300)
    net = FairNet(MLP(4, 1), criterion=torch.nn.MSELoss, batch_size=32, batch_seed=5)
    ours = net.get_iterator(ds, training=True)
    from fairsk._net import _intersections

    sampler = StratifiedBatchSampler(_intersections(ds.X["strata"]), 32, 6)  # the seed after one increment
    loader = DataLoader(ds, batch_sampler=sampler)
    epochs = []
    for _ in range(2):
        batches = list(ours)
        reference = list(loader)
        assert len(batches) == len(reference) == len(ours)
        for (Xa, ya), (Xb, yb) in zip(batches, reference):
            torch.testing.assert_close(Xa["X"], Xb["X"], rtol=0, atol=0)
            torch.testing.assert_close(ya, yb, rtol=0, atol=0)
        epochs.append(torch.cat([Xb["X"] for Xb, _ in batches]))
        assert epochs[-1].shape[0] == 300
    assert not torch.equal(epochs[0], epochs[1])


def test_unstratified_training_batches_are_reshuffled_every_epoch():
    ds = Dataset({"X": np.arange(40, dtype=np.float32)[:, None]}, np.zeros(40, np.float32))
    it = FairNet(MLP(1, 1), criterion=torch.nn.MSELoss, batch_size=8).get_iterator(ds, training=True)
    first, second = (torch.cat([Xb["X"] for Xb, _ in it])[:, 0] for _ in range(2))
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(40))
    assert not torch.equal(first, second)
