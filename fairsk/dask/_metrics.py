"""Fairness metrics of dask collections, each in one pass over the partitions:
per-group sums are reduced in a tree, and the gap is computed from them exactly as
:mod:`fairsk.metrics` computes it in memory."""

from __future__ import annotations

import numpy as np

from .._groups import _check_one_kind, encode_sensitive
from .._report import as_2d_float, calibration_attrs, read_labels
from ._parts import _aligned_parts, _key, _parts_of, _tree


def parity_gap(y_pred, sensitive_features) -> float:
    """:func:`fairsk.metrics.parity_gap` of dask collections, in one pass."""
    import dask

    pred = _parts_of(y_pred, "y_pred")
    sens = _aligned_parts(sensitive_features, pred, "sensitive_features")
    parts = [dask.delayed(_metric_part)(p, s, None) for p, s in zip(pred.parts, sens)]
    (sums,) = dask.compute(_tree(parts, _merge_metric))
    return _gap_from_sums(sums, residual=False)


def residual_gap(y_true, y_pred, sensitive_features) -> float:
    """:func:`fairsk.metrics.residual_gap` of dask collections, in one pass."""
    import dask

    pred = _parts_of(y_pred, "y_pred")
    true = _aligned_parts(y_true, pred, "y_true")
    sens = _aligned_parts(sensitive_features, pred, "sensitive_features")
    parts = [dask.delayed(_metric_part)(p, s, t) for p, s, t in zip(pred.parts, sens, true)]
    (sums,) = dask.compute(_tree(parts, _merge_metric))
    return round(_gap_from_sums(sums, residual=True), 12)


def _metric_part(pred, sens, true) -> dict:
    pred = as_2d_float(pred, "y_pred")
    if true is not None:
        pred = pred - as_2d_float(true, "y_true")
    if sens is None:
        raise ValueError("sensitive_features is required")
    if len(sens) != pred.shape[0]:
        raise ValueError(f"a partition of sensitive_features has {len(sens)} rows but the predictions {pred.shape[0]}")
    out = {}
    if pred.shape[0] == 0:
        return out
    codes, labels = encode_sensitive(sens, pred.shape[0])
    for a in range(codes.shape[1]):
        k = len(labels[a])
        counts = np.bincount(codes[:, a], minlength=k)
        sums = np.stack([np.bincount(codes[:, a], weights=pred[:, j], minlength=k) for j in range(pred.shape[1])], 1)
        for g in range(k):
            out[(a, _key(labels[a][g]))] = (float(counts[g]), sums[g])
    return out


def _merge_metric(parts: list) -> dict:
    out = {}
    for p in parts:
        for key, (n, s) in p.items():
            out[key] = (out[key][0] + n, out[key][1] + s) if key in out else (n, s)
    return out


def _gap_from_sums(sums: dict, residual: bool) -> float:
    _check_kinds(sums)
    gap = 0.0
    for a in sorted({a for a, _ in sums}):
        means = np.stack([s / n for (b, _), (n, s) in sums.items() if b == a])
        gap = max(gap, float(np.abs(means).max()) if residual else float((means.max(0) - means.min(0)).max()))
    return gap


def _check_kinds(keyed: dict) -> None:
    """One kind of value per attribute over all partitions (each checks only its own)."""
    for a in sorted({a for a, _ in keyed}):
        _check_one_kind([label for b, label in keyed if b == a], a)


# -- selection rates ------------------------------------------------------------------------------
def _label_part(pred, sens) -> dict:
    """Per (attribute, group): the row count and the count of every label."""
    labels, was_object = read_labels(pred)
    if sens is None:
        raise ValueError("sensitive_features is required")
    codes, groups = encode_sensitive(sens, labels.shape[0])
    # "O": the labels were objects, compared as strings (pos_label too)
    out = {"kind": ("O" if was_object else labels.dtype.kind) if labels.size else None, "groups": {}}
    if labels.size == 0:
        return out
    values, inverse = np.unique(labels, return_inverse=True)
    for a in range(codes.shape[1]):
        k = len(groups[a])
        table = np.zeros((k, values.size))
        np.add.at(table, (codes[:, a], inverse.reshape(-1)), 1.0)
        for g in range(k):
            out["groups"][(a, _key(groups[a][g]))] = {_key(v): c for v, c in zip(values, table[g]) if c}
    return out


