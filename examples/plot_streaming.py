"""
Streaming one sample at a time
==============================

Serve a fitted classifier one application at a time with
:class:`fairsk.StreamingFairPredictor` and follow both sides of the trade-off: the
pooled gap of everything emitted so far (with the bound the rule guarantees) and the
accuracy of the streamed labels, next to one batch call over the same rows.

The default rule bounds the pooled gap by ``tolerance + e_g + e_h`` with a slack
``e_g`` that shrinks as ``1/sqrt(N_g)``: its labels stay those of the batch call. The
strict rule (``slack=0``) keeps the gap within the tolerance after every call, which at
a small tolerance and one row per call costs accuracy.
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from fairsk import FairLayerClassifier, StreamingFairPredictor
from fairsk.datasets import load_adult

TOL = 0.005
warnings.simplefilter("ignore", UserWarning)
X, y, s = load_adult(subset="test", sensitive=("sex",))
cat = [c for c in X.columns if str(X[c].dtype) == "category"]
num = [c for c in X.columns if c not in cat]
pre = ColumnTransformer([("num", StandardScaler(), num), ("cat", OneHotEncoder(handle_unknown="ignore"), cat)],
                        sparse_threshold=0)
A = pre.fit_transform(X)
groups = s["sex"].to_numpy()
y = np.asarray(y)
A_fit, y_fit, g_fit = A[:5000], y[:5000], groups[:5000]
A_stream, y_stream, g_stream = A[5000:8000], y[5000:8000], groups[5000:8000]

clf = FairLayerClassifier(tolerance=TOL, max_epochs=5, random_state=0, solver="exact")
default = StreamingFairPredictor(clf).fit(A_fit, y_fit, sensitive_features=g_fit)
strict = StreamingFairPredictor(clf, slack=0.0).fit(A_fit, y_fit, sensitive_features=g_fit)  # the same seed
batch = default.decision_function(A_stream, sensitive_features=g_stream)
batch_correct = ((batch > 0).astype(int) == y_stream).cumsum()

fig, (ax_gap, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
steps = np.arange(1, len(g_stream) + 1)
for name, stream in (("default (shrinking slack)", default), ("strict (slack=0)", strict)):
    gaps, bounds, correct = [], [], []
    for i in range(len(g_stream)):
        label = stream.partial_predict(A_stream[i : i + 1], sensitive_features=g_stream[i : i + 1])[0]
        gaps.append(stream.pooled_gap_)
        bounds.append(stream.pooled_bound_)
        correct.append(label == y_stream[i])
    line, = ax_gap.plot(steps, gaps, label=f"{name}: gap")
    if stream is default:
        ax_gap.plot(steps, bounds, color=line.get_color(), ls=":", label=f"{name}: bound")
    ax_acc.plot(steps, np.cumsum(correct) - batch_correct, label=name)
    print(f"{name}: pooled gap {gaps[-1]:.4f} (bound {bounds[-1]:.4f}), "
          f"accuracy {np.mean(correct):.4f} vs batch {batch_correct[-1] / len(steps):.4f}")

ax_gap.axhline(TOL, color="k", ls="--", label="tolerance")
ax_gap.set_xscale("log")
ax_gap.set_yscale("symlog", linthresh=0.01)
ax_gap.set_xlabel("rows streamed (one per call)")
ax_gap.set_ylabel("pooled logit gap")
ax_gap.legend(fontsize=8)
ax_acc.axhline(0, color="k", ls="--")
ax_acc.set_xlabel("rows streamed (one per call)")
ax_acc.set_ylabel("correct labels minus the batch call's")
ax_acc.legend(fontsize=8)
fig.tight_layout()
plt.show()
