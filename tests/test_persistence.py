"""Saving and loading without pickle, and refusing tampered files."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch

from fairsk import FairLayerClassifier, FairLayerRegressor, StreamingFairPredictor
from fairsk.baselines import PenaltyClassifier
from fairsk.persistence import load, save

FAST = dict(max_epochs=3, random_state=0, solver="exact")


def data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    s = np.array(["a", "b", "c"])[rng.integers(0, 3, n)]
    y = X[:, 0] + (s == "b")
    return X, y, s


@pytest.mark.parametrize("make", [
    lambda X, y, s: FairLayerRegressor(**FAST).fit(X, y, sensitive_features=s),
    lambda X, y, s: FairLayerClassifier(**FAST).fit(X, np.digitize(y, [0, 1]), sensitive_features=s),
    lambda X, y, s: PenaltyClassifier(lam=10.0, **FAST).fit(X, (y > 0).astype(int), sensitive_features=s),
])
def test_round_trip_predicts_identically(make, tmp_path):
    X, y, s = data()
    est = make(X, y, s)
    back = load(save(est, tmp_path / "m.fairsk"))
    assert type(back) is type(est) and back.get_params() == est.get_params()
    np.testing.assert_array_equal(back.predict(X, sensitive_features=s), est.predict(X, sensitive_features=s))


def test_stream_saved_mid_stream_continues_identically(tmp_path):
    X, y, s = data(300)
    stream = StreamingFairPredictor(FairLayerRegressor(**FAST), tolerance=0.02).fit(X, y, sensitive_features=s)
    for i in range(0, 120, 3):
        stream.partial_predict(X[i : i + 3], sensitive_features=s[i : i + 3])
    back = load(save(stream, tmp_path / "s.fairsk"))
    assert back.n_seen_ == 120 and back.pooled_gap_ == stream.pooled_gap_
    for i in range(120, 300, 2):
        a = stream.partial_predict(X[i : i + 2], sensitive_features=s[i : i + 2])
        b = back.partial_predict(X[i : i + 2], sensitive_features=s[i : i + 2])
        np.testing.assert_array_equal(a, b)
    assert back.group_means_ == stream.group_means_


def _rewrite(path, name, data):
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members[name] = data
    with zipfile.ZipFile(path, "w") as zf:
        for n, d in members.items():
            zf.writestr(n, d)


def test_tampered_weights_are_rejected(tmp_path):
    X, y, s = data()
    path = save(FairLayerRegressor(**FAST).fit(X, y, sensitive_features=s), tmp_path / "m.fairsk")
    with zipfile.ZipFile(path) as zf:
        body = bytearray(zf.read("body.pt"))
    body[-20] ^= 0xFF
    _rewrite(path, "body.pt", bytes(body))
    with pytest.raises(ValueError, match="SHA-256"):
        load(path)


def test_unknown_class_and_garbage_are_rejected(tmp_path):
    X, y, s = data()
    path = save(FairLayerRegressor(**FAST).fit(X, y, sensitive_features=s), tmp_path / "m.fairsk")
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    manifest["estimator"]["class"] = "os.system"
    _rewrite(path, "manifest.json", json.dumps(manifest))
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
