"""Training a binary classifier through a projection of its probabilities.

With ``enforce_on="proba"`` or ``"labels"`` a :class:`~fairsk.FairLayerClassifier`
maps the body's logit ``z`` to ``p = sigmoid(z)`` and projects ``p`` with the
fairness layer onto the set where group means are at parity inside the box
``[0, 1]``; the loss is the binary cross-entropy of the projected probabilities.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ._net import FairModule

#: the loss squeezes probabilities into [EPS, 1 - EPS]: the box may put a projected
#: probability at exactly 0 or 1, where the log-loss is infinite
EPS = 1e-6


class ProbaModule(FairModule):
    """``sigmoid(body(X))``, projected by ``layer`` (box ``[0, 1]``) when there is one."""

    def forward(self, X, groups=None, y=None):
        p = torch.sigmoid(self.body(X))
        if groups is None or self.layer is None:
            return p
        return self.layer(p, groups)


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


def logit(p: np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))``, finite at 0 and 1 and non-decreasing in ``p`` (the
    decision function of a classifier whose guarantee is on its probabilities)."""
    tiny = np.finfo(np.float64).tiny
    with np.errstate(divide="ignore"):
        return np.log(np.maximum(p, tiny)) - np.log(np.maximum(1.0 - p, tiny))
