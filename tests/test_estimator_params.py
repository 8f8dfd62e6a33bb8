"""Estimator parameters and state: device, class_weight, hidden_layer_sizes as an int,
module__* keys, the classifier's criterion, the exact projection at prediction, the
fitted state round trip, training feedback, and the group identity rule."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.utils.class_weight import compute_sample_weight

from fairsk import FairLayerClassifier, FairLayerRegressor, FairnessLayer
from fairsk.baselines import PenaltyClassifier, PenaltyRegressor, ProjectionClassifier, ProjectionRegressor
from fairsk.metrics import fairness_report, parity_gap

FAST = dict(max_epochs=3, random_state=0, solver="exact")


def data(n=200, seed=0, attributes=1):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 3, size=(n, attributes))
    X = rng.normal(size=(n, 4)) + s[:, :1]
    y = X[:, 0] + 0.5 * s[:, 0] + 0.1 * rng.normal(size=n)
    yc = (y > np.quantile(y, 0.7)).astype(int)  # unbalanced classes
    return X, y, yc, s if attributes > 1 else s[:, 0]


# -- device -----------------------------------------------------------------------------
def test_device_cpu_works_and_an_absent_device_is_a_clear_error_at_fit():
    X, y, _, s = data()
    a = FairLayerRegressor(device="cpu", **FAST).fit(X, y, sensitive_features=s)
    b = FairLayerRegressor(device=torch.device("cpu"), **FAST).fit(X, y, sensitive_features=s)
    np.testing.assert_array_equal(a.predict(X, sensitive_features=s), b.predict(X, sensitive_features=s))
    assert str(a.net_.device) == "cpu"
    unbuilt = FairLayerRegressor(device="cuda:7" if torch.cuda.is_available() else "cuda", **FAST)
    with pytest.raises(ValueError, match="CUDA"):
        unbuilt.fit(X, y, sensitive_features=s)
    with pytest.raises(ValueError, match="not a torch device"):
        FairLayerRegressor(device="gpu0", **FAST).fit(X, y, sensitive_features=s)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_training_and_prediction_agree_with_the_cpu():
    X, y, _, s = data(400)
    cpu = FairLayerRegressor(tolerance=0.01, **FAST).fit(X, y, sensitive_features=s)
    gpu = FairLayerRegressor(tolerance=0.01, device="cuda", **FAST).fit(X, y, sensitive_features=s)
    assert next(gpu.body64_.parameters()).is_cuda
    out = gpu.predict(X, sensitive_features=s)
    assert parity_gap(out, s) <= 0.01 + 1e-6
    np.testing.assert_allclose(out, cpu.predict(X, sensitive_features=s), atol=1e-3)


# -- class_weight, hidden_layer_sizes, module__* ------------------------------------------
def test_class_weight_is_sample_weight_by_class():
    X, _, yc, s = data()
    balanced = FairLayerClassifier(class_weight="balanced", **FAST).fit(X, yc, sensitive_features=s)
    by_hand = FairLayerClassifier(**FAST).fit(X, yc, sample_weight=compute_sample_weight("balanced", yc),
                                               sensitive_features=s)
    plain = FairLayerClassifier(**FAST).fit(X, yc, sensitive_features=s)
    out = balanced.decision_function(X, sensitive_features=s)
    np.testing.assert_allclose(out, by_hand.decision_function(X, sensitive_features=s), atol=1e-5)
    assert np.abs(out - plain.decision_function(X, sensitive_features=s)).max() > 1e-3
    # the minority class gains predictions
    assert balanced.predict(X, sensitive_features=s).mean() > plain.predict(X, sensitive_features=s).mean()
    weighted = FairLayerClassifier(class_weight={0: 1.0, 1: 5.0}, **FAST).fit(X, yc, sensitive_features=s)
    w = np.where(yc == 1, 5.0, 1.0) * 0.5
    both = FairLayerClassifier(class_weight={0: 1.0, 1: 5.0}, **FAST).fit(X, yc, sample_weight=np.full(len(yc), 0.5),
                                                                       sensitive_features=s)
    by_hand = FairLayerClassifier(**FAST).fit(X, yc, sample_weight=w, sensitive_features=s)
    np.testing.assert_allclose(both.decision_function(X, sensitive_features=s),
                               by_hand.decision_function(X, sensitive_features=s), atol=1e-5)
    assert weighted.get_params()["class_weight"] == {0: 1.0, 1: 5.0}
    with pytest.raises(ValueError, match="not in y"):
        FairLayerClassifier(class_weight={7: 2.0}, **FAST).fit(X, yc, sensitive_features=s)
    with pytest.raises(ValueError, match="class_weight"):
        FairLayerClassifier(class_weight="balance", **FAST).fit(X, yc, sensitive_features=s)


def test_hidden_layer_sizes_accepts_an_int():
    X, y, _, s = data()
    a = FairLayerRegressor(hidden_layer_sizes=16, **FAST).fit(X, y, sensitive_features=s)
    b = FairLayerRegressor(hidden_layer_sizes=(16,), **FAST).fit(X, y, sensitive_features=s)
    assert a.net_.module_.body.net[0].out_features == 16
    np.testing.assert_array_equal(a.predict(X, sensitive_features=s), b.predict(X, sensitive_features=s))
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        FairLayerRegressor(hidden_layer_sizes=0, **FAST).fit(X, y, sensitive_features=s)


def test_module_keys_the_body_does_not_take_are_refused():
    X, y, _, s = data()
    for key in ("module__device", "module__dropout", "module__class_weight"):
        with pytest.raises(ValueError, match=key):
            FairLayerRegressor(**{key: 1}, **FAST).fit(X, y, sensitive_features=s)

    class Body(torch.nn.Module):
        def __init__(self, n_features_in, n_outputs, width=8):
            super().__init__()
            self.lin = torch.nn.Linear(n_features_in, n_outputs)

        def forward(self, X):
            return self.lin(X)

    with pytest.raises(ValueError, match="module__depth.*Body takes no such parameter"):
        FairLayerRegressor(module=Body, module__depth=3, **FAST).fit(X, y, sensitive_features=s)
    FairLayerRegressor(module=Body, module__width=3, **FAST).fit(X, y, sensitive_features=s)


def test_the_classifier_rejects_eer_through_its_parameter_constraints():
    from sklearn.utils._param_validation import InvalidParameterError

    X, _, yc, s = data()
    for cls in (FairLayerClassifier, ProjectionClassifier, PenaltyClassifier):
        with pytest.raises(InvalidParameterError, match="'criterion' parameter of"):
            cls(criterion="eer", **FAST).fit(X, yc, sensitive_features=s)
    assert "class_weight" in PenaltyClassifier().get_params() and "lam" in PenaltyClassifier().get_params()


# -- prediction uses the exact projection ------------------------------------------------------
def test_prediction_projects_with_the_exact_solver_whatever_the_training_solver():
    X, y, _, s = data(300)
    reg = FairLayerRegressor(tolerance=0.01, solver="qpth", max_epochs=2, random_state=0, bounds=(-1.0, 3.0))
    reg.fit(X, y, sensitive_features=s)
    z = torch.as_tensor(reg.raw_output(X)[0])
    exact = FairnessLayer("ecp", 0.01, "exact", (-1.0, 3.0))(z, torch.as_tensor(s)).numpy()[:, 0]
    np.testing.assert_array_equal(reg.predict(X, sensitive_features=s), exact)


# -- fitted state --------------------------------------------------------------------------
def _json_round_trip(attributes: dict) -> dict:
    def encode(v):
        if isinstance(v, np.ndarray):
            return {"nd": v.tolist(), "dtype": str(v.dtype)}
        if isinstance(v, tuple):
            return {"tuple": [encode(x) for x in v]}
        if isinstance(v, list):
            return [encode(x) for x in v]
        return v

    def decode(v):
        if isinstance(v, dict) and "nd" in v:
            return np.asarray(v["nd"], dtype=v["dtype"])
        if isinstance(v, dict) and "tuple" in v:
            return tuple(decode(x) for x in v["tuple"])
        if isinstance(v, list):
            return [decode(x) for x in v]
        return v

    return {k: decode(v) for k, v in json.loads(json.dumps({k: encode(v) for k, v in attributes.items()})).items()}


CASES = [
    (FairLayerRegressor, {}, "y", "predict"),
    (FairLayerRegressor, {"criterion": "eer", "bounds": (-3.0, 5.0)}, "y2", "predict"),
    (FairLayerClassifier, {}, "labels", "decision_function"),
    (FairLayerClassifier, {}, "multi", "predict_proba"),
    (ProjectionRegressor, {}, "y", "predict"),
    (ProjectionClassifier, {}, "labels", "predict"),
    (PenaltyRegressor, {"lam": "auto", "lam_grid": (0.1, 10.0)}, "y", "predict"),
    (PenaltyClassifier, {"lam": 3.0}, "labels", "decision_function"),
]


@pytest.mark.parametrize("cls, params, target, method", CASES)
def test_fitted_state_round_trip_predicts_identically(cls, params, target, method):
    X, y, yc, s = data(attributes=2)
    targets = {"y": y, "y2": np.column_stack([y, -y]), "labels": np.array(["no", "yes"])[yc],
               "multi": np.digitize(y, np.quantile(y, [0.3, 0.6]))}
    Xd = pd.DataFrame(X, columns=list("abcd"))
    groups = pd.DataFrame({"sex": np.array(["f", "m", "x"])[s[:, 0]], "age": s[:, 1]})
    est = cls(**params, **FAST).fit(Xd, targets[target], sensitive_features=groups)
    state = est.get_fitted_state()
    assert set(state) == {"attributes", "body"}
    json.dumps({k: v for k, v in state["attributes"].items() if not isinstance(v, np.ndarray)})
    params_out = {k: v for k, v in est.get_params().items() if k != "module"}
    attributes = _json_round_trip(state["attributes"])
    loaded = cls.from_fitted_state(params_out, {"attributes": attributes, "body": state["body"]})
    expected = getattr(est, method)(Xd, sensitive_features=groups)
    np.testing.assert_array_equal(getattr(loaded, method)(Xd, sensitive_features=groups), expected)
    np.testing.assert_array_equal(loaded.raw_output(Xd, groups)[0], est.raw_output(Xd, groups)[0])
    assert loaded.group_labels_ == est.group_labels_
    if cls not in (PenaltyRegressor, PenaltyClassifier):  # those predict raw outputs anyway
        with pytest.raises(ValueError, match="fitted with sensitive features"):
            getattr(loaded, method)(Xd)
    with pytest.raises(ValueError, match="n_outputs_"):
        cls.from_fitted_state(params_out, {"attributes": {"n_features_in_": 4}, "body": state["body"]})


def test_fit_leaves_the_parameters_and_the_nets_batch_seed_alone():
    X, y, _, s = data()
    reg = FairLayerRegressor(**FAST)
    before = reg.get_params()
    reg.fit(X, y, sensitive_features=s)
    assert reg.get_params() == before
    seed = reg.net_.batch_seed
    assert seed == np.random.RandomState(0).randint(2**31 - 1)
    a = reg.predict(X, sensitive_features=s)
    np.testing.assert_array_equal(reg.fit(X, y, sensitive_features=s).predict(X, sensitive_features=s), a)
    assert reg.net_.batch_seed == seed


# -- training feedback -----------------------------------------------------------------------
def test_verbose_prints_the_training_gap_and_accuracy(capsys):
    X, _, yc, s = data()
    clf = FairLayerClassifier(tolerance=0.05, verbose=1, **FAST).fit(X, yc, sensitive_features=s)
    out = capsys.readouterr().out
    assert "train_gap" in out and "train_acc" in out
    gaps = clf.net_.history[:, "train_gap"]
    assert len(gaps) == 3 and all(0 <= g for g in gaps)
    acc = clf.net_.history[-1, "train_acc"]
    assert 0.0 <= acc <= 1.0
    quiet = FairLayerClassifier(tolerance=0.05, **FAST).fit(X, yc, sensitive_features=s)
    assert capsys.readouterr().out == "" and "train_gap" not in quiet.net_.history[-1]


def test_progress_bar_is_off_by_default_and_shown_on_request(capsys):
    X, y, _, s = data()
    FairLayerRegressor(**FAST).fit(X, y, sensitive_features=s)
    assert capsys.readouterr().err == ""
    reg = FairLayerRegressor(progress_bar=True, **FAST).fit(X, y, sensitive_features=s)
    assert "progress_bar" in dict(reg.net_.callbacks_)


# -- groups: one rule everywhere ---------------------------------------------------------------
def test_mixed_kinds_in_a_sensitive_column_raise_in_fit_prediction_and_metrics():
    X, y, _, _ = data(6)
    mixed = np.array([1, "1", 1, "1", 2, 2], dtype=object)
    with pytest.raises(ValueError, match="mixes kinds"):
        FairLayerRegressor(**FAST).fit(X, y, sensitive_features=mixed)
    with pytest.raises(ValueError, match="mixes kinds"):
        parity_gap(y, mixed)
    reg = FairLayerRegressor(**FAST).fit(X, y, sensitive_features=[1, 2, 1, 2, 1, 2])
    with pytest.raises(ValueError, match="mixes kinds"):
        reg.predict(X, sensitive_features=mixed)
    with pytest.raises(ValueError, match="fitted with number"):
        reg.predict(X, sensitive_features=["1", "2", "1", "2", "1", "2"])


def test_equal_values_are_one_group_and_near_duplicates_warn():
    X, y, _, _ = data(6)
    as_objects = np.array([1, 1.0, 2, 2.0, 1, 2], dtype=object)  # pandas: 1 == 1.0
    assert parity_gap([0, 1, 2, 3, 4, 5], as_objects) == parity_gap([0, 1, 2, 3, 4, 5], [1, 1, 2, 2, 1, 2])
    names = pd.Series(["White", "Black", "White", "Black", "White", "Black"])
    reg = FairLayerRegressor(**FAST).fit(X, y, sensitive_features=names)
    with pytest.warns(UserWarning, match="only by case or surrounding spaces"):
        reg.predict(X, sensitive_features=names.replace("White", "White "))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reg.predict(X, sensitive_features=names)


def test_fairness_report_shows_the_residual_column_for_regression_only():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 2, 50)
    labels = rng.integers(0, 2, 50)
    logits = rng.normal(size=50)
    assert "residual" not in fairness_report(labels, logits, s).columns
    assert "residual" in fairness_report(labels, logits, s, residual=True).columns
    report = fairness_report(rng.normal(size=50), logits, s)
    assert "residual" in report.columns
    np.testing.assert_allclose(report["residual"], report["mean_pred"] - report["mean_true"])


def _decode_v1(value):
    """The JSON encoding of archives of format fairsk-model/1 (arrays, tuples, dicts)."""
    if isinstance(value, list):
        return [_decode_v1(v) for v in value]
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return np.asarray(value["__ndarray__"], dtype=value["dtype"])
        if "__tuple__" in value:
            return tuple(_decode_v1(v) for v in value["__tuple__"])
        if "__dict__" in value:
            return {_decode_v1(k): _decode_v1(v) for k, v in value["__dict__"]}
    return value


@pytest.mark.parametrize("archive, method, key", [("v1_regressor.fairsk", "predict", "reg_predict"),
                                                   ("v1_classifier.fairsk", "decision_function", "clf_decision")])
def test_from_fitted_state_rebuilds_a_v1_archive(archive, method, key):
    """The attributes saved by format fairsk-model/1 are a valid fitted state."""
    import io
    import zipfile
    from pathlib import Path

    fixtures = Path(__file__).parent / "fixtures"
    expected = np.load(fixtures / "v1_expected.npz")
    with zipfile.ZipFile(fixtures / archive) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        body = torch.load(io.BytesIO(zf.read("body.pt")), weights_only=True)
    record = manifest["estimator"]
    cls = {"FairLayerRegressor": FairLayerRegressor, "FairLayerClassifier": FairLayerClassifier}[record["class"]]
    est = cls.from_fitted_state(_decode_v1(record["params"]), {"attributes": _decode_v1(record["fitted"]),
                                                                "body": body})
    out = getattr(est, method)(expected["X"], sensitive_features=expected["s"])
    np.testing.assert_allclose(out, expected[key], rtol=0, atol=1e-12)
