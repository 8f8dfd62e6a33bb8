"""Predict over Dask collections with the guarantee of one in-memory call.

``fairsk.dask.decision_function(est, X, sensitive_features=...)`` (and ``predict``,
``predict_proba``) take a fitted estimator and a dask DataFrame or Array and return a
lazy dask collection with the same partitions whose **whole** result, all partitions
together, is the projection one in-memory call would return: its group means meet the
tolerance over all rows, and it equals ``est.decision_function`` / ``est.predict`` on
the concatenated data (to rounding, 1e-9).

Passes over the data (each recomputes the body's outputs partition by partition; no
partition is ever gathered and a worker holds one partition and a few numbers per
group at a time):

1. when called: one reduction of per-cell (one group of every attribute) counts,
   sums, clipped sums, minima and maxima of the raw outputs; the shifts follow on the
   client (closed form for one attribute; for several, the in-memory solver's QP
   over the group shifts, from the group means and cross counts the cells give);
2. with a box (``bounds``) only, when called: the search passes of
   :func:`fairsk.dask._shifts.box_shifts`, each a reduction of ``S_g`` at up to 256
   shifts per group and column (or of the last few breakpoints): for data spread over
   the box, about ``1 + ceil(log_257(n_g / 512))`` passes for a group of ``n_g`` rows;
   with several attributes, the in-memory solver's active-set iteration over which
   outputs the box holds (:func:`fairsk.dask._shifts.boxed_cell_offsets`), one pass
   per step plus one (median 4, at most 12 over 300 random instances; it refuses the
   call, with an error, when the iteration cycles: 1 of those 300, at tolerance 0,
   where the in-memory solver needs its fallbacks over the rows; in small degenerate
   cases at tolerance 0, rounding can also make it cycle where the in-memory run,
   rounding differently, settles);
3. classifiers with ``enforce_on="proba"`` or ``"labels"`` (binary targets): the
   values projected are ``sigmoid(z)`` with the box ``[0, 1]``, so passes 1 and 2
   find the shifts of the probabilities;
4. when called: a check pass that computes the output partition by partition and
   recomputes the global constraint violation from its group sums (it raises
   :class:`~fairsk.exceptions.InfeasibleProjectionError` when the output breaks the
   constraints by more than ``1e-9 (1 + max |out|)``); the returned collection is
   the same deterministic function of the same input partitions;
5. ``predict`` with ``enforce_on="labels"``, when called: the passes of
   :mod:`fairsk.dask._labels` (a histogram of every group's gains ``2p - 1``, a few
   refinements, one pass counting the rows tied at each group's threshold), which
   choose the per-group counts exactly as :func:`fairsk.decisions.fair_labels` does
   in memory: the labels are identical to the in-memory call's (one sensitive
   attribute; with several, fair labels are refused with ``NotImplementedError``:
   in memory they come from a local search over the rows);
6. at compute time: the output pass itself.

Every partition is copied to aligned memory before the body runs: one received from
another process may sit at any byte offset, where BLAS rounds differently in the
last bit, and every pass must see the same outputs.

Dask is imported only inside these functions: ``import fairsk`` does not need it
(install it with ``pip install fairsk[dask]``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .._groups import _check_one_kind, _kind, check_attribute_count, encode_sensitive
from .._proba import logit
from ..exceptions import InfeasibleProjectionError
from . import _labels, _shifts
from ._metrics import fairness_report, parity_gap, residual_gap, selection_rate_gap
from ._parts import _aligned_parts, _key, _parts_of, _tree
from ._shifts import Spec

__all__ = ["decision_function", "predict", "predict_proba", "parity_gap", "residual_gap", "selection_rate_gap",
           "fairness_report"]



# -- public API -----------------------------------------------------------------------------
def decision_function(est, X, sensitive_features=None):
    """Scores of a fitted classifier (its projected logits, or the logits of its fair
    probabilities) or the projected predictions of a regressor, lazily.

    Parameters
    ----------
    est : FairLayerClassifier or FairLayerRegressor
        A fitted estimator.
    X : dask DataFrame or dask Array of shape (n, d)
        The features (and the sensitive columns when ``est.sensitive_columns`` is set).
    sensitive_features : dask Series, DataFrame or Array, optional
        Aligned with ``X`` (same number of partitions, same rows in each).

    Returns
    -------
    dask Series / DataFrame (for a DataFrame ``X``, same divisions) or dask Array
    (same row chunks): what ``est.decision_function(X)`` (classifier) or
    ``est.predict(X)`` (regressor) returns on the whole data in memory.
    """
    return _Run(est, X, sensitive_features).output("scores")


def predict(est, X, sensitive_features=None):
    """Regressor: the projected predictions (as :func:`decision_function`).
    Classifier: the labels of ``est.predict`` (``enforce_on="labels"``: labels whose
    selection rates over all partitions meet the tolerance, identical to the
    in-memory call; otherwise the argmax of the probabilities).

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> import fairsk.dask as fd
    >>> from fairsk import FairLayerRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 3)); s = rng.integers(0, 2, 300); y = X[:, 0] + s
    >>> reg = FairLayerRegressor(tolerance=0.05, max_epochs=3, random_state=0, solver="exact")
    >>> reg = reg.fit(X, y, sensitive_features=s)
    >>> Xd, sd = da.from_array(X, chunks=(100, 3)), da.from_array(s, chunks=100)
    >>> pred = fd.predict(reg, Xd, sensitive_features=sd)  # lazy, same chunks as Xd
    >>> pred.chunks
    ((100, 100, 100),)
    >>> bool(np.abs(pred.compute() - reg.predict(X, sensitive_features=s)).max() < 1e-9)
    True
    >>> fd.parity_gap(pred, sd) <= 0.05 + 1e-9
    True
    """
    kind = "labels" if hasattr(est, "classes_") else "scores"
    return _Run(est, X, sensitive_features).output(kind)


def predict_proba(est, X, sensitive_features=None):
    """Classifier: class probabilities (as ``est.predict_proba``): the fair
    probabilities (``enforce_on`` "proba" or "labels") or those of the projected logits."""
    if not hasattr(est, "classes_"):
        raise TypeError(f"{type(est).__name__} has no predict_proba")
    return _Run(est, X, sensitive_features).output("proba")


# -- what runs on a partition -------------------------------------------------------------------
def _scores(est, x, s) -> tuple[np.ndarray, list | None, np.ndarray | None]:
    """Raw outputs (n, c) of one partition, its cells (label tuples) and each row's cell."""
    n = len(x)
    if s is not None and len(s) != n:
        raise ValueError(f"a partition of sensitive_features has {len(s)} rows but the one of X has {n}")
    if n == 0:
        return np.zeros((0, est.n_outputs_)), [], np.zeros(0, dtype=np.int64)
    z, sensitive = est.raw_output(_aligned(x), s)
    if _on_proba(est):  # the values projected are the probabilities, as in memory
        import torch

        z = torch.sigmoid(torch.as_tensor(z)).numpy()
    if sensitive is None:
        return z, None, None
    codes, labels = encode_sensitive(sensitive, n)
    if codes.shape[1] == 1:  # codes are already 0..k-1 over the labels present
        return z, [(_key(v),) for v in labels[0]], codes[:, 0]
    # several attributes: one integer per row in mixed radix, then its distinct values
    sizes = np.array([len(lab) for lab in labels], dtype=np.int64)
    flat = np.zeros(n, dtype=np.int64)
    for a in range(codes.shape[1]):
        flat = flat * sizes[a] + codes[:, a]
    uniq, inverse = np.unique(flat, return_inverse=True)
    digits = []
    for a in reversed(range(codes.shape[1])):
        digits.append(uniq % sizes[a])
        uniq = uniq // sizes[a]
    digits = digits[::-1]
    cells = [tuple(_key(labels[a][digits[a][i]]) for a in range(codes.shape[1])) for i in range(len(digits[0]))]
    return z, cells, inverse.reshape(-1)


