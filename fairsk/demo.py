"""``make demo``: the main job, in a few minutes on 2 CPU cores.

1. The fairness layer alone, on scikit-learn's diabetes table (``sex``): project a
   ridge regression's test predictions and print the gaps and group means.
2. A short version of the paper's comparison (:mod:`fairsk.benchmarks`): Adult (sex),
   8,000 training rows, 2 seeds, tolerance 0.02: F-Layer, Projection, Penalty, Strict
   penalty, the unconstrained net and fairlearn, with the table and a trade-off plot.
   The full run is ``python -m fairsk.benchmarks``.
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
    print("\n" + "=" * 80 + "\nthe paper's comparison, short version (python -m fairsk.benchmarks for the full run)\n")
    from .benchmarks import run

    run(["adult"], seeds=[0, 1], tolerances=[0.02], epochs=5, adult_rows=8000, out_dir="demo_results")


def layer_demo() -> None:
    data = load_diabetes(as_frame=True, scaled=False)
    X, y = data.data, data.target
    sex = X["sex"].map({1.0: "sex=1", 2.0: "sex=2"})
    X_tr, X_te, y_tr, y_te, s_tr, s_te = train_test_split(X, y, sex, test_size=0.5, random_state=0)
    model = Ridge(alpha=1.0).fit(X_tr, y_tr)
    raw = model.predict(X_te)
    codes = torch.as_tensor(np.unique(s_te, return_inverse=True)[1])
    print("diabetes (scikit-learn), sensitive attribute: sex; test set of", len(y_te), "patients\n")
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
