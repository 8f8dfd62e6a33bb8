"""
Regression with a box and equalised residuals
=============================================

Train :class:`fairsk.FairLayerRegressor` on scikit-learn's diabetes data
(``sex`` as the group) with a box on the outputs, under the two criteria:

- ``"ecp"``: group means of the predictions at parity, guaranteed for the
  rows of every ``predict`` call;
- ``"eer"``: each group's mean prediction within the tolerance of its mean
  target. The targets are unknown at prediction, so the layer acts in
  training; ``predict`` adds per-group offsets learnt on the training set,
  and nothing is guaranteed on new rows (the test residual gap below is a
  measurement, not a bound).
"""

import matplotlib.pyplot as plt
import numpy as np
from sklearn.model_selection import train_test_split

from fairsk import FairLayerRegressor
from fairsk.datasets import load_diabetes_sex
from fairsk.metrics import parity_gap, residual_gap

X, y, s = load_diabetes_sex()
y = (y - y.mean()) / y.std()
X_tr, X_te, y_tr, y_te, s_tr, s_te = train_test_split(
    X, y, s, test_size=0.3, random_state=0
)
preds = {}
for criterion in ("ecp", "eer"):
    reg = FairLayerRegressor(criterion=criterion, tolerance=0.05,
                             bounds=(-2.5, 2.5), max_epochs=40,
                             random_state=0, solver="exact")
    reg.fit(X_tr, y_tr, sensitive_features=s_tr)
    pred = preds[criterion] = reg.predict(X_te, sensitive_features=s_te)
    print(f"{criterion}: "
          f"R^2 {reg.score(X_te, y_te, sensitive_features=s_te):.3f}, "
          f"parity gap {parity_gap(pred, s_te):.3f}, "
          f"residual gap {residual_gap(y_te, pred, s_te):.3f}, "
          f"range [{pred.min():.2f}, {pred.max():.2f}]")
    assert np.all(pred >= -2.5) and np.all(pred <= 2.5)
assert parity_gap(preds["ecp"], s_te) <= 0.05 + 1e-6

# %%
# Test predictions against targets, per group; the dashed lines are the
# groups' mean predictions, the dotted ones their mean targets (nearly equal
# here). ECP brings the dashed lines together on every call. EER brings each
# group's mean prediction to its mean target in training; on these new rows
# (and with a box) that is not guaranteed, and the residual gap is measured.
groups = sorted(s_te.unique())
colours = ["tab:blue", "tab:orange"]
fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
for ax, (criterion, pred) in zip(axes, preds.items()):
    for g, colour in zip(groups, colours):
        rows = (s_te == g).to_numpy()
        ax.scatter(y_te[rows], pred[rows], s=12, alpha=0.6, color=colour,
                   label=g)
        ax.axhline(pred[rows].mean(), color=colour, ls="--")
        ax.axvline(y_te[rows].mean(), color=colour, ls=":")
    ax.axhspan(-2.5, 2.5, color="k", alpha=0.03)
    ax.set_title(f'criterion="{criterion}": parity gap '
                 f"{parity_gap(pred, s_te):.3f}, residual gap "
                 f"{residual_gap(y_te, pred, s_te):.3f}", fontsize=10)
    ax.set_xlabel("target (standardised)")
axes[0].set_ylabel("prediction (box [-2.5, 2.5])")
axes[0].legend()
fig.tight_layout()
plt.show()
