"""The torch side of the estimators: the body + fairness layer module, the skorch net
with stratified batches and weighted loss, and the stratified batch sampler."""

from __future__ import annotations

import inspect

import numpy as np
import torch
from skorch import NeuralNet
from skorch.dataset import Dataset
from torch import nn
from torch.utils.data import Subset

from .layer import FairnessLayer


class MLP(nn.Module):
    """The default body: ``Linear -> ReLU`` for each hidden layer, then ``Linear``."""

    def __init__(self, n_features_in: int, n_outputs: int, hidden_layer_sizes=(64,)):
        super().__init__()
        layers, width = [], n_features_in
        for h in hidden_layer_sizes:
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            width = int(h)
        layers.append(nn.Linear(width, n_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, X):
        return self.net(X)


def build_body(module, module_params: dict, n_features_in: int, n_outputs: int, hidden_layer_sizes) -> nn.Module:
    """Instantiate the body; ``n_features_in``/``n_outputs`` are passed where accepted."""
    if module is None:
        return MLP(n_features_in, n_outputs, hidden_layer_sizes)
    if isinstance(module, nn.Module):
        raise TypeError("module must be a torch module *class* (parameters go in module__*), not an instance")
    params = dict(module_params)
    accepted = inspect.signature(module).parameters
    for name, value in (("n_features_in", n_features_in), ("n_outputs", n_outputs)):
        if name in accepted and name not in params:
            params[name] = value
    return module(**params)


class FairModule(nn.Module):
    """A body followed by :class:`FairnessLayer`; the layer is skipped without groups."""

    def __init__(self, body: nn.Module, layer: FairnessLayer):
        super().__init__()
        self.body = body
        self.layer = layer

    def forward(self, X, groups=None, y=None, **batch_extras):
        # batch_extras: strata and sample weights, read by FairNet's hooks, not here
        z = self.body(X)
        if groups is None:
            return z
        if z.dim() == 2 and z.shape[1] == 1 and y is not None and y.dim() == 1:
            y = y.unsqueeze(1)
        return self.layer(z, groups, y)


class StratifiedBatchSampler:
    """Mini-batches that keep the data's group shares (the paper's requirement).

    Each sample gets the position ``(rank in its shuffled stratum + u) / stratum size``;
    sorting by position and cutting into batches spreads every stratum evenly.
    """

    def __init__(self, strata: np.ndarray, batch_size: int, seed: int):
        self.strata = np.asarray(strata)
        self.batch_size = int(batch_size)
        self.rng = np.random.default_rng(seed)

    def __iter__(self):
        n = len(self.strata)
        position = np.empty(n)
        # the members of each stratum, in increasing order, from one stable sort
        by_stratum = np.argsort(self.strata, kind="stable")
        bounds = np.flatnonzero(np.diff(self.strata[by_stratum])) + 1
        for idx in np.split(by_stratum, bounds):
            perm = self.rng.permutation(idx)
            position[perm] = (np.arange(len(idx)) + self.rng.uniform(size=len(idx))) / len(idx)
        order = np.argsort(position, kind="stable")
        for start in range(0, n, self.batch_size):
            yield order[start : start + self.batch_size]

    def __len__(self):
        return -(-len(self.strata) // self.batch_size)


class FairNet(NeuralNet):
    """skorch net whose hooks add stratified batches, per-sample weights and, for the
    penalty baselines, ``penalty * sum of squared pairwise group-mean gaps``."""

    def __init__(self, *args, batch_seed: int = 0, penalty: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.batch_seed = batch_seed
        self.penalty = penalty

    def get_iterator(self, dataset, training=False):
        """Whole-batch iterator over our own datasets; skorch's DataLoader otherwise.

        Training batches are stratified by ``X["strata"]`` when there is one, and
        shuffled otherwise; validation batches keep the data's order.
        """
        arrays = _dataset_arrays(dataset)
        if arrays is None:
            return super().get_iterator(dataset, training=training)
        X, y, rows = arrays
        size = len(rows) if self.batch_size == -1 else self.batch_size
        if not training:
            return ArrayBatches(X, y, _Consecutive(rows, size))
        # skorch asks once per fit and iterates once per epoch: the batch plans below
        # draw new batches on every iteration
        self.batch_seed += 1
        strata = X.get("strata")
        if strata is None:
            return ArrayBatches(X, y, _Shuffled(rows, size, self.batch_seed))
        sampler = StratifiedBatchSampler(_intersections(strata.numpy())[rows], size, self.batch_seed)
        # the strata are only read by the penalty (get_loss): gather them only then
        keep = X if self.penalty else {k: v for k, v in X.items() if k != "strata"}
        return ArrayBatches(keep, y, _Mapped(sampler, rows))

    def get_loss(self, y_pred, y_true, X=None, training=False):
        y_true = y_true.to(y_pred.device)
        loss = self.criterion_(y_pred, y_true)
        if loss.dim() > 1:
            loss = loss.reshape(loss.shape[0], -1).mean(1)
        weight = X.get("sample_weight") if isinstance(X, dict) else None
        if weight is None:
            total = loss.mean()
        else:
            weight = weight.to(loss.dtype).to(loss.device)
            total = (loss * weight).sum() / weight.sum().clamp(min=1e-12)
        if self.penalty and isinstance(X, dict) and X.get("strata") is not None:
            total = total + self.penalty * squared_gaps(y_pred, X["strata"])
        return total


class ArrayBatches:
    """Mini-batches gathered whole: one index per array per batch.

    torch's DataLoader fetches every sample separately and collates them, which at
    small batch sizes costs more than the network's step; indexing each array once
    per batch gives the same batches (same rows, dtypes and order) without that.
    ``plan`` is re-iterated on every pass (every epoch) and yields row indices.
    """

    def __init__(self, X: dict, y, plan):
        self.X, self.y, self.plan = X, y, plan

    def __iter__(self):
        for rows in self.plan:
            idx = torch.from_numpy(rows)
            yield {k: v[idx] for k, v in self.X.items()}, (None if self.y is None else self.y[idx])

    def __len__(self) -> int:
        return len(self.plan)


class _Consecutive:
    """The rows in order, ``size`` at a time (validation)."""

    def __init__(self, rows: np.ndarray, size: int):
        self.rows, self.size = rows, size

    def __iter__(self):
        for start in range(0, len(self.rows), self.size):
            yield self.rows[start : start + self.size]

    def __len__(self) -> int:
        return -(-len(self.rows) // self.size)


class _Shuffled(_Consecutive):
    """A new random order of the rows on every pass (training without strata)."""

    def __init__(self, rows: np.ndarray, size: int, seed: int):
        super().__init__(rows, size)
        self.rng = np.random.default_rng(seed)

    def __iter__(self):
        order = self.rng.permutation(self.rows)
        for start in range(0, len(order), self.size):
            yield order[start : start + self.size]


class _Mapped:
    """A sampler's batches of positions, as row indices."""

    def __init__(self, sampler, rows: np.ndarray):
        self.sampler, self.rows = sampler, rows

    def __iter__(self):
        for positions in self.sampler:
            yield self.rows[positions]

    def __len__(self) -> int:
        return len(self.sampler)


def _dataset_arrays(dataset):
    """``(X dict of tensors, y tensor or None, row indices)`` of a skorch ``Dataset`` (or a
    ``Subset`` of one, as skorch's validation split makes) whose ``X`` is a dict of
    dense arrays; ``None`` for anything else (left to skorch's DataLoader)."""
    rows = None
    if isinstance(dataset, Subset):
        rows = np.asarray(dataset.indices, dtype=np.int64)
        dataset = dataset.dataset
    if not isinstance(dataset, Dataset) or not isinstance(dataset.X, dict):
        return None
    if not all(isinstance(v, (np.ndarray, torch.Tensor)) for v in dataset.X.values()):
        return None
    if dataset.y is not None and not isinstance(dataset.y, (np.ndarray, torch.Tensor)):
        return None
    cache = getattr(dataset, "_fairsk_tensors", None)
    if cache is None:  # one conversion per fit, shared by every epoch (no copy)
        cache = ({k: torch.as_tensor(v) for k, v in dataset.X.items()},
                 None if dataset.y is None else torch.as_tensor(dataset.y))
        dataset._fairsk_tensors = cache
    X, y = cache
    if rows is None:
        rows = np.arange(len(dataset), dtype=np.int64)
    return X, y, rows


def _intersections(groups: np.ndarray) -> np.ndarray:
    """One code per combination of groups (the strata of stratified batches): the rank
    of each row among the distinct rows in lexicographic order, as
    ``np.unique(groups, axis=0, return_inverse=True)`` gives, without its slow row sort."""
    groups = groups.reshape(len(groups), -1)
    code = np.zeros(len(groups), dtype=np.int64)
    for column in groups.T:
        _, inverse = np.unique(column, return_inverse=True)
        # re-rank after each column, so the combined code never overflows
        _, code = np.unique(code * (int(inverse.max(initial=0)) + 1) + inverse, return_inverse=True)
    return code.reshape(-1)


def squared_gaps(y_pred: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Sum over attributes, columns and pairs of groups of squared batch-mean gaps."""
    groups = groups.reshape(groups.shape[0], -1).to(y_pred.device)
    out = y_pred.reshape(y_pred.shape[0], -1)
    total = out.new_zeros(())
    for a in range(groups.shape[1]):
        _, codes = torch.unique(groups[:, a], return_inverse=True)
        k = int(codes.max()) + 1
        counts = torch.bincount(codes, minlength=k).to(out.dtype)
        means = out.new_zeros((k, out.shape[1])).index_add_(0, codes, out) / counts.unsqueeze(1)
        diff = means.unsqueeze(0) - means.unsqueeze(1)
        total = total + (diff**2).sum() / 2
    return total