def _aligned(x):
    """A copy of a partition in freshly allocated, 64-byte aligned memory.

    A partition received from another process may start at any byte offset, and the
    BLAS kernels behind the body round differently on data that is not 16-byte
    aligned: the same partition would give outputs differing in the last bit from
    one pass to the next (measured on a LocalCluster), and the passes must see the
    same numbers."""
    if isinstance(x, np.ndarray):
        buf = np.empty(x.nbytes + 64, dtype=np.uint8)
        start = (-buf.ctypes.data) % 64
        out = buf[start: start + x.nbytes].view(x.dtype).reshape(x.shape)
        out[...] = x
        return out
    if hasattr(x, "copy") and hasattr(x, "columns"):  # pandas: a deep copy allocates afresh
        return x.copy(deep=True)
    return x


def _cell_sums(v: np.ndarray, inverse: np.ndarray, k: int) -> np.ndarray:
    """(k, c) sums of the columns of ``v`` per cell."""
    return np.stack([np.bincount(inverse, weights=v[:, j], minlength=k) for j in range(v.shape[1])], 1)


def _stats_part(est, x, s) -> dict:
    """Per cell: count, sum, clipped sum, min, max of the raw outputs; and max |z|."""
    lb, ub = _box(est)
    z, cells, inverse = _scores(est, x, s)
    out = {"scale": float(np.abs(z).max()) if z.size else 0.0, "cells": {}, "c": z.shape[1], "n": z.shape[0]}
    if cells is None:
        out["unconstrained"] = z.shape[0] > 0
        return out
    k = len(cells)
    counts = np.bincount(inverse, minlength=k).astype(np.float64)
    sums = _cell_sums(z, inverse, k)
    boxed = math.isfinite(lb) or math.isfinite(ub)
    clipped = _cell_sums(np.clip(z, lb, ub), inverse, k) if boxed else sums
    for i, cell in enumerate(cells):
        if not counts[i]:
            continue
        if boxed:  # what the box search starts from
            zi = z[inverse == i]
            extra = [zi.min(0), zi.max(0), _shifts.zero_counts(zi, lb, ub)]
        else:
            extra = [np.zeros(z.shape[1]), np.zeros(z.shape[1]), np.zeros((4, z.shape[1]))]
        out["cells"][cell] = [counts[i], sums[i], clipped[i], *extra]
    return out


