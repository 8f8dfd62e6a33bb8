"""Saving and loading without pickle; integrity without a key, authenticity with one;
pipelines; refusing what cannot be saved or was modified."""

from __future__ import annotations

import hashlib
import json
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from fairsk import FairLayerClassifier, FairLayerRegressor, StreamingFairPredictor
from fairsk.baselines import PenaltyClassifier
from fairsk.persistence import load, save

FAST = dict(max_epochs=3, random_state=0, solver="exact")
KEY = b"a key only the owner has"


def data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    s = np.array(["a", "b", "c"])[rng.integers(0, 3, n)]
    y = X[:, 0] + (s == "b")
    return X, y, s


@pytest.fixture(scope="module")
def regressor():
    X, y, s = data()
    return FairLayerRegressor(tolerance=0.02, **FAST).fit(X, y, sensitive_features=s)


@pytest.mark.parametrize("key", [None, KEY, "a text key"])
@pytest.mark.parametrize("make", [
    lambda X, y, s: FairLayerRegressor(**FAST).fit(X, y, sensitive_features=s),
    lambda X, y, s: FairLayerClassifier(**FAST).fit(X, np.digitize(y, [0, 1]), sensitive_features=s),
    lambda X, y, s: PenaltyClassifier(lam=10.0, **FAST).fit(X, (y > 0).astype(int), sensitive_features=s),
])
def test_round_trip_predicts_identically(make, key, tmp_path):
    X, y, s = data()
    est = make(X, y, s)
    back = load(save(est, tmp_path / "m.fairsk", key=key), key=key)
    assert type(back) is type(est) and back.get_params() == est.get_params()
    np.testing.assert_array_equal(back.predict(X, sensitive_features=s), est.predict(X, sensitive_features=s))


@pytest.mark.parametrize("slack", [0.0, 1.0])
def test_stream_saved_mid_stream_continues_identically(slack, tmp_path):
    X, y, s = data(300)
    stream = StreamingFairPredictor(FairLayerRegressor(**FAST), tolerance=0.02, slack=slack)
    stream.fit(X, y, sensitive_features=s)
    for i in range(0, 120, 3):
        stream.partial_predict(X[i : i + 3], sensitive_features=s[i : i + 3])
    back = load(save(stream, tmp_path / "s.fairsk", key=KEY), key=KEY)
    assert back.n_seen_ == 120 and back.pooled_gap_ == stream.pooled_gap_
    assert back.get_params(deep=False).keys() == stream.get_params(deep=False).keys()
    assert back.slack == slack
    for i in range(120, 300, 2):
        a = stream.partial_predict(X[i : i + 2], sensitive_features=s[i : i + 2])
        b = back.partial_predict(X[i : i + 2], sensitive_features=s[i : i + 2])
        np.testing.assert_array_equal(a, b)
    assert back.group_means_ == stream.group_means_ and back.pooled_bound_ == stream.pooled_bound_


def _members(path):
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _write(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for n, d in members.items():
            zf.writestr(n, d)


def _set_tolerance(manifest_bytes: bytes, value: float) -> bytes:
    manifest = json.loads(manifest_bytes)
    pairs = dict(manifest["root"]["params"]["__dict__"])
    assert pairs["tolerance"] == 0.02
    pairs["tolerance"] = value
    manifest["root"]["params"]["__dict__"] = [[k, v] for k, v in pairs.items()]
    return json.dumps(manifest).encode()


def test_tampered_tolerance_is_refused_with_a_key(regressor, tmp_path):
    path = save(regressor, tmp_path / "m.fairsk", key=KEY)
    members = _members(path)
    members["manifest.json"] = _set_tolerance(members["manifest.json"], 5.0)
    _write(path, members)
    with pytest.raises(ValueError, match="signature does not match"):
        load(path, key=KEY)
    # an attacker without the key cannot make a valid signature; replacing it with an
    # unkeyed digest is refused too, since the loader asked for a key
    members["signature.json"] = json.dumps({"scheme": "sha256",
                                            "digest": hashlib.sha256(members["manifest.json"]).hexdigest()})
    _write(path, members)
    with pytest.raises(ValueError, match="saved without a key"):
        load(path, key=KEY)


def test_without_a_key_integrity_but_not_authenticity(regressor, tmp_path):
    """Unkeyed: a naive edit is detected, an edit that also rewrites the digest is not
    (which is what the documentation says)."""
    path = save(regressor, tmp_path / "m.fairsk")
    members = _members(path)
    members["manifest.json"] = _set_tolerance(members["manifest.json"], 5.0)
    _write(path, members)
    with pytest.raises(ValueError, match="does not match its SHA-256"):
        load(path)
    members["signature.json"] = json.dumps({"scheme": "sha256",
                                            "digest": hashlib.sha256(members["manifest.json"]).hexdigest()})
    _write(path, members)
    assert load(path).tolerance == 5.0


@pytest.mark.parametrize("key", [None, KEY])
def test_tampered_weights_and_members_are_refused(regressor, key, tmp_path):
    path = save(regressor, tmp_path / "m.fairsk", key=key)
    members = _members(path)
    body_name = next(n for n in members if n.endswith(".pt"))
    body = bytearray(members[body_name])
    body[-20] ^= 0xFF
    _write(path, {**members, body_name: bytes(body)})
    with pytest.raises(ValueError, match="SHA-256"):
        load(path, key=key)
    _write(path, {**members, "extra.bin": b"x"})
    with pytest.raises(ValueError, match="do not match the manifest"):
        load(path, key=key)


def test_key_handling(regressor, tmp_path):
    signed = save(regressor, tmp_path / "signed.fairsk", key=KEY)
    plain = save(regressor, tmp_path / "plain.fairsk")
    with pytest.raises(ValueError, match="pass key="):
        load(signed)
    with pytest.raises(ValueError, match="wrong key"):
        load(signed, key=b"another key")
    with pytest.raises(ValueError, match="saved without a key"):
        load(plain, key=KEY)
    with pytest.raises(ValueError, match="non-empty"):
        save(regressor, tmp_path / "x.fairsk", key=b"")


def test_unknown_class_and_garbage_are_rejected(regressor, tmp_path):
    path = save(regressor, tmp_path / "m.fairsk")
    members = _members(path)
    manifest = json.loads(members["manifest.json"])
    manifest["root"]["class"] = "os.system"
    members["manifest.json"] = json.dumps(manifest).encode()
    members["signature.json"] = json.dumps({"scheme": "sha256",
                                            "digest": hashlib.sha256(members["manifest.json"]).hexdigest()})
    _write(path, members)
    with pytest.raises(ValueError, match="unknown estimator class"):
        load(path)
    (tmp_path / "junk").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a fairsk model archive"):
        load(tmp_path / "junk")


class Body(torch.nn.Module):
    def __init__(self, n_features_in, n_outputs, width=6):
        super().__init__()
        self.lin = torch.nn.Linear(n_features_in, n_outputs)

    def forward(self, X):
        return self.lin(X)


def test_custom_body_needs_its_class_at_load(tmp_path):
    X, y, s = data()
    est = FairLayerRegressor(module=Body, module__width=3, **FAST).fit(X, y, sensitive_features=s)
    path = save(est, tmp_path / "m.fairsk")
    with pytest.raises(ValueError, match="pass module="):
        load(path)
    back = load(path, module=Body)
    np.testing.assert_array_equal(back.predict(X, sensitive_features=s), est.predict(X, sensitive_features=s))


def _table(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"age": rng.normal(40, 10, n), "hours": rng.normal(38, 8, n),
                      "job": rng.choice(["clerk", "nurse", "driver"], n), "city": rng.choice(["x", "y"], n)})
    s = rng.choice(["f", "m"], n)
    y = ((X["age"] - 40) / 10 + (X["job"] == "nurse") + (s == "m") + rng.normal(0, 0.5, n) > 0.8).astype(int)
    return X, y.to_numpy(), s


