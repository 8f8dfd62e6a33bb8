"""Equal opportunity and equalized odds on a training batch: the projection of the
class probabilities onto the criterion's set, differentiable, built on
:class:`~fairsk.FairnessLayer`.

On a training batch the true labels are known, so the criteria are parity
constraints on the group means of a probability *within a true-label stratum*:

* equal opportunity: among the rows whose true label is the positive one, the group
  means of the positive-class probability are within ``tolerance`` of each other
  (true-positive rates in expectation);
* equalized odds: the same within every true-label stratum (true- and
  false-positive rates in expectation); with several classes, column ``k`` of the
  probabilities is constrained within the strata ``y == k`` and ``y != k``
  (class-vs-rest).

The strata of one column are disjoint and the squared distance is a sum over rows,
so the projection onto the intersection is the projection of every stratum's rows
onto that stratum's parity set, each solved exactly by the layer with the box
``bounds`` (``(0, 1)`` for probabilities).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from skorch.callbacks import Callback
from torch import Tensor, nn

from ._net import FairModule
from .layer import FairnessLayer
from .projection import CRITERIA, get_criterion

__all__ = ["ErrorRateLayer", "project_error_rates", "batch_error_rate_gap", "ERROR_RATE_CRITERIA"]

#: the names of the registered criteria on error rates (parity within true-label strata)
ERROR_RATE_CRITERIA = tuple(name for name, c in CRITERIA.items() if getattr(c, "label_strata", False))


class ErrorRateLayer(nn.Module):
    """Project probabilities onto the equal-opportunity or equalized-odds set of a batch.

    Parameters
    ----------
    criterion : {"equal_opportunity", "equalized_odds"}, default="equalized_odds"
        Which true-label strata are constrained: the positive one only, or all.
    tolerance : float, default=0.0
        Allowed difference between two group means within a stratum, ``>= 0``.
    bounds : tuple (lb, ub), default=(0.0, 1.0)
        Box on the outputs (probabilities by default).
    solver : {"exact", "qpth"}, default="exact"
        Passed to :class:`~fairsk.FairnessLayer`.

    Notes
    -----
    * ``forward(p, groups, y)``: ``p`` of shape ``(n,)`` holds the positive-class
      probability and ``y`` is 0/1 (1 = positive); ``p`` of shape ``(n, c)`` holds
      one probability column per class and ``y`` the class index ``0..c-1``.
    * Rows outside the constrained strata (the negative rows under equal
      opportunity) are returned unchanged. Groups absent from a stratum, and
      strata absent from the batch, add no constraint.
    * The columns of ``(n, c)`` probabilities are projected independently, so the
      rows need not sum to one afterwards (as with the layer on several columns).
    * Every output is checked by the layer (each stratum to 1e-6 in float64).

    Examples
    --------
    >>> import torch
    >>> from fairsk.odds import ErrorRateLayer
    >>> p = torch.tensor([0.9, 0.7, 0.2, 0.3, 0.4, 0.1], dtype=torch.float64)
    >>> y = torch.tensor([1, 1, 0, 1, 1, 0])
    >>> groups = torch.tensor([0, 0, 0, 1, 1, 1])
    >>> ErrorRateLayer("equal_opportunity", tolerance=0.0)(p, groups, y)
    tensor([0.6750, 0.4750, 0.2000, 0.5250, 0.6250, 0.1000], dtype=torch.float64)
    """

    def __init__(
        self,
        criterion: str = "equalized_odds",
        tolerance: float = 0.0,
        bounds: tuple[float | None, float | None] | None = (0.0, 1.0),
        solver: str = "exact",
    ) -> None:
        super().__init__()
        if not isinstance(criterion, str) or criterion not in ERROR_RATE_CRITERIA:
            raise ValueError(f"criterion must be one of {ERROR_RATE_CRITERIA}, got {criterion!r}")
        self.criterion = criterion
        self.tolerance = tolerance
        self.bounds = bounds
        self.solver = solver
        # validates tolerance, bounds and solver now rather than at the first batch
        self.parity = FairnessLayer("ecp", tolerance=tolerance, solver=solver, bounds=bounds)

    def extra_repr(self) -> str:
        return f"criterion={self.criterion!r}, tolerance={self.tolerance!r}, bounds={self.bounds!r}"

    def forward(self, p: Tensor, groups: Tensor, y: Any) -> Tensor:
        """The projection of ``p`` (same shape, dtype and device)."""
        if not isinstance(p, Tensor):
            raise TypeError(f"p must be a torch.Tensor, got {type(p).__name__}")
        if p.dim() not in (1, 2):
            raise ValueError(f"p must have shape (n,) or (n, c), got {tuple(p.shape)}")
        p2 = p.unsqueeze(1) if p.dim() == 1 else p
        n, c = p2.shape
        codes = _labels(y, n, c if p.dim() == 2 else 2, p.device)
        groups = torch.as_tensor(groups, device=p.device)
        if groups.shape[:1] != (n,):
            raise ValueError(f"groups must have {n} rows to match p, got shape {tuple(groups.shape)}")
        out = p2.clone()
        for k, masks in get_criterion(self.criterion).strata(codes, c if p.dim() == 2 else None):
            for mask in masks:
                rows = torch.nonzero(mask).reshape(-1)
                if rows.numel() == 0:
                    continue
                out[rows, k] = self.parity(p2[rows, k], groups[rows])
        return out.reshape(p.shape)


def project_error_rates(
    p: Any,
    groups: Any,
    y: Any,
    *,
    criterion: str = "equalized_odds",
    tolerance: float = 0.0,
    bounds: tuple[float | None, float | None] | None = (0.0, 1.0),
) -> np.ndarray:
    """The projection of :class:`ErrorRateLayer` on NumPy arrays (float64, no gradient).

    Examples
    --------
    >>> from fairsk.odds import project_error_rates
    >>> project_error_rates([0.9, 0.7, 0.2, 0.3, 0.4, 0.1], [0, 0, 0, 1, 1, 1], [1, 1, 0, 1, 1, 0],
    ...                     criterion="equal_opportunity").round(3).tolist()
    [0.675, 0.475, 0.2, 0.525, 0.625, 0.1]
    """
    layer = ErrorRateLayer(criterion, tolerance=tolerance, bounds=bounds)
    pt = torch.as_tensor(np.asarray(p, dtype=np.float64))
    with torch.no_grad():
        return layer(pt, torch.as_tensor(np.asarray(groups)), np.asarray(y)).numpy()


def _labels(y: Any, n: int, c: int, device) -> Tensor:
    """True labels as class indices ``0..c-1``, or a clear error."""
    if y is None:
        raise ValueError("the error-rate criteria need the true labels y")
    yt = torch.as_tensor(np.asarray(y.detach().cpu() if isinstance(y, Tensor) else y), device=device)
    if yt.dim() == 2 and yt.shape[1] == 1:
        yt = yt[:, 0]
    if yt.dim() != 1 or yt.shape[0] != n:
        raise ValueError(f"y must have shape ({n},), got {tuple(yt.shape)}")
    if yt.is_floating_point():
        if not bool((yt == torch.round(yt)).all()):
            raise ValueError("y must hold class indices (integers)")
        yt = yt.to(torch.long)
    if n and (int(yt.min()) < 0 or int(yt.max()) >= c):
        raise ValueError(f"y must hold class indices in 0..{c - 1}, got values in {int(yt.min())}..{int(yt.max())}")
    return yt.to(torch.long)


def batch_error_rate_gap(p: Any, groups: Any, y: Any, criterion: str) -> float:
    """The largest gap, over attributes and true-label strata, between two groups'
    means of the positive-class probability ``p`` (n,) on one batch (NumPy, float64).

    A stratum holding one group (or none) of an attribute adds nothing, as in the
    projection.

    Examples
    --------
    >>> from fairsk.odds import batch_error_rate_gap
    >>> gap = batch_error_rate_gap([0.9, 0.7, 0.2, 0.3, 0.4, 0.1], [0, 0, 0, 1, 1, 1], [1, 1, 0, 1, 1, 0],
    ...                            "equal_opportunity")
    >>> round(gap, 6)
    0.45
    """
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    codes = np.asarray(y).reshape(-1).astype(np.int64)
    g = np.asarray(groups).reshape(p.shape[0], -1)
    gap = 0.0
    for _, masks in get_criterion(criterion).strata(codes):
        for mask in masks:
            for a in range(g.shape[1]):
                values, inverse = np.unique(g[mask, a], return_inverse=True)
                if values.size < 2:
                    continue
                means = np.bincount(inverse, weights=p[mask]) / np.bincount(inverse)
                gap = max(gap, float(means.max() - means.min()))
    return gap


class ErrorRateModule(FairModule):
    """The body's positive-class probability ``sigmoid(z)`` (n, 1), projected by an
    :class:`ErrorRateLayer` within the true-label strata of the batch when its groups
    and labels are given (training), returned as is otherwise (prediction). Several
    output columns (a model fitted without groups) give ``softmax(z)``."""

    def forward(self, X, groups=None, y=None):
        z = self.body(X)
        if z.shape[1] > 1:  # several classes are trained without groups only (no constraint)
            return torch.softmax(z, 1)
        p = torch.sigmoid(z)
        if groups is None or y is None or self.layer is None:
            return p
        return self.layer(p[:, 0], groups, y.reshape(-1)).unsqueeze(1)


class WorstBatchGap(Callback):
    """Records, after every epoch, the largest error-rate gap of one training batch's
    projected probabilities (``train_worst_batch_gap`` in the net's history),
    recomputed in NumPy from the batch's outputs, labels and groups."""

    def __init__(self, criterion: str):
        self.criterion = criterion

    def on_epoch_begin(self, net, **kwargs):
        self.epoch_worst_ = None  # stays None when no batch has groups (nothing constrained)

    def on_batch_end(self, net, batch=None, training=False, y_pred=None, **kwargs):
        if not training or y_pred is None:
            return
        Xi, yi = batch
        if getattr(Xi, "groups", None) is None or yi is None:
            return
        gap = batch_error_rate_gap(y_pred.detach().cpu().double().numpy(), Xi.groups.cpu().numpy(),
                                   yi.cpu().numpy(), self.criterion)
        self.epoch_worst_ = gap if self.epoch_worst_ is None else max(self.epoch_worst_, gap)

    def on_epoch_end(self, net, **kwargs):
        if self.epoch_worst_ is not None:
            net.history.record("train_worst_batch_gap", self.epoch_worst_)
