"""
Streaming one sample at a time
==============================

Serve a fitted classifier one application at a time with
:class:`fairsk.StreamingFairPredictor` and plot the pooled gap of everything emitted
so far: with ``mode="pooled"`` it never exceeds the tolerance; the paper's primal-dual
mode cannot act on batches of one.
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from fairsk import FairLayerClassifier, StreamingFairPredictor
from fairsk.datasets import load_adult

warnings.simplefilter("ignore", UserWarning)
X, y, s = load_adult(subset="test", sensitive=("sex",))
cat = [c for c in X.columns if str(X[c].dtype) == "category"]
num = [c for c in X.columns if c not in cat]
pre = ColumnTransformer([("num", StandardScaler(), num), ("cat", OneHotEncoder(handle_unknown="ignore"), cat)],
                        sparse_threshold=0)
A = pre.fit_transform(X)
groups = s["sex"].to_numpy()
A_fit, y_fit, g_fit, A_stream, g_stream = A[:5000], y[:5000], groups[:5000], A[5000:8000], groups[5000:8000]

curves = {}
for mode in ("pooled", "paper"):
    stream = StreamingFairPredictor(FairLayerClassifier(max_epochs=5, random_state=0, solver="exact"),
                                    tolerance=0.02, mode=mode).fit(A_fit, y_fit, sensitive_features=g_fit)
    gaps = []
    for i in range(len(g_stream)):
        stream.partial_predict(A_stream[i : i + 1], sensitive_features=g_stream[i : i + 1])
        gaps.append(stream.pooled_gap_)
    curves[mode] = np.array(gaps)
    print(f"{mode}: pooled gap after {len(gaps)} samples {gaps[-1]:.4f}")

for mode, gaps in curves.items():
    plt.plot(np.arange(1, len(gaps) + 1), gaps, label=mode)
plt.axhline(0.02, color="k", ls="--", label="tolerance")
plt.xscale("log")
plt.yscale("symlog", linthresh=0.01)
plt.xlabel("samples streamed (batch size 1)")
plt.ylabel("pooled logit gap")
plt.legend()
plt.show()