def _merge_labels(parts: list) -> dict:
    out = {"kind": None, "groups": {}}
    for p in parts:
        out["kind"] = out["kind"] or p["kind"]
        for key, table in p["groups"].items():
            acc = out["groups"].setdefault(key, {})
            for v, c in table.items():
                acc[v] = acc.get(v, 0.0) + c
    return out


def selection_rate_gap(y_pred, sensitive_features, pos_label=None) -> float:
    """:func:`fairsk.metrics.selection_rate_gap` of dask collections, in one pass."""
    import dask

    pred = _parts_of(y_pred, "y_pred")
    sens = _aligned_parts(sensitive_features, pred, "sensitive_features")
    parts = [dask.delayed(_label_part)(p, s) for p, s in zip(pred.parts, sens)]
    (merged,) = dask.compute(_tree(parts, _merge_labels))
    tables = merged["groups"]
    if not tables:
        return 0.0
    _check_kinds(tables)
    if merged["kind"] == "O" and pos_label is not None:  # as in memory: object labels are compared as strings
        pos_label = str(pos_label)
    if pos_label is not None:
        classes = [pos_label]
    else:
        present = sorted({v for table in tables.values() for v in table})
        binary = merged["kind"] in tuple("biuf") and set(present) <= {0, 1}
        classes = [1] if binary else present
    gap = 0.0
    for a in sorted({a for a, _ in tables}):
        sizes = {key: sum(t.values()) for key, t in tables.items() if key[0] == a}
        for cls in classes:
            rates = [tables[key].get(cls, 0.0) / n for key, n in sizes.items()]
            gap = max(gap, max(rates) - min(rates))
    return float(gap)


# -- the per-group report ---------------------------------------------------------------------------
#: distinct values of y_true / y_pred a partition reports (more: "many")
_FEW = 3


def _few_values(v: np.ndarray) -> list | None:
    values = np.unique(v)
    return None if values.size > _FEW else values.tolist()


def _report_part(true, pred, sens, positive: float | None) -> dict:
    """Per (attribute, group): count, sums of y_pred and y_true, and the rows of each
    y_true value with each of a few y_pred values (for tpr/fpr); the partition's
    distinct values (a few) and whether y_true has non-integer values."""
    t = _first_column(true, "y_true")
    p = _first_column(pred, "y_pred")
    if t.shape[0] != p.shape[0]:
        raise ValueError(f"a partition of y_true has {t.shape[0]} rows but y_pred has {p.shape[0]}")
    if sens is None:
        raise ValueError("sensitive_features is required")
    out = {"n": p.shape[0], "sum": float(p.sum()), "true": _few_values(t), "pred": _few_values(p),
           "integer": bool(np.all(t == np.round(t))), "multioutput": np.ndim(true) == 2 and np.shape(true)[1] > 1,
           "groups": {}}
    if p.shape[0] == 0:
        return out
    codes, groups = encode_sensitive(sens, p.shape[0])
    pred_values = np.unique(p) if positive is None else np.array([positive])
    table_ok = out["true"] is not None and pred_values.size <= _FEW
    for a in range(codes.shape[1]):
        for g, label in enumerate(groups[a]):
            mask = codes[:, a] == g
            entry = [float(mask.sum()), float(p[mask].sum()), float(t[mask].sum()), {}]
            if table_ok:
                for tv in out["true"]:
                    rows = mask & (t == tv)
                    entry[3][(tv, None)] = float(rows.sum())
                    for pv in pred_values.tolist():
                        entry[3][(tv, pv)] = float((rows & (p == pv)).sum())
            else:
                entry[3] = None
            out["groups"][(a, _key(label))] = entry
    return out


def _first_column(y, name: str) -> np.ndarray:
    return as_2d_float(y, name)[:, 0]


def _merge_values(a: list | None, b: list | None) -> list | None:
    if a is None or b is None:
        return None
    values = sorted(set(a) | set(b))
    return None if len(values) > _FEW else values


