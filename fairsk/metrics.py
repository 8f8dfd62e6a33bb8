"""Fairness metrics: parity and residual gaps, a per-group report, and scorers that pass
the sensitive features to the estimator (plain scores of the *fair* outputs, gaps, and
a fair scorer for model selection under a budget).

``parity_gap``, ``residual_gap``, ``selection_rate_gap`` and ``fairness_report`` also
take dask collections (partitioned alike): they are computed by :mod:`fairsk.dask` in
one pass over the partitions, nothing gathered, with the in-memory result."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from ._groups import encode_sensitive
from ._report import as_2d_float as _as_2d_float
from ._report import calibration_attrs, read_labels

__all__ = ["parity_gap", "residual_gap", "selection_rate_gap", "fairness_report", "make_fair_scorer", "FairScorer",
           "encode_sensitive", "GroupScorer", "make_group_scorer", "get_scorer", "get_scorer_names",
           "equal_opportunity_gap", "equalized_odds_gap"]


def _is_dask(value: Any) -> bool:
    return hasattr(value, "__dask_graph__")


def _group_means(values: np.ndarray, codes: np.ndarray) -> np.ndarray:
    k = int(codes.max()) + 1 if codes.size else 0
    counts = np.bincount(codes, minlength=k).astype(np.float64)
    sums = np.stack([np.bincount(codes, weights=values[:, j], minlength=k) for j in range(values.shape[1])], 1)
    present = counts > 0
    return sums[present] / counts[present, None]


def parity_gap(y_pred: Any, sensitive_features: Any) -> float:
    """Largest difference between two group means of the predictions.

    With several sensitive attributes (a 2-D ``sensitive_features``) and several
    output columns, the largest gap over attributes and columns ("marginal" parity,
    as the fairness layer constrains it).

    Examples
    --------
    >>> from fairsk.metrics import parity_gap
    >>> parity_gap([0.0, 1.0, 2.0, 4.0], ["a", "a", "b", "b"])
    2.5
    """
    if _is_dask(y_pred):  # one pass over the partitions, nothing gathered
        from .dask import parity_gap as dask_parity_gap

        return dask_parity_gap(y_pred, sensitive_features)
    pred = _as_2d_float(y_pred, "y_pred")
    codes, _ = encode_sensitive(sensitive_features, pred.shape[0])
    gap = 0.0
    for a in range(codes.shape[1]):
        m = _group_means(pred, codes[:, a])
        gap = max(gap, float((m.max(0) - m.min(0)).max()))
    return gap


def residual_gap(y_true: Any, y_pred: Any, sensitive_features: Any) -> float:
    """Largest ``|mean_g(y_pred) - mean_g(y_true)|`` over groups (and attributes).

    Examples
    --------
    >>> from fairsk.metrics import residual_gap
    >>> residual_gap([0.0, 1.0, 1.0, 1.0], [0.5, 0.5, 1.0, 1.2], [0, 0, 1, 1])
    0.1
    """
    if _is_dask(y_pred):
        from .dask import residual_gap as dask_residual_gap

        return dask_residual_gap(y_true, y_pred, sensitive_features)
    pred = _as_2d_float(y_pred, "y_pred")
    true = _as_2d_float(y_true, "y_true")
    if true.shape[0] != pred.shape[0]:
        raise ValueError(f"y_true has {true.shape[0]} rows but y_pred has {pred.shape[0]}")
    codes, _ = encode_sensitive(sensitive_features, pred.shape[0])
    diff = pred - true
    gap = 0.0
    for a in range(codes.shape[1]):
        gap = max(gap, float(np.abs(_group_means(diff, codes[:, a])).max()))
    return round(gap, 12)


def selection_rate_gap(y_pred: Any, sensitive_features: Any, pos_label: Any = None) -> float:
    """Largest difference between two groups' selection rates of predicted labels.

    The demographic-parity difference of labels: the selection rate of a class in
    a group is the fraction of the group's rows predicted as that class. With
    ``pos_label`` given, the gap of that class's rates; with ``pos_label=None``,
    the gap of class ``1`` when the labels are 0/1 (or booleans), otherwise the
    largest gap over all classes. With several sensitive attributes (a 2-D
    ``sensitive_features``), the largest gap over attributes, each attribute's
    groups compared separately. For one attribute it equals
    ``fairlearn.metrics.demographic_parity_difference`` (which, given several
    columns, compares their intersections instead).

    Examples
    --------
    >>> from fairsk.metrics import selection_rate_gap
    >>> selection_rate_gap([1, 0, 1, 1], ["a", "a", "b", "b"])
    0.5
    >>> selection_rate_gap(["x", "y", "z", "z"], ["a", "a", "b", "b"])
    1.0
    """
    if _is_dask(y_pred):  # one pass over the partitions, nothing gathered
        from .dask import selection_rate_gap as dask_selection_rate_gap

        return dask_selection_rate_gap(y_pred, sensitive_features, pos_label)
    labels, was_object = read_labels(y_pred)
    codes, _ = encode_sensitive(sensitive_features, labels.shape[0])
    if labels.size == 0:
        return 0.0
    if was_object and pos_label is not None:
        pos_label = str(pos_label)
    if pos_label is not None:
        classes = [pos_label]
    else:
        present = np.unique(labels)
        binary = labels.dtype.kind in "biuf" and set(present.tolist()) <= {0, 1}
        classes = [1] if binary else list(present)
    gap = 0.0
    for cls in classes:
        hit = (labels == cls)[:, None].astype(np.float64)
        for a in range(codes.shape[1]):
            m = _group_means(hit, codes[:, a])
            gap = max(gap, float(m.max() - m.min()))
    return gap


def fairness_report(y_true: Any, y_pred: Any, sensitive_features: Any, *,
                    residual: bool | None = None, error_rates: bool | None = None, pos_label: Any = None,
                    estimator: Any = None) -> pd.DataFrame:
    """A per-group table: count, mean prediction, mean target, and their gaps.

    One row per (attribute, group). ``parity_diff`` is the group's mean prediction
    minus the overall mean prediction; ``residual`` is mean prediction minus mean
    target, a regression quantity (the residual gap of ``criterion="eer"``);
    ``tpr`` and ``fpr`` are the group's true- and false-positive rates (NaN for a
    group without positive, or negative, rows).

    Parameters
    ----------
    residual : bool or None, default=None
        Whether to show the ``residual`` column. ``None``: only when ``y_true`` is
        not class labels (scikit-learn's ``type_of_target`` is neither ``"binary"``
        nor ``"multiclass"``): for a classifier, a mean logit minus a mean label
        means nothing.
    error_rates : bool or None, default=None
        Whether to show ``tpr`` and ``fpr``. ``None``: when ``y_true`` is binary and
        ``y_pred`` holds labels (values of ``y_true``).
    pos_label : default=None
        The positive label of ``tpr``/``fpr`` (default: the larger of the two labels).
    estimator : fitted estimator, optional
        A model fitted with ``criterion="equal_opportunity"`` or ``"equalized_odds"``:
        its estimated gap on new data (measured on as many rows as it calibrated
        on; other sizes: ``estimator.calibrator_.estimate_gap(n_rows)``), the
        bootstrap interval and the gap on its
        calibration data go in the table's ``attrs`` (``"criterion"``,
        ``"gap_estimate"``, ``"gap_interval"``, ``"calibration_gap"``,
        ``"train_worst_batch_gap"``; ``print(report.attrs)``), and the error-rate
        columns are shown by default.

    Examples
    --------
    >>> from fairsk.metrics import fairness_report
    >>> fairness_report([0.0, 1.0, 1.5, 1.0], [0.5, 0.5, 1.0, 1.5], ["a", "a", "b", "b"])
                 count  mean_pred  mean_true  parity_diff  residual
    attribute group
    0         a      2       0.50       0.50        -0.38      0.00
              b      2       1.25       1.25         0.38      0.00
    >>> fairness_report([0, 1, 1, 1], [0.5, 0.5, 1.0, 1.0], ["a", "a", "b", "b"])
                 count  mean_pred  mean_true  parity_diff
    attribute group
    0         a      2        0.5        0.5        -0.25
              b      2        1.0        1.0         0.25
    >>> fairness_report([0, 1, 1, 0], [0, 1, 0, 1], ["a", "a", "b", "b"])
                 count  mean_pred  mean_true  parity_diff  tpr  fpr
    attribute group
    0         a      2        0.5        0.5          0.0  1.0  0.0
              b      2        0.5        0.5          0.0  0.0  1.0
    """
    if _is_dask(y_pred):  # one pass over the partitions, nothing gathered
        from .dask import fairness_report as dask_fairness_report

        return dask_fairness_report(y_true, y_pred, sensitive_features, residual=residual, error_rates=error_rates,
                                    pos_label=pos_label, estimator=estimator)
    pred = _as_2d_float(y_pred, "y_pred")[:, 0]
    true = _as_2d_float(y_true, "y_true")[:, 0]
    if true.shape[0] != pred.shape[0]:
        raise ValueError(f"y_true has {true.shape[0]} rows but y_pred has {pred.shape[0]}")
    codes, labels = encode_sensitive(sensitive_features, pred.shape[0])
    names = (
        list(sensitive_features.columns)
        if isinstance(sensitive_features, pd.DataFrame)
        else [getattr(sensitive_features, "name", None) or a for a in range(codes.shape[1])]
    )
    rows = []
    overall = pred.mean()
    for a in range(codes.shape[1]):
        for g, label in enumerate(labels[a]):
            mask = codes[:, a] == g
            mp, mt = pred[mask].mean(), true[mask].mean()
            rows.append((names[a], label, int(mask.sum()), mp, mt, mp - overall, mp - mt))
    columns = ["attribute", "group", "count", "mean_pred", "mean_true", "parity_diff", "residual"]
    df = pd.DataFrame(rows, columns=columns).set_index(["attribute", "group"])
    from sklearn.utils.multiclass import type_of_target

    kind = type_of_target(np.asarray(y_true))
    if residual is None:
        residual = kind not in ("binary", "multiclass")
    df = df if residual else df.drop(columns="residual")
    calibrated = estimator is not None and getattr(estimator, "gap_estimate_", None) is not None
    if error_rates is None:
        error_rates = calibrated or (kind == "binary" and np.isin(np.unique(pred), np.unique(true)).all())
    if error_rates:
        values = np.unique(true)
        if values.size > 2:
            raise ValueError(f"tpr and fpr need binary y_true, got {values.size} labels")
        positive_value = values.max() if pos_label is None else float(pos_label)
        hit, positive = pred == positive_value, true == positive_value
        tpr, fpr = [], []
        for a in range(codes.shape[1]):
            for g in range(len(labels[a])):
                mask = codes[:, a] == g
                tpr.append(hit[mask & positive].mean() if (mask & positive).any() else np.nan)
                fpr.append(hit[mask & ~positive].mean() if (mask & ~positive).any() else np.nan)
        df["tpr"], df["fpr"] = tpr, fpr
    if calibrated:
        df.attrs.update(calibration_attrs(estimator))
    return df



class _RoutedScorer:
    """A scorer that asks scikit-learn's metadata routing for ``sensitive_features``
    (by default) and passes them to the estimator's prediction method; without them
    it reads them from the estimator's ``sensitive_columns``, through Pipelines."""

    def __init__(self) -> None:
        self._requests = {"sensitive_features": True, "sample_weight": None}

    def set_score_request(self, **requests: Any):
        """Change what the scorer requests (``sensitive_features``, ``sample_weight``),
        as scikit-learn's ``set_score_request``; returns self."""
        unknown = set(requests) - set(self._requests)
        if unknown:
            raise TypeError(f"unexpected requests {sorted(unknown)}; a scorer takes {sorted(self._requests)}")
        self._requests.update(requests)
        return self

    def get_metadata_routing(self):
        from sklearn.utils.metadata_routing import MetadataRequest

        request = MetadataRequest(owner=type(self).__name__)
        for param, alias in self._requests.items():
            request.score.add_request(param=param, alias=alias)
        return request