def _merge_stats(parts: list) -> dict:
    out = {"scale": 0.0, "cells": {}, "c": None, "n": 0}
    for p in parts:
        out["n"] += p["n"]
        out["scale"] = max(out["scale"], p["scale"])
        out["c"] = p["c"] if out["c"] is None else out["c"]
        if p.get("unconstrained"):
            out["unconstrained"] = True
        for cell, (n, s, sc, lo, hi, cnt0) in p["cells"].items():
            if cell in out["cells"]:
                acc = out["cells"][cell]
                out["cells"][cell] = [acc[0] + n, acc[1] + s, acc[2] + sc, np.minimum(acc[3], lo),
                                      np.maximum(acc[4], hi), acc[5] + cnt0]
            else:
                out["cells"][cell] = [n, s, sc, lo, hi, cnt0]
    return out


def _box_part(est, x, s, evals: dict, collects: dict) -> tuple[dict, dict]:
    lb, ub = _box(est)
    z, cells, inverse = _scores(est, x, s)
    index = {cell: i for i, cell in enumerate(cells or [])}

    def values(key):
        i = index.get(key[0])
        return None if i is None else z[inverse == i, key[1]]

    return _shifts.partition_box_pass(values, evals, collects, lb, ub)


def _cell_part(est, x, s, T: dict, T_prev: dict | None, released: dict | None, delta: float) -> dict:
    lb, ub = _box(est)
    z, cells, inverse = _scores(est, x, s)
    index = {cell: i for i, cell in enumerate(cells or [])}

    def values(cell):
        i = index.get(cell)
        return None if i is None else z[inverse == i]

    return _shifts.partition_cell_pass(values, T, T_prev, released, delta, lb, ub)


