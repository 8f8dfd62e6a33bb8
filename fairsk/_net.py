"""The torch side of the estimators: the default body, the body + fairness layer module,
the training data and its batches, the skorch net, and the loss components.

Data of one fit live in a :class:`FairDataset` (features, targets, group codes, the
layer's targets for EER, per-sample weights); its mini-batches are :class:`Batch`
objects. The net hands a batch's features (and, to a module that projects, its
groups) to the module, and reads the weights and groups back in ``get_loss``: the
module's ``forward`` receives only what it uses.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, fields, replace
from numbers import Integral

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import Callback
from torch import nn
from torch.utils.data import Dataset, Subset

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


def hidden_sizes(hidden_layer_sizes) -> tuple[int, ...]:
    """``hidden_layer_sizes`` as a tuple (an int is one hidden layer, as in scikit-learn's MLP)."""
    if isinstance(hidden_layer_sizes, Integral):
        return (int(hidden_layer_sizes),)
    return tuple(int(h) for h in hidden_layer_sizes)


def build_body(module, module_params: dict, n_features_in: int, n_outputs: int, hidden_layer_sizes) -> nn.Module:
    """Instantiate the body; ``n_features_in``/``n_outputs`` are passed where accepted.

    A ``module__*`` parameter the body does not take is an error (it would otherwise
    do nothing without a word).
    """
    if module is None:
        if module_params:
            names = ", ".join(f"module__{k}" for k in sorted(module_params))
            raise ValueError(
                f"{names}: the default body (an MLP) takes no module__* parameters; set its widths with "
                "hidden_layer_sizes, the device with device=, class weights with class_weight= "
                "(classifiers), or pass your own module= class"
            )
        return MLP(n_features_in, n_outputs, hidden_sizes(hidden_layer_sizes))
    if isinstance(module, nn.Module):
        raise TypeError("module must be a torch module *class* (parameters go in module__*), not an instance")
    params = dict(module_params)
    accepted = inspect.signature(module).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    unknown = sorted(k for k in params if k not in accepted)
    if unknown and not takes_any:
        raise ValueError(
            f"{', '.join('module__' + k for k in unknown)}: {module.__name__} takes no such parameter "
            f"(it takes {sorted(k for k in accepted if k != 'self')})"
        )
    for name, value in (("n_features_in", n_features_in), ("n_outputs", n_outputs)):
        if name in accepted and name not in params:
            params[name] = value
    return module(**params)


class FairModule(nn.Module):
    """A body followed by :class:`FairnessLayer`: ``forward(X, groups, y=None)``.

    ``y`` (the targets) is read by ``criterion="eer"`` only. Without groups, or
    without a layer (``layer=None``: the baselines train the body alone), the
    body's outputs are returned.
    """

    def __init__(self, body: nn.Module, layer: FairnessLayer | None):
        super().__init__()
        self.body = body
        self.layer = layer

    @property
    def projects(self) -> bool:
        """Whether the net passes each batch's groups (and EER targets) to ``forward``."""
        return self.layer is not None

    def forward(self, X, groups=None, y=None):
        z = self.body(X)
        if groups is None or self.layer is None:
            return z
        if z.dim() == 2 and z.shape[1] == 1 and y is not None and y.dim() == 1:
            y = y.unsqueeze(1)
        return self.layer(z, groups, y)


def resolve_device(device) -> torch.device:
    """``device`` (skorch's spelling: "cpu", "cuda", "cuda:1", or a torch.device) as a
    torch.device, or a clear ``ValueError`` when this machine does not have it."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device={device!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1')") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r}, but CUDA is not available on this machine "
                             "(torch.cuda.is_available() is False); use device='cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r}, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device={device!r}, but MPS is not available on this machine; use device='cpu'")
    elif dev.type != "cpu":
        try:
            torch.empty(0, device=dev)
        except (RuntimeError, AssertionError) as exc:
            raise ValueError(f"device={device!r} is not available on this machine ({exc})") from None
    return dev


# -- data -------------------------------------------------------------------------------
@dataclass
class Batch:
    """One mini-batch: features, and what the layer and the loss read besides.

    ``groups`` (n, a) group codes (stratification, the layer, the penalty);
    ``target`` the targets the layer needs for EER; ``sample_weight`` (n,).
    """

    X: torch.Tensor
    groups: torch.Tensor | None = None
    target: torch.Tensor | None = None
    sample_weight: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.X.shape[0]

    def to(self, device) -> Batch:
        if self.X.device == torch.device(device) and all(
                t is None or t.device == self.X.device for t in (self.groups, self.target, self.sample_weight)):
            return self  # the training step on the CPU: nothing to move
        return replace(self, **{f.name: None if getattr(self, f.name) is None else getattr(self, f.name).to(device)
                                for f in fields(self)})

    def take(self, rows: torch.Tensor) -> Batch:
        if rows.dim() == 1 and rows.dtype in (torch.int64, torch.int32):
            def pick(t):  # a gather of whole rows: cheaper than advanced indexing
                return t.index_select(0, rows)
        else:
            def pick(t):
                return t[rows]
        return Batch(*(None if getattr(self, f.name) is None else pick(getattr(self, f.name)) for f in _BATCH_FIELDS))


_BATCH_FIELDS = fields(Batch)


class FairDataset(Dataset):
    """The training data of one fit, as tensors (converted once, without copies).

    Parameters
    ----------
    X : array (n, d)
    y : array (n,) or (n, c)
        The loss's targets.
    groups : int array (n, a), optional
        Group codes; their intersections are the strata of the training batches.
    target : array, optional
        Targets read by the layer (``criterion="eer"``).
    sample_weight : array (n,), optional
    """

    def __init__(self, X, y, *, groups=None, target=None, sample_weight=None):
        def tensor(v):
            return None if v is None else torch.as_tensor(v)

        self.data = Batch(tensor(X), tensor(groups), tensor(target), tensor(sample_weight))
        self.y = tensor(y)
        self.strata = None if groups is None else _intersections(np.asarray(groups))

    def __len__(self) -> int:
        return self.data.X.shape[0]

    def __getitem__(self, i):
        rows = torch.as_tensor(np.atleast_1d(i))
        return self.batch(rows)

    def batch(self, rows) -> tuple[Batch, torch.Tensor | None]:
        """The batch of ``rows`` (integer indices), and its targets."""
        rows = torch.as_tensor(rows)
        return self.data.take(rows), (None if self.y is None else self.y[rows])


class Batches:
    """Mini-batches gathered whole: one index per array per batch.

    torch's DataLoader fetches every sample separately and collates them, which at
    small batch sizes costs more than the network's step. ``plan`` is re-iterated on
    every pass (every epoch) and yields row indices.
    """

    def __init__(self, dataset: FairDataset, plan):
        self.dataset, self.plan = dataset, plan

    def __iter__(self):
        for rows in self.plan:
            yield self.dataset.batch(torch.from_numpy(rows))

    def __len__(self) -> int:
        return len(self.plan)


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
        # the members of each stratum, in increasing order, from one stable sort (of
        # small integer keys: a radix sort, one pass)
        keys = self.strata.astype(np.uint16) if n and 0 <= self.strata.min() and self.strata.max() < 1 << 16 \
            else self.strata
        by_stratum = np.argsort(keys, kind="stable")
        bounds = np.flatnonzero(np.diff(self.strata[by_stratum])) + 1
        members, positions = [], []
        for idx in np.split(by_stratum, bounds):
            members.append(self.rng.permutation(idx))
            positions.append((np.arange(len(idx)) + self.rng.uniform(size=len(idx))) / len(idx))
        order = _by_position(np.concatenate(members), np.concatenate(positions))
        for start in range(0, n, self.batch_size):
            yield order[start : start + self.batch_size]

    def __len__(self):
        return -(-len(self.strata) // self.batch_size)


def _by_position(members: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The samples ``members`` sorted by their ``positions``, ties in increasing sample
    order (as a stable sort of the positions indexed by sample gives).

    Each stratum's positions arrive increasing (one run per stratum): the stable sort
    merges the runs in about one pass instead of sorting ``n`` random keys. Ties (two
    positions equal to the last bit) are ordered by sample through the full sort."""
    o = np.argsort(positions, kind="stable")
    ranked = positions[o]
    if ranked.shape[0] > 1 and (ranked[1:] == ranked[:-1]).any():
        position = np.empty(members.shape[0])
        position[members] = positions
        return np.argsort(position, kind="stable")
    return members[o]


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


def _dataset_rows(dataset) -> tuple[FairDataset, np.ndarray] | None:
    """``(FairDataset, row indices)`` of a :class:`FairDataset` or of a ``Subset`` of one
    (as skorch's validation split makes); ``None`` for anything else."""
    rows = None
    if isinstance(dataset, Subset):
        rows = np.asarray(dataset.indices, dtype=np.int64)
        dataset = dataset.dataset
    if not isinstance(dataset, FairDataset):
        return None
    return dataset, (np.arange(len(dataset), dtype=np.int64) if rows is None else rows)


# -- loss components ---------------------------------------------------------------------
class GapPenalty:
    """``weight * sum of squared pairwise group-mean gaps`` of a batch's outputs (the
    penalty baselines' loss term), per attribute and output column."""

    def __init__(self, weight: float):
        self.weight = float(weight)

    def __call__(self, y_pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        if batch.groups is None:
            return y_pred.new_zeros(())
        return self.weight * squared_gaps(y_pred, batch.groups)


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


# -- the net -----------------------------------------------------------------------------
class FairNet(NeuralNet):
    """skorch net over a :class:`FairDataset`: stratified training batches, per-sample
    weights, and optional loss components (``penalty``: a callable
    ``(y_pred, batch) -> scalar``, e.g. :class:`GapPenalty`).

    The batches of the k-th training pass of one fit are drawn with seed
    ``batch_seed + k`` (k = 1, 2, ...); the count is private state created by
    ``initialize``, so the net's parameters never change.
    """

    def __init__(self, *args, batch_seed: int = 0, penalty=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.batch_seed = batch_seed
        self.penalty = penalty

    def initialize(self):
        self.training_passes_ = 0
        return super().initialize()

    def get_iterator(self, dataset, training=False):
        """Whole-batch iterator over a :class:`FairDataset`; skorch's DataLoader otherwise.

        Training batches are stratified by the intersections of the groups when there
        are groups, and shuffled otherwise; validation batches keep the data's order.
        """
        found = _dataset_rows(dataset)
        if found is None:
            return super().get_iterator(dataset, training=training)
        data, rows = found
        size = len(rows) if self.batch_size == -1 else self.batch_size
        if not training:
            return Batches(data, _Consecutive(rows, size))
        # skorch asks once per fit and iterates once per epoch: the plans below draw
        # new batches on every iteration
        self.training_passes_ = getattr(self, "training_passes_", 0) + 1
        seed = self.batch_seed + self.training_passes_
        if data.strata is None:
            return Batches(data, _Shuffled(rows, size, seed))
        return Batches(data, _Mapped(StratifiedBatchSampler(data.strata[rows], size, seed), rows))

    def infer(self, x, **fit_params):
        if not isinstance(x, Batch):
            return super().infer(x, **fit_params)
        x = x.to(self.device)
        if getattr(self.module_, "projects", False):
            return self.module_(x.X, x.groups, x.target)
        return self.module_(x.X)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        y_true = y_true.to(y_pred.device)
        loss = self.criterion_(y_pred, y_true)
        if loss.dim() > 1:
            loss = loss.reshape(loss.shape[0], -1).mean(1)
        weight = X.sample_weight if isinstance(X, Batch) else None
        if weight is None:
            total = loss.mean()
        else:
            weight = weight.to(loss.dtype).to(loss.device)
            total = (loss * weight).sum() / weight.sum().clamp(min=1e-12)
        if self.penalty is not None and isinstance(X, Batch):
            total = total + self.penalty(y_pred, X)
        return total


class EpochFairness(Callback):
    """Training feedback: after each epoch, the parity gap of the training outputs
    pooled over the epoch's batches (``train_gap``: largest over attributes and
    columns) and, for a classifier, the training accuracy (``train_acc``)."""

    def __init__(self, classifier: bool, threshold: float = 0.0):
        self.classifier = classifier
        self.threshold = threshold  # of a one-column output: 0 for a logit, 1/2 for a probability

    def on_epoch_begin(self, net, **kwargs):
        self.parts_ = []

    def on_batch_end(self, net, batch=None, training=False, y_pred=None, **kwargs):
        if training and y_pred is not None:
            Xi, yi = batch
            self.parts_.append((y_pred.detach().cpu().double(), None if yi is None else yi.cpu(), Xi.groups))

    def on_epoch_end(self, net, **kwargs):
        if not self.parts_:
            return
        out = torch.cat([p[0] for p in self.parts_])
        out = out.reshape(out.shape[0], -1)
        if self.parts_[0][2] is not None:
            groups = torch.cat([p[2] for p in self.parts_]).reshape(out.shape[0], -1)
            gap = 0.0
            for a in range(groups.shape[1]):
                _, codes = torch.unique(groups[:, a], return_inverse=True)
                k = int(codes.max()) + 1
                means = out.new_zeros((k, out.shape[1])).index_add_(0, codes, out)
                means = means / torch.bincount(codes, minlength=k).to(out.dtype).unsqueeze(1)
                gap = max(gap, float((means.max(0).values - means.min(0).values).max()))
            net.history.record("train_gap", gap)
        if self.classifier and self.parts_[0][1] is not None:
            y = torch.cat([p[1] for p in self.parts_])
            pred = (out[:, 0] > self.threshold).long() if out.shape[1] == 1 else out.argmax(1)
            net.history.record("train_acc", float((pred == y.reshape(-1).long()).double().mean()))


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
