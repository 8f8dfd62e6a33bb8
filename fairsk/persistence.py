"""Saving and loading without pickle: no code runs when a file is loaded.

``pickle`` (and ``joblib``) files can execute arbitrary code when they are loaded:
never unpickle a model from a source you do not trust. :func:`save` writes a zip
archive (format ``fairsk-model/2``) instead:

* ``manifest.json``: what the archive holds, as plain JSON: each estimator's class
  (from an allow-list: fairsk's estimators, :class:`~fairsk.StreamingFairPredictor`,
  :class:`~sklearn.pipeline.Pipeline` and a few scikit-learn transformers whose
  fitted state is plain arrays), its parameters, its fitted attributes (asked of the
  class through ``get_fitted_state``), and the SHA-256 of every other member;
* ``body-<i>.pt``: a body's ``state_dict``, read back with ``torch.load(weights_only=True)``;
* ``stream-<i>.npz``: a stream's state, read back with ``allow_pickle=False``;
* ``signature.json``: a digest of ``manifest.json`` (which holds the digests of the
  other members), so that every byte of the archive is covered.

Integrity and authenticity
--------------------------
``save(est, path, key=...)`` signs the manifest with HMAC-SHA256 under your key, and
``load(path, key=...)`` refuses the archive unless the signature matches: a file
modified by anyone without the key (a weight, a parameter such as the tolerance, the
class named) is refused. Without a key the digest is a plain SHA-256: it detects
accidental corruption, **not tampering** (whoever can rewrite the file can rewrite
the digests). A key given to :func:`load` for an archive saved without one (or the
reverse) is refused rather than ignored. Archives of the older format
``fairsk-model/1`` load with a warning: they were never authenticated.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import torch
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from .baselines import PenaltyClassifier, PenaltyRegressor, ProjectionClassifier, ProjectionRegressor
from .estimators import FairLayerClassifier, FairLayerRegressor
from .streaming import StreamingFairPredictor, StreamState

__all__ = ["save", "load"]

FORMAT = "fairsk-model/2"
LEGACY_FORMAT = "fairsk-model/1"

_FAIRSK = {
    cls.__name__: cls
    for cls in (FairLayerRegressor, FairLayerClassifier, ProjectionRegressor, ProjectionClassifier,
                PenaltyRegressor, PenaltyClassifier)
}


def _sklearn_classes() -> dict:
    """scikit-learn transformers whose fitted state is plain arrays, strings and numbers."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import (
        FunctionTransformer,
        MaxAbsScaler,
        MinMaxScaler,
        OneHotEncoder,
        OrdinalEncoder,
        StandardScaler,
    )

    return {cls.__name__: cls for cls in (ColumnTransformer, StandardScaler, MinMaxScaler, MaxAbsScaler,
                                          OneHotEncoder, OrdinalEncoder, SimpleImputer, FunctionTransformer)}


