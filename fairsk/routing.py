"""One call to route ``sensitive_features`` through scikit-learn's metadata routing."""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["request_sensitive"]

#: the methods whose ``set_<method>_request`` scikit-learn generates, in call order
_METHODS = ("fit", "partial_fit", "predict", "predict_proba", "predict_log_proba", "decision_function", "score")


def request_sensitive(estimator: Any, *, enable_routing: bool = True) -> Any:
    """Request ``sensitive_features`` for every method of ``estimator`` that takes them.

    The shortest correct recipe for metadata routing: turns routing on
    (``sklearn.set_config(enable_metadata_routing=True)``, a global setting; pass
    ``enable_routing=False`` to leave the configuration alone, e.g. inside
    ``sklearn.config_context``), then calls ``set_<method>_request(sensitive_features=True)``
    for ``fit``, ``predict``, ``predict_proba``, ``decision_function``, ``score`` (those
    the estimator has and that take ``sensitive_features``). It walks into the steps
    of a Pipeline and the ``estimator`` of a meta-estimator (a search, a streaming
    predictor), so the groups reach the fairsk model wherever it sits. Returns
    ``estimator``.

    After a search, predict with the best model and the groups:
    ``search.best_estimator_.predict(X, sensitive_features=s)``
    (``search.predict`` takes no metadata).

    Examples
    --------
    >>> import sklearn
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from fairsk import FairLayerClassifier, request_sensitive
    >>> with sklearn.config_context(enable_metadata_routing=True):
    ...     pipe = request_sensitive(make_pipeline(StandardScaler(), FairLayerClassifier()), enable_routing=False)
    ...     pipe[-1].get_metadata_routing().predict.requests
    {'sensitive_features': True}
    """
    if enable_routing:
        import sklearn

        sklearn.set_config(enable_metadata_routing=True)
    for consumer in _estimators_in(estimator):
        for method in _METHODS:
            setter = getattr(consumer, f"set_{method}_request", None)
            func = getattr(consumer, method, None)
            if setter is None or func is None:
                continue
            try:
                takes = "sensitive_features" in inspect.signature(func).parameters
            except (TypeError, ValueError):
                takes = False
            if takes:
                setter(sensitive_features=True)
    return estimator


def _estimators_in(estimator: Any):
    """``estimator`` and, recursively, the steps of a Pipeline and the ``estimator`` of
    a meta-estimator."""
    yield estimator
    for _, step in getattr(estimator, "steps", None) or []:
        if step is not None and step != "passthrough":
            yield from _estimators_in(step)
    inner = getattr(estimator, "estimator", None)
    if inner is not None and hasattr(inner, "get_params"):
        yield from _estimators_in(inner)
