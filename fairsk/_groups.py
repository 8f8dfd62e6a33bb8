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

from dataclasses import dataclass
from numbers import Number
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ._warn import warn


def encode_sensitive(sensitive_features: Any, n: int | None = None) -> tuple[np.ndarray, list]:
    """Integer codes (n, a) for sensitive features of any kind, and the labels.

    Accepts 1-D or 2-D arrays, lists, Series and DataFrames, with numbers, strings,
    booleans or categories. Missing values (None / NaN) raise ``ValueError``.

    **Which values are one group.** Groups are compared as the values pandas holds:
    two values are one group when they are equal (``1`` and ``1.0`` are one group;
    ``"White"`` and ``"White "`` are two). A column must hold one kind of value
    (numbers, strings or booleans): mixing kinds, such as ``1`` and ``"1"``, raises
    ``ValueError`` rather than guess. The same rule applies in ``fit``, at
    prediction (:class:`GroupEncoder`), in streaming and in the metrics. Labels are
    sorted; codes follow that order.

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
    for a, col in enumerate(columns):
        inverse, uniques = _encode_column(np.asarray(col), a)
        codes.append(inverse)
        labels.append(uniques)
    return np.stack(codes, 1).astype(np.int64), labels


def _encode_column(col: np.ndarray, a: int) -> tuple[np.ndarray, list]:
    """Codes and sorted labels of one column, under the rule of :func:`encode_sensitive`."""
    if col.dtype.kind not in "biu" and pd.isna(col).any():  # integers cannot be missing
        raise ValueError("sensitive_features contains missing values (None or NaN)")
    if col.dtype != object:
        uniques, inverse = np.unique(col, return_inverse=True)
        return inverse.reshape(-1), list(uniques)
    # object columns: hash the values as pandas does (equal values, one group)
    present = pd.unique(col)
    _check_one_kind(present, a)
    try:
        uniques = sorted(present)
    except TypeError:
        raise ValueError(f"the groups of sensitive attribute {a} cannot be ordered: {list(present)[:5]}") from None
    inverse = pd.Index(np.asarray(uniques, dtype=object)).get_indexer(col)
    return inverse.astype(np.int64), uniques


def _kind(value: Any) -> str:
    """The kind of a group label: ``"bool"``, ``"number"``, ``"string"``, or its type's name."""
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, Number):
        return "number"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


def _check_one_kind(values: Any, a: int, fitted: set | None = None) -> set:
    kinds = {_kind(v) for v in values}
    if len(kinds) > 1:
        examples = {k: next(repr(v) for v in values if _kind(v) == k) for k in sorted(kinds)}
        raise ValueError(
            f"sensitive attribute {a} mixes kinds of values ({', '.join(f'{k} {v}' for k, v in examples.items())}): "
            "groups are compared as the values pandas holds, so 1 and '1' would be different groups; "
            "convert the column to one type first"
        )
    if fitted and kinds and kinds != fitted:
        raise ValueError(
            f"sensitive attribute {a} holds {next(iter(kinds))} values but was fitted with "
            f"{sorted(fitted)[0]} values: convert the column to the type it had in fit"
        )
    return kinds


def _normalised(value: Any) -> Any:
    return value.strip().casefold() if isinstance(value, str) else value


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
            labels_a = np.asarray(labels[a], dtype=object)
            _check_one_kind(labels_a, a, fitted={_kind(v) for v in known})
            # map this call's labels (few) to the fitted codes
            mapped = pd.Index(np.asarray(known, dtype=object)).get_indexer(labels_a)
            unseen = mapped < 0
            if unseen.any():
                names = [str(v) for v in labels_a[unseen]]
                if self.unseen == "error":
                    raise ValueError(f"groups {names} of attribute {a} were not seen in fit")
                _warn_near_duplicates(labels_a[unseen], known, a)
                if self.unseen == "new":
                    warn(
                        f"groups {names} of attribute {a} were not seen in fit; "
                        "each is constrained as a group of its own in this call",
                    )
                mapped[unseen] = len(known) + np.arange(unseen.sum())
                if self.unseen == "extend":
                    known.extend(labels_a[unseen].tolist())
            out[:, a] = mapped[codes[:, a]]
        return out


def _warn_near_duplicates(unseen: np.ndarray, known: list, a: int) -> None:
    """Warn about new labels equal to a fitted one but for case or surrounding spaces
    (most likely a typo that would otherwise silently make a group of its own)."""
    fitted = {_normalised(v): v for v in known if isinstance(v, str)}
    pairs = [(v, fitted[_normalised(v)]) for v in unseen if isinstance(v, str) and _normalised(v) in fitted]
    if pairs:
        warn(
            f"groups {[p[0] for p in pairs]} of attribute {a} differ from the fitted groups "
            f"{[p[1] for p in pairs]} only by case or surrounding spaces; they are treated as different groups "
            "(clean the labels if they are the same group)",
        )


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
