"""
A fair classifier in a Pipeline
===============================

Preprocess the bundled Adult data with a ``ColumnTransformer`` and train a
:class:`fairsk.FairLayerClassifier` behind it; the sensitive features reach
the classifier through scikit-learn's metadata routing. The figure shows the
test logits of each group (their means within the tolerance) and the share
of each group predicted to earn more than 50K.
"""

import matplotlib.pyplot as plt
import numpy as np
import sklearn
from sklearn.compose import make_column_selector, make_column_transformer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from fairsk import FairLayerClassifier
from fairsk.datasets import load_adult
from fairsk.metrics import parity_gap

X, y, s = load_adult(subset="test", sensitive=("sex",))
X, y, s = X.iloc[:6000], y.iloc[:6000], s["sex"].iloc[:6000]
X_tr, X_te, y_tr, y_te = X[:4000], X[4000:], y[:4000], y[4000:]
s_tr, s_te = s[:4000], s[4000:]

# %%
# Route ``sensitive_features`` to the classifier's methods.
sklearn.set_config(enable_metadata_routing=True)
clf = FairLayerClassifier(tolerance=0.02, max_epochs=5, random_state=0,
                          solver="exact", enforce_on="logits")  # parity of logits
clf.set_fit_request(sensitive_features=True)
clf.set_predict_request(sensitive_features=True)
clf.set_decision_function_request(sensitive_features=True)
clf.set_score_request(sensitive_features=True)
encode = make_column_transformer(
    (StandardScaler(), make_column_selector(dtype_include="number")),
    (OneHotEncoder(handle_unknown="ignore"),
     make_column_selector(dtype_include="category")),
)
pipe = make_pipeline(encode, clf)
pipe.fit(X_tr, y_tr, sensitive_features=s_tr)
logits = pipe.decision_function(X_te, sensitive_features=s_te)
labels = pipe.predict(X_te, sensitive_features=s_te)
accuracy = pipe.score(X_te, y_te, sensitive_features=s_te)
sklearn.set_config(enable_metadata_routing=False)
print(f"accuracy {accuracy:.3f}, logit gap {parity_gap(logits, s_te):.4f}")

# %%
# Each group's logits (dashed: the group means), and the share of each group
# predicted ">50K" next to the share that truly earns it.
groups = sorted(s_te.unique())
colours = ["tab:blue", "tab:orange"]
fig, (ax_logit, ax_rate) = plt.subplots(1, 2, figsize=(10, 4))
bins = np.linspace(logits.min(), logits.max(), 40)
for g, colour in zip(groups, colours):
    part = logits[(s_te == g).to_numpy()]
    ax_logit.hist(part, bins=bins, density=True, alpha=0.5, color=colour,
                  label=g)
    ax_logit.axvline(part.mean(), color=colour, ls="--", lw=2)
ax_logit.set_xlabel("test logit")
ax_logit.set_ylabel("density")
ax_logit.set_title(f"logits per group: gap {parity_gap(logits, s_te):.3f}")
ax_logit.legend(title="sex")
x = np.arange(len(groups))
predicted = [labels[(s_te == g).to_numpy()].mean() for g in groups]
actual = [y_te[(s_te == g).to_numpy()].mean() for g in groups]
ax_rate.bar(x - 0.2, predicted, 0.4, label="predicted >50K")
ax_rate.bar(x + 0.2, actual, 0.4, label="truly >50K", color="tab:gray")
ax_rate.set_xticks(x, groups)
ax_rate.set_ylabel("share of the group")
ax_rate.set_title("positive rates per group")
ax_rate.legend()
fig.tight_layout()
plt.show()
