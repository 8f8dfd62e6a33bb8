"""``FairLayerClassifier(enforce_on=...)``: which output carries the guarantee.

Every guarantee is checked from outside: selection rates and probability means are
recomputed in NumPy from what the estimator returns.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import sklearn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.compose import make_column_selector, make_column_transformer
from sklearn.model_selection import GridSearchCV
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from fairsk import FairLayerClassifier
from fairsk.baselines import PenaltyClassifier, ProjectionClassifier
from fairsk.metrics import make_fair_scorer

FAST = dict(max_epochs=4, random_state=0, solver="exact")
MODES = ("labels", "proba", "logits")


def data(n=400, seed=0, attributes=1, n_groups=3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    s = rng.integers(0, n_groups, size=(n, attributes))
    y = (X[:, 0] + 0.8 * s[:, 0] + 0.3 * rng.normal(size=n) > 1.0).astype(int)
    return X, y, (s[:, 0] if attributes == 1 else s)


def rate_gaps(labels, positive, groups) -> list[float]:
    """Per attribute: max - min over groups of the rate of ``positive`` (count / size)."""
    groups = np.asarray(groups).reshape(len(labels), -1)
    gaps = []
    for a in range(groups.shape[1]):
        rates = [np.count_nonzero(labels[groups[:, a] == g] == positive) / np.count_nonzero(groups[:, a] == g)
                 for g in np.unique(groups[:, a])]
        gaps.append(max(rates) - min(rates))
    return gaps


def mean_gaps(values, groups) -> list[float]:
    """Per attribute and column: max - min over groups of the mean of ``values``."""
    groups = np.asarray(groups).reshape(len(values), -1)
    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    gaps = []
    for a in range(groups.shape[1]):
        means = np.array([values[groups[:, a] == g].mean(0) for g in np.unique(groups[:, a])])
        gaps.extend((means.max(0) - means.min(0)).tolist())
    return gaps


@pytest.fixture(scope="module")
def fitted():
    """One classifier per (mode, number of attributes), fitted once."""
    models = {}
    for attributes in (1, 2, 3):
        X, y, s = data(attributes=attributes, seed=attributes)
        for mode in MODES:
            models[mode, attributes] = FairLayerClassifier(enforce_on=mode, tolerance=0.05, **FAST).fit(
                X, y, sensitive_features=s)
    return models


def test_default_is_labels_and_it_is_a_validated_parameter():
    assert FairLayerClassifier().enforce_on == "labels"
    assert FairLayerClassifier().get_params()["enforce_on"] == "labels"
    X, y, s = data(60)
    with pytest.raises(ValueError, match="enforce_on"):
        FairLayerClassifier(enforce_on="scores", **FAST).fit(X, y, sensitive_features=s)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(attributes=st.integers(1, 3), size=st.integers(1, 400), tol=st.floats(0.0, 1.0), seed=st.integers(0, 2**16),
       n_groups=st.integers(1, 6), skew=st.floats(0.0, 3.0))
def test_labels_and_probabilities_of_one_call_are_at_parity(fitted, attributes, size, tol, seed, n_groups, skew):
    """Random calls (rows, groups of very unequal sizes, unseen groups, any tolerance):
    predict's selection rates and predict_proba's group means are within tolerance."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(size, 4)) * (1 + skew)
    weights = np.exp(-skew * np.arange(n_groups))  # very unequal group sizes for large skew
    s = rng.choice(n_groups, size=(size, attributes), p=weights / weights.sum())
    s = s[:, 0] if attributes == 1 else s
    for mode in ("labels", "proba"):
        clf = fitted[mode, attributes].set_params(tolerance=tol)
        with _quiet():
            proba = clf.predict_proba(X, sensitive_features=s)
            labels = clf.predict(X, sensitive_features=s)
            scores = clf.decision_function(X, sensitive_features=s)
        assert proba.shape == (size, 2) and np.all((proba >= 0) & (proba <= 1))
        np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-12)
        assert max(mean_gaps(proba, s)) <= tol + 1e-6
        # decision_function ranks the rows as predict_proba does
        order = np.argsort(proba[:, 1], kind="stable")
        assert np.all(np.diff(scores[order]) >= 0)
        same = proba[order[1:], 1] == proba[order[:-1], 1]
        assert np.all(scores[order[1:]][same] == scores[order[:-1]][same])
        if mode == "labels":
            assert max(rate_gaps(labels, clf.classes_[1], s)) <= tol
        else:  # "proba": the argmax
            np.testing.assert_array_equal(labels, clf.classes_[np.argmax(proba, 1)])
        clf.set_params(tolerance=0.05)