def _merge_report(parts: list) -> dict:
    out = {"n": 0, "sum": 0.0, "true": [], "pred": [], "integer": True, "multioutput": False, "groups": {}}
    for part in parts:
        out["multioutput"] |= part["multioutput"]
        out["n"] += part["n"]
        out["sum"] += part["sum"]
        out["true"] = _merge_values(out["true"], part["true"])
        out["pred"] = _merge_values(out["pred"], part["pred"])
        out["integer"] &= part["integer"]
        for key, (n, sp, st, table) in part["groups"].items():
            if key not in out["groups"]:
                out["groups"][key] = [n, sp, st, None if table is None else dict(table)]
                continue
            acc = out["groups"][key]
            acc[0], acc[1], acc[2] = acc[0] + n, acc[1] + sp, acc[2] + st
            if acc[3] is None or table is None:
                acc[3] = None
            else:
                for cell, c in table.items():
                    acc[3][cell] = acc[3].get(cell, 0.0) + c
    return out


def _kind(merged: dict) -> str:
    """scikit-learn's ``type_of_target`` of y_true, from what the pass saw."""
    if merged["multioutput"]:
        return "multioutput"
    if not merged["integer"]:
        return "continuous"
    if merged["true"] is None:
        return "multiclass"
    return "binary" if len(merged["true"]) <= 2 else "multiclass"


def fairness_report(y_true, y_pred, sensitive_features, *, residual=None, error_rates=None, pos_label=None,
                    estimator=None):
    """:func:`fairsk.metrics.fairness_report` of dask collections: one pass over the
    partitions (a second one only when ``error_rates=True`` is asked of predictions
    with many distinct values)."""
    import dask
    import dask.dataframe as dd
    import pandas as pd

    pred = _parts_of(y_pred, "y_pred")
    true = _aligned_parts(y_true, pred, "y_true")
    sens = _aligned_parts(sensitive_features, pred, "sensitive_features")
    positive = None if pos_label is None else float(pos_label)

    def run(positive):
        parts = [dask.delayed(_report_part)(t, p, s, positive) for t, p, s in zip(true, pred.parts, sens)]
        (merged,) = dask.compute(_tree(parts, _merge_report))
        return merged

    merged = run(positive)
    groups = merged["groups"]
    _check_kinds(groups)
    n_attr = 1 + max((a for a, _ in groups), default=0)
    if isinstance(sensitive_features, dd.DataFrame):  # its column names, as in memory
        names = list(sensitive_features.columns)
    elif isinstance(sensitive_features, dd.Series):  # (a dask Array's name is a graph key)
        names = [sensitive_features.name or 0]
    else:
        names = list(range(n_attr))
    overall = merged["sum"] / merged["n"] if merged["n"] else np.nan
    rows = []
    for a in range(n_attr):
        for key in sorted((k for k in groups if k[0] == a), key=lambda k: k[1]):
            n, sp, st, _ = groups[key]
            mp, mt = sp / n, st / n
            rows.append((names[a], key[1], int(n), mp, mt, mp - overall, mp - mt))
    columns = ["attribute", "group", "count", "mean_pred", "mean_true", "parity_diff", "residual"]
    df = pd.DataFrame(rows, columns=columns).set_index(["attribute", "group"])
    kind = _kind(merged)
    if residual is None:
        residual = kind not in ("binary", "multiclass")
    df = df if residual else df.drop(columns="residual")
    calibrated = estimator is not None and getattr(estimator, "gap_estimate_", None) is not None
    if error_rates is None:
        error_rates = calibrated or (kind == "binary" and merged["pred"] is not None
                                     and set(merged["pred"]) <= set(merged["true"]))
    if error_rates:
        if merged["true"] is None or len(merged["true"]) > 2:
            raise ValueError("tpr and fpr need binary y_true, got more than 2 labels")
        positive_value = max(merged["true"]) if positive is None else positive
        if any(groups[key][3] is None for key in groups):
            groups = run(positive_value)["groups"]  # many distinct predictions: count the hits
        tpr, fpr = [], []
        for a in range(n_attr):
            for key in sorted((k for k in groups if k[0] == a), key=lambda k: k[1]):
                table = groups[key][3]
                pos = table.get((positive_value, None), 0.0)
                hit_pos = table.get((positive_value, positive_value), 0.0)
                neg = sum(c for (tv, pv), c in table.items() if pv is None and tv != positive_value)
                hit_neg = sum(c for (tv, pv), c in table.items() if pv == positive_value and tv != positive_value)
                tpr.append(hit_pos / pos if pos else np.nan)
                fpr.append(hit_neg / neg if neg else np.nan)
        df["tpr"], df["fpr"] = tpr, fpr
    if calibrated:
        df.attrs.update(calibration_attrs(estimator))
    return df
