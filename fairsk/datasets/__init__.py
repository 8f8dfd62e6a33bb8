"""Bundled datasets (no network, ever): UCI Adult and German credit.

Both loaders return ``(X, y, sensitive_features)`` as pandas objects. The files are
gzipped copies shipped inside the package (UCI Machine Learning Repository, CC BY 4.0;
see ``fairsk/datasets/data/README.md`` for the attribution).
"""

from ._uci import load_adult, load_german_credit

__all__ = ["load_adult", "load_german_credit"]
