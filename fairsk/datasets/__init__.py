"""Datasets (no network, ever).

Bundled: UCI Adult and German credit, gzipped copies shipped inside the package (UCI
Machine Learning Repository, CC BY 4.0; see ``fairsk/datasets/data/README.md``).
Also: the paper's employee table, read from a path you give (not shipped), and
scikit-learn's diabetes table with ``sex`` as the group. Every loader returns
``(X, y, sensitive_features)`` as pandas objects.
"""

from ._paper import load_diabetes_sex, load_employee_performance, load_employee_rating
from ._uci import load_adult, load_german_credit

__all__ = ["load_adult", "load_german_credit", "load_employee_performance", "load_employee_rating", "load_diabetes_sex"]
