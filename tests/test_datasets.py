"""Bundled datasets load offline, cleaned; and the Adult guarantee."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from fairsk import FairLayerClassifier
from fairsk.datasets import load_adult, load_german_credit
from fairsk.metrics import parity_gap, selection_rate_gap


def test_adult_is_clean():
    X, y, s = load_adult()
    assert len(X) == len(y) == len(s) == 45222  # 48,842 rows less those with a '?'
    assert set(np.unique(y)) == {0, 1}
    assert not X.isna().any().any()
    assert set(s["sex"]) == {"Male", "Female"}
    assert "sex" not in X.columns and "race" not in X.columns


def test_german_credit():
    X, y, s = load_german_credit(sensitive=("sex", "age"))
    assert X.shape == (1000, 20) and y.sum() == 700
    assert set(s["age"]) == {"age>25", "age<=25"}
    with pytest.raises(ValueError, match="sensitive"):
        load_german_credit(sensitive=("religion",))


def test_shared_data_matches_bundled(shared_data):
    import gzip

    bundled = load_adult(subset="test")[0]
    with gzip.open(shared_data / "adult.test.gz", "rt") as fh:
        rows = [line for line in fh if line.strip() and not line.startswith("|") and "?" not in line]
    assert len(rows) == len(bundled)


@pytest.mark.parametrize("tol", [0.0, 0.01, 0.05])
def test_adult_parity_gap_within_tolerance(tol):
    """F-Layer on Adult (sex and race): the test-set gap of decision_function is within
    the tolerance (a 4,000-row training subset keeps this test short; the full run is
    benchmarks/adult_estimators.py)."""
    X_tr, y_tr, s_tr = load_adult(subset="train")
    X_te, y_te, s_te = load_adult(subset="test")
    X_tr, y_tr, s_tr = X_tr.iloc[:4000], y_tr.iloc[:4000], s_tr.iloc[:4000]
    cat = [c for c in X_tr.columns if str(X_tr[c].dtype) == "category"]
    num = [c for c in X_tr.columns if c not in cat]
    pre = ColumnTransformer([("n", StandardScaler(), num), ("c", OneHotEncoder(handle_unknown="ignore"), cat)],
                            sparse_threshold=0)
    A_tr, A_te = pre.fit_transform(X_tr), pre.transform(X_te)
    clf = FairLayerClassifier(tolerance=tol, max_epochs=3, batch_size=256, random_state=0, solver="exact",
                              enforce_on="logits")
    clf.fit(A_tr, y_tr, sensitive_features=s_tr)
    logits = clf.decision_function(A_te, sensitive_features=s_te)
    assert parity_gap(logits, s_te) <= tol + 1e-6
    # the default, enforce_on="labels": the selection rates of the labels of one call
    labels = FairLayerClassifier(tolerance=tol, max_epochs=3, batch_size=256, random_state=0, solver="exact").fit(
        A_tr, y_tr, sensitive_features=s_tr).predict(A_te, sensitive_features=s_te)
    assert selection_rate_gap(labels, s_te) <= tol
    assert clf.score(A_te, y_te, sensitive_features=s_te) > 0.7


def test_employee_performance_preprocessing(shared_data):
    from fairsk.datasets import load_employee_performance

    X, y, s = load_employee_performance(shared_data / "employee_performance.csv")
    assert X.shape[0] == len(y) == len(s) == 1200
    assert y.min() == 0.0 and y.max() == 1.0
    assert list(s.columns) == ["Age_50plus", "IsManager", "Gender_Male", "EducationBackground_Life Sciences",
                               "MaritalStatus_Married"]
    assert set(np.unique(s.to_numpy())) == {0, 1}
    assert "EmpNumber" not in X.columns and "EmpHourlyRate" not in X.columns
    assert abs(X["Age"].mean()) < 1e-9 and abs(X["Age"].std(ddof=0) - 1) < 1e-9


def test_employee_missing_file_is_a_clear_error(tmp_path):
    from fairsk.datasets import load_employee_performance

    with pytest.raises(FileNotFoundError, match="not shipped"):
        load_employee_performance(tmp_path / "nope.csv")
