"""A model fitted with sensitive features never silently drops its guarantee: missing
groups at prediction, scorers that pass the groups, search-then-predict, Pipelines,
and the per-call guarantee's single-group warning."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import GridSearchCV, KFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fairsk import FairLayerClassifier, FairLayerRegressor, SingleGroupWarning, request_sensitive
from fairsk.baselines import PenaltyClassifier
from fairsk.metrics import get_scorer, get_scorer_names, make_fair_scorer, make_group_scorer, parity_gap, residual_gap

FAST = dict(max_epochs=4, random_state=0, solver="exact")
LOGITS = dict(FAST, enforce_on="logits")  # classifiers here are checked on their logits (the paper's mode)


def data(n=240, seed=0):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 2, size=n)
    X = rng.normal(size=(n, 4)) + 1.5 * s[:, None]  # the features reveal the group
    y = X[:, 0] + 1.2 * s + 0.3 * rng.normal(size=n)
    return X, y, (y > np.median(y)).astype(int), s


# -- 1. missing groups ------------------------------------------------------------------
@pytest.mark.parametrize("method", ["predict", "decision_function", "predict_proba", "score"])
def test_a_model_fitted_with_groups_refuses_a_call_without_them(method):
    X, _, yc, s = data()
    clf = FairLayerClassifier(tolerance=0.01, **LOGITS).fit(X, yc, sensitive_features=s)
    args = (X, yc) if method == "score" else (X,)
    with pytest.raises(ValueError, match="fitted with sensitive features"):
        getattr(clf, method)(*args)


def test_missing_sensitive_warn_and_ignore_give_unconstrained_outputs():
    X, _, yc, s = data()
    strict = FairLayerClassifier(tolerance=0.0, **LOGITS).fit(X, yc, sensitive_features=s)
    raw = strict.raw_output(X)[0][:, 0]
    loud = clone(strict).set_params(missing_sensitive="warn").fit(X, yc, sensitive_features=s)
    with pytest.warns(UserWarning, match="fitted with sensitive features"):
        out = loud.decision_function(X)
    np.testing.assert_array_equal(out, raw)  # same seed: same body; nothing projected
    assert parity_gap(out, s) > 1e-3 > parity_gap(strict.decision_function(X, sensitive_features=s), s)
    quiet = clone(strict).set_params(missing_sensitive="ignore").fit(X, yc, sensitive_features=s)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(quiet.decision_function(X), raw)


def test_models_without_groups_and_the_penalty_baseline_predict_without_them():
    X, y, yc, s = data()
    with pytest.warns(UserWarning, match="unconstrained"):
        plain = FairLayerRegressor(**FAST).fit(X, y)
    assert plain.predict(X).shape == (len(X),)
    pen = PenaltyClassifier(lam=1.0, **FAST).fit(X, yc, sensitive_features=s)  # predicts raw outputs anyway
    np.testing.assert_array_equal(pen.decision_function(X), pen.decision_function(X, sensitive_features=s))


# -- 1. scorers that pass the groups --------------------------------------------------------
def _manual_cv(est, X, y, s, metric, method="predict"):
    scores = []
    for tr, te in KFold(3).split(X):
        fitted = clone(est).fit(X[tr], y[tr], sensitive_features=s[tr])
        out = getattr(fitted, method)(X[te], sensitive_features=s[te])
        if method == "predict_proba":
            out = out[:, 1]
        scores.append(metric(y[te], out, s[te]))
    return np.array(scores)


@pytest.mark.parametrize("name", ["accuracy", "balanced_accuracy", "roc_auc", "neg_parity_gap"])
def test_scorers_score_the_fair_outputs(name):
    X, _, yc, s = data()
    clf = FairLayerClassifier(tolerance=0.02, **LOGITS)
    manual = {
        "accuracy": lambda y, o, g: accuracy_score(y, o),
        "balanced_accuracy": lambda y, o, g: balanced_accuracy_score(y, o),
        "roc_auc": lambda y, o, g: roc_auc_score(y, o),
        "neg_parity_gap": lambda y, o, g: -parity_gap(o, g),
    }[name]
    method = "decision_function" if name in ("roc_auc", "neg_parity_gap") else "predict"
    expected = _manual_cv(clf, X, yc, s, manual, method)
    with sklearn.config_context(enable_metadata_routing=True):
        request_sensitive(clf, enable_routing=False)
        res = cross_validate(clf, X, yc, cv=KFold(3), params={"sensitive_features": s}, scoring=get_scorer(name))
    np.testing.assert_allclose(res["test_score"], expected, rtol=0, atol=1e-12)
    if name == "neg_parity_gap":
        assert (-res["test_score"] <= 0.02 + 1e-6).all()


def test_regression_scorers_and_the_residual_gap():
    X, y, _, s = data()
    reg = FairLayerRegressor(criterion="eer", tolerance=0.05, **FAST)
    expected = _manual_cv(reg, X, y, s, lambda t, o, g: -residual_gap(t, o, g))
    with sklearn.config_context(enable_metadata_routing=True):
        request_sensitive(reg, enable_routing=False)
        res = cross_validate(reg, X, y, cv=KFold(3), params={"sensitive_features": s},
                             scoring={"gap": get_scorer("neg_residual_gap"), "r2": get_scorer("r2")})
    np.testing.assert_allclose(res["test_gap"], expected, atol=1e-12)
    assert np.isfinite(res["test_r2"]).all()
    assert {"accuracy", "balanced_accuracy", "roc_auc", "neg_parity_gap", "neg_residual_gap"} <= set(get_scorer_names())
    with pytest.raises(ValueError, match="unknown scorer"):
        get_scorer("accuracy_score")


def test_scikit_learns_plain_scorer_now_fails_loudly_instead_of_scoring_the_unconstrained_net():
    X, _, yc, s = data()
    with sklearn.config_context(enable_metadata_routing=True):
        clf = FairLayerClassifier(tolerance=0.0, **LOGITS).set_fit_request(sensitive_features=True)
        with pytest.raises(ValueError, match="fitted with sensitive features"):
            cross_validate(clf, X, yc, cv=3, params={"sensitive_features": s}, scoring="accuracy",
                           error_score="raise")


def test_make_group_scorer_passes_the_groups():
    from sklearn.metrics import f1_score

    X, _, yc, s = data()
    clf = FairLayerClassifier(tolerance=0.0, **LOGITS).fit(X, yc, sensitive_features=s)
    scorer = make_group_scorer(f1_score)
    assert scorer(clf, X, yc, sensitive_features=s) == f1_score(yc, clf.predict(X, sensitive_features=s))
    neg = make_group_scorer(f1_score, greater_is_better=False)
    assert neg(clf, X, yc, sensitive_features=s) == -scorer(clf, X, yc, sensitive_features=s)


# -- search, then predict ---------------------------------------------------------------------
def test_search_then_predict_recipes():
    """Routed groups: GridSearchCV scores the fair outputs; its own predict refuses (it
    takes no metadata), and best_estimator_ predicts with the groups. With
    sensitive_columns the search itself predicts fairly."""
    X, _, yc, s = data()
    grid = {"tolerance": [0.0, 0.3]}
    with sklearn.config_context(enable_metadata_routing=True):
        clf = request_sensitive(FairLayerClassifier(**LOGITS), enable_routing=False)
        search = GridSearchCV(clf, grid, cv=3, scoring=get_scorer("accuracy")).fit(X, yc, sensitive_features=s)
        with pytest.raises(ValueError, match="best_estimator_"):
            search.predict(X)
    logits = search.best_estimator_.decision_function(X, sensitive_features=s)
    assert parity_gap(logits, s) <= search.best_params_["tolerance"] + 1e-6
    Xd = pd.DataFrame(X, columns=list("abcd")).assign(group=np.where(s == 1, "x", "y"))
    by_columns = GridSearchCV(FairLayerClassifier(sensitive_columns="group", **LOGITS), grid, cv=3,
                              scoring="accuracy").fit(Xd, yc)
    assert np.isfinite(by_columns.cv_results_["mean_test_score"]).all()
    tol = by_columns.best_params_["tolerance"]
    assert parity_gap(by_columns.decision_function(Xd), s) <= tol + 1e-6


# -- 2. Pipelines whose last step reads sensitive_columns ----------------------------------
def test_plain_and_fair_scores_through_a_pipeline_with_sensitive_columns():
    X, _, yc, s = data()
    Xd = pd.DataFrame(X, columns=list("abcd")).assign(group=np.where(s == 1, "x", "y"))
    pre = ColumnTransformer([("num", StandardScaler(), list("abcd"))], remainder="passthrough",
                            verbose_feature_names_out=False).set_output(transform="pandas")
    pipe = make_pipeline(pre, FairLayerClassifier(sensitive_columns="group", **LOGITS))
    fair = make_fair_scorer(max_gap=0.05, response_method="decision_function")
    search = GridSearchCV(pipe, {"fairlayerclassifier__tolerance": [0.0, 0.05, 5.0]}, cv=3,
                          scoring={"fair": fair, "acc": "accuracy", "gap": get_scorer("neg_parity_gap")},
                          refit="fair", error_score="raise").fit(Xd, yc)
    res = search.cv_results_
    assert np.isfinite(res["mean_test_fair"][:2]).all() and res["mean_test_fair"][2] == -np.inf
    np.testing.assert_allclose(res["mean_test_fair"][:2], res["mean_test_acc"][:2])  # within budget: accuracy
    assert (-res["mean_test_gap"][:2] <= 0.05 + 1e-6).all() and -res["mean_test_gap"][2] > 0.05
    # the plain score of one fold equals the accuracy of the fair predictions, by hand
    tr, te = next(iter(KFold(3).split(Xd)))
    fitted = clone(pipe).set_params(fairlayerclassifier__tolerance=0.0).fit(Xd.iloc[tr], yc[tr])
    pred = fitted.predict(Xd.iloc[te])
    assert parity_gap(fitted.decision_function(Xd.iloc[te]), s[te]) <= 1e-6
    assert fair(fitted, Xd.iloc[te], yc[te]) == accuracy_score(yc[te], pred)


def test_request_sensitive_routes_through_a_pipeline_in_one_call():
    X, _, yc, s = data()
    with sklearn.config_context(enable_metadata_routing=True):
        pipe = request_sensitive(make_pipeline(StandardScaler(), FairLayerClassifier(tolerance=0.0, **LOGITS)),
                                 enable_routing=False)
        routing = pipe[-1].get_metadata_routing()
        for method in ("fit", "predict", "predict_proba", "decision_function", "score"):
            assert getattr(routing, method).requests["sensitive_features"] is True
        pipe.fit(X, yc, sensitive_features=s)
        assert parity_gap(pipe.decision_function(X, sensitive_features=s), s) <= 1e-6
        with pytest.raises(ValueError, match="fitted with sensitive features"):
            pipe.predict(X)


def test_request_sensitive_turns_routing_on_by_default():
    with sklearn.config_context():
        request_sensitive(FairLayerRegressor())
        assert sklearn.get_config()["enable_metadata_routing"] is True
        sklearn.set_config(enable_metadata_routing=False)


# -- 7. the guarantee is per call --------------------------------------------------------------
def test_a_call_holding_one_group_warns_that_the_constraint_does_nothing():
    X, _, yc, s = data()
    clf = FairLayerClassifier(tolerance=0.0, **LOGITS).fit(X, yc, sensitive_features=s)
    with pytest.warns(SingleGroupWarning, match="StreamingFairPredictor"):
        one_by_one = np.array([clf.decision_function(X[i : i + 1], sensitive_features=s[i : i + 1])[0]
                               for i in range(20)])
    np.testing.assert_allclose(one_by_one, clf.raw_output(X[:20])[0][:, 0])  # nothing constrained them
    with warnings.catch_warnings():
        warnings.simplefilter("error", SingleGroupWarning)
        clf.decision_function(X[:20], sensitive_features=s[:20])  # two groups: no warning
