"""Everything about groups: labels to codes, and per-group sums and means.

* :func:`encode_sensitive` turns sensitive features of any kind (arrays, lists,
  Series, DataFrames; numbers, strings, categories) into integer codes, and
  :class:`GroupEncoder` remembers the labels seen in ``fit`` to encode later calls
  the same way (the estimators and the streaming predictor use it);
* :class:`GroupIndex` indexes the groups of one batch for the projection.

Every sensitive attribute is recoded to the groups present in the batch, and all
attributes share one numbering of "group slots" ``0..K-1``. Group sums and means are
then one ``index_add`` per attribute, never a Python loop over samples.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor


def encode_sensitive(sensitive_features: Any, n: int | None = None) -> tuple[np.ndarray, list]:
    """Integer codes (n, a) for sensitive features of any kind, and the labels.

    Accepts 1-D or 2-D arrays, lists, Series and DataFrames, with numbers, strings,
    booleans or categories. Missing values (None / NaN) raise ``ValueError``.

    Examples
    --------
    >>> from fairsk.metrics import encode_sensitive
    >>> codes, labels = encode_sensitive(["b", "a", "b"])
    >>> codes.ravel().tolist(), [str(v) for v in labels[0]]
    ([1, 0, 1], ['a', 'b'])
    """
    if hasattr(sensitive_features, "detach"):  # a torch tensor
        sensitive_features = sensitive_features.detach().cpu().numpy()
    if isinstance(sensitive_features, pd.DataFrame):
        columns = [sensitive_features.iloc[:, j].to_numpy() for j in range(sensitive_features.shape[1])]
    elif isinstance(sensitive_features, pd.Series):
        columns = [sensitive_features.to_numpy()]
    else:
        arr = np.asarray(sensitive_features)
        if arr.ndim not in (1, 2):
            raise ValueError(f"sensitive_features must be 1-D or 2-D, got shape {arr.shape}")
        columns = [arr] if arr.ndim == 1 else [arr[:, j] for j in range(arr.shape[1])]
    if not columns:
        raise ValueError("sensitive_features has no columns")
    length = len(columns[0])
    if n is not None and length != n:
        raise ValueError(f"sensitive_features has {length} rows but the data has {n}")
    codes, labels = [], []
    for col in columns:
        col = np.asarray(col)
        if col.dtype.kind not in "biu" and pd.isna(col).any():  # integers cannot be missing
            raise ValueError("sensitive_features contains missing values (None or NaN)")
        uniques, inverse = np.unique(col.astype(str) if col.dtype == object else col, return_inverse=True)
        codes.append(inverse.reshape(-1))
        labels.append(list(uniques))
    return np.stack(codes, 1).astype(np.int64), labels


class GroupEncoder:
    """Sensitive labels to integer codes, with the labels learnt in :meth:`fit`.

    Codes ``0..k-1`` are the fitted labels of each attribute in sorted order. A
    label not seen in fit is handled by ``unseen``: ``"new"`` gives it a code of
    its own for this call (``>= k``, with a warning), ``"extend"`` appends it to
    the labels for good (a stream that meets a new group), ``"error"`` raises.

    Examples
    --------
    >>> from fairsk._groups import GroupEncoder
    >>> enc = GroupEncoder().fit(["b", "a", "b"])
    >>> enc.transform(["a", "b"]).ravel().tolist()
    [0, 1]
    """

    def __init__(self, unseen: str = "new") -> None:
        self.unseen = unseen

    def fit(self, sensitive: Any, n: int | None = None) -> GroupEncoder:
        self.fit_transform(sensitive, n)
        return self

    def fit_transform(self, sensitive: Any, n: int | None = None) -> np.ndarray:
        codes, labels = encode_sensitive(sensitive, n)
        self.labels_ = [list(a) for a in labels]
        return codes

    @property
    def n_attributes(self) -> int:
        return len(self.labels_)

    def transform(self, sensitive: Any, n: int | None = None) -> np.ndarray:
        """Codes (n, a) of ``sensitive`` in the fitted numbering."""
        codes, labels = encode_sensitive(sensitive, n)
        if codes.shape[1] != len(self.labels_):
            raise ValueError(
                f"sensitive_features has {codes.shape[1]} attributes but the model was fitted with "
                f"{len(self.labels_)}"
            )
        out = np.empty_like(codes)
        for a, known in enumerate(self.labels_):
            # map this call's labels (few) to the fitted codes
            labels_a = np.asarray(labels[a], dtype=object)
            mapped = pd.Index(np.asarray(known, dtype=object)).get_indexer(labels_a)
            unseen = mapped < 0
            if unseen.any():
                names = [str(v) for v in labels_a[unseen]]
                if self.unseen == "error":
                    raise ValueError(f"groups {names} of attribute {a} were not seen in fit")
                if self.unseen == "new":
                    warnings.warn(
                        f"groups {names} of attribute {a} were not seen in fit; "
                        "each is constrained as a group of its own in this call",
                        UserWarning,
                        stacklevel=3,
                    )
                mapped[unseen] = len(known) + np.arange(unseen.sum())
                if self.unseen == "extend":
                    known.extend(labels_a[unseen].tolist())
            out[:, a] = mapped[codes[:, a]]
        return out


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