class FairScorer(_RoutedScorer):
    """Score, or ``-inf`` when the fairness gap of the model's output exceeds a budget.

    Made by :func:`make_fair_scorer`. It requests ``sensitive_features`` through
    scikit-learn's metadata routing, so ``GridSearchCV(..., scoring=scorer)`` passes
    the groups of each validation fold to it, and it passes them on to the
    estimator's methods; with an estimator that reads its groups from ``X``
    (``sensitive_columns``, also as the last step of a Pipeline) no metadata is needed.

    Examples
    --------
    >>> from fairsk.metrics import FairScorer, make_fair_scorer
    >>> isinstance(make_fair_scorer(max_gap=0.1), FairScorer)
    True
    """

    def __init__(self, score_func, max_gap, response_method, gap, atol, kwargs):
        super().__init__()
        self.score_func = score_func
        self.max_gap = max_gap
        self.response_method = response_method
        self.gap = gap
        self.atol = atol
        self.kwargs = kwargs

    def __call__(self, estimator, X, y_true, sensitive_features=None, sample_weight=None) -> float:
        kw = {} if sensitive_features is None else {"sensitive_features": sensitive_features}
        groups = sensitive_features if sensitive_features is not None else groups_from_columns(estimator, X)
        if groups is None:
            raise ValueError("the fair scorer needs sensitive_features (routed to it: fairsk.request_sensitive, or "
                             "params={'sensitive_features': ...}) or an estimator with sensitive_columns")
        out = getattr(estimator, self.response_method)(X, **kw)
        measured = parity_gap(out, groups) if self.gap == "parity" else residual_gap(y_true, out, groups)
        if measured > self.max_gap + self.atol:
            return -np.inf
        pred = out if self.response_method == "predict" else estimator.predict(X, **kw)
        extra = {} if sample_weight is None else {"sample_weight": sample_weight}
        return float(self.score_func(y_true, pred, **extra, **self.kwargs))

    def __repr__(self) -> str:
        name = getattr(self.score_func, "__name__", repr(self.score_func))
        return f"make_fair_scorer({name}, max_gap={self.max_gap}, response_method={self.response_method!r})"