class _quiet:
    """Silence the single-group warning of tiny calls (their constraint changes nothing)."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def test_labels_maximise_expected_accuracy_on_small_calls(fitted):
    """n <= 10, one attribute: predict's labels are as accurate in expectation as the
    best fair labelling found by brute force."""
    import itertools

    clf = fitted["labels", 1]
    rng = np.random.default_rng(7)
    for trial in range(20):
        n = int(rng.integers(2, 11))
        X = rng.normal(size=(n, 4)) * 2
        s = rng.integers(0, 3, n)
        tol = float(rng.choice([0.0, 0.1, 0.34, 0.5]))
        clf.set_params(tolerance=tol)  # the probabilities of the call are projected with it too
        with _quiet():
            p = clf.predict_proba(X, sensitive_features=s)[:, 1]
            labels = clf.predict(X, sensitive_features=s)
        clf.set_params(tolerance=0.05)
        best = -np.inf
        for cand in itertools.product((0, 1), repeat=n):
            cand = np.array(cand)
            if max(rate_gaps(cand, 1, s)) <= tol:
                best = max(best, float(np.sum(np.where(cand == 1, p, 1 - p))))
        got = float(np.sum(np.where(labels == 1, p, 1 - p)))
        assert got >= best - 1e-9, (trial, got, best)


def test_logits_mode_is_the_paper_behaviour(fitted):
    """enforce_on="logits": logit parity on decision_function, probabilities and labels
    are the sigmoid and the sign of those logits."""
    X, y, s = data(300, seed=11)
    clf = fitted["logits", 1]
    z = clf.decision_function(X, sensitive_features=s)
    assert max(mean_gaps(z, s)) <= 0.05 + 1e-6
    np.testing.assert_allclose(clf.predict_proba(X, sensitive_features=s)[:, 1], 1 / (1 + np.exp(-z)), atol=1e-12)
    np.testing.assert_array_equal(clf.predict(X, sensitive_features=s), clf.classes_[(z > 0).astype(int)])


def test_modes_differ_in_training():
    """"proba" trains through the projection of probabilities: other weights than "logits"."""
    X, y, s = data(300)
    a = FairLayerClassifier(enforce_on="proba", tolerance=0.0, **FAST).fit(X, y, sensitive_features=s)
    b = FairLayerClassifier(enforce_on="logits", tolerance=0.0, **FAST).fit(X, y, sensitive_features=s)
    wa = next(a.net_.module_.body.parameters()).detach()
    wb = next(b.net_.module_.body.parameters()).detach()
    assert not np.allclose(wa.numpy(), wb.numpy())
    # "labels" and "proba" train the same net
    c = FairLayerClassifier(enforce_on="labels", tolerance=0.0, **FAST).fit(X, y, sensitive_features=s)
    np.testing.assert_array_equal(next(c.net_.module_.body.parameters()).detach().numpy(), wa.numpy())


def test_old_pickles_and_saved_parameters_are_logit_models(fitted):
    """A state or parameter set without enforce_on (saved before it existed) is "logits"."""
    clf = fitted["logits", 1]
    state = dict(clf.__getstate__())  # a copy: object.__getstate__ may return the instance's __dict__
    del state["enforce_on"]
    old = FairLayerClassifier.__new__(FairLayerClassifier)
    old.__setstate__(state)
    assert old.enforce_on == "logits"
    X, _, s = data(100, seed=5)
    np.testing.assert_array_equal(old.decision_function(X, sensitive_features=s),
                                  clf.decision_function(X, sensitive_features=s))
    new = pickle.loads(pickle.dumps(fitted["labels", 1]))
    assert new.enforce_on == "labels"
    params = {k: v for k, v in clf.get_params().items() if k != "enforce_on"}
    again = FairLayerClassifier.from_fitted_state(params, clf.get_fitted_state())
    assert again.enforce_on == "logits"
    np.testing.assert_array_equal(again.decision_function(X, sensitive_features=s),
                                  clf.decision_function(X, sensitive_features=s))
    lab = fitted["labels", 1]
    kept = FairLayerClassifier.from_fitted_state(lab.get_params(), lab.get_fitted_state())
    np.testing.assert_array_equal(kept.predict(X, sensitive_features=s), lab.predict(X, sensitive_features=s))


@pytest.mark.parametrize("attributes", [1, 2])
def test_several_classes_stay_on_the_simplex_at_parity(attributes):
    """k = 3 classes: predict_proba rows on the simplex with every class column at
    parity; "labels" gives every class's selection rates within tolerance."""
    X, _, s = data(240, attributes=attributes)
    y = np.digitize(X[:, 0] + (s if attributes == 1 else s[:, 0]), [0.3, 1.5])
    rng = np.random.default_rng(3)
    for mode in ("labels", "proba"):
        clf = FairLayerClassifier(enforce_on=mode, tolerance=0.03, **FAST).fit(X, y, sensitive_features=s)
        rows = rng.choice(240, 150, replace=False)
        P = clf.predict_proba(X[rows], sensitive_features=s[rows])
        assert P.shape == (150, 3) and P.min() >= 0
        np.testing.assert_allclose(P.sum(1), 1.0, atol=1e-9)
        assert max(mean_gaps(P, s[rows])) <= 0.03 + 1e-6
        scores = clf.decision_function(X[rows], sensitive_features=s[rows])
        for j in range(3):  # every column ranked as its probabilities
            order = np.argsort(P[:, j], kind="stable")
            assert np.all(np.diff(scores[order, j]) >= 0)
        labels = clf.predict(X[rows], sensitive_features=s[rows])
        if mode == "labels":
            for c in clf.classes_:
                assert max(rate_gaps(labels, c, s[rows])) <= 0.03
        else:
            np.testing.assert_array_equal(labels, clf.classes_[np.argmax(P, 1)])


