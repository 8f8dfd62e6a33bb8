"""The fairness layer alone, in a few seconds: ``python -m fairsk.demo``.

On scikit-learn's diabetes table (``sex`` as the group), project a ridge regression's
test predictions at several tolerances and print the parity gap (largest minus
smallest group mean of the predictions, the quantity the tolerance bounds), the MSE
and the group means before and after. ``make demo`` runs this, then a short version
of the comparison with the baselines and fairlearn (``benchmarks/reproduce.py --quick``
in a source checkout).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_squared_error
from sklearn.model_selection import train_test_split

from fairsk import FairnessLayer
from fairsk.metrics import fairness_report, parity_gap


def main() -> None:
    layer_demo()


def layer_demo() -> None:
    data = load_diabetes(as_frame=True, scaled=False)
    X, y = data.data, data.target
    sex = X["sex"].map({1.0: "sex=1", 2.0: "sex=2"})
    X_tr, X_te, y_tr, y_te, s_tr, s_te = train_test_split(X, y, sex, test_size=0.5, random_state=0)
    model = Ridge(alpha=1.0).fit(X_tr, y_tr)
    raw = model.predict(X_te)
    codes = torch.as_tensor(np.unique(s_te, return_inverse=True)[1])
    print("diabetes (scikit-learn), sensitive attribute: sex; test set of", len(y_te), "patients\n")
    print("parity gap: largest minus smallest group mean of the predictions; the layer keeps it <= tolerance")
    print("MSE cost: MSE of the projected predictions over the ridge regression's own MSE\n")
    print(f"{'tolerance':>10} {'parity gap':>11} {'MSE':>9} {'MSE cost':>9}")
    base = mean_squared_error(y_te, raw)
    print(f"{'none':>10} {parity_gap(raw, s_te):>11.4f} {base:>9.1f} {'':>9}")
    for tol in (10.0, 1.0, 0.0):
        layer = FairnessLayer(tolerance=tol, solver="exact")
        fair = layer(torch.as_tensor(raw), codes).numpy()
        mse = mean_squared_error(y_te, fair)
        print(f"{tol:>10.1f} {parity_gap(fair, s_te):>11.4f} {mse:>9.1f} {mse / base:>8.3f}x")
    print("\nper-group means before and after projecting to tolerance 0:")
    fair = FairnessLayer(tolerance=0.0, solver="exact")(torch.as_tensor(raw), codes).numpy()
    before = fairness_report(y_te, raw, s_te.rename("sex"))
    after = fairness_report(y_te, fair, s_te.rename("sex"))
    print(before[["count", "mean_true"]].assign(mean_pred_before=before["mean_pred"],
                                                 mean_pred_after=after["mean_pred"]).round(2).to_string())


if __name__ == "__main__":
    main()
