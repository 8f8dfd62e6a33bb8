"""
A custom torch body
===================

Any ``torch.nn.Module`` class can be the body in front of the fairness layer
(``module=``); its constructor parameters are set with ``module__*``
keywords, so they can be grid-searched like any other parameter, and it
receives ``n_features_in`` and ``n_outputs`` when its signature asks for
them. The figure shows the training loss per epoch and the fitted
predictions per group: the group means are at parity although the targets'
group means are not.
"""

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from fairsk import FairLayerRegressor
from fairsk.metrics import parity_gap


class ResidualMLP(nn.Module):
    def __init__(self, n_features_in, n_outputs, width=32, dropout=0.1):
        super().__init__()
        self.inp = nn.Linear(n_features_in, width)
        self.block = nn.Sequential(
            nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, width)
        )
        self.out = nn.Linear(width, n_outputs)

    def forward(self, X):
        h = self.inp(X)
        return self.out(torch.relu(h + self.block(h)))


rng = np.random.default_rng(0)
X = rng.normal(size=(800, 5))
s = rng.integers(0, 2, 800)
y = np.sin(X[:, 0]) + X[:, 1] ** 2 + s

reg = FairLayerRegressor(module=ResidualMLP, module__width=16,
                         tolerance=0.01, max_epochs=20, random_state=0,
                         solver="exact")
reg.fit(X, y, sensitive_features=s)
pred = reg.predict(X, sensitive_features=s)
print(reg.net_.module_)
print(f"R^2 {reg.score(X, y, sensitive_features=s):.3f}, "
      f"parity gap {parity_gap(pred, s):.4f}")

# %%
# Training loss per epoch (skorch's history), and predictions against
# targets per group, with each group's mean target (dotted) and mean
# prediction (dashed).
fig, (ax_loss, ax_fit) = plt.subplots(1, 2, figsize=(10, 4))
ax_loss.plot(reg.net_.history[:, "train_loss"], marker="o")
ax_loss.set_xlabel("epoch")
ax_loss.set_ylabel("training loss (MSE through the layer)")
ax_loss.set_title("training")
for g, colour in [(0, "tab:blue"), (1, "tab:orange")]:
    rows = s == g
    ax_fit.scatter(y[rows], pred[rows], s=8, alpha=0.5, color=colour,
                   label=f"group {g}")
    ax_fit.axhline(pred[rows].mean(), color=colour, ls="--")
    ax_fit.axvline(y[rows].mean(), color=colour, ls=":")
ax_fit.set_xlabel("target")
ax_fit.set_ylabel("prediction")
ax_fit.set_title(f"parity gap of the predictions {parity_gap(pred, s):.4f}")
ax_fit.legend()
fig.tight_layout()
plt.show()