def _apply_part(est, x, s, plan: dict | None) -> tuple[np.ndarray, list | None, np.ndarray | None]:
    """The projected outputs (n, c) of one partition, its cells and each row's cell."""
    lb, ub = _box(est)
    z, cells, inverse = _scores(est, x, s)
    if plan is None or cells is None or z.shape[0] == 0:
        return (np.clip(z, lb, ub) if math.isfinite(lb) or math.isfinite(ub) else z), cells, inverse
    missing = [c for c in cells if c not in plan]
    if missing:
        raise RuntimeError(f"groups {missing} appeared after the statistics pass: is the data deterministic?")
    offsets = np.stack([plan[c] for c in cells])
    out = z + offsets[inverse]
    if math.isfinite(lb) or math.isfinite(ub):
        np.clip(out, lb, ub, out=out)
    return out, cells, inverse


def _out_stats_part(est, x, s, plan) -> dict:
    """What the check needs of one partition's output: per attribute and group,
    count and sum; min and max."""
    out, cells, inverse = _apply_part(est, x, s, plan)
    stats = {"min": out.min(0) if out.size else None, "max": out.max(0) if out.size else None, "groups": {}}
    if cells is None or plan is None or not len(cells):
        return stats
    k = len(cells)
    counts = np.bincount(inverse, minlength=k).astype(np.float64)
    sums = _cell_sums(out, inverse, k)
    for i, cell in enumerate(cells):
        if not counts[i]:
            continue
        for a, label in enumerate(cell):
            key = (a, label)
            if key in stats["groups"]:
                stats["groups"][key] = (stats["groups"][key][0] + counts[i], stats["groups"][key][1] + sums[i])
            else:
                stats["groups"][key] = (counts[i], sums[i])
    return stats


def _merge_out_stats(parts: list) -> dict:
    out = {"min": None, "max": None, "groups": {}}
    for p in parts:
        for name, fn in (("min", np.minimum), ("max", np.maximum)):
            if p[name] is not None:
                out[name] = p[name] if out[name] is None else fn(out[name], p[name])
        for key, (n, total) in p["groups"].items():
            if key in out["groups"]:
                out["groups"][key] = (out["groups"][key][0] + n, out["groups"][key][1] + total)
            else:
                out["groups"][key] = (n, total)
    return out


def _verify(stats: dict, spec: Spec | None) -> bool:
    """Recompute the constraint violation of the whole output from its reductions."""
    if stats["min"] is None:
        return True
    scale = max(float(np.abs(stats["min"]).max()), float(np.abs(stats["max"]).max()))
    atol = 1e-9 * (1.0 + scale)
    worst = 0.0
    if spec is not None:
        worst = max(worst, float((spec.lb - stats["min"]).max()), float((stats["max"] - spec.ub).max()))
        attributes = sorted({a for a, _ in stats["groups"]})
        for a in attributes:
            means = np.stack([total / n for (b, _), (n, total) in stats["groups"].items() if b == a])
            if means.shape[0] >= 2:
                worst = max(worst, float((means.max(0) - means.min(0)).max()) - spec.tolerance)
    if not worst <= atol:  # NaN fails too
        raise InfeasibleProjectionError(
            f"the output over all partitions breaks the constraints by {worst:.3g} (> {atol:.1g}); it is "
            "refused rather than returned unfair"
        )
    return True


def _release(est, x, s, plan, kind: str, rule: dict | None = None):
    """The output of one partition, formatted (``rule``: the fair labels' thresholds)."""
    out, cells, inverse = _apply_part(est, x, s, plan)
    if kind == "scores":
        result = logit(out[:, 0]) if _on_proba(est) else est.format_output(out)
    elif kind == "proba":
        result = est._proba_of(out)
    elif rule is not None:  # fair labels: each group's rows above its threshold, ties in row order
        w = 2.0 * out[:, 0] - 1.0  # the gains of fairsk.decisions.fair_labels
        accepted = np.zeros(out.shape[0], dtype=np.int64)
        for i, cell in enumerate(cells or []):
            rows = inverse == i
            _, tau = rule["thresholds"][cell]
            accepted[rows] = _labels.accept(w[rows], tau, rule["take"].get(cell, 0))
        result = est.classes_[accepted]
    elif _on_proba(est):
        result = est.classes_[np.argmax(est._proba_of(out), 1)]
    else:
        result = est.labels_from_scores(out)
    if hasattr(x, "index"):  # a pandas partition: keep its index
        import pandas as pd

        if result.ndim == 1:
            return pd.Series(result, index=x.index)
        columns = list(est.classes_) if kind == "proba" else list(range(result.shape[1]))
        return pd.DataFrame(result, index=x.index, columns=columns)
    return result