def groups_from_columns(estimator: Any, X: Any) -> Any:
    """The sensitive features an estimator reads from ``X`` (``sensitive_columns``), or
    None; through Pipelines, whose earlier steps transform ``X`` first."""
    from sklearn.pipeline import Pipeline

    while isinstance(estimator, Pipeline):
        if len(estimator.steps) > 1:
            X = estimator[:-1].transform(X)
        estimator = estimator.steps[-1][1]
    if getattr(estimator, "sensitive_columns", None) is None or not hasattr(estimator, "split_sensitive"):
        return None
    return estimator.split_sensitive(X)[1]


def make_fair_scorer(
    score_func: Callable | None = None,
    *,
    max_gap: float = 0.0,
    response_method: str = "predict",
    gap: str = "parity",
    atol: float = 1e-6,
    **kwargs: Any,
) -> FairScorer:
    """A scorer for model selection under a fairness budget.

    Returns ``score_func(y_true, estimator.predict(X))``, or ``-inf`` when the gap
    of ``response_method``'s output over the groups exceeds ``max_gap``, so that
    ``GridSearchCV`` picks the best model among those that are fair enough.

    Parameters
    ----------
    score_func : callable, default=accuracy_score
        ``score_func(y_true, y_pred, **kwargs)``; greater is better.
    max_gap : float, default=0.0
        The budget on the gap.
    response_method : str, default="predict"
        The output the gap is measured on (``"decision_function"`` for the
        classifier's guarantee on logits).
    gap : {"parity", "residual"}, default="parity"
        :func:`parity_gap` or :func:`residual_gap`.
    atol : float, default=1e-6
        Slack on the budget for rounding.

    Examples
    --------
    >>> from sklearn.metrics import r2_score
    >>> from fairsk.metrics import make_fair_scorer
    >>> make_fair_scorer(r2_score, max_gap=0.05)
    make_fair_scorer(r2_score, max_gap=0.05, response_method='predict')
    """
    if gap not in ("parity", "residual"):
        raise ValueError(f"gap must be 'parity' or 'residual', got {gap!r}")
    if score_func is None:
        from sklearn.metrics import accuracy_score as score_func
    return FairScorer(score_func, float(max_gap), response_method, gap, float(atol), kwargs)


