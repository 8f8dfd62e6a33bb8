"""
Regression with a box and equalised residuals
=============================================

Train :class:`fairsk.FairLayerRegressor` on scikit-learn's diabetes data (``sex`` as
the group) with ``criterion="eer"`` (each group's mean prediction within 0.05 of its
mean target, in training batches) and a box on the outputs; compare with the
``"ecp"`` criterion (group means at parity).
"""

import numpy as np
from sklearn.model_selection import train_test_split

from fairsk import FairLayerRegressor
from fairsk.datasets import load_diabetes_sex
from fairsk.metrics import parity_gap, residual_gap

X, y, s = load_diabetes_sex()
y = (y - y.mean()) / y.std()
X_tr, X_te, y_tr, y_te, s_tr, s_te = train_test_split(X, y, s, test_size=0.3, random_state=0)
for criterion in ("eer", "ecp"):
    reg = FairLayerRegressor(criterion=criterion, tolerance=0.05, bounds=(-2.5, 2.5), max_epochs=40,
                             random_state=0, solver="exact")
    reg.fit(X_tr, y_tr, sensitive_features=s_tr)
    pred = reg.predict(X_te, sensitive_features=s_te)
    print(f"{criterion}: R^2 {reg.score(X_te, y_te, sensitive_features=s_te):.3f}, "
          f"parity gap {parity_gap(pred, s_te):.3f}, residual gap {residual_gap(y_te, pred, s_te):.3f}, "
          f"range [{pred.min():.2f}, {pred.max():.2f}]")
    assert np.all(pred >= -2.5) and np.all(pred <= 2.5)
