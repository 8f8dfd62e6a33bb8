"""FairLayerClassifier(criterion="equalized_odds") on Adult (sex): what holds where.

Fits the estimator on a sample of Adult's training file (the default
``calibration_fraction=0.2`` of it held out, stratified, for the thresholds), then
reports:

* the worst equalized-odds gap of one training batch's projected probabilities
  (``train_worst_batch_gap_``, recorded by a callback in every epoch);
* the gap of the calibrated labels on the calibration rows (``calibration_gap_``);
* the estimated gap on new data and its 95% bootstrap interval (``gap_estimate_``,
  ``gap_interval_``);
* the equalized-odds gap of the calibrated labels on Adult's test file, whether the
  interval covers it, and whether it is within ``tolerance`` + the interval's width;
* accuracy on the test file, with and without the calibrated thresholds.

    PYTHONPATH=. python benchmarks/odds_estimator.py [--rows 9000] [--epochs 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from fairsk import FairLayerClassifier
from fairsk.datasets import load_adult
from fairsk.metrics import equalized_odds_gap

TOLERANCE = 0.02


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=9000, help="rows of Adult's training file used by fit")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    X, y, s = load_adult(subset="train", sensitive=("sex",))
    X_test, y_test, s_test = load_adult(subset="test", sensitive=("sex",))
    rows = np.random.default_rng(args.seed).choice(len(y), size=min(args.rows, len(y)), replace=False)
    X, y, s = X.iloc[rows], y.iloc[rows].to_numpy(), s.iloc[rows]["sex"].to_numpy()
    s_test, y_test = s_test["sex"].to_numpy(), y_test.to_numpy()
    cat = [c for c in X.columns if str(X[c].dtype) in ("category", "object")]
    encode = ColumnTransformer([("num", StandardScaler(), [c for c in X.columns if c not in cat]),
                                ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), cat)])
    Z, Z_test = encode.fit_transform(X).astype(np.float32), encode.transform(X_test).astype(np.float32)

    clf = FairLayerClassifier(criterion="equalized_odds", tolerance=TOLERANCE, solver="exact",
                              max_epochs=args.epochs, batch_size=256, random_state=args.seed)
    start = time.perf_counter()
    clf.fit(Z, y, sensitive_features=s)
    fit_s = time.perf_counter() - start

    labels = clf.predict(Z_test, sensitive_features=s_test)
    argmax = clf.predict_proba(Z_test, sensitive_features=s_test).argmax(1)
    test_gap = equalized_odds_gap(y_test, labels, s_test)
    low, high = clf.gap_interval_
    print(f"Adult (sex): {len(y)} fit rows (calibration_fraction={clf.calibration_fraction} held out), "
          f"{len(y_test)} test rows, {args.epochs} epochs, tolerance={TOLERANCE}, fit {fit_s:.1f} s")
    print(f"worst training batch gap (projected probabilities): {clf.train_worst_batch_gap_:.8f}")
    print(f"gap of the calibrated labels on the calibration rows: {clf.calibration_gap_:.4f}")
    print(f"estimated gap on new data: {clf.gap_estimate_:.4f}, 95% interval [{low:.4f}, {high:.4f}]")
    print(f"test equalized-odds gap of the calibrated labels: {test_gap:.4f}")
    print(f"interval covers the test gap: {low <= test_gap <= high}")
    print(f"test gap <= tolerance + interval width ({TOLERANCE + high - low:.4f}): "
          f"{test_gap <= TOLERANCE + high - low}")
    print(f"test accuracy: calibrated {np.mean(labels == y_test):.4f}, argmax {np.mean(argmax == y_test):.4f} "
          f"(equalized-odds gap of the argmax labels {equalized_odds_gap(y_test, argmax, s_test):.4f})")


if __name__ == "__main__":
    main()