class GroupScorer(_RoutedScorer):
    """A scorer that passes the sensitive features to the estimator's prediction.

    scikit-learn's scorers call ``predict(X)`` without metadata: on a fairsk model
    fitted with groups they would score unconstrained outputs (fairsk refuses such a
    call by default). This scorer requests ``sensitive_features`` through metadata
    routing and calls ``estimator.<method>(X, sensitive_features=...)``, so it scores
    the fair outputs. Made by :func:`make_group_scorer` and :func:`get_scorer`.
    """

    def __init__(self, score_func, response_method, sign, uses_groups, kwargs, name=None):
        super().__init__()
        self.score_func = score_func
        self.response_method = response_method
        self.sign = sign
        self.uses_groups = uses_groups
        self.kwargs = kwargs
        self.name = name

    def __call__(self, estimator, X, y_true, sensitive_features=None, sample_weight=None) -> float:
        kw = {} if sensitive_features is None else {"sensitive_features": sensitive_features}
        out = _response(estimator, self.response_method, X, kw)
        if self.uses_groups:  # a gap: score_func(y_true, out, groups)
            groups = sensitive_features if sensitive_features is not None else groups_from_columns(estimator, X)
            if groups is None:
                raise ValueError(f"{self!r} needs sensitive_features (routed to it) or an estimator with "
                                 "sensitive_columns")
            return self.sign * float(self.score_func(y_true, out, groups, **self.kwargs))
        extra = {} if sample_weight is None else {"sample_weight": sample_weight}
        return self.sign * float(self.score_func(y_true, out, **extra, **self.kwargs))

    def __repr__(self) -> str:
        if self.name is not None:
            return f"get_scorer({self.name!r})"
        name = getattr(self.score_func, "__name__", repr(self.score_func))
        return f"make_group_scorer({name}, response_method={self.response_method!r})"