# -- plain values -------------------------------------------------------------------------
class _Writer:
    """Encodes values as JSON and collects the binary members."""

    def __init__(self) -> None:
        self.members: dict[str, bytes] = {}

    def add(self, prefix: str, suffix: str, data: bytes) -> str:
        name = f"{prefix}-{len(self.members)}{suffix}"
        self.members[name] = data
        return name

    def value(self, value: Any) -> Any:
        if isinstance(value, BaseEstimator):
            return {"__estimator__": self.estimator(value)}
        if isinstance(value, np.ndarray):
            if value.dtype == object and not all(_is_plain(v) for v in value.ravel().tolist()):
                raise TypeError("cannot save an object array holding other than strings and numbers")
            return {"__ndarray__": value.tolist(), "dtype": str(value.dtype), "shape": list(value.shape)}
        if isinstance(value, np.generic):
            return value.item() if not isinstance(value, np.str_) else str(value)
        if isinstance(value, type) and issubclass(value, np.generic):
            return {"__dtype__": np.dtype(value).name}
        if isinstance(value, slice):
            return {"__slice__": [value.start, value.stop, value.step]}
        if isinstance(value, tuple):
            return {"__tuple__": [self.value(v) for v in value]}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, dict):
            return {"__dict__": [[self.value(k), self.value(v)] for k, v in value.items()]}
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(f"cannot save a value of type {type(value).__name__} without pickle")

    def estimator(self, est) -> dict:
        if isinstance(est, StreamingFairPredictor):
            return self._stream(est)
        if isinstance(est, Pipeline):
            return {"kind": "pipeline", "steps": [[name, self.value(step)] for name, step in est.steps],
                    "params": self.value({k: v for k, v in est.get_params(deep=False).items() if k != "steps"})}
        name = type(est).__name__
        if _FAIRSK.get(name) is type(est):
            return self._fairsk(est)
        if _sklearn_classes().get(name) is type(est):
            return self._sklearn(est)
        raise TypeError(f"cannot save a {type(est).__name__} without pickle: only fairsk's estimators, Pipeline and "
                        f"the transformers {sorted(_sklearn_classes())} are saved")

    def _fairsk(self, est) -> dict:
        if not hasattr(est, "net_"):
            raise ValueError(f"save takes a fitted estimator; this {type(est).__name__} is not fitted")
        params = est.get_params(deep=False)
        module = params.pop("module")
        state = est.get_fitted_state()
        buffer = io.BytesIO()
        torch.save(state["body"], buffer)
        return {"kind": "fairsk", "class": type(est).__name__,
                "module": None if module is None else f"{module.__module__}.{module.__qualname__}",
                "params": self.value(params), "attributes": self.value(state["attributes"]),
                "body": self.add("body", ".pt", buffer.getvalue())}

    def _stream(self, stream) -> dict:
        state = stream.get_fitted_state()
        buffer = io.BytesIO()
        np.savez(buffer, **state["stream"])
        params = {k: v for k, v in stream.get_params(deep=False).items() if k != "estimator"}
        return {"kind": "stream", "params": self.value(params), "estimator": self.estimator(stream.estimator_),
                "attributes": self.value(state["attributes"]), "stream": self.add("stream", ".npz", buffer.getvalue())}

    def _sklearn(self, est) -> dict:
        from sklearn.preprocessing import FunctionTransformer

        if isinstance(est, FunctionTransformer) and (est.func is not None or est.inverse_func is not None):
            raise TypeError("cannot save a FunctionTransformer with a function without pickle (the function is code)")
        params = est.get_params(deep=False)
        fitted = {k: v for k, v in vars(est).items() if k not in params}
        return {"kind": "sklearn", "class": type(est).__name__, "params": self.value(params),
                "fitted": self.value(fitted)}


def _is_plain(v) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


class _Reader:
    """Decodes what :class:`_Writer` wrote (allow-listed classes only)."""

    def __init__(self, members: dict[str, bytes], module: type | None):
        self.members, self.module = members, module

    def value(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, dict):
            if "__estimator__" in value:
                return self.estimator(value["__estimator__"])
            if "__ndarray__" in value:
                arr = np.asarray(value["__ndarray__"], dtype=value["dtype"])
                return arr.reshape(value["shape"]) if "shape" in value else arr
            if "__dtype__" in value:
                return np.dtype(value["__dtype__"]).type
            if "__slice__" in value:
                return slice(*value["__slice__"])
            if "__tuple__" in value:
                return tuple(self.value(v) for v in value["__tuple__"])
            if "__dict__" in value:
                return {_key(self.value(k)): self.value(v) for k, v in value["__dict__"]}
            raise ValueError(f"unexpected value in the manifest: {sorted(value)}")
        return value

    def estimator(self, record: dict):
        kind = record.get("kind")
        if kind == "pipeline":
            steps = [(name, self.value(step)) for name, step in record["steps"]]
            return Pipeline(steps, **self.value(record["params"]))
        if kind == "stream":
            inner = self.estimator(record["estimator"])
            with np.load(io.BytesIO(self.members[record["stream"]]), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
            state = {"attributes": self.value(record["attributes"]), "stream": arrays, "estimator_": inner}
            return StreamingFairPredictor.from_fitted_state(self.value(record["params"]), state)
        if kind == "fairsk":
            return self._fairsk(record)
        if kind == "sklearn":
            cls = _sklearn_classes().get(record["class"])
            if cls is None:
                raise ValueError(f"unknown estimator class {record['class']!r}: only allow-listed classes are loaded")
            est = cls(**self.value(record["params"]))
            for name, value in self.value(record["fitted"]).items():
                setattr(est, name, value)
            return est
        raise ValueError(f"unknown record kind {kind!r}")

    def _fairsk(self, record: dict):
        cls = _FAIRSK.get(record["class"])
        if cls is None:
            raise ValueError(f"unknown estimator class {record['class']!r}: only fairsk's estimators are loaded")
        module = _check_module(record, self.module)
        body = torch.load(io.BytesIO(self.members[record["body"]]), weights_only=True)
        state = {"attributes": self.value(record["attributes"]), "body": body}
        return cls.from_fitted_state(self.value(record["params"]), state, module=module)


def _key(k):
    return tuple(k) if isinstance(k, list) else k


def _check_module(record: dict, module: type | None):
    if record["module"] is None:
        return None
    if module is None or f"{module.__module__}.{module.__qualname__}" != record["module"]:
        raise ValueError(f"this model has a custom body {record['module']}: pass module=<that class> to load "
                         "(the archive never names code to import)")
    return module


# -- signing --------------------------------------------------------------------------------
def _as_key(key) -> bytes | None:
    if key is None:
        return None
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, (bytes, bytearray)) or len(key) == 0:
        raise ValueError("key must be a non-empty str or bytes")
    return bytes(key)