def _gains(est, x, s, plan) -> tuple[np.ndarray, dict]:
    """The gains ``2 p - 1`` of one partition's fair probabilities, and its cells' rows."""
    out, cells, inverse = _apply_part(est, x, s, plan)
    return 2.0 * out[:, 0] - 1.0, {cell: inverse == i for i, cell in enumerate(cells or [])}


def _labels_part(est, x, s, plan, requests: dict, first: bool) -> dict:
    w, rows = _gains(est, x, s, plan)
    return _labels.partition_pass(lambda cell: w[rows[cell]] if cell in rows else None, requests, first)


def _ties_part(est, x, s, plan, thresholds: dict) -> dict:
    w, rows = _gains(est, x, s, plan)
    return _labels.partition_ties(lambda cell: w[rows[cell]] if cell in rows else None, thresholds)


# -- the driver ---------------------------------------------------------------------------------
def _on_proba(est) -> bool:
    """Whether the estimator's guarantee is on its probabilities (``enforce_on`` "proba"
    or "labels"): the values projected are then ``sigmoid(z)`` in the box ``[0, 1]``."""
    return hasattr(est, "classes_") and getattr(est, "enforce_on", "logits") != "logits"


def _box(est) -> tuple[float, float]:
    if _on_proba(est):
        return 0.0, 1.0
    bounds = getattr(est, "bounds", None)
    if bounds is None:
        return -math.inf, math.inf
    lb, ub = bounds
    return (-math.inf if lb is None else float(lb)), (math.inf if ub is None else float(ub))


def _projects(est) -> bool:
    """Whether the estimator projects at prediction (eer needs the targets: it does not)."""
    return est.projects_at_predict


