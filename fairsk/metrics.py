"""Fairness metrics: parity and residual gaps, a per-group report, and scorers that pass
the sensitive features to the estimator (plain scores of the *fair* outputs, gaps, and
a fair scorer for model selection under a budget)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from ._groups import encode_sensitive

__all__ = ["parity_gap", "residual_gap", "fairness_report", "make_fair_scorer", "FairScorer", "encode_sensitive",
           "GroupScorer", "make_group_scorer", "get_scorer", "get_scorer_names"]


def _as_2d_float(y: Any, name: str) -> np.ndarray:
    if hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    arr = np.asarray(y, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 1-D or 2-D, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


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


def fairness_report(y_true: Any, y_pred: Any, sensitive_features: Any, *,
                    residual: bool | None = None) -> pd.DataFrame:
    """A per-group table: count, mean prediction, mean target, and their gaps.

    One row per (attribute, group). ``parity_diff`` is the group's mean prediction
    minus the overall mean prediction; ``residual`` is mean prediction minus mean
    target, a regression quantity (the residual gap of ``criterion="eer"``).

    Parameters
    ----------
    residual : bool or None, default=None
        Whether to show the ``residual`` column. ``None``: only when ``y_true`` is
        not class labels (scikit-learn's ``type_of_target`` is neither ``"binary"``
        nor ``"multiclass"``): for a classifier, a mean logit minus a mean label
        means nothing.

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
    """
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
    if residual is None:
        from sklearn.utils.multiclass import type_of_target

        residual = type_of_target(np.asarray(y_true)) not in ("binary", "multiclass")
    return df if residual else df.drop(columns="residual")


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
    methods = (response_method,) if isinstance(response_method, str) else tuple(response_method)
    for method in methods:
        if hasattr(estimator, method):
            out = getattr(estimator, method)(X, **kw)
            if method == "predict_proba" and out.ndim == 2 and out.shape[1] == 2:
                out = out[:, 1]
            return out
    raise AttributeError(f"{type(estimator).__name__} has none of the methods {methods}")


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
        return parity_gap(out, groups)

    # the output each gap is guaranteed on: logits of a classifier, predictions of a regressor
    guaranteed = ("decision_function", "predict")
    return {
        "accuracy": (skm.accuracy_score, "predict", 1.0, False),
        "balanced_accuracy": (skm.balanced_accuracy_score, "predict", 1.0, False),
        "roc_auc": (skm.roc_auc_score, ("decision_function", "predict_proba"), 1.0, False),
        "r2": (skm.r2_score, "predict", 1.0, False),
        "neg_mean_squared_error": (skm.mean_squared_error, "predict", -1.0, False),
        "neg_parity_gap": (parity, guaranteed, -1.0, True),
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
    guaranteed output: ``decision_function`` of a classifier, ``predict`` of a
    regressor) and ``"neg_residual_gap"`` (on ``predict``).

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
