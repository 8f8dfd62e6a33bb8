"""Saving and loading without pickle: no code runs when a file is loaded.

``pickle`` (and ``joblib``) files can execute arbitrary code when they are loaded:
never unpickle a model from a source you do not trust. :func:`save` writes a zip
archive instead, with

* ``manifest.json``: the estimator's class (one of fairsk's, from an allow-list),
  its parameters, its fitted attributes (plain JSON), the stream state of a
  :class:`~fairsk.StreamingFairPredictor`, and the SHA-256 of every other member;
* ``body.pt``: the body's ``state_dict``, read back with ``torch.load(weights_only=True)``;
* ``state.npz``: the stream's arrays, read back with ``allow_pickle=False``.

:func:`load` rebuilds the estimator from the allow-listed class and the JSON, and
refuses, with ``ValueError``, an archive whose hashes do not match (a tampered file),
an unknown class, or a custom ``module=`` body it was not given
(``load(path, module=MyBody)``: the class is your code, not the file's).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._net import FairModule, FairNet, build_body
from .baselines import PenaltyClassifier, PenaltyRegressor, ProjectionClassifier, ProjectionRegressor
from .estimators import FairLayerClassifier, FairLayerRegressor
from .streaming import StreamingFairPredictor

__all__ = ["save", "load"]

FORMAT = "fairsk-model/1"
_CLASSES = {
    cls.__name__: cls
    for cls in (FairLayerRegressor, FairLayerClassifier, ProjectionRegressor, ProjectionClassifier,
                PenaltyRegressor, PenaltyClassifier)
}


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, tuple):
        return {"__tuple__": [_jsonable(v) for v in value]}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {"__dict__": [[_jsonable(k), _jsonable(v)] for k, v in value.items()]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot save a value of type {type(value).__name__} without pickle")


def _restore(value: Any) -> Any:
    if isinstance(value, list):
        return [_restore(v) for v in value]
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return np.asarray(value["__ndarray__"], dtype=value["dtype"])
        if "__tuple__" in value:
            return tuple(_restore(v) for v in value["__tuple__"])
        if "__dict__" in value:
            return {_key(_restore(k)): _restore(v) for k, v in value["__dict__"]}
    return value


def _key(k):
    return tuple(k) if isinstance(k, list) else k


def _estimator_record(est) -> tuple[dict, bytes]:
    params = est.get_params()
    module = params.pop("module")
    fitted = {name: getattr(est, name) for name in
              ("n_features_in_", "n_outputs_", "classes_", "group_labels_", "_y_2d", "lam_", "feature_names_in_")
              if hasattr(est, name)}
    buffer = io.BytesIO()
    torch.save(est.net_.module_.body.state_dict(), buffer)
    record = {
        "class": type(est).__name__,
        "module": None if module is None else f"{module.__module__}.{module.__qualname__}",
        "params": _jsonable(params),
        "fitted": _jsonable(fitted),
    }
    return record, buffer.getvalue()


def save(estimator, path: str | Path) -> Path:
    """Save a fitted fairsk estimator (or streaming predictor, mid-stream) without pickle.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from fairsk import FairLayerRegressor
    >>> from fairsk.persistence import save, load
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(100, 3)); s = rng.integers(0, 2, 100); y = X[:, 0] + s
    >>> reg = FairLayerRegressor(max_epochs=2, random_state=0, solver="exact").fit(X, y, sensitive_features=s)
    >>> path = save(reg, os.path.join(tempfile.mkdtemp(), "model.fairsk"))
    >>> np.array_equal(load(path).predict(X, sensitive_features=s), reg.predict(X, sensitive_features=s))
    True
    """
    stream = estimator if isinstance(estimator, StreamingFairPredictor) else None
    inner = stream.estimator_ if stream is not None else estimator
    if type(inner).__name__ not in _CLASSES or not hasattr(inner, "net_"):
        raise ValueError(f"save takes a fitted fairsk estimator, got {type(inner).__name__}")
    record, body = _estimator_record(inner)
    members = {"body.pt": body}
    manifest = {"format": FORMAT, "estimator": record}
    if stream is not None:
        state = stream.__getstate__()
        arrays = {}
        for name in ("_count", "_raw_sum", "_out_sum"):
            for a, arr in enumerate(state[name]):
                arrays[f"{name}_{a}"] = arr
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        members["state.npz"] = buffer.getvalue()
        manifest["stream"] = {
            "params": _jsonable({k: v for k, v in stream.get_params(deep=False).items() if k != "estimator"}),
            "labels": _jsonable([list(d.items()) for d in state["_labels"]]),
            "attributes": len(state["_labels"]),
            "scalars": _jsonable({k: state[k] for k in ("_paper_steps", "n_seen_", "pooled_gap_", "dual_",
                                                          "group_means_")}),
        }
    manifest["sha256"] = {name: hashlib.sha256(data).hexdigest() for name, data in members.items()}
    path = Path(path)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def load(path: str | Path, *, module: type | None = None):
    """Load what :func:`save` wrote; ``module`` is the body class for a custom ``module=``.

    Raises ``ValueError`` for a modified member (SHA-256 mismatch), an estimator class
    outside fairsk's, a custom body whose class is not passed, or a file that is not
    such an archive.

    Examples
    --------
    >>> import os, tempfile
    >>> from fairsk.persistence import load
    >>> path = os.path.join(tempfile.mkdtemp(), "not-a-model")
    >>> _ = open(path, "wb").write(b"junk")
    >>> try:
    ...     load(path)
    ... except ValueError as err:
    ...     print("refused")
    refused
    """
    try:
        with zipfile.ZipFile(path) as zf:
            manifest = json.loads(zf.read("manifest.json"))
            members = {name: zf.read(name) for name in manifest.get("sha256", {})}
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a fairsk model archive ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown format {manifest.get('format')!r} (expected {FORMAT!r})")
    for name, digest in manifest["sha256"].items():
        if hashlib.sha256(members[name]).hexdigest() != digest:
            raise ValueError(f"{path}: member {name} does not match its SHA-256: the file was modified")
    est = _rebuild(manifest["estimator"], members["body.pt"], module)
    if "stream" not in manifest:
        return est
    info = manifest["stream"]
    stream = StreamingFairPredictor(est, **_restore(info["params"]))
    stream.estimator_ = est
    for name in ("classes_", "n_features_in_", "feature_names_in_"):
        if hasattr(est, name):
            setattr(stream, name, getattr(est, name))
    stream.reset()
    with np.load(io.BytesIO(members["state.npz"]), allow_pickle=False) as npz:
        for name in ("_count", "_raw_sum", "_out_sum"):
            setattr(stream, name, [npz[f"{name}_{a}"] for a in range(info["attributes"])])
    stream._labels = [{_key(k): v for k, v in pairs} for pairs in _restore(info["labels"])]
    for key, value in _restore(info["scalars"]).items():
        setattr(stream, key, value)
    return stream


def _rebuild(record: dict, body_bytes: bytes, module: type | None):
    cls = _CLASSES.get(record["class"])
    if cls is None:
        raise ValueError(f"unknown estimator class {record['class']!r}: only fairsk's estimators are loaded")
    params = _restore(record["params"])
    if record["module"] is not None:
        if module is None or f"{module.__module__}.{module.__qualname__}" != record["module"]:
            raise ValueError(f"this model has a custom body {record['module']}: pass module=<that class> to load "
                             "(the archive never names code to import)")
    est = cls(module=module, **params)
    fitted = _restore(record["fitted"])
    for name, value in fitted.items():
        setattr(est, name, value)
    if "classes_" in fitted:
        from sklearn.preprocessing import LabelEncoder

        est._encoder = LabelEncoder()
        est._encoder.classes_ = fitted["classes_"]
    state = torch.load(io.BytesIO(body_bytes), weights_only=True)
    body = build_body(module, {k[len("module__"):]: v for k, v in params.items() if k.startswith("module__")},
                      est.n_features_in_, est.n_outputs_, est.hidden_layer_sizes)
    body.load_state_dict(state)
    # an inference-ready net around the loaded body (no optimiser state is kept)
    est.net_ = FairNet(FairModule(body, est._layer()), criterion=torch.nn.MSELoss).initialize()
    est.body64_ = copy.deepcopy(body).double().eval()
    return est

