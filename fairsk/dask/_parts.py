"""Dask collections as lists of delayed partitions, and tree reductions over them."""

from __future__ import annotations

import math
from typing import Any

#: partition results merged per reduction task (a tree, so no task receives them all)
_TREE_WIDTH = 16


def _key(v) -> Any:
    """A label as a plain Python value (NumPy scalars unwrapped), for dict keys."""
    return v.item() if hasattr(v, "item") else v


class _Parts:
    """The partitions of a dask collection as a list of delayed objects."""

    def __init__(self, collection, kind: str, parts: list, lengths: tuple | None, divisions=None, index_meta=None):
        self.collection = collection
        self.kind = kind  # "frame" or "array"
        self.parts = parts
        self.lengths = lengths  # row counts per partition (arrays), None for frames
        self.divisions = divisions
        self.index_meta = index_meta


def _parts_of(obj, name: str, two_d: bool = False) -> _Parts:
    import dask.array as da
    import dask.dataframe as dd

    if isinstance(obj, (dd.DataFrame, dd.Series)):
        return _Parts(obj, "frame", list(obj.to_delayed()), None, obj.divisions, obj._meta.index)
    if isinstance(obj, da.Array):
        if obj.ndim == 2:
            obj = obj.rechunk({1: -1})  # one block of columns per row chunk
            blocks = list(obj.to_delayed()[:, 0])
        elif obj.ndim == 1 and not two_d:
            blocks = list(obj.to_delayed())
        else:
            raise ValueError(f"{name} must be a {'2-D' if two_d else '1-D or 2-D'} dask Array, got {obj.ndim}-D")
        return _Parts(obj, "array", blocks, tuple(obj.chunks[0]))
    raise TypeError(f"{name} must be a dask DataFrame, Series or Array, got {type(obj).__name__}")


def _aligned_parts(obj, ref: _Parts, name: str) -> list:
    """Partitions of ``obj`` matching those of ``ref`` (or Nones)."""
    if obj is None:
        return [None] * len(ref.parts)
    parts = _parts_of(obj, name)
    if len(parts.parts) != len(ref.parts):
        raise ValueError(f"{name} has {len(parts.parts)} partitions but X has {len(ref.parts)}: they must be "
                         "aligned (same partitions, same rows in each)")
    if parts.lengths is not None and ref.lengths is not None and not any(map(math.isnan, parts.lengths + ref.lengths)):
        if parts.lengths != ref.lengths:
            raise ValueError(f"{name} has row chunks {parts.lengths} but X has {ref.lengths}: they must be aligned")
    if parts.divisions is not None and ref.divisions is not None and None not in parts.divisions + ref.divisions:
        if tuple(parts.divisions) != tuple(ref.divisions):
            raise ValueError(f"{name} and X have different divisions: they must be aligned")
    return parts.parts


def _tree(parts: list, merge, width: int = _TREE_WIDTH):
    """Reduce delayed partition results with ``merge(list)`` in a tree (no task
    receives more than ``width`` of them)."""
    import dask

    if not parts:
        return dask.delayed(merge)([])
    while len(parts) > 1:
        parts = [dask.delayed(merge)(parts[i : i + width]) for i in range(0, len(parts), width)]
    return parts[0]
