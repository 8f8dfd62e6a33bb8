"""FairLayerRegressor / FairLayerClassifier in scikit-learn workflows."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.model_selection import GridSearchCV, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from fairsk import FairLayerClassifier, FairLayerRegressor
from fairsk.metrics import make_fair_scorer, parity_gap

FAST = dict(max_epochs=8, random_state=0, solver="exact")


def data(n=300, seed=0, attributes=1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    s = rng.integers(0, 3, size=(n, attributes))
    y = X[:, 0] + 0.8 * s[:, 0] + 0.1 * rng.normal(size=n)
    return X, y, (y > np.median(y)).astype(int), s if attributes > 1 else s[:, 0]


@pytest.mark.parametrize("Est", [FairLayerRegressor, FairLayerClassifier])
@pytest.mark.parametrize("solver", ["exact", "qpth"])
def test_guarantee_on_one_call(Est, solver):
    X, y, yc, s = data()
    logits = {"enforce_on": "logits"} if Est is FairLayerClassifier else {}  # the logits' guarantee
    est = Est(tolerance=0.02, max_epochs=5, random_state=0, solver=solver, **logits)
    est.fit(X, yc if Est is FairLayerClassifier else y, sensitive_features=s)
    method = "decision_function" if Est is FairLayerClassifier else "predict"
    for rows in (slice(None), slice(0, 7)):
        out = getattr(est, method)(X[rows], sensitive_features=s[rows])
        assert parity_gap(out, s[rows]) <= 0.02 + 1e-6


def test_training_through_layer_changes_the_raw_net():
    """The body learns inside the fair set: its raw outputs move toward parity."""
    X, y, _, s = data(600)
    free = FairLayerRegressor(tolerance=100.0, **FAST).fit(X, y, sensitive_features=s)
    fair = FairLayerRegressor(tolerance=0.0, **FAST).fit(X, y, sensitive_features=s)
    raw_free = free.body64_(__import__("torch").as_tensor(X)).detach().numpy()
    raw_fair = fair.body64_(__import__("torch").as_tensor(X)).detach().numpy()
    assert parity_gap(raw_fair, s) < parity_gap(raw_free, s)


def test_multiclass_guarantee_covers_every_logit_column():
    X, y, _, s = data(400)
    yk = np.digitize(y, np.quantile(y, [0.33, 0.66]))
    clf = FairLayerClassifier(tolerance=0.05, enforce_on="logits", **FAST).fit(X, yk, sensitive_features=s)
    logits = clf.decision_function(X, sensitive_features=s)
    assert logits.shape == (400, 3)
    for j in range(3):
        assert parity_gap(logits[:, j], s) <= 0.05 + 1e-6
    np.testing.assert_allclose(clf.predict_proba(X, sensitive_features=s).sum(1), 1.0)


def test_two_attributes_and_intersectional_groups():
    X, y, _, s = data(400, attributes=2)
    reg = FairLayerRegressor(tolerance=0.03, **FAST).fit(X, y, sensitive_features=s)
    pred = reg.predict(X, sensitive_features=s)
    assert parity_gap(pred, s[:, 0]) <= 0.03 + 1e-6 and parity_gap(pred, s[:, 1]) <= 0.03 + 1e-6
    inter = s[:, 0] * 10 + s[:, 1]  # intersectional: one attribute with all cells
    reg = FairLayerRegressor(tolerance=0.03, **FAST).fit(X, y, sensitive_features=inter)
    assert parity_gap(reg.predict(X, sensitive_features=inter), inter) <= 0.03 + 1e-6


def test_string_labels_and_pandas_inputs():
    X, y, yc, s = data()
    Xd = pd.DataFrame(X, columns=list("abcd"), index=np.arange(300) * 3 + 7)
    sf = pd.Series(np.array(["red", "green", "blue"])[s], index=Xd.index, name="colour")
    clf = FairLayerClassifier(tolerance=0.02, **FAST).fit(Xd, np.array(["no", "yes"])[yc], sensitive_features=sf)
    labels = clf.predict(Xd, sensitive_features=sf)
    assert set(labels) <= {"no", "yes"}
    assert parity_gap(labels == "yes", sf) <= 0.02  # selection rates of the positive class


def test_sensitive_columns_read_from_X():
    X, y, _, s = data()
    Xd = pd.DataFrame(X, columns=list("abcd")).assign(group=np.array(["x", "y", "z"])[s])
    reg = FairLayerRegressor(tolerance=0.02, sensitive_columns="group", **FAST).fit(Xd, y)
    assert reg.n_features_in_ == 4
    assert parity_gap(reg.predict(Xd), Xd["group"]) <= 0.02 + 1e-6
    arr = np.column_stack([X, s])
    reg = FairLayerRegressor(tolerance=0.02, sensitive_columns=[4], **FAST).fit(arr, y)
    assert parity_gap(reg.predict(arr), s) <= 0.02 + 1e-6


def test_unseen_group_at_predict_is_constrained_as_its_own_group():
    X, y, _, s = data()
    reg = FairLayerRegressor(tolerance=0.02, **FAST).fit(X, y, sensitive_features=s)
    s_new = s.copy()
    s_new[:20] = 9  # never seen in fit
    with pytest.warns(UserWarning, match="not seen in fit"):
        pred = reg.predict(X, sensitive_features=s_new)
    assert parity_gap(pred, s_new) <= 0.02 + 1e-6


def test_without_groups_it_is_an_unconstrained_model_and_warns():
    X, y, _, _ = data()
    with pytest.warns(UserWarning, match="unconstrained"):
        reg = FairLayerRegressor(**FAST).fit(X, y)
    assert reg.predict(X).shape == (300,)


def test_pipeline_with_column_transformer_and_routing():
    X, y, yc, s = data()
    Xd = pd.DataFrame(X, columns=list("abcd")).assign(colour=np.array(["r", "g", "b"])[(np.arange(300) % 3)])
    pre = ColumnTransformer([("num", StandardScaler(), list("abcd")), ("cat", OneHotEncoder(), ["colour"])])
    with sklearn.config_context(enable_metadata_routing=True):
        clf = FairLayerClassifier(tolerance=0.02, enforce_on="logits", **FAST)
        clf.set_fit_request(sensitive_features=True).set_predict_request(sensitive_features=True)
        clf.set_decision_function_request(sensitive_features=True).set_score_request(sensitive_features=True)
        pipe = make_pipeline(pre, clf).fit(Xd, yc, sensitive_features=s)
        logits = pipe.decision_function(Xd, sensitive_features=s)
        assert parity_gap(logits, s) <= 0.02 + 1e-6
        assert 0.5 < pipe.score(Xd, yc, sensitive_features=s) <= 1.0


def test_grid_search_over_tolerance_with_routed_groups():
    X, y, yc, s = data(300)
    with sklearn.config_context(enable_metadata_routing=True):
        clf = FairLayerClassifier(enforce_on="logits", **FAST).set_fit_request(sensitive_features=True)
        clf.set_predict_request(sensitive_features=True).set_decision_function_request(sensitive_features=True)
        scorer = make_fair_scorer(max_gap=0.02, response_method="decision_function")
        search = GridSearchCV(clf, {"tolerance": [0.0, 0.02, 0.5]}, scoring=scorer, cv=3)
        search.fit(X, yc, sensitive_features=s)
    scores = search.cv_results_["mean_test_score"]
    assert np.isfinite(scores[:2]).all()  # within budget: a real accuracy
    assert scores[2] == -np.inf  # tolerance 0.5 leaves gaps beyond the 0.02 budget
    assert search.best_params_["tolerance"] in (0.0, 0.02)


def test_cross_validate_with_routed_metadata():
    X, y, _, s = data(300)
    with sklearn.config_context(enable_metadata_routing=True):
        reg = FairLayerRegressor(tolerance=0.02, **FAST)
        reg.set_fit_request(sensitive_features=True).set_score_request(sensitive_features=True)
        res = cross_validate(reg, X, y, cv=3, params={"sensitive_features": s})
    assert np.all(np.isfinite(res["test_score"]))


def test_clone_and_module_params():
    import torch

    class Body(torch.nn.Module):
        def __init__(self, n_features_in, n_outputs, width=8):
            super().__init__()
            self.lin = torch.nn.Sequential(torch.nn.Linear(n_features_in, width), torch.nn.Tanh(),
                                           torch.nn.Linear(width, n_outputs))

        def forward(self, X):
            return self.lin(X)

    X, y, _, s = data()
    reg = FairLayerRegressor(module=Body, module__width=5, **FAST)
    assert clone(reg).get_params()["module__width"] == 5
    reg.set_params(module__width=6).fit(X, y, sensitive_features=s)
    assert reg.net_.module_.body.lin[0].out_features == 6


def test_pickle_round_trip_in_another_process(tmp_path):
    X, y, yc, s = data()
    clf = FairLayerClassifier(tolerance=0.02, **FAST).fit(X, yc, sensitive_features=s)
    path = tmp_path / "clf.pkl"
    path.write_bytes(pickle.dumps(clf))
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "s.npy", s)
    code = (
        "import pickle, numpy as np, sys; p = sys.argv[1];"
        "clf = pickle.load(open(p + '/clf.pkl', 'rb'));"
        "out = clf.decision_function(np.load(p + '/X.npy'), sensitive_features=np.load(p + '/s.npy'));"
        "np.save(p + '/out.npy', out)"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), clf.decision_function(X, sensitive_features=s))


def test_same_seed_same_fit():
    X, y, _, s = data()
    a = FairLayerRegressor(**FAST).fit(X, y, sensitive_features=s).predict(X, sensitive_features=s)
    b = FairLayerRegressor(**FAST).fit(X, y, sensitive_features=s).predict(X, sensitive_features=s)
    np.testing.assert_array_equal(a, b)


def test_early_stopping_and_verbose(capsys):
    X, y, _, s = data(400)
    reg = FairLayerRegressor(early_stopping=True, patience=2, max_epochs=200, verbose=1, random_state=0,
                             solver="exact").fit(X, y, sensitive_features=s)
    assert len(reg.net_.history) < 200
    assert "valid_loss" in capsys.readouterr().out


def test_sample_weight_changes_the_fit():
    X, y, _, s = data()
    w = np.where(X[:, 1] > 0, 5.0, 0.2)
    a = FairLayerRegressor(**FAST).fit(X, y, sensitive_features=s).predict(X, sensitive_features=s)
    b = FairLayerRegressor(**FAST).fit(X, y, sample_weight=w, sensitive_features=s).predict(X, sensitive_features=s)
    assert np.abs(a - b).max() > 1e-3


# -- bad input ------------------------------------------------------------------------
@pytest.mark.parametrize("Est", [FairLayerRegressor, FairLayerClassifier])
def test_bad_input(Est):
    X, y, yc, s = data(60)
    target = yc if Est is FairLayerClassifier else y
    est = Est(**FAST)
    Xn = X.copy()
    Xn[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        est.fit(Xn, target, sensitive_features=s)
    yn = y.copy()
    yn[2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        est.fit(X, yn, sensitive_features=s)
    with pytest.raises(ValueError, match="rows"):
        est.fit(X, target, sensitive_features=s[:-1])
    with pytest.raises(ValueError, match="not columns of X"):
        Est(sensitive_columns="nope", **FAST).fit(pd.DataFrame(X), target)
    with pytest.raises(ValueError, match="tolerance"):
        Est(tolerance=-0.1, **FAST).fit(X, target, sensitive_features=s)
    fitted = Est(**FAST).fit(X, target, sensitive_features=s)
    with pytest.raises(ValueError, match="rows"):
        fitted.predict(X, sensitive_features=s[:10])


def test_eer_predictions_meet_the_criterion_on_the_training_data():
    from fairsk.metrics import residual_gap

    X, y, _, s = data(400, attributes=2)
    reg = FairLayerRegressor(criterion="eer", tolerance=0.02, **FAST).fit(X, y, sensitive_features=s)
    assert residual_gap(y, reg.predict(X, sensitive_features=s), s) <= 0.02 + 1e-6
    unseen = s.copy()
    unseen[:3] = [7, 7]
    with pytest.warns(UserWarning, match="not seen in fit"):
        assert np.isfinite(reg.predict(X, sensitive_features=unseen)).all()