def _signature(manifest: bytes, key: bytes | None) -> dict:
    if key is None:
        return {"scheme": "sha256", "digest": hashlib.sha256(manifest).hexdigest()}
    return {"scheme": "hmac-sha256", "digest": hmac.new(key, manifest, hashlib.sha256).hexdigest()}


def save(estimator, path: str | Path, *, key: str | bytes | None = None) -> Path:
    """Save a fitted fairsk estimator, a streaming predictor (mid-stream), or a
    Pipeline ending in one, without pickle.

    Parameters
    ----------
    estimator : fitted estimator
        A fairsk estimator, a :class:`~fairsk.StreamingFairPredictor`, or a
        :class:`~sklearn.pipeline.Pipeline` of allow-listed scikit-learn transformers
        (``StandardScaler``, ``MinMaxScaler``, ``MaxAbsScaler``, ``OneHotEncoder``,
        ``OrdinalEncoder``, ``SimpleImputer``, ``ColumnTransformer``, and
        ``FunctionTransformer`` without a function) ending in one. Anything else is
        refused with ``TypeError``: it cannot be saved without pickle.
    path : str or Path
    key : str or bytes, optional
        Sign the archive with HMAC-SHA256 under this key; :func:`load` then needs the
        same key and refuses any modification. Without a key, only accidental
        corruption is detected.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from fairsk import FairLayerRegressor
    >>> from fairsk.persistence import save, load
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(100, 3)); s = rng.integers(0, 2, 100); y = X[:, 0] + s
    >>> reg = FairLayerRegressor(max_epochs=2, random_state=0, solver="exact").fit(X, y, sensitive_features=s)
    >>> path = save(reg, os.path.join(tempfile.mkdtemp(), "model.fairsk"), key="my secret")
    >>> np.array_equal(load(path, key="my secret").predict(X, sensitive_features=s),
    ...                reg.predict(X, sensitive_features=s))
    True
    """
    key = _as_key(key)
    writer = _Writer()
    root = writer.estimator(estimator)
    manifest = {"format": FORMAT, "scikit-learn": sklearn.__version__, "root": root,
                "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in writer.members.items()}}
    manifest_bytes = json.dumps(manifest).encode("utf-8")
    path = Path(path)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", manifest_bytes)
        zf.writestr("signature.json", json.dumps(_signature(manifest_bytes, key)))
        for name, data in writer.members.items():
            zf.writestr(name, data)
    return path


def load(path: str | Path, *, module: type | None = None, key: str | bytes | None = None):
    """Load what :func:`save` wrote.

    ``module`` is the body class of a model fitted with a custom ``module=``;
    ``key`` the key it was saved with (if any). Raises ``ValueError`` for an archive
    whose signature or digests do not match (a modified file, or a wrong key), a key
    given for an archive saved without one or the reverse, a class outside the
    allow-list, a custom body whose class is not passed, or a file that is not such
    an archive.

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
    key = _as_key(key)
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            manifest_bytes = zf.read("manifest.json")
            manifest = json.loads(manifest_bytes)
            if manifest.get("format") == LEGACY_FORMAT:
                members = {name: zf.read(name) for name in manifest.get("sha256", {})}
                return _load_legacy(path, manifest, members, module, key)
            signature = json.loads(zf.read("signature.json"))
            members = {name: zf.read(name) for name in names - {"manifest.json", "signature.json"}}
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a fairsk model archive ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown format {manifest.get('format')!r} (expected {FORMAT!r})")
    _verify(path, manifest_bytes, signature, key)
    digests = manifest["sha256"]
    if set(digests) != set(members):
        raise ValueError(f"{path}: the members {sorted(set(digests) ^ set(members))} do not match the manifest: "
                         "the file was modified")
    for name, digest in digests.items():
        if hashlib.sha256(members[name]).hexdigest() != digest:
            raise ValueError(f"{path}: member {name} does not match its SHA-256: the file was modified")
    if manifest.get("scikit-learn") != sklearn.__version__ and _has_sklearn_records(manifest["root"]):
        warnings.warn(f"{path} holds scikit-learn transformers saved with scikit-learn {manifest.get('scikit-learn')}"
                      f" (this is {sklearn.__version__}): their fitted attributes may differ", UserWarning,
                      stacklevel=2)
    return _Reader(members, module).estimator(manifest["root"])


def _verify(path, manifest_bytes: bytes, signature: dict, key: bytes | None) -> None:
    scheme = signature.get("scheme")
    if scheme == "hmac-sha256" and key is None:
        raise ValueError(f"{path} is signed with a key: pass key= to load it")
    if scheme == "sha256" and key is not None:
        raise ValueError(f"{path} was saved without a key, so it cannot be authenticated (anyone could have "
                         "written it); load it without key= only if you trust its source")
    if scheme not in ("sha256", "hmac-sha256"):
        raise ValueError(f"{path}: unknown signature scheme {scheme!r}")
    expected = _signature(manifest_bytes, key)["digest"]
    if not hmac.compare_digest(expected, str(signature.get("digest"))):
        if key is not None:
            raise ValueError(f"{path}: the signature does not match this key: a wrong key, or the file was modified")
        raise ValueError(f"{path}: manifest.json does not match its SHA-256: the file was modified")


def _has_sklearn_records(record) -> bool:
    if isinstance(record, dict):
        return record.get("kind") == "sklearn" or any(_has_sklearn_records(v) for v in record.values())
    if isinstance(record, list):
        return any(_has_sklearn_records(v) for v in record)
    return False


# -- format fairsk-model/1 -------------------------------------------------------------------
def _load_legacy(path, manifest: dict, members: dict, module: type | None, key: bytes | None):
    """Archives of fairsk 0.1: SHA-256 of the members only (the manifest is not covered)."""
    if key is not None:
        raise ValueError(f"{path} has the format {LEGACY_FORMAT}, which cannot be authenticated: load it without "
                         "key= (only if you trust its source) and save it again with a key")
    warnings.warn(f"{path} has the older format {LEGACY_FORMAT}: it is not authenticated (its manifest can be "
                  "changed unnoticed); load it only from a source you trust, and save it again with a key",
                  UserWarning, stacklevel=3)
    for name, digest in manifest["sha256"].items():
        if hashlib.sha256(members[name]).hexdigest() != digest:
            raise ValueError(f"{path}: member {name} does not match its SHA-256: the file was modified")
    record = manifest["estimator"]
    cls = _FAIRSK.get(record["class"])
    if cls is None:
        raise ValueError(f"unknown estimator class {record['class']!r}: only fairsk's estimators are loaded")
    reader = _Reader(members, module)
    body = torch.load(io.BytesIO(members["body.pt"]), weights_only=True)
    # the attributes fairsk 0.1 saved are a fitted state the estimators still take
    est = cls.from_fitted_state(reader.value(record["params"]), {"attributes": reader.value(record["fitted"]),
                                                                 "body": body}, module=_check_module(record, module))
    if "stream" not in manifest:
        return est
    info = manifest["stream"]
    with np.load(io.BytesIO(members["state.npz"]), allow_pickle=False) as npz:
        stats = {name: [np.array(npz[f"{name}_{a}"]) for a in range(info["attributes"])]
                 for name in ("_count", "_raw_sum", "_out_sum")}
    scalars = reader.value(info["scalars"])
    params = reader.value(info["params"])
    state = StreamState(labels=[{_key(k): v for k, v in pairs} for pairs in reader.value(info["labels"])],
                        count=stats["_count"], raw_sum=stats["_raw_sum"], out_sum=stats["_out_sum"],
                        n_seen=int(scalars["n_seen_"]))
    if params.get("mode") == "paper":
        state.rule = {"dual": float(scalars["dual_"]), "steps": int(scalars["_paper_steps"])}
    else:
        dual = np.asarray(scalars["dual_"], dtype=np.float64)
        sizes = np.cumsum([len(c) for c in state.count])[:-1]
        c = state.raw_sum[0].shape[1] if state.raw_sum else 1
        shifts = np.split(dual, sizes, 0) if dual.size else [np.zeros((len(n), c)) for n in state.count]
        state.rule = {"shifts": list(shifts), "slack": [np.zeros((len(n), c)) for n in state.count]}
    # fairsk 0.1's rule: the strict pooled bound, shifts from the stream alone
    params = {**params, "slack": 0.0, "prior_samples": 0}
    width = est.n_outputs_
    fitted = {"attributes": {"scale_": np.zeros(width), "prior_counts_": [], "prior_sums_": []},
              "stream": state.to_arrays(), "estimator_": est}
    return StreamingFairPredictor.from_fitted_state(params, fitted)
