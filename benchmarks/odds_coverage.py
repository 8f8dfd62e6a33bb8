"""Does the calibrator's interval cover the gap users measure? Adult (sex), several splits.

For every seed, Adult's train and test files are pooled and split into fit (40%),
calibration (20%) and test (40%) rows, stratified by label. A logistic regression is
trained on the fit rows; :class:`~fairsk.calibration.ErrorRateCalibrator` (tolerance
0.02, deterministic thresholds) learns per-sex thresholds on its calibration scores;
the test gap of the calibrated labels is measured and compared with the interval the
calibrator announced for a test set of that size (``estimate_gap(len(test))``), and
with the default interval (``gap_interval_``, ``test_size="calibration"``). "cross-fit"
rows calibrate instead on 5-fold out-of-fold scores of all fit + calibration rows and
apply the thresholds to the model refitted on all of them.

    PYTHONPATH=. python benchmarks/odds_coverage.py [--seeds 10]

writes benchmarks/results/odds_coverage.txt.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict, train_test_split
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from fairsk.calibration import ErrorRateCalibrator, error_rate_gap
from fairsk.datasets import load_adult

OUT = Path(__file__).resolve().parent / "results" / "odds_coverage.txt"
TOL = 0.02


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    t0 = time.perf_counter()
    X1, y1, s1 = load_adult(subset="train", sensitive=("sex",))
    X2, y2, s2 = load_adult(subset="test", sensitive=("sex",))
    X = pd.concat([X1, X2], ignore_index=True)
    y = np.r_[np.asarray(y1), np.asarray(y2)]
    s = np.r_[np.asarray(s1).reshape(-1), np.asarray(s2).reshape(-1)]
    cat = [c for c in X1.columns if str(X1[c].dtype) == "category"]
    num = [c for c in X.columns if c not in cat]
    X[cat] = X[cat].astype(str)  # the two files' categories differ; the encoder needs one kind
    lines = [f"# {__doc__.splitlines()[0]}", f"# PYTHONPATH=. python benchmarks/odds_coverage.py --seeds {args.seeds}",
             f"# {len(y)} rows pooled; tolerance {TOL}; 95% intervals from 100 bootstrap resamples",
             "criterion          mode      seed  n_cal n_test  accuracy  raw_gap  cal_gap  test_gap  "
             "interval(n_test)    in?  "
             "interval(default)   in?  width<=?"]
    counts: dict = {}
    for seed in range(args.seeds):
        X_rest, X_te, y_rest, y_te, s_rest, s_te = train_test_split(X, y, s, test_size=0.4, random_state=seed,
                                                                    stratify=y)
        X_fit, X_cal, y_fit, y_cal, s_fit, s_cal = train_test_split(X_rest, y_rest, s_rest, test_size=1 / 3,
                                                                    random_state=seed, stratify=y_rest)
        pre = ColumnTransformer([("num", StandardScaler(), num),
                                 ("cat", OneHotEncoder(handle_unknown="ignore"), cat)])
        model = LogisticRegression(max_iter=500).fit(pre.fit_transform(X_fit), y_fit)
        cal_scores = model.decision_function(pre.transform(X_cal))
        te_scores = model.decision_function(pre.transform(X_te))
        # cross-fitted: out-of-fold scores of every fit + calibration row, the model refitted on all of them
        pre_all = ColumnTransformer([("num", StandardScaler(), num),
                                     ("cat", OneHotEncoder(handle_unknown="ignore"), cat)]).fit(X_rest)
        Z_rest = pre_all.transform(X_rest)
        folds = StratifiedKFold(5, shuffle=True, random_state=seed)
        oof = cross_val_predict(LogisticRegression(max_iter=500), Z_rest, y_rest, method="decision_function",
                                cv=folds.split(Z_rest, np.char.add(s_rest.astype(str), y_rest.astype(str))))
        te_all = LogisticRegression(max_iter=500).fit(Z_rest, y_rest).decision_function(pre_all.transform(X_te))
        for criterion, mode in itertools.product(("equalized_odds", "equal_opportunity"), ("held-out", "cross-fit")):
            if mode == "held-out":
                cal = ErrorRateCalibrator(criterion, TOL, random_state=seed).fit(cal_scores, y_cal, s_cal)
                labels = cal.predict(te_scores, s_te)
            else:
                cal = ErrorRateCalibrator(criterion, TOL, random_state=seed).fit(oof, y_rest, s_rest)
                labels = cal.predict(te_all, s_te)
            accuracy = float(np.mean(labels == y_te))
            test_gap = error_rate_gap(criterion, y_te, labels, s_te)
            raw_gap = error_rate_gap(criterion, y_te, te_scores > 0, s_te)
            _, (lo, hi) = cal.estimate_gap(len(y_te))
            dlo, dhi = cal.gap_interval_
            inside, inside_default = lo <= test_gap <= hi, dlo <= test_gap <= dhi
            within = test_gap <= TOL + (hi - lo)
            c = counts.setdefault((criterion, mode), [0, 0, 0, 0, 0.0])
            c[0] += inside
            c[1] += inside_default
            c[2] += within
            c[3] += 1
            c[4] += accuracy / args.seeds
            lines.append(f"{criterion:18s} {mode:9s} {seed:4d} {cal.n_calibration_:6d} {len(y_te):6d}  {accuracy:.4f}  "
                         f"{raw_gap:7.4f}  "
                         f"{cal.calibration_gap_:7.4f}  {test_gap:8.4f}  [{lo:.4f}, {hi:.4f}]  "
                         f"{'yes' if inside else 'NO':>4s}"
                         f"  [{dlo:.4f}, {dhi:.4f}]  {'yes' if inside_default else 'NO':>4s}  "
                         f"{'yes' if within else 'NO':>4s}")
            print(lines[-1], flush=True)
    lines.append("")
    for (criterion, mode), (inside, inside_default, within, n, accuracy) in counts.items():
        lines.append(f"{criterion} {mode}: interval(n_test) covered the test gap {inside}/{n}, the default "
                     f"interval {inside_default}/{n}; test gap <= tolerance + width {within}/{n}; "
                     f"mean test accuracy {accuracy:.4f}")
    lines.append(f"total {time.perf_counter() - t0:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-3:]))


if __name__ == "__main__":
    main()
