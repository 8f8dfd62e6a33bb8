"""
A first fair classifier
=======================

Train :class:`fairsk.FairLayerClassifier` on the bundled German credit data with
``sex`` as the sensitive feature, and compare the group means of its logits with an
unconstrained net trained the same way.
"""

import warnings

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from fairsk import FairLayerClassifier
from fairsk.datasets import load_german_credit
from fairsk.metrics import fairness_report, parity_gap

X, y, s = load_german_credit(sensitive=("sex",))
X_tr, X_te, y_tr, y_te, s_tr, s_te = train_test_split(X, y, s, test_size=0.3, random_state=0, stratify=y)
cat = [c for c in X.columns if str(X[c].dtype) == "category"]
num = [c for c in X.columns if c not in cat]
pre = ColumnTransformer([("num", StandardScaler(), num), ("cat", OneHotEncoder(handle_unknown="ignore"), cat)],
                        sparse_threshold=0)
A_tr, A_te = pre.fit_transform(X_tr), pre.transform(X_te)

common = dict(max_epochs=30, random_state=0, solver="exact")
with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # the plain net has no sensitive features
    plain = FairLayerClassifier(**common).fit(A_tr, y_tr)
fair = FairLayerClassifier(tolerance=0.01, **common).fit(A_tr, y_tr, sensitive_features=s_tr)

print(f"unconstrained: gap {parity_gap(plain.decision_function(A_te), s_te):.4f}, "
      f"accuracy {plain.score(A_te, y_te):.3f}")
logits = fair.decision_function(A_te, sensitive_features=s_te)
print(f"F-Layer 0.01:  gap {parity_gap(logits, s_te):.4f}, "
      f"accuracy {fair.score(A_te, y_te, sensitive_features=s_te):.3f}")
print(fairness_report(y_te, logits, s_te).round(3))
assert parity_gap(logits, s_te) <= 0.01 + 1e-6
np.testing.assert_array_equal(fair.classes_, [0, 1])
