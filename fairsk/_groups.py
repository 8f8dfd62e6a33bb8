"""Group bookkeeping shared by the solvers, the layer and the metrics.

Every sensitive attribute is recoded to the groups present in the batch, and all
attributes share one numbering of "group slots" ``0..K-1``. Group sums and means are
then one ``index_add`` per attribute, never a Python loop over samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class GroupIndex:
    """The groups of one batch.

    Attributes
    ----------
    gid : Tensor of shape (n, a)
        Global slot of each sample's group, per attribute.
    counts : Tensor of shape (K,)
        Number of samples in each slot (float64).
    attr : Tensor of shape (K,)
        Attribute of each slot.
    sizes : tuple of int
        Number of groups present in each attribute (sums to K).
    """

    gid: Tensor
    counts: Tensor
    attr: Tensor
    sizes: tuple[int, ...]

    @property
    def n_slots(self) -> int:
        return int(sum(self.sizes))

    @property
    def n_attributes(self) -> int:
        return len(self.sizes)

    def attribute(self, a: int) -> slice:
        """Slots of attribute ``a``."""
        start = sum(self.sizes[:a])
        return slice(start, start + self.sizes[a])

    def sums(self, v: Tensor) -> Tensor:
        """Group sums of ``v`` (n, c) -> (K, c)."""
        out = v.new_zeros((self.n_slots, v.shape[1]))
        for a in range(self.n_attributes):
            out.index_add_(0, self.gid[:, a], v)
        return out

    def means(self, v: Tensor) -> Tensor:
        """Group means of ``v`` (n, c) -> (K, c)."""
        return self.sums(v) / self.counts.to(v.dtype).unsqueeze(1)

    def expand(self, t: Tensor) -> Tensor:
        """Per-sample sum over attributes of slot values ``t`` (K, c) -> (n, c)."""
        out = t[self.gid[:, 0]]
        for a in range(1, self.n_attributes):
            out = out + t[self.gid[:, a]]
        return out

    def cross_sums(self, w: Tensor) -> Tensor:
        """``S^T diag(w) S`` for each column of ``w`` (n, c) -> (c, K, K).

        Entry ``[j, g, h]`` is the sum of ``w[:, j]`` over samples in both slot g
        and slot h (the slots of one attribute are disjoint, so the diagonal
        blocks are diagonal).
        """
        K = self.n_slots
        out = w.new_zeros((K * K, w.shape[1]))
        for a in range(self.n_attributes):
            for b in range(self.n_attributes):
                out.index_add_(0, self.gid[:, a] * K + self.gid[:, b], w)
        return out.T.reshape(w.shape[1], K, K)


def encode_groups(groups: Tensor) -> GroupIndex:
    """Recode integer group codes (n,) or (n, a) to the slots of the present groups."""
    if groups.dim() == 1:
        groups = groups.unsqueeze(1)
    gids, sizes, counts, attrs = [], [], [], []
    offset = 0
    for a in range(groups.shape[1]):
        inverse, cnt = _recode(groups[:, a])
        gids.append(inverse + offset)
        sizes.append(int(cnt.numel()))
        counts.append(cnt)
        attrs.append(torch.full((cnt.numel(),), a, dtype=torch.long, device=groups.device))
        offset += int(cnt.numel())
    device = groups.device
    if not gids:  # no attributes at all
        return GroupIndex(
            torch.zeros((0, 0), dtype=torch.long, device=device),
            torch.zeros(0, dtype=torch.float64, device=device),
            torch.zeros(0, dtype=torch.long, device=device),
            (),
        )
    return GroupIndex(
        gid=torch.stack(gids, 1),
        counts=torch.cat(counts).to(torch.float64),
        attr=torch.cat(attrs),
        sizes=tuple(sizes),
    )


def _recode(codes: Tensor) -> tuple[Tensor, Tensor]:
    """Dense codes of the present values, and their counts.

    Small non-negative codes (the usual case) are recoded with one ``bincount`` and
    a lookup, O(n); ``torch.unique`` (a sort) is the fallback for sparse, huge codes.
    """
    n = codes.numel()
    top = int(codes.max()) + 1 if n else 0
    if top <= max(4 * n, 1024):
        counts = torch.bincount(codes, minlength=top)
        present = counts > 0
        slot = torch.cumsum(present, 0) - 1
        return slot[codes], counts[present]
    _, inverse, counts = torch.unique(codes, return_inverse=True, return_counts=True)
    return inverse, counts
