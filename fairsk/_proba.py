"""Training a classifier through a projection of its probabilities.

With ``enforce_on="proba"`` or ``"labels"`` a :class:`~fairsk.FairLayerClassifier`
maps the body's outputs to probabilities and makes their group means fair:

* binary targets: ``p = sigmoid(z)`` projected by the fairness layer onto the set
  where group means are at parity inside the box ``[0, 1]`` (the exact projection);
* ``k > 2`` classes: ``P = softmax(z)`` (rows on the probability simplex) moved
  into the set where rows stay on the simplex and every class column is at parity
  (:func:`fair_simplex`: Dykstra's algorithm between the two sets, then a mix with
  the mean row that makes the result feasible; the projection in the limit of
  many sweeps, feasible and checked after any number).

The loss is the cross-entropy of the fair probabilities.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ._net import FairModule
from .exceptions import InfeasibleProjectionError

#: the loss squeezes probabilities into [EPS, 1 - EPS]: the box may put a projected
#: probability at exactly 0 or 1, where the log-loss is infinite
EPS = 1e-6


#: Dykstra sweeps of :func:`fair_simplex` per training batch (the mix makes any number feasible)
TRAIN_SWEEPS = 5
#: at most this many sweeps at prediction (stops earlier once a sweep moves nothing)
PREDICT_SWEEPS = 200


class ProbaModule(FairModule):
    """Probabilities of the body's outputs, made fair by ``layer`` (box ``[0, 1]``)
    when there is one: ``sigmoid`` and the layer for one output column, ``softmax``
    and :func:`fair_simplex` for several."""

    def forward(self, X, groups=None, y=None):
        return fair_probabilities(self.body(X), groups, self.layer, TRAIN_SWEEPS)


def fair_probabilities(z: torch.Tensor, groups, layer, sweeps: int) -> torch.Tensor:
    """Probabilities (n, c) of outputs ``z`` (n, c), made fair when ``layer`` and ``groups`` are given."""
    if z.shape[1] == 1:
        p = torch.sigmoid(z)
        return p if groups is None or layer is None else layer(p, groups)
    P = torch.softmax(z, 1)
    return P if groups is None or layer is None else fair_simplex(P, groups, layer, sweeps)


def simplex_rows(V: torch.Tensor) -> torch.Tensor:
    """The Euclidean projection of every row of ``V`` onto the probability simplex."""
    u, _ = torch.sort(V, dim=1, descending=True)
    css = u.cumsum(1) - 1
    ks = torch.arange(1, V.shape[1] + 1, dtype=V.dtype, device=V.device)
    rho = (u - css / ks > 0).sum(1, keepdim=True) - 1  # the condition holds on a prefix
    theta = css.gather(1, rho) / (rho + 1).to(V.dtype)
    return (V - theta).clamp(min=0)


def column_gap(P: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Largest gap between two groups' column means, over attributes and columns."""
    groups = groups.reshape(P.shape[0], -1)
    gap = P.new_zeros(())
    for a in range(groups.shape[1]):
        _, codes = torch.unique(groups[:, a], return_inverse=True)
        k = int(codes.max()) + 1
        means = P.new_zeros((k, P.shape[1])).index_add_(0, codes, P) / torch.bincount(codes, minlength=k).to(
            P.dtype).unsqueeze(1)
        gap = torch.maximum(gap, (means.max(0).values - means.min(0).values).max())
    return gap


def fair_simplex(P: torch.Tensor, groups, layer, sweeps: int) -> torch.Tensor:
    """Rows on the simplex with every class column's group means within the layer's tolerance.

    Dykstra's algorithm between the rows' simplex and the set of column parity in the
    box ``[0, 1]`` (``layer``): ``sweeps`` sweeps, fewer when one moves nothing by
    more than 1e-10. It converges to the Euclidean projection of ``P`` onto the
    intersection; after a finite number the rows are on the simplex but the columns
    may still miss parity by a little, so the result is mixed with its mean row
    (on the simplex, and at parity in every column): ``(1 - t) x + t m`` scales every
    gap by ``1 - t``, with the smallest ``t`` that brings them within the tolerance.
    Differentiable (through the sweeps, the layer and the mix).
    """
    groups = torch.as_tensor(groups, device=P.device)
    x = P
    p = torch.zeros_like(P)
    q = torch.zeros_like(P)
    for _ in range(sweeps):
        y = layer(x + p, groups)
        p = x + p - y
        new = simplex_rows(y + q)
        q = y + q - new
        moved = float((new - x).detach().abs().max()) if x.numel() else 0.0
        x = new
        if moved <= 1e-10:
            break
    tol = float(layer.tolerance)
    gap = column_gap(x, groups)
    if float(gap.detach()) > tol:
        target = tol * (1 - 1e-9) if x.dtype == torch.float64 else tol * (1 - 1e-5)
        t = 1 - target / gap
        x = (1 - t) * x + t * x.mean(0, keepdim=True)
    return x


def check_columns(P: np.ndarray, groups: np.ndarray, tolerance: float, atol: float = 1e-6) -> None:
    """Raise :class:`InfeasibleProjectionError` unless the rows of ``P`` are on the simplex
    and every column's group means (every attribute) are within ``tolerance + atol``."""
    if P.size and (P.min() < -atol or abs(P.sum(1) - 1).max() > atol):
        raise InfeasibleProjectionError("the fair probabilities left the simplex; refusing to return them")
    gap = float(column_gap(torch.as_tensor(P), torch.as_tensor(groups))) if P.size else 0.0
    if not gap <= tolerance + atol:
        raise InfeasibleProjectionError(f"the fair probabilities' group gap {gap!r} exceeds the tolerance "
                                        f"{tolerance!r}; refusing to return them")


class SqueezedBCELoss(nn.Module):
    """Binary cross-entropy of probabilities squeezed affinely into ``[EPS, 1 - EPS]``.

    An affine squeeze, not a clamp: the gradient still flows where a probability
    sits at 0 or 1 (the layer itself passes none through a coordinate held by the box).
    """

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = reduction

    def forward(self, p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p = EPS + (1 - 2 * EPS) * p
        return nn.functional.binary_cross_entropy(p, y.to(p.dtype), reduction=self.reduction)


class SqueezedNLLLoss(nn.Module):
    """Cross-entropy of probability rows (n, k) squeezed affinely into ``[EPS, 1 - (k - 1) EPS]``."""

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = reduction

    def forward(self, P: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        P = EPS + (1 - P.shape[1] * EPS) * P
        return nn.functional.nll_loss(torch.log(P), y.long(), reduction=self.reduction)


def logit(p: np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))``, finite at 0 and 1 and non-decreasing in ``p`` (the
    decision function of a classifier whose guarantee is on its probabilities)."""
    tiny = np.finfo(np.float64).tiny
    with np.errstate(divide="ignore"):
        return np.log(np.maximum(p, tiny)) - np.log(np.maximum(1.0 - p, tiny))
