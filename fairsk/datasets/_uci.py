"""Loaders of the bundled UCI files."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd

ADULT_COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
    "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country",
    "income",
]


def _data_file(name: str):
    return resources.files("fairsk.datasets").joinpath("data", name)


def load_adult(*, subset: str = "all", sensitive: tuple[str, ...] = ("sex", "race")):
    """UCI Adult (census income): predict income > 50K.

    Parameters
    ----------
    subset : {"train", "test", "all"}, default="all"
        The original 32,561-row training file, the 16,281-row test file, or both
        (train rows first).
    sensitive : tuple of str, default=("sex", "race")
        Columns returned as ``sensitive_features`` (and removed from ``X``).

    Returns
    -------
    X : DataFrame
        Features; rows with a missing value (``?``) are dropped, categorical
        columns are ``category`` dtype.
    y : Series of int
        1 for income > 50K.
    sensitive_features : DataFrame
        The ``sensitive`` columns, as strings.

    Examples
    --------
    >>> from fairsk.datasets import load_adult
    >>> X, y, s = load_adult(subset="test")
    >>> X.shape, round(float(y.mean()), 3), list(s.columns)
    ((15060, 12), 0.246, ['sex', 'race'])
    """
    if subset not in ("train", "test", "all"):
        raise ValueError(f"subset must be 'train', 'test' or 'all', got {subset!r}")
    files = {"train": ["adult.data.gz"], "test": ["adult.test.gz"], "all": ["adult.data.gz", "adult.test.gz"]}
    frames = []
    for name in files[subset]:
        with _data_file(name).open("rb") as fh:
            df = pd.read_csv(
                fh, compression="gzip", header=None, names=ADULT_COLUMNS, skipinitialspace=True,
                na_values="?", comment="|",
            )
        frames.append(df)
    df = pd.concat(frames, ignore_index=True).dropna().reset_index(drop=True)
    y = df.pop("income").astype(str).str.rstrip(".").eq(">50K").astype(int).rename("income")
    missing = [c for c in sensitive if c not in df.columns]
    if missing:
        raise ValueError(f"sensitive columns {missing} are not in the Adult data")
    s = df[list(sensitive)].astype(str)
    X = df.drop(columns=list(sensitive))
    for col in X.columns:
        if not pd.api.types.is_numeric_dtype(X[col]):
            X[col] = X[col].astype("category")
    return X, y, s


GERMAN_COLUMNS = [
    "checking_status", "duration", "credit_history", "purpose", "credit_amount", "savings",
    "employment", "installment_rate", "personal_status", "other_debtors", "residence_since",
    "property", "age", "other_installment_plans", "housing", "existing_credits", "job",
    "num_dependents", "telephone", "foreign_worker", "credit",
]
_SEX = {"A91": "male", "A92": "female", "A93": "male", "A94": "male", "A95": "female"}


def load_german_credit(*, sensitive: tuple[str, ...] = ("sex",)):
    """UCI Statlog German credit: predict good (1) or bad (0) credit risk.

    Parameters
    ----------
    sensitive : tuple of str, default=("sex",)
        Any of ``"sex"`` (decoded from ``personal_status``: A91, A93, A94 male; A92,
        A95 female) and ``"age"`` (``"age>25"`` / ``"age<=25"``).

    Returns
    -------
    X : DataFrame (1000 rows), y : Series (1 = good), sensitive_features : DataFrame

    Examples
    --------
    >>> from fairsk.datasets import load_german_credit
    >>> X, y, s = load_german_credit(sensitive=("sex", "age"))
    >>> X.shape, int(y.sum()), sorted(s["sex"].unique())
    ((1000, 20), 700, ['female', 'male'])
    """
    with _data_file("german.data.gz").open("rb") as fh:
        df = pd.read_csv(fh, compression="gzip", header=None, names=GERMAN_COLUMNS, sep=r"\s+")
    y = df.pop("credit").eq(1).astype(int).rename("good_credit")
    derived = {
        "sex": df["personal_status"].map(_SEX),
        "age": np.where(df["age"] > 25, "age>25", "age<=25"),
    }
    unknown = [c for c in sensitive if c not in derived]
    if unknown:
        raise ValueError(f"sensitive must be among {sorted(derived)}, got {unknown}")
    s = pd.DataFrame({c: derived[c] for c in sensitive})
    X = df.copy()
    for col in X.columns:
        if not pd.api.types.is_numeric_dtype(X[col]):
            X[col] = X[col].astype("category")
    return X, y, s