def _response(estimator, response_method, X, kw) -> np.ndarray:
    """The first available of ``response_method``'s methods; a binary ``predict_proba``
    gives the positive class's column."""
    if response_method == "guaranteed":
        response_method = _guaranteed_output(estimator)
    methods = (response_method,) if isinstance(response_method, str) else tuple(response_method)
    for method in methods:
        if hasattr(estimator, method):
            out = getattr(estimator, method)(X, **kw)
            if method == "predict_proba" and out.ndim == 2 and out.shape[1] == 2:
                out = out[:, 1]
            return out
    raise AttributeError(f"{type(estimator).__name__} has none of the methods {methods}")


def _guaranteed_output(estimator) -> str:
    """The method whose output carries the estimator's guarantee: ``predict`` of a
    regressor; for a classifier, by ``enforce_on``: ``predict`` (labels),
    ``predict_proba`` (probabilities) or ``decision_function`` (logits)."""
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    final = getattr(final, "estimator", final) if not hasattr(final, "classes_") else final
    if not hasattr(final, "decision_function"):
        return "predict"
    mode = getattr(final, "enforce_on", "logits")
    return {"labels": "predict", "proba": "predict_proba"}.get(mode, "decision_function")


def make_group_scorer(
    score_func: Callable,
    *,
    response_method: str | tuple = "predict",
    greater_is_better: bool = True,
    **kwargs: Any,
) -> GroupScorer:
    """A scorer of ``score_func(y_true, estimator.<response_method>(X, sensitive_features=...))``.

    The counterpart of scikit-learn's ``make_scorer`` for fairsk models: the groups
    routed to the scorer (or read from ``sensitive_columns``) are passed to the
    estimator, so the score is that of the fair outputs.

    Parameters
    ----------
    score_func : callable
        ``score_func(y_true, y_out, **kwargs)``.
    response_method : str or tuple of str, default="predict"
        The method called (the first available of a tuple); a binary
        ``predict_proba`` gives the positive class's column.
    greater_is_better : bool, default=True
        False negates the score (scikit-learn maximises scores).

    Examples
    --------
    >>> from sklearn.metrics import f1_score
    >>> from fairsk.metrics import make_group_scorer
    >>> make_group_scorer(f1_score)
    make_group_scorer(f1_score, response_method='predict')
    """
    return GroupScorer(score_func, response_method, 1.0 if greater_is_better else -1.0, False, kwargs)


def _scorer_table() -> dict:
    from sklearn import metrics as skm

    def parity(y_true, out, groups):
        # labels (the guarantee of enforce_on="labels") are compared by selection rates
        if np.asarray(out).dtype.kind not in "fc":
            return selection_rate_gap(out, groups)
        return parity_gap(out, groups)

    return {
        "accuracy": (skm.accuracy_score, "predict", 1.0, False),
        "balanced_accuracy": (skm.balanced_accuracy_score, "predict", 1.0, False),
        "roc_auc": (skm.roc_auc_score, ("decision_function", "predict_proba"), 1.0, False),
        "r2": (skm.r2_score, "predict", 1.0, False),
        "neg_mean_squared_error": (skm.mean_squared_error, "predict", -1.0, False),
        "neg_parity_gap": (parity, "guaranteed", -1.0, True),
        "neg_residual_gap": (residual_gap, "predict", -1.0, True),
    }


def get_scorer_names() -> list[str]:
    """Names accepted by :func:`get_scorer`."""
    return sorted(_scorer_table())