def _pipeline(last):
    pre = ColumnTransformer([("num", StandardScaler(), ["age", "hours"]),
                             ("cat", OneHotEncoder(handle_unknown="ignore"), ["job"])],
                            remainder="drop", sparse_threshold=0)
    return Pipeline([("pre", pre), ("clf", last)])


@pytest.mark.parametrize("key", [None, KEY])
def test_pipeline_round_trip(key, tmp_path):
    X, y, s = _table()
    pipe = _pipeline(FairLayerClassifier(**FAST)).fit(X, y, clf__sensitive_features=s)
    back = load(save(pipe, tmp_path / "p.fairsk", key=key), key=key)
    assert isinstance(back, Pipeline) and [n for n, _ in back.steps] == ["pre", "clf"]
    X_new, _, s_new = _table(seed=1)
    np.testing.assert_array_equal(back.predict(X_new, sensitive_features=s_new),
                                  pipe.predict(X_new, sensitive_features=s_new))
    np.testing.assert_array_equal(back[:-1].transform(X_new), pipe[:-1].transform(X_new))


def test_stream_over_a_pipeline_round_trip(tmp_path):
    X, y, s = _table()
    stream = StreamingFairPredictor(_pipeline(FairLayerClassifier(**FAST)), tolerance=0.02, enforce_on="logits")
    stream.fit(X, y, sensitive_features=s)
    for i in range(0, 60, 3):
        stream.partial_predict(X.iloc[i : i + 3], sensitive_features=s[i : i + 3])
    back = load(save(stream, tmp_path / "s.fairsk", key=KEY), key=KEY)
    for i in range(60, 120, 3):
        rows = slice(i, i + 3)
        np.testing.assert_array_equal(back.partial_decision_function(X.iloc[rows], sensitive_features=s[rows]),
                                      stream.partial_decision_function(X.iloc[rows], sensitive_features=s[rows]))


@pytest.mark.parametrize("step, match", [
    (FunctionTransformer(np.log1p), "FunctionTransformer with a function"),
    (PCA(n_components=2), "cannot save a PCA"),
])
def test_what_needs_pickle_is_refused(step, match, tmp_path):
    X, y, s = data()
    pipe = Pipeline([("step", step), ("reg", FairLayerRegressor(**FAST))])
    pipe.fit(np.abs(X), y, reg__sensitive_features=s)
    with pytest.raises(TypeError, match=match):
        save(pipe, tmp_path / "p.fairsk")
    assert not (tmp_path / "p.fairsk").exists()


def test_label_stream_saved_mid_stream_continues_identically(tmp_path):
    X, y, s = data(300)
    clf = FairLayerClassifier(**FAST)  # enforce_on="labels": the stream keeps label rates at parity
    stream = StreamingFairPredictor(clf, tolerance=0.05).fit(X, (y > 0.5).astype(int), sensitive_features=s)
    for i in range(0, 120, 3):
        stream.partial_predict(X[i : i + 3], sensitive_features=s[i : i + 3])
    back = load(save(stream, tmp_path / "labels.fairsk", key=KEY), key=KEY)
    assert back.pooled_gap_ == stream.pooled_gap_ and back.pooled_bound_ == stream.pooled_bound_
    for i in range(120, 300, 2):
        np.testing.assert_array_equal(back.partial_predict(X[i : i + 2], sensitive_features=s[i : i + 2]),
                                      stream.partial_predict(X[i : i + 2], sensitive_features=s[i : i + 2]))