class _Run:
    """One call: the partitions, the statistics pass and the shifts (the plan)."""

    def __init__(self, est, X, sensitive_features):
        import dask
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(est, "net_")
        if _on_proba(est) and est.n_outputs_ > 1:
            raise NotImplementedError(
                f"fairsk.dask: enforce_on={est.enforce_on!r} with {len(est.classes_)} classes is not supported (its "
                "probabilities come from Dykstra's iteration between the simplex of every row and the parity set, "
                "which takes a pass per sweep); use enforce_on='logits', or binary targets"
            )
        if getattr(est, "sensitive_columns", None) is not None and sensitive_features is not None:
            raise ValueError("pass sensitive_features or set sensitive_columns, not both")
        self.est = est
        self.X = _parts_of(X, "X", two_d=True)
        self.S = _aligned_parts(sensitive_features, self.X, "sensitive_features")
        self.est_d = dask.delayed(est)
        lb, ub = _box(est)
        tol = float(est.tolerance)
        self.spec = Spec(est.criterion, tol, lb, ub)
        self.passes = 1
        stats_parts = [dask.delayed(_stats_part)(self.est_d, x, s) for x, s in zip(self.X.parts, self.S)]
        (stats,) = dask.compute(_tree(stats_parts, _merge_stats))
        self.stats = stats
        self.plan = self._plan(stats)

    def _plan(self, stats: dict) -> dict | None:
        est = self.est
        if not stats["cells"] and not stats["n"] and (any(s is not None for s in self.S)
                                                       or getattr(est, "sensitive_columns", None) is not None):
            return None  # no rows at all: nothing to project (as in memory, an empty result)
        if not stats["cells"]:
            est.check_missing_sensitive()  # the estimator's rule for a call without groups
            if stats.get("unconstrained") or getattr(est, "group_labels_", None) is not None:
                warnings.warn(f"{type(est).__name__} got no sensitive_features (and no sensitive_columns): it "
                              "behaves as an ordinary unconstrained model", UserWarning, stacklevel=4)
            return None
        if stats.get("unconstrained"):
            raise ValueError("some partitions have sensitive features and others none")
        _check_attributes(list(stats["cells"]), getattr(est, "group_labels_", None))
        self._warn_unseen(stats["cells"])
        if not _projects(est):
            return None
        cells = list(stats["cells"])
        n_attr = len(cells[0])
        counts = np.array([stats["cells"][c][0] for c in cells])
        sums = np.stack([stats["cells"][c][1] for c in cells])
        groups = []
        for a in range(n_attr):
            labels = {c[a] for c in cells}
            order = {lab: i for i, lab in enumerate(sorted(labels, key=_sort_key))}
            groups.append(np.array([order[c[a]] for c in cells], dtype=np.int64))
        if not self.spec.has_box:
            offsets, self.sweeps, _ = _shifts.cell_offsets(groups, counts, sums, self.spec, stats["scale"])
            return {c: offsets[i] for i, c in enumerate(cells)}
        if n_attr > 1:
            lb, ub = self.spec.lb, self.spec.ub
            scale = max(float(np.abs(np.clip(v, lb, ub)).max()) for c in cells for v in stats["cells"][c][3:5])
            offsets, extra = _shifts.boxed_cell_offsets(cells, groups, counts, sums, self.spec, scale,
                                                        self._cell_pass)
            self.passes += extra
            return {c: offsets[i] for i, c in enumerate(cells)}
        box_stats = {}
        for c in cells:
            n, s, sc, lo, hi, cnt0 = stats["cells"][c]
            for j in range(stats["c"]):
                box_stats[(c, j)] = (n, float(s[j]), float(sc[j]), float(lo[j]), float(hi[j]), cnt0[:, j])
        shifts, extra = _shifts.box_shifts(box_stats, self.spec, self._box_pass)
        self.passes += extra
        return {c: -np.array([shifts[(c, j)] for j in range(stats["c"])]) for c in cells}

    def _box_pass(self, evals: dict, collects: dict):
        import dask

        parts = [dask.delayed(_box_part)(self.est_d, x, s, evals, collects) for x, s in zip(self.X.parts, self.S)]
        (merged,) = dask.compute(_tree(parts, _shifts.merge_box_passes))
        return merged

    def _cell_pass(self, T: dict, T_prev: dict | None, released: dict | None, delta: float) -> dict:
        import dask

        parts = [dask.delayed(_cell_part)(self.est_d, x, s, T, T_prev, released, delta)
                 for x, s in zip(self.X.parts, self.S)]
        (merged,) = dask.compute(_tree(parts, _shifts.merge_cell_passes))
        return merged

    def _warn_unseen(self, cells) -> None:
        known = getattr(self.est, "group_labels_", None)
        if known is None:
            return
        for a, labels in enumerate(known):
            seen = {_key(v) for v in labels}
            unseen = sorted({str(c[a]) for c in cells if c[a] not in seen and str(c[a]) not in map(str, seen)})
            if unseen:
                warnings.warn(f"groups {unseen} of attribute {a} were not seen in fit; each is constrained as a "
                              "group of its own in this call", UserWarning, stacklevel=5)

    def output(self, kind: str):
        import dask
        import dask.array as da
        import dask.dataframe as dd
        import pandas as pd

        plan_d = dask.delayed(self.plan)
        spec = self.spec if self.plan is not None else None
        stats = [dask.delayed(_out_stats_part)(self.est_d, x, s, plan_d) for x, s in zip(self.X.parts, self.S)]
        check = dask.delayed(_verify)(_tree(stats, _merge_out_stats), spec)
        # The check runs now, as its own pass: gating the output tasks on it inside one
        # graph would let the scheduler produce input partitions ahead of the output
        # tasks (they are no longer root tasks), which holds memory growing with n.
        dask.compute(check)
        self.passes += 1
        fair_labels = kind == "labels" and self._fair_labels()
        if fair_labels and len(next(iter(self.stats["cells"]))) > 1:
            # in memory, several attributes' labels come from a local search over every
            # row (fairsk.decisions); refused rather than returned different
            raise NotImplementedError("fairsk.dask: fair labels (enforce_on='labels') with several sensitive "
                                      "attributes are not supported; predict_proba and decision_function are, "
                                      "or predict in memory")
        rules = self._fair_label_rules() if fair_labels else [None] * len(self.S)
        parts = [dask.delayed(_release)(self.est_d, x, s, plan_d, kind, rule)
                 for x, s, rule in zip(self.X.parts, self.S, rules)]
        c = self.stats["c"] or getattr(self.est, "n_outputs_", 1)
        one_column = self._one_column(kind, c)
        if kind == "labels":
            dtype = np.asarray(self.est.classes_).dtype
        else:
            dtype = np.dtype(np.float64)
        width = len(self.est.classes_) if kind == "proba" else c
        if self.X.kind == "frame":
            index = self.X.index_meta[:0]
            if one_column:
                meta = pd.Series(np.zeros(0, dtype=dtype), index=index)
            else:
                columns = list(self.est.classes_) if kind == "proba" else list(range(width))
                meta = pd.DataFrame(np.zeros((0, width), dtype=dtype), index=index, columns=columns)
            return dd.from_delayed(parts, meta=meta, divisions=self.X.divisions, verify_meta=False)
        blocks = [da.from_delayed(p, shape=(n,) if one_column else (n, width), dtype=dtype)
                  for p, n in zip(parts, self.X.lengths)]
        out = da.concatenate(blocks, axis=0)
        if out.chunks[0] != self.X.lengths:  # concatenate drops empty blocks: restore them
            out = out.rechunk({0: self.X.lengths})
        return out

    def _fair_labels(self) -> bool:
        """Whether ``predict`` returns labels at parity (as the in-memory ``predict``)."""
        est = self.est
        return self.plan is not None and len(est.classes_) >= 2 and est._fair_labels()

    def _fair_label_rules(self) -> list[dict]:
        """The passes of :mod:`fairsk.dask._labels`: each group's count and threshold,
        then how many of the rows tied at the threshold each partition accepts."""
        import dask

        plan_d = dask.delayed(self.plan)
        cells = sorted(self.stats["cells"], key=lambda c: tuple(map(_sort_key, c)))

        def run_pass(requests, first):
            parts = [dask.delayed(_labels_part)(self.est_d, x, s, plan_d, requests, first)
                     for x, s in zip(self.X.parts, self.S)]
            (merged,) = dask.compute(_tree(parts, _labels.merge_passes))
            return merged

        tol = float(self.est.tolerance)
        counts, passes = _labels.solve(cells, run_pass, tol)
        # the selection rates, as fair_labels checks them (count / size in float64)
        rates = [counts[cell][0] / float(self.stats["cells"][cell][0]) for cell in cells]
        if not max(rates) - min(rates) <= tol:
            raise InfeasibleProjectionError(f"the labels' selection-rate gap {max(rates) - min(rates)!r} exceeds the "
                                            f"tolerance {tol!r}; refusing to return them")
        thresholds = {cell: tau for cell, (_, tau) in counts.items()}
        ties = dask.compute(*[dask.delayed(_ties_part)(self.est_d, x, s, plan_d, thresholds)
                              for x, s in zip(self.X.parts, self.S)])
        self.passes += passes + 1
        take = _labels.takes(counts, list(ties))
        return [{"thresholds": counts, "take": t} for t in take]

    def _one_column(self, kind: str, c: int) -> bool:
        if kind == "labels":
            return True
        if kind == "proba":
            return False
        return np.asarray(self.est.format_output(np.zeros((1, c)))).ndim == 1


def _check_attributes(cells: list, known: list | None) -> None:
    """The rules of the in-memory encoding, over all partitions: as many attributes as
    in fit, and one kind of value per attribute (each partition checks only its own)."""
    n_attr = len(cells[0])
    if known is not None:
        check_attribute_count(n_attr, len(known))
    for a in range(n_attr):
        fitted = None if known is None else {_kind(v) for v in known[a]}
        _check_one_kind([c[a] for c in cells], a, fitted)


def _sort_key(v):
    return (str(type(v)), v if isinstance(v, (int, float, str)) else str(v))
