"""The training data and iterator: whole-batch gathering equals per-row indexing,
stratified batches keep every stratum's share, and the net never changes its
parameters while drawing new batches every epoch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skorch.dataset import Dataset, ValidSplit
from torch.utils.data import DataLoader

from fairsk._net import (
    MLP,
    Batch,
    Batches,
    FairDataset,
    FairModule,
    FairNet,
    GapPenalty,
    StratifiedBatchSampler,
    _intersections,
)
from fairsk.layer import FairnessLayer


def _dataset(n=103, seed=0, weights=True):
    rng = np.random.default_rng(seed)
    return FairDataset(
        rng.normal(size=(n, 4)).astype(np.float32),
        rng.integers(0, 2, size=n).astype(np.float32),
        groups=rng.integers(0, 3, size=(n, 2)),
        sample_weight=rng.uniform(size=n).astype(np.float32) if weights else None,
    )


def test_batches_gather_the_rows_of_the_plan():
    ds = _dataset()
    plan = [np.random.default_rng(1).permutation(len(ds))[i : i + 16] for i in range(0, len(ds), 16)]
    ours = list(Batches(ds, plan))
    assert len(ours) == len(plan)
    for (batch, y), rows in zip(ours, plan):
        assert isinstance(batch, Batch) and len(batch) == len(rows)
        torch.testing.assert_close(batch.X, ds.data.X[rows], rtol=0, atol=0)
        torch.testing.assert_close(batch.groups, ds.data.groups[rows], rtol=0, atol=0)
        torch.testing.assert_close(batch.sample_weight, ds.data.sample_weight[rows], rtol=0, atol=0)
        torch.testing.assert_close(y, ds.y[rows], rtol=0, atol=0)
        assert batch.target is None


def test_validation_subsets_are_gathered_in_order():
    ds = _dataset()
    train, valid = ValidSplit(0.25, random_state=0)(ds)
    net = FairNet(MLP(4, 1), criterion=torch.nn.MSELoss, batch_size=10)
    batches = list(net.get_iterator(valid, training=False))
    got = torch.cat([b.X for b, _ in batches])
    torch.testing.assert_close(got, ds.data.X[np.asarray(valid.indices)], rtol=0, atol=0)
    seen = torch.cat([b.X for b, _ in net.get_iterator(train, training=True)])
    assert seen.shape[0] == len(train.indices)  # every training row once per epoch


def test_other_datasets_fall_back_to_skorch():
    net = FairNet(MLP(4, 1), criterion=torch.nn.MSELoss, batch_size=10)
    plain = Dataset(np.zeros((20, 4), np.float32), np.zeros(20, np.float32))
    assert isinstance(net.get_iterator(plain, training=True), DataLoader)


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
    groups = np.random.default_rng(0).integers(0, 4, size=shape) * 3 + 1
    expected = np.unique(groups.reshape(shape[0], -1), axis=0, return_inverse=True)[1].reshape(-1)
    np.testing.assert_array_equal(_intersections(groups), expected)


def test_training_batches_are_redrawn_every_epoch_without_changing_the_net_parameters():
    """skorch builds the iterator once per fit and iterates it once per epoch: every
    pass draws new stratified batches, exactly those of the sampler seeded with
    ``batch_seed + 1`` (the first training pass of the fit), and ``batch_seed`` stays."""
    ds = _dataset(n=300)
    net = FairNet(MLP(4, 1), criterion=torch.nn.MSELoss, batch_size=32, batch_seed=5).initialize()
    ours = net.get_iterator(ds, training=True)
    assert net.batch_seed == 5 and net.get_params()["batch_seed"] == 5
    reference = StratifiedBatchSampler(_intersections(ds.data.groups.numpy()), 32, 6)
    epochs = []
    for _ in range(2):
        batches = list(ours)
        rows = list(reference)
        assert len(batches) == len(rows) == len(ours)
        for (b, y), r in zip(batches, rows):
            torch.testing.assert_close(b.X, ds.data.X[r], rtol=0, atol=0)
            torch.testing.assert_close(y, ds.y[r], rtol=0, atol=0)
        epochs.append(torch.cat([b.X for b, _ in batches]))
        assert epochs[-1].shape[0] == 300
    assert not torch.equal(epochs[0], epochs[1])
    assert net.batch_seed == 5
    # a fresh initialisation (a new fit) starts the batch draws again
    net.initialize()
    first = torch.cat([b.X for b, _ in net.get_iterator(ds, training=True)])
    torch.testing.assert_close(first, epochs[0], rtol=0, atol=0)


def test_unstratified_training_batches_are_reshuffled_every_epoch():
    ds = FairDataset(np.arange(40, dtype=np.float32)[:, None], np.zeros(40, np.float32))
    it = FairNet(MLP(1, 1), criterion=torch.nn.MSELoss, batch_size=8).get_iterator(ds, training=True)
    first, second = (torch.cat([b.X for b, _ in it])[:, 0] for _ in range(2))
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(40))
    assert not torch.equal(first, second)


def test_the_module_gets_groups_only_when_it_projects_and_weights_reach_the_loss():
    """The body alone is called with the features only; a FairModule also with the
    groups; the weights and the penalty are read by get_loss from the batch."""
    calls = []

    class Body(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 1)

        def forward(self, X):  # no **kwargs: any extra argument would fail
            calls.append(X.shape)
            return self.lin(X)

    ds = _dataset(n=40)
    batch, y = ds.batch(np.arange(40))
    plain = FairNet(Body(), criterion=torch.nn.MSELoss, criterion__reduction="none").initialize()
    out = plain.infer(batch)
    assert out.shape == (40, 1) and calls == [(40, 4)]
    fair = FairNet(FairModule(Body(), FairnessLayer(tolerance=0.0, solver="exact")), criterion=torch.nn.MSELoss,
                   criterion__reduction="none").initialize()
    projected = fair.infer(batch)
    for a in range(2):  # the layer acted on the batch's groups
        g = batch.groups[:, a]
        means = [projected[g == k].mean().item() for k in g.unique()]
        assert max(means) - min(means) <= 1e-5
    # weighted loss: sum(w * l) / sum(w)
    loss = plain.get_loss(out, y.reshape(-1, 1), X=batch)
    per = (out.detach() - y.reshape(-1, 1)) ** 2
    expected = (per[:, 0] * batch.sample_weight).sum() / batch.sample_weight.sum()
    torch.testing.assert_close(loss.detach(), expected)
    penalised = FairNet(Body(), criterion=torch.nn.MSELoss, criterion__reduction="none",
                        penalty=GapPenalty(2.0)).initialize()
    penalised.module_.load_state_dict(plain.module_.state_dict())
    out2 = penalised.infer(batch)
    gaps = 0.0
    for a in range(2):
        g = batch.groups[:, a]
        means = torch.stack([out2.detach()[g == k].mean() for k in g.unique()])
        gaps += float(((means[:, None] - means[None, :]) ** 2).sum() / 2)
    total = penalised.get_loss(out2, y.reshape(-1, 1), X=batch)
    torch.testing.assert_close(total.detach(), expected + 2.0 * torch.tensor(gaps, dtype=expected.dtype))