def get_scorer(name: str) -> GroupScorer:
    """A scorer, by name, that passes the groups to the estimator (see :class:`GroupScorer`).

    ``"accuracy"``, ``"balanced_accuracy"``, ``"roc_auc"`` (on ``decision_function``,
    else the positive class's probability), ``"r2"``, ``"neg_mean_squared_error"``;
    and the gaps, negated so that greater is better: ``"neg_parity_gap"`` (on the
    guaranteed output: ``predict`` of a regressor; of a classifier, by its
    ``enforce_on``, the selection-rate gap of ``predict``'s labels, the gap of
    ``predict_proba`` or of ``decision_function``) and ``"neg_residual_gap"`` (on
    ``predict``).

    Examples
    --------
    >>> import numpy as np, sklearn
    >>> from sklearn.model_selection import cross_validate
    >>> from fairsk import FairLayerClassifier, request_sensitive
    >>> from fairsk.metrics import get_scorer
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3)); s = rng.integers(0, 2, 200); y = (X[:, 0] + s > 0.5).astype(int)
    >>> with sklearn.config_context(enable_metadata_routing=True):
    ...     clf = request_sensitive(FairLayerClassifier(tolerance=0.05, max_epochs=3, random_state=0),
    ...                             enable_routing=False)
    ...     res = cross_validate(clf, X, y, cv=2, params={"sensitive_features": s},
    ...                          scoring={"acc": get_scorer("accuracy"), "gap": get_scorer("neg_parity_gap")})
    >>> bool((-res["test_gap"] <= 0.05 + 1e-6).all())
    True
    """
    table = _scorer_table()
    if name not in table:
        raise ValueError(f"unknown scorer {name!r}; choose one of {sorted(table)}")
    func, method, sign, uses_groups = table[name]
    return GroupScorer(func, method, sign, uses_groups, {}, name=name)


# -- error-rate criteria: equal opportunity and equalized odds ---------------------------


def _error_rate_inputs(y_true: Any, y_pred: Any, sensitive_features: Any, pos_label: Any) -> tuple:
    """``(strata, values, codes)``: for every class-vs-rest comparison, the rows of each
    true-label stratum and the value whose group means are compared there.

    ``strata`` is a list of ``(class_index, positive_rows_mask, negative_rows_mask)``;
    ``values`` is an (n, c) float matrix: column ``k`` is the indicator of predicting
    class ``k`` (labels) or the score / probability of class ``k`` (scores).
    """
    true = np.asarray(y_true.detach().cpu().numpy() if hasattr(y_true, "detach") else y_true)
    if true.ndim == 2 and true.shape[1] == 1:
        true = true[:, 0]
    if true.ndim != 1:
        raise ValueError(f"y_true must be 1-D, got shape {true.shape}")
    if true.dtype.kind not in "biu" and pd.isna(pd.Series(true)).any():
        raise ValueError("y_true contains missing values")
    pred = np.asarray(y_pred.detach().cpu().numpy() if hasattr(y_pred, "detach") else y_pred)
    if pred.shape[0] != true.shape[0]:
        raise ValueError(f"y_true has {true.shape[0]} rows but y_pred has {pred.shape[0]}")
    classes = np.unique(true)
    if pred.ndim == 2 and pred.shape[1] > 1:
        # probabilities / scores, one column per class in sorted order of the classes
        values = _as_2d_float(pred, "y_pred")
        if values.shape[1] == 2 and classes.size <= 2:
            if classes.size < 2 or pos_label not in classes:
                raise ValueError("a two-column y_pred needs y_true with both classes, pos_label among them")
            k = int(np.searchsorted(classes, pos_label))
            positive = true == pos_label
            return [(positive, ~positive)], values[:, k : k + 1], encode_sensitive(sensitive_features, len(true))[0]
        if values.shape[1] < classes.size:
            raise ValueError(f"y_pred has {values.shape[1]} columns but y_true has {classes.size} classes")
        strata = [(true == c, true != c) for c in classes]
        values = values[:, : classes.size]
        return strata, values, encode_sensitive(sensitive_features, len(true))[0]
    if pred.ndim == 2:
        pred = pred[:, 0]
    if pred.ndim != 1:
        raise ValueError(f"y_pred must be 1-D or 2-D, got shape {pred.shape}")
    labels = np.unique(np.r_[classes, pred]) if pred.dtype.kind in "OUSb" else None
    is_labels = labels is not None or bool(np.isin(pred, classes).all() and np.isin(pos_label, classes))
    if classes.size > 2 or (labels is not None and labels.size > 2):
        if not is_labels:
            raise ValueError("with more than two classes y_pred must be labels or an (n, c) score matrix")
        strata = [(true == c, true != c) for c in classes]
        values = np.stack([(pred == c).astype(np.float64) for c in classes], 1)
        return strata, values, encode_sensitive(sensitive_features, len(true))[0]
    positive = true == pos_label
    if not positive.any() and classes.size == 2:
        raise ValueError(f"pos_label={pos_label!r} is not a label of y_true {list(classes)}")
    if is_labels:
        values = (pred == pos_label).astype(np.float64)[:, None]
    else:
        values = _as_2d_float(pred, "y_pred")
    return [(positive, ~positive)], values, encode_sensitive(sensitive_features, len(true))[0]


