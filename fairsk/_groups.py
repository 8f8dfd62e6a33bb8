"""Everything about groups: labels to codes, and per-group sums and means.

* :func:`encode_sensitive` turns sensitive features of any kind (arrays, lists,
  Series, DataFrames; numbers, strings, categories) into integer codes, and
  :class:`GroupEncoder` remembers the labels seen in ``fit`` to encode later calls
  the same way (the estimators and the streaming predictor use it);
* :class:`GroupIndex` indexes the groups of one batch for the projection.

Every sensitive attribute is recoded to the groups present in the batch, and all
attributes share one numbering of "group slots" ``0..K-1``. Group sums and means are
then one ``bincount`` (or ``index_add`` on a device) per attribute and column, never a
Python loop over samples; several attributes with few intersections (cells) take one
``bincount`` over the cells for all attributes at once (:class:`Cells`).
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
        columns = [sensitive_features.iloc[:, j] for j in range(sensitive_features.shape[1])]
    elif isinstance(sensitive_features, pd.Series):
        columns = [sensitive_features]  # kept in pandas: strings are hashed without a copy
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
        inverse, uniques = _encode_column(col, a)
        codes.append(inverse)
        labels.append(uniques)
    return np.stack(codes, 1).astype(np.int64), labels


def _encode_column(col: np.ndarray | pd.Series, a: int) -> tuple[np.ndarray, list]:
    """Codes and sorted labels of one column, under the rule of :func:`encode_sensitive`."""
    if isinstance(col, pd.Series) and col.dtype.kind not in "biufcmM":
        # strings, objects, categories: one hashing pass in pandas (no object copy of an
        # Arrow-backed column), then the few labels are sorted and the codes remapped
        codes, uniques = pd.factorize(col, use_na_sentinel=True)
        if (codes < 0).any():
            raise ValueError("sensitive_features contains missing values (None or NaN)")
        present = np.asarray(uniques, dtype=object)
        _check_one_kind(present, a)
        try:
            order = sorted(range(len(present)), key=present.__getitem__)
        except TypeError:
            raise ValueError(f"the groups of sensitive attribute {a} cannot be ordered: {list(present)[:5]}") from None
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        return rank[codes], [present[i] for i in order]
    col = np.asarray(col)
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
        check_attribute_count(codes.shape[1], len(self.labels_))
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


def check_attribute_count(got: int, expected: int, fitted: str = "the model was fitted with") -> None:
    """Raise ``ValueError`` unless ``sensitive_features`` has the ``expected`` number of
    attributes (the one message for estimators, calibrators, streams and Dask)."""
    if got != expected:
        raise ValueError(f"sensitive_features has {got} attributes but {fitted} {expected}")


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


#: from this many rows, group sums and counts take torch's CPU kernels: ``scatter_add_``
#: adds the weights in row order, as ``bincount`` does (the same sums to the bit),
#: without ``bincount``'s extra pass for the codes' range (the codes are in range by
#: construction: ``scatter_add_`` still refuses one that is not); torch's ``bincount``
#: counts. A pass measured 23-35% less time at 10^6 rows (benchmarks/group_passes.py);
#: below, NumPy's smaller fixed cost per call wins (a training batch).
TORCH_MIN_ROWS = 1 << 16


def group_sums(v: np.ndarray, codes: np.ndarray, k: int) -> np.ndarray:
    """Sums (k,) of a column ``v`` (n,) over the groups ``codes`` (n,) in ``0..k-1``:
    one pass, the one every group statistic is made of (float64, as ``bincount``)."""
    if (v.ndim == 1 and v.shape == codes.shape and v.shape[0] >= TORCH_MIN_ROWS and v.dtype.kind in "fbiu"
            and codes.dtype == np.int64 and torch_readable(codes)):
        v = v.astype(np.float64, copy=False)
        if torch_readable(v):
            out = torch.zeros(k, dtype=torch.float64, device="cpu")  # whatever torch's default device
            return out.scatter_add_(0, torch.from_numpy(codes), torch.from_numpy(v)).numpy()
    return np.bincount(codes, weights=v, minlength=k)


def group_counts(codes: np.ndarray, k: int = 0) -> np.ndarray:
    """Counts (int64, at least ``k`` of them) of the non-negative codes (n,), as
    ``np.bincount(codes, minlength=k)``, which raises ``ValueError`` on a negative code."""
    if codes.ndim == 1 and codes.shape[0] >= TORCH_MIN_ROWS and codes.dtype == np.int64 and k >= 0 \
            and torch_readable(codes):
        try:
            return torch.bincount(torch.from_numpy(codes), minlength=k).numpy()
        except RuntimeError:  # e.g. a negative code: NumPy's own error below
            pass
    return np.bincount(codes, minlength=k)


def torch_readable(a: np.ndarray) -> bool:
    """Whether torch can read ``a`` in place: writable (torch has no read-only tensors),
    native byte order, aligned, strides whole non-negative multiples of the item size
    (a field of a structured array is not)."""
    return (a.flags.writeable and a.flags.aligned and a.dtype.isnative
            and all(s >= 0 and s % a.itemsize == 0 for s in a.strides))


@dataclass(frozen=True)
class Cells:
    """The cells of several attributes (the intersections of their groups), when they
    are few: each sample's cell as one code, so that a statistic of every attribute's
    groups is one ``bincount`` over the cells followed by sums over a small table.

    Attributes
    ----------
    code : ndarray of shape (n,)
        ``sum_a raw_a * stride_a``: the sample's raw codes as one index into the table
        (int64).
    shape : tuple of int
        The table's shape: each attribute's raw codes lie in ``0..shape[a]-1``.
    present : tuple of ndarray
        Per attribute, its raw codes present in the batch, ascending: slot ``s`` of the
        attribute is raw code ``present[a][s]`` (the numbering :func:`recode` gives).
    table : ndarray of shape ``shape``
        The number of samples in each cell (float64).
    """

    code: np.ndarray
    shape: tuple[int, ...]
    present: tuple[np.ndarray, ...]
    table: np.ndarray

    def marginals(self, table: np.ndarray) -> list[np.ndarray]:
        """Per attribute, the sums of ``table`` (shaped as the cells) over its present
        groups, in slot order."""
        axes = range(len(self.shape))
        return [table.sum(axis=tuple(b for b in axes if b != a))[p] for a, p in enumerate(self.present)]

    def spread(self, values: list[np.ndarray]) -> np.ndarray:
        """The table (flat) whose cell holds the sum over attributes of its groups'
        ``values`` (one array per attribute, in slot order)."""
        out = np.zeros(self.shape)
        for a, (p, v) in enumerate(zip(self.present, values)):
            full = np.zeros(self.shape[a])
            full[p] = v
            out += full.reshape([-1 if b == a else 1 for b in range(len(self.shape))])
        return out.reshape(-1)


class GroupIndex:
    """The groups of one batch, held in NumPy (group statistics are small and live on
    the host; sums of device tensors are computed on their device).

    Attributes
    ----------
    gid : ndarray of shape (n, a)
        Global slot of each sample's group, per attribute (int64; built on first use
        when the index holds cells).
    counts : ndarray of shape (K,)
        Number of samples in each slot (float64).
    sizes : tuple of int
        Number of groups present in each attribute (sums to K).
    cells : Cells or None
        Several attributes with few cells: the statistics of the host path go through
        the cells, one pass over the batch for all attributes at once.
    """

    def __init__(self, gid: np.ndarray | None, counts: np.ndarray, sizes: tuple[int, ...],
                 cells: Cells | None = None) -> None:
        self._gid = gid
        self.counts = counts
        self.sizes = tuple(sizes)
        self.cells = cells
        # per-batch memo: codes per attribute, the cross counts, gid on each device
        self._cache: dict = {}

    def __repr__(self) -> str:
        return f"GroupIndex(n={self.counts.sum():g}, sizes={self.sizes}, cells={self.cells is not None})"

    @property
    def gid(self) -> np.ndarray:
        if self._gid is None:  # from the cells: each attribute's slots, offset
            gid = np.empty((self.cells.code.shape[0], self.n_attributes), dtype=np.int64)
            for a in range(self.n_attributes):
                np.add(self.codes(a), self.attribute(a).start, out=gid[:, a])
            self._gid = gid
        return self._gid

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

    def codes(self, a: int) -> np.ndarray:
        """Codes ``0..k_a-1`` of attribute ``a`` (n,), contiguous (cached)."""
        key = ("codes", a)
        if key not in self._cache:
            if self._gid is None:
                self._cache[key] = self._codes_from_cells(a)
            else:
                start = self.attribute(a).start
                col = self._gid[:, a]
                self._cache[key] = np.ascontiguousarray(col if start == 0 else col - start)
        return self._cache[key]

    def _codes_from_cells(self, a: int) -> np.ndarray:
        cells = self.cells
        stride = int(np.prod(cells.shape[a + 1:], dtype=np.int64))
        raw = cells.code // stride if stride > 1 else cells.code.copy()
        if a > 0:
            raw %= cells.shape[a]
        if cells.present[a].shape[0] == cells.shape[a]:  # every code present: slots are the codes
            return raw
        slot = np.zeros(cells.shape[a], dtype=np.int64)
        slot[cells.present[a]] = np.arange(cells.present[a].shape[0])
        return slot[raw]

    def gid_on(self, device) -> Tensor:
        """``gid`` as a long tensor on ``device`` (cached)."""
        key = str(device)
        if key not in self._cache:
            self._cache[key] = torch.from_numpy(self.gid).to(device)
        return self._cache[key]

    def sums(self, v):
        """Group sums of ``v`` (n, c) -> (K, c): NumPy in, NumPy out; a tensor in, a
        tensor out on its device (differentiable)."""
        if isinstance(v, Tensor):
            gid = self.gid_on(v.device)
            out = v.new_zeros((self.n_slots, v.shape[1]))
            for a in range(self.n_attributes):
                out = out.index_add(0, gid[:, a], v)
            return out
        K = self.n_slots
        out = np.empty((K, v.shape[1]))
        cells = self.cells
        for j in range(v.shape[1]):
            if cells is not None:  # one pass for every attribute
                table = group_sums(v[:, j], cells.code, cells.table.size).reshape(cells.shape)
                out[:, j] = np.concatenate(cells.marginals(table))
                continue
            for a in range(self.n_attributes):
                sl = self.attribute(a)
                out[sl, j] = group_sums(v[:, j], self.codes(a), sl.stop - sl.start)
        return out

    def means(self, v):
        """Group means of ``v`` (n, c) -> (K, c), as :meth:`sums`."""
        if isinstance(v, Tensor):
            return self.sums(v) / torch.from_numpy(self.counts).to(v.device, v.dtype).unsqueeze(1)
        return self.sums(v) / self.counts[:, None]

    def expand(self, t):
        """Per-sample sum over attributes of slot values ``t`` (K, c) -> (n, c)."""
        if isinstance(t, Tensor):
            gid = self.gid_on(t.device)
            out = t[gid[:, 0]]
            for a in range(1, self.n_attributes):
                out = out + t[gid[:, a]]
            return out
        # per attribute and column, a gather of the attribute's own slots by its
        # contiguous codes, summed in place (no (n, c) temporaries per attribute)
        n, c = (self.cells.code if self._gid is None else self._gid).shape[0], t.shape[1]
        out = np.empty((n, c))
        part = np.empty(n) if self.n_attributes > 1 and self.cells is None else None
        for j in range(c):
            col = out[:, j] if c > 1 else out.reshape(n)
            if self.cells is not None:  # the cells' sums of the attributes' values, one gather
                values = [t[self.attribute(a), j] for a in range(self.n_attributes)]
                np.take(self.cells.spread(values), self.cells.code, out=col, mode="clip")
                continue
            for a in range(self.n_attributes):
                values = np.ascontiguousarray(t[self.attribute(a), j])
                if a == 0:
                    np.take(values, self.codes(a), out=col, mode="clip")  # codes in range by construction
                else:
                    np.take(values, self.codes(a), out=part, mode="clip")
                    col += part
        return out

    def cross_counts(self, w: np.ndarray | None = None) -> np.ndarray:
        """``S^T diag(w) S`` (K, K) for a weight vector ``w`` (n,) (ones when None;
        that one is cached).

        Entry ``[g, h]`` is the weight of the samples in both slot g and slot h (the
        slots of one attribute are disjoint, so the diagonal blocks are diagonal).
        When the cells (intersections of all attributes' groups) are few, one
        ``bincount`` over the cells gives every block by summing out the other
        attributes; otherwise one ``bincount`` per pair of attributes.
        """
        if w is None and "cross" in self._cache:
            return self._cache["cross"]
        K, sizes = self.n_slots, self.sizes
        out = np.zeros((K, K))
        if self.cells is not None:
            cells = self.cells
            table = cells.table if w is None else group_sums(w, cells.code, cells.table.size)
            _cross_blocks(self, table.reshape(cells.shape), cells.present, out)
        elif self.n_attributes > 1 and int(np.prod(sizes, dtype=np.float64)) <= max(4 * self.gid.shape[0], 1 << 16):
            cell = self.codes(0).copy()
            for a in range(1, self.n_attributes):
                cell *= sizes[a]
                cell += self.codes(a)
            table = np.bincount(cell, weights=w, minlength=int(np.prod(sizes))).reshape(sizes)
            _cross_blocks(self, table, [np.arange(k) for k in sizes], out)
        else:
            flat = out.reshape(-1)
            for a in range(self.n_attributes):
                for b in range(self.n_attributes):
                    flat += np.bincount(self.gid[:, a] * K + self.gid[:, b], weights=w, minlength=K * K)
        if w is None:
            self._cache["cross"] = out
        return out


def _cross_blocks(index: GroupIndex, table: np.ndarray, present, out: np.ndarray) -> None:
    """Fill the (K, K) cross counts ``out`` from a table over the cells (axes: the
    attributes' raw codes, ``present[a]`` those present, in slot order)."""
    n_attr = index.n_attributes
    for a in range(n_attr):
        for b in range(a, n_attr):
            others = tuple(x for x in range(n_attr) if x not in (a, b))
            block = table.sum(axis=others) if others else table
            sa, sb = index.attribute(a), index.attribute(b)
            if a == b:
                out[sa, sa] = np.diag(block[present[a]])
            else:
                block = block[np.ix_(present[a], present[b])]
                out[sa, sb], out[sb, sa] = block, block.T


def column_codes(groups: Any, n: int) -> np.ndarray | None:
    """The codes (n,) of the usual batch's groups, a CPU int64 tensor of shape (n,) or
    (n, 1), as a NumPy view (no copy); None for anything else (the general checks and
    encoding then apply). Integer tensors never require grad."""
    if not (isinstance(groups, Tensor) and groups.dtype == torch.int64 and groups.device.type == "cpu"
            and n > 0 and groups.shape in ((n,), (n, 1))):
        return None
    return groups.numpy().reshape(n)


def recode(codes: np.ndarray, top: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Dense codes ``0..k-1`` of the present values (int64) and their counts (float64).

    ``top`` is the largest code (computed when None). Small non-negative codes (the
    usual case) take one ``bincount``, and the lookup pass is skipped when every code
    up to ``top`` is present; ``np.unique`` (a sort) handles sparse, huge codes.
    """
    n = codes.shape[0]
    if top is None:
        top = int(codes.max()) if n else -1
    if top >= max(4 * n, 1024):
        _, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
        return inverse.reshape(-1).astype(np.int64, copy=False), counts.astype(np.float64)
    counts = group_counts(codes, top + 1)
    if counts.all():
        return codes.astype(np.int64, copy=False), counts.astype(np.float64)
    present = counts > 0
    return (np.cumsum(present) - 1)[codes], counts[present].astype(np.float64)


def encode_groups(groups, top: int | None = None) -> GroupIndex:
    """Recode integer group codes (n,) or (n, a) (array or tensor, any device) to the
    slots of the present groups. ``top``: the largest code, when already known (the
    caller has then also checked that no code is negative).

    Several attributes whose cells are few (``(top + 1) ** a`` at most ``max(n,
    1024)``) are indexed by their cells (:class:`Cells`): one code per sample, one
    ``bincount`` for the counts of every attribute."""
    if isinstance(groups, Tensor):
        groups = groups.detach().cpu().numpy()
    groups = np.asarray(groups)
    if groups.ndim == 1:
        groups = groups.reshape(-1, 1)
    if groups.shape[1] == 0:  # no attributes at all
        return GroupIndex(np.zeros((groups.shape[0], 0), dtype=np.int64), np.zeros(0), ())
    if groups.shape[1] == 1:  # the usual case: no copy when every code is present
        codes, counts = recode(groups[:, 0], top)
        return GroupIndex(codes.reshape(-1, 1), counts, (counts.shape[0],))
    n, n_attr = groups.shape
    if n and top is None and int(groups.min()) >= 0:
        top = int(groups.max())
    if n and top is not None and float(top + 1) ** n_attr <= max(n, 1024):
        return _index_cells(groups, top + 1)
    columns = np.ascontiguousarray(groups.T)  # one copy: each attribute's codes contiguous
    gid = np.empty((n, n_attr), dtype=np.int64)
    counts, sizes, local = [], [], {}
    offset = 0
    for a in range(n_attr):
        codes, cnt = recode(columns[a])
        local[("codes", a)] = codes  # the attribute's own codes 0..k_a-1, kept for GroupIndex.codes
        np.add(codes, offset, out=gid[:, a])
        counts.append(cnt)
        sizes.append(cnt.shape[0])
        offset += cnt.shape[0]
    index = GroupIndex(gid, np.concatenate(counts), tuple(sizes))
    index._cache.update(local)
    return index


def _index_cells(groups: np.ndarray, m: int) -> GroupIndex:
    """:func:`encode_groups` of non-negative codes (n, a) below ``m``, by their cells."""
    n_attr = groups.shape[1]
    shape = (m,) * n_attr
    strides = np.array([m ** (n_attr - 1 - a) for a in range(n_attr)], dtype=np.int64)
    # one integer matrix-vector product: the cheapest single pass that reads every
    # column (torch's integer kernel measured faster than NumPy's), into an array
    # NumPy allocates (it asks for huge pages: fewer page faults on a fresh array)
    codes = groups.astype(np.int64, copy=False)
    if any(s < 0 for s in codes.strides):  # a reversed view (torch takes no negative strides)
        codes = np.ascontiguousarray(codes)
    code = np.empty(groups.shape[0], dtype=np.int64)
    torch.mv(torch.from_numpy(codes), torch.from_numpy(strides), out=torch.from_numpy(code))
    table = group_counts(code, m**n_attr).astype(np.float64).reshape(shape)
    axes = range(n_attr)
    marg = [table.sum(axis=tuple(b for b in axes if b != a)) for a in axes]
    present = tuple(np.flatnonzero(c) for c in marg)
    cells = Cells(code, shape, present, table)
    counts = np.concatenate([c[p] for c, p in zip(marg, present)])
    return GroupIndex(None, counts, tuple(p.shape[0] for p in present), cells)
