"""
A fair classifier in a Pipeline
===============================

Preprocess the bundled Adult data with a ``ColumnTransformer`` and train a
:class:`fairsk.FairLayerClassifier` behind it; the sensitive features reach the
classifier through scikit-learn's metadata routing.
"""

import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from fairsk import FairLayerClassifier
from fairsk.datasets import load_adult
from fairsk.metrics import parity_gap

X, y, s = load_adult(subset="test", sensitive=("sex",))
X, y, s = X.iloc[:6000], y.iloc[:6000], s["sex"].iloc[:6000]
X_tr, X_te, y_tr, y_te, s_tr, s_te = X[:4000], X[4000:], y[:4000], y[4000:], s[:4000], s[4000:]
cat = [c for c in X.columns if str(X[c].dtype) == "category"]
num = [c for c in X.columns if c not in cat]

sklearn.set_config(enable_metadata_routing=True)
clf = FairLayerClassifier(tolerance=0.02, max_epochs=5, random_state=0, solver="exact")
clf.set_fit_request(sensitive_features=True).set_predict_request(sensitive_features=True)
clf.set_decision_function_request(sensitive_features=True).set_score_request(sensitive_features=True)
pipe = make_pipeline(
    ColumnTransformer([("num", StandardScaler(), num), ("cat", OneHotEncoder(handle_unknown="ignore"), cat)]),
    clf,
)
pipe.fit(X_tr, y_tr, sensitive_features=s_tr)
logits = pipe.decision_function(X_te, sensitive_features=s_te)
print(f"accuracy {pipe.score(X_te, y_te, sensitive_features=s_te):.3f}, logit gap {parity_gap(logits, s_te):.4f}")
sklearn.set_config(enable_metadata_routing=False)