def _stratum_gap(values: np.ndarray, mask: np.ndarray, codes: np.ndarray) -> float:
    """Largest difference of group means of ``values`` over the rows of ``mask``
    (over attributes); groups without rows there add nothing."""
    if not mask.any():
        return 0.0
    gap = 0.0
    for a in range(codes.shape[1]):
        m = _group_means(values[mask][:, None], codes[mask, a])
        gap = max(gap, float(m.max() - m.min()))
    return gap


def equal_opportunity_gap(y_true: Any, y_pred: Any, sensitive_features: Any, pos_label: Any = 1) -> float:
    """Largest difference of true-positive rates between two groups.

    Among the rows whose true label is ``pos_label``, the group means of the
    prediction are compared: for labels, the share predicted ``pos_label`` (the
    true-positive rate); for scores or probabilities of the positive class, their
    mean (the criterion in expectation). With several sensitive attributes, the
    largest gap over attributes. With more than two classes, every class in turn is
    the positive one (class-vs-rest) and the largest gap is returned; ``y_pred`` is
    then labels or an (n, c) matrix of class scores in sorted order of the classes.

    Parameters
    ----------
    y_true : array-like of shape (n,)
        True labels.
    y_pred : array-like of shape (n,) or (n, c)
        Predicted labels, scores of the positive class, or one score column per class.
        A 1-D ``y_pred`` whose values are all labels of ``y_true`` is read as labels.
    sensitive_features : array-like of shape (n,) or (n, a), Series or DataFrame
        Group membership, one column per attribute.
    pos_label : default=1
        The positive label (binary problems).

    Returns
    -------
    float
        ``max_g TPR_g - min_g TPR_g``, over groups with at least one positive row.

    Examples
    --------
    >>> from fairsk.metrics import equal_opportunity_gap
    >>> y_true = [1, 1, 0, 1, 1, 0]
    >>> y_pred = [1, 0, 0, 1, 1, 1]
    >>> equal_opportunity_gap(y_true, y_pred, ["a", "a", "a", "b", "b", "b"])
    0.5
    """
    strata, values, codes = _error_rate_inputs(y_true, y_pred, sensitive_features, pos_label)
    return round(max(_stratum_gap(values[:, k], pos, codes) for k, (pos, _) in enumerate(strata)), 12)


def equalized_odds_gap(y_true: Any, y_pred: Any, sensitive_features: Any, pos_label: Any = 1) -> float:
    """Largest difference of true- or false-positive rates between two groups.

    The larger of the equal-opportunity gap (rows whose true label is positive) and
    the same gap among the rows whose true label is negative (false-positive
    rates); for labels it equals fairlearn's ``equalized_odds_difference``. For
    scores or probabilities, the group means of the score in each true-label
    stratum are compared. With more than two classes, every class-vs-rest split
    contributes its two strata. Parameters as in :func:`equal_opportunity_gap`.

    Examples
    --------
    >>> from fairsk.metrics import equalized_odds_gap
    >>> y_true = [1, 1, 0, 1, 1, 0]
    >>> y_pred = [1, 0, 0, 1, 1, 1]
    >>> equalized_odds_gap(y_true, y_pred, ["a", "a", "a", "b", "b", "b"])
    1.0
    """
    strata, values, codes = _error_rate_inputs(y_true, y_pred, sensitive_features, pos_label)
    gap = 0.0
    for k, (pos, neg) in enumerate(strata):
        gap = max(gap, _stratum_gap(values[:, k], pos, codes), _stratum_gap(values[:, k], neg, codes))
    return round(gap, 12)