def test_bounds_apply_to_logits_only():
    X, y, s = data(100)
    with pytest.raises(ValueError, match="bounds"):
        FairLayerClassifier(enforce_on="proba", bounds=(-1, 1), **FAST).fit(X, y, sensitive_features=s)


@pytest.mark.parametrize("mode", MODES)
def test_baselines_in_matching_modes(mode):
    X, y, s = data(300)
    proj = ProjectionClassifier(enforce_on=mode, tolerance=0.02, **FAST).fit(X, y, sensitive_features=s)
    pen = PenaltyClassifier(enforce_on=mode, tolerance=0.02, lam=10.0, **FAST).fit(X, y, sensitive_features=s)
    # Projection: the unconstrained net (same weights in every mode), projected at prediction
    plain = ProjectionClassifier(enforce_on="logits", tolerance=0.02, **FAST).fit(X, y, sensitive_features=s)
    np.testing.assert_array_equal(next(proj.net_.module_.body.parameters()).detach().numpy(),
                                  next(plain.net_.module_.body.parameters()).detach().numpy())
    proba = proj.predict_proba(X, sensitive_features=s)
    if mode == "logits":
        assert max(mean_gaps(proj.decision_function(X, sensitive_features=s), s)) <= 0.02 + 1e-6
    else:
        assert max(mean_gaps(proba, s)) <= 0.02 + 1e-6
    if mode == "labels":
        assert max(rate_gaps(proj.predict(X, sensitive_features=s), 1, s)) <= 0.02
    # Penalty: raw outputs and argmax labels, whatever the groups of the call
    pp = pen.predict_proba(X, sensitive_features=s)
    np.testing.assert_array_equal(pen.predict(X, sensitive_features=s), np.argmax(pp, 1))
    np.testing.assert_allclose(pen.predict_proba(X[:10], sensitive_features=s[:10]), pp[:10], atol=1e-12)


def test_grid_search_over_tolerance_and_enforce_on_with_routing():
    X, y, s = data(300)
    with sklearn.config_context(enable_metadata_routing=True):
        clf = FairLayerClassifier(**FAST).set_fit_request(sensitive_features=True)
        clf.set_predict_request(sensitive_features=True)
        scorer = make_fair_scorer(max_gap=0.05, response_method="predict")  # gap of the labels
        search = GridSearchCV(clf, {"tolerance": [0.02, 0.6], "enforce_on": ["labels", "logits"]},
                              scoring=scorer, cv=3)
        search.fit(X, y, sensitive_features=s)
    results = {(p["tolerance"], p["enforce_on"]): score
               for p, score in zip(search.cv_results_["params"], search.cv_results_["mean_test_score"])}
    assert np.isfinite(results[0.02, "labels"])  # guaranteed within the budget on every fold
    assert search.best_params_["enforce_on"] in ("labels", "logits")
    best = search.best_estimator_
    assert max(rate_gaps(best.predict(X, sensitive_features=s), 1, s)) <= 0.05 or best.enforce_on == "logits"


@pytest.fixture(scope="module")
def adult_model():
    from fairsk.datasets import load_adult

    X, y, s = load_adult(subset="train", sensitive=("sex",))
    X_test, _, s_test = load_adult(subset="test", sensitive=("sex",))
    encode = make_column_transformer(
        (StandardScaler(), make_column_selector(dtype_include="number")),
        (OneHotEncoder(handle_unknown="ignore"), make_column_selector(dtype_include="category")),
        sparse_threshold=0,
    )
    rows = np.random.default_rng(0).choice(len(X), 6000, replace=False)
    A = encode.fit_transform(X.iloc[rows])
    clf = FairLayerClassifier(tolerance=0.02, max_epochs=2, random_state=0, solver="exact")
    clf.fit(A, y.iloc[rows].to_numpy(), sensitive_features=s.iloc[rows])
    return clf, encode.transform(X_test), s_test["sex"].to_numpy()


@pytest.mark.slow
def test_predict_on_1000_random_subsets_of_adult(adult_model):
    """One fitted classifier, 1,000 random subsets of the Adult test set (1 to 5,000
    rows): the selection-rate gap of every call is within the tolerance."""
    clf, A_test, s_test = adult_model
    rng = np.random.default_rng(0)
    worst = 0.0
    with _quiet():
        for _ in range(1000):
            size = int(rng.integers(1, 5001))
            rows = rng.choice(len(A_test), size, replace=False)
            labels = clf.predict(A_test[rows], sensitive_features=s_test[rows])
            gap = max(rate_gaps(labels, 1, s_test[rows]))
            assert gap <= 0.02, (size, gap)
            worst = max(worst, gap)
    assert worst > 0.0  # the constraint is active: some calls sit at a non-zero gap
