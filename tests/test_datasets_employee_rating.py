"""The employee table as a binary decision (the third classification case of the
reproduction), recomputed from the raw CSV."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def test_employee_rating_target_groups_and_features(shared_data):
    from fairsk.datasets import load_employee_rating

    path = shared_data / "employee_performance.csv"
    raw = pd.read_csv(path)
    X, y, s = load_employee_rating(path)
    assert len(X) == len(y) == len(s) == 1200
    np.testing.assert_array_equal(y.to_numpy(), (raw["PerformanceRating"] >= 3).astype(int).to_numpy())
    np.testing.assert_array_equal(s["MaritalStatus"].to_numpy(), raw["MaritalStatus"].astype(str).to_numpy())
    for leaked in ("PerformanceRating", "EmpNumber", "MaritalStatus", "Age_50plus"):
        assert leaked not in X.columns
    assert X["Gender"].dtype == "category" and pd.api.types.is_numeric_dtype(X["Age"])


def test_employee_rating_other_attributes_and_errors(shared_data, tmp_path):
    from fairsk.datasets import load_employee_rating

    path = shared_data / "employee_performance.csv"
    X, _, s = load_employee_rating(path, sensitive=("Gender", "Age_50plus"))
    assert list(s.columns) == ["Gender", "Age_50plus"] and "Gender" not in X.columns
    raw = pd.read_csv(path)
    np.testing.assert_array_equal(s["Age_50plus"].eq("50+").to_numpy(), (raw["Age"] >= 50).to_numpy())
    with pytest.raises(ValueError, match="sensitive must be among"):
        load_employee_rating(path, sensitive=("EmpHourlyRate",))
    with pytest.raises(FileNotFoundError, match="not shipped"):
        load_employee_rating(tmp_path / "nope.csv")
