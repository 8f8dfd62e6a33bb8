"""The paper's employee-performance table (read from a path: not shipped) and the
diabetes regression case."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

EMPLOYEE_CATEGORICAL = [
    "Gender", "EducationBackground", "MaritalStatus", "EmpDepartment", "EmpJobRole",
    "BusinessTravelFrequency", "OverTime", "Attrition",
]
#: the paper's five protected attributes (the EducationBackground dummy is not named
#: in the paper; fairsk takes the most common background, "Life Sciences")
EMPLOYEE_PROTECTED = [
    "Age_50plus", "IsManager", "Gender_Male", "EducationBackground_Life Sciences", "MaritalStatus_Married",
]


def load_employee_performance(path: str | Path):
    """The paper's employee table (1,200 rows), with the paper's preprocessing.

    Drop ``EmpNumber``; ``Age_50plus = Age >= 50``; ``IsManager`` = job role contains
    "Manager"; one-hot the categorical columns; standardise the numeric columns;
    target ``EmpHourlyRate`` min-max scaled to [0, 1]. Protected attributes:
    ``Age_50plus``, ``IsManager``, ``Gender_Male``, the ``EducationBackground_Life
    Sciences`` dummy and ``MaritalStatus_Married``. The file is not shipped (its licence
    is unclear): pass the path of ``employee_performance.csv`` (or the ``.xls``).

    Returns
    -------
    X : DataFrame of float (protected dummies included as features), y : Series in [0, 1],
    sensitive_features : DataFrame of the 5 protected 0/1 columns

    Examples
    --------
    >>> from fairsk.datasets import load_employee_performance
    >>> X, y, s = load_employee_performance("../shared/data/employee_performance.csv")  # doctest: +SKIP
    >>> X.shape, list(s.columns)[:2]  # doctest: +SKIP
    ((1200, 63), ['Age_50plus', 'IsManager'])
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no employee-performance file at {path} (it is not shipped with fairsk)")
    df = pd.read_excel(path) if path.suffix in (".xls", ".xlsx") else pd.read_csv(path)
    df = df.drop(columns=["EmpNumber"])
    df["Age_50plus"] = (df["Age"] >= 50).astype(float)
    df["IsManager"] = df["EmpJobRole"].astype(str).str.contains("Manager").astype(float)
    target = df.pop("EmpHourlyRate").astype(float)
    y = ((target - target.min()) / (target.max() - target.min())).rename("EmpHourlyRate")
    numeric = [c for c in df.columns if c not in EMPLOYEE_CATEGORICAL and c not in ("Age_50plus", "IsManager")]
    df[numeric] = (df[numeric] - df[numeric].mean()) / df[numeric].std(ddof=0)
    X = pd.get_dummies(df, columns=EMPLOYEE_CATEGORICAL, dtype=float)
    s = X[EMPLOYEE_PROTECTED].astype(int)
    return X.astype(float), y, s


def load_diabetes_sex():
    """scikit-learn's diabetes regression table with ``sex`` as the sensitive feature.

    Returns ``(X, y, sensitive_features)``; ``X`` keeps the other 9 (scaled) features.

    Examples
    --------
    >>> from fairsk.datasets import load_diabetes_sex
    >>> X, y, s = load_diabetes_sex()
    >>> X.shape, sorted(s.unique())
    ((442, 9), ['sex=1', 'sex=2'])
    """
    from sklearn.datasets import load_diabetes

    raw = load_diabetes(as_frame=True, scaled=False)
    s = raw.data["sex"].map({1.0: "sex=1", 2.0: "sex=2"}).rename("sex")
    X = raw.data.drop(columns=["sex"])
    X = (X - X.mean()) / X.std(ddof=0)
    return X, raw.target.astype(float), s


__all__ = ["load_employee_performance", "load_employee_rating", "load_diabetes_sex"]


def load_employee_rating(path: str | Path, *, sensitive: tuple[str, ...] = ("MaritalStatus",)):
    """The employee table as a binary decision: is the performance rating at least 3?

    The same 1,200 rows as :func:`load_employee_performance` (not shipped: pass the
    path of ``employee_performance.csv`` or the ``.xls``). Target: 1 when
    ``PerformanceRating >= 3`` ("meets expectations or better", 84% of rows), 0 for
    a rating of 2. ``EmpNumber`` and ``PerformanceRating`` are dropped; the other
    columns are features, the categorical ones as ``category`` dtype, unscaled.

    Parameters
    ----------
    path : str or Path
        Where the table is.
    sensitive : tuple of str, default=("MaritalStatus",)
        Columns returned as ``sensitive_features`` (and removed from ``X``), as
        strings; any categorical column of the table (``Gender``, ``MaritalStatus``,
        ...) or ``"Age_50plus"`` (``"50+"`` / ``"<50"``).

    Returns
    -------
    X : DataFrame, y : Series of int, sensitive_features : DataFrame

    Examples
    --------
    >>> from fairsk.datasets import load_employee_rating
    >>> X, y, s = load_employee_rating("../shared/data/employee_performance.csv")  # doctest: +SKIP
    >>> X.shape, int(y.sum()), sorted(s["MaritalStatus"].unique())  # doctest: +SKIP
    ((1200, 25), 1006, ['Divorced', 'Married', 'Single'])
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no employee-performance file at {path} (it is not shipped with fairsk)")
    df = pd.read_excel(path) if path.suffix in (".xls", ".xlsx") else pd.read_csv(path)
    df = df.drop(columns=["EmpNumber"])
    df["Age_50plus"] = (df["Age"] >= 50).map({True: "50+", False: "<50"})
    y = df.pop("PerformanceRating").ge(3).astype(int).rename("rating_at_least_3")
    allowed = [*EMPLOYEE_CATEGORICAL, "Age_50plus"]
    unknown = [c for c in sensitive if c not in allowed]
    if unknown:
        raise ValueError(f"sensitive must be among {allowed}, got {unknown}")
    s = df[list(sensitive)].astype(str)
    X = df.drop(columns=[*sensitive, *(["Age_50plus"] if "Age_50plus" not in sensitive else [])])
    for col in X.columns:
        if not pd.api.types.is_numeric_dtype(X[col]):
            X[col] = X[col].astype("category")
    return X, y, s
