"""Equal opportunity and equalized odds: fairsk's calibrated thresholds against fairlearn.

For each task (Adult with sex, Adult with race as white / non-white, German credit
with sex), on the same test rows:

* an unconstrained MLP (``FairLayerClassifier`` fitted without groups, i.e. the
  same net without its layer) and a logistic regression, trained on the "fit" rows;
* fairsk's :class:`~fairsk.calibration.ErrorRateCalibrator` on their scores,
  learnt on held-out "calibration" rows (deterministic thresholds, and the
  randomized rule for equalized odds), at several tolerances; and "cross-fitted":
  learnt on out-of-fold scores of every training row (5 fold models), applied to
  the base model refitted on all training rows;
* "F-Layer": the same MLP trained through the error-rate layer
  (``FairLayerClassifier(criterion="equalized_odds" | "equal_opportunity")``, exact
  solver): every training batch's probabilities meet the criterion within the
  tolerance (``train_worst_batch_gap_``, asserted here), then per-group thresholds
  on its scores, calibrated on the same held-out rows (``calibration_mask``) or
  cross-fitted (``calibration_cv=5``);
* fairlearn's ``ThresholdOptimizer`` (equalized odds, exact: fairlearn does not
  relax it; true-positive-rate parity at the same tolerances through its ``tol``) and ``ExponentiatedGradient``
  (``EqualizedOdds``, ``TruePositiveRateParity``, difference bound 0.02) with a
  logistic-regression base, trained on fit + calibration rows (they need no
  held-out data).

Reported: accuracy, AUC, the equalized-odds gap of the labels with a 95% bootstrap
interval over the test rows, the gap of the probabilities (the probability of a
positive label the method gives), the equal-opportunity gap of the labels, and for
fairsk the gap it predicted (``gap_estimate_``, ``gap_interval_``).

    PYTHONPATH=. python benchmarks/odds.py [--quick] [--datasets german adult-sex adult-race]

writes docs/results/odds.md, docs/results/odds.csv and docs/results/odds.png (the "Reading"
section of odds.md is written by hand after a run).
``--quick`` uses fewer rows (for a smoke test); ``--datasets`` runs some tasks only (in the
order given). The result files are rewritten after every task, so an interrupted run keeps
the tasks it finished.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from fairsk import FairLayerClassifier
from fairsk.calibration import ErrorRateCalibrator
from fairsk.datasets import load_adult, load_german_credit
from fairsk.metrics import equal_opportunity_gap, equalized_odds_gap

OUT = Path(__file__).resolve().parents[1] / "docs" / "results"
TOLERANCES = [0.0, 0.02, 0.05, 0.1]
MAIN_TOL = 0.02
N_BOOT = 200
N_FOLDS = 5


def _encoder(X: pd.DataFrame) -> ColumnTransformer:
    cat = [c for c in X.columns if str(X[c].dtype) in ("category", "object")]
    num = [c for c in X.columns if c not in cat]
    return ColumnTransformer([("num", StandardScaler(), num),
                              ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), cat)])


DATASETS = ("adult-sex", "adult-race", "german")


def tasks(quick: bool, datasets=DATASETS):
    """(name, X_train, y_train, s_train, X_test, y_test, s_test) with string groups, in the
    order of ``datasets``."""
    adult = None
    for dataset in datasets:
        if dataset.startswith("adult") and adult is None:
            n_adult = 3000 if quick else 12000
            X, y, s = load_adult(subset="train", sensitive=("sex", "race"))
            X_te, y_te, s_te = load_adult(subset="test", sensitive=("sex", "race"))
            keep = np.random.default_rng(0).permutation(len(y))[:n_adult]
            X, y, s = X.iloc[keep].reset_index(drop=True), y.iloc[keep].reset_index(drop=True), s.iloc[keep]
            if quick:
                X_te, y_te, s_te = X_te.iloc[:3000], y_te.iloc[:3000], s_te.iloc[:3000]
            adult = X, y, s, X_te, y_te, s_te  # the two Adult tasks share their rows
        if dataset == "adult-sex":
            X, y, s, X_te, y_te, s_te = adult
            yield "Adult (sex)", X, y, s["sex"].to_numpy(), X_te, y_te, s_te["sex"].to_numpy()
        elif dataset == "adult-race":
            X, y, s, X_te, y_te, s_te = adult
            race = lambda r: np.where(r.to_numpy() == "White", "white", "non-white")  # noqa: E731
            yield "Adult (race)", X, y, race(s["race"]), X_te, y_te, race(s_te["race"])
        else:
            Xg, yg, sg = load_german_credit(sensitive=("sex",))
            Xa, Xb, ya, yb, sa, sb = train_test_split(Xg, yg, sg["sex"].to_numpy(), test_size=0.3,
                                                      random_state=0, stratify=yg)
            yield "German credit (sex)", Xa, ya, sa, Xb, yb, sb


def test_gaps(y, labels, groups, rng) -> dict:
    """Equalized-odds and equal-opportunity gaps of 0/1 labels, with bootstrap percentile
    intervals (95%) over the test rows."""
    y, labels = np.asarray(y), np.asarray(labels).astype(float)
    codes = np.unique(groups, return_inverse=True)[1].reshape(-1)
    k, n = codes.max() + 1, len(y)
    boot = []
    for w in rng.multinomial(n, np.full(n, 1 / n), size=N_BOOT):
        per_stratum = []
        for mask in (y == 1, y == 0):
            cnt = np.bincount(codes[mask], w[mask], k)
            hit = np.bincount(codes[mask], w[mask] * labels[mask], k)
            rates = hit[cnt > 0] / cnt[cnt > 0]
            per_stratum.append(rates.max() - rates.min())
        boot.append((max(per_stratum), per_stratum[0]))
    (odds_low, eo_low), (odds_high, eo_high) = np.quantile(np.array(boot), [0.025, 0.975], axis=0)
    return {"eodds_gap": equalized_odds_gap(y, labels, groups), "eodds_low": odds_low, "eodds_high": odds_high,
            "eo_gap": equal_opportunity_gap(y, labels, groups), "eo_low": eo_low, "eo_high": eo_high}


def evaluate(rows, task, method, base, tol, y_te, s_te, labels, proba, seconds, cal=None, batch_gap=np.nan):
    rng = np.random.default_rng(1)
    rows.append({
        "task": task, "method": method, "base": base, "tolerance": tol,
        "accuracy": float(np.mean(np.asarray(labels) == np.asarray(y_te))),
        "positive_rate": float(np.mean(np.asarray(labels) == 1)),
        "auc": float(roc_auc_score(y_te, proba)) if np.unique(proba).size > 2 else np.nan,
        **test_gaps(y_te, labels, s_te, rng),
        "eodds_gap_proba": equalized_odds_gap(y_te, proba, s_te),
        "eo_gap_proba": equal_opportunity_gap(y_te, proba, s_te),
        **_predicted(cal, len(y_te)),
        "train_worst_batch_gap": batch_gap,
        "seconds": seconds,
    })


def _predicted(cal, n_test: int) -> dict:
    """The gap the calibrator announces for a test set of ``n_test`` rows."""
    if cal is None:
        return {"predicted_gap": np.nan, "predicted_low": np.nan, "predicted_high": np.nan}
    estimate, (low, high) = cal.estimate_gap(n_test)
    return {"predicted_gap": estimate, "predicted_low": low, "predicted_high": high}


def _mlp():
    return FairLayerClassifier(hidden_layer_sizes=(64,), max_epochs=15, batch_size=512, lr=0.005, random_state=0)


def _flayer(criterion: str, tol: float, **calibration) -> FairLayerClassifier:
    """The MLP of ``_mlp`` trained through the error-rate layer (exact projection)."""
    return FairLayerClassifier(hidden_layer_sizes=(64,), max_epochs=15, batch_size=512, lr=0.005, random_state=0,
                               criterion=criterion, tolerance=tol, solver="exact", **calibration)


FLAYER = (("equalized_odds", "EOdds"), ("equal_opportunity", "EO"))


def flayer_rows(rows, name, Z, y, s, Z_te, y_te, s_te, label, mask=None, **calibration) -> None:
    """F-Layer rows: the net trained through the layer at every tolerance, its calibrated
    thresholds evaluated on the test rows; every training batch must meet the criterion."""
    for tol in TOLERANCES:
        for criterion, short in FLAYER:
            t = time.perf_counter()
            clf = _flayer(criterion, tol, **calibration).fit(Z, y, sensitive_features=s, calibration_mask=mask)
            seconds = time.perf_counter() - t
            gap = clf.train_worst_batch_gap_
            assert gap is not None and gap <= tol + 1e-6, (name, label, criterion, tol, gap)
            labels = clf.predict(Z_te, sensitive_features=s_te)
            # deterministic thresholds: the probability of a positive label is the label
            evaluate(rows, name, f"{label} {short}", "MLP", tol, y_te, s_te, labels, labels.astype(float), seconds,
                     clf.calibrator_, gap)
    print(f"  {name}: {label} done", flush=True)


def cross_fitted_bases(Z, y, strata) -> dict:
    """Out-of-fold scores of every training row (5 fold models) and the base models
    refitted on all training rows, for calibration on every training row."""
    folds = StratifiedKFold(N_FOLDS, shuffle=True, random_state=0).split(Z, strata)
    oof = {"MLP": np.empty(len(y)), "LR": np.empty(len(y))}
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "no sensitive_features": intended
        for train, test in folds:
            oof["MLP"][test] = _mlp().fit(Z[train].astype(np.float32), y[train]).predict_proba(
                Z[test].astype(np.float32))[:, 1]
            oof["LR"][test] = LogisticRegression(solver="liblinear").fit(Z[train], y[train]).predict_proba(
                Z[test])[:, 1]
        mlp = _mlp().fit(Z.astype(np.float32), y)
    lr = LogisticRegression(solver="liblinear").fit(Z, y)
    seconds = time.perf_counter() - t
    return {"MLP": (oof["MLP"], mlp, seconds), "LR": (oof["LR"], lr, seconds)}


def run_task(rows, name, X, y, s, X_te, y_te, s_te, models_cache):
    from fairlearn.postprocessing import ThresholdOptimizer
    from fairlearn.reductions import EqualizedOdds, ExponentiatedGradient, TruePositiveRateParity

    y, y_te = np.asarray(y), np.asarray(y_te)
    idx_fit, idx_cal = train_test_split(np.arange(len(y)), test_size=0.3, random_state=0,
                                        stratify=np.char.add(s.astype(str), y.astype(str)))
    X_fit, X_cal, y_fit, y_cal, s_fit, s_cal = X.iloc[idx_fit], X.iloc[idx_cal], y[idx_fit], y[idx_cal], \
        s[idx_fit], s[idx_cal]
    # the two Adult tasks share rows but split them differently (stratified by their groups)
    key = (id(X), hash(idx_fit.tobytes()))
    if key not in models_cache:
        pre = _encoder(X).fit(X_fit)
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "no sensitive_features": intended
            mlp = _mlp().fit(pre.transform(X_fit).astype(np.float32), y_fit)
        t_mlp = time.perf_counter() - t
        t = time.perf_counter()
        lr = LogisticRegression(solver="liblinear").fit(pre.transform(X_fit), y_fit)
        t_lr = time.perf_counter() - t
        models_cache[key] = (pre, mlp, t_mlp, lr, t_lr)
    pre, mlp, t_mlp, lr, t_lr = models_cache[key]
    Z_cal, Z_te = pre.transform(X_cal), pre.transform(X_te)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        bases = {
            "MLP": (mlp.predict_proba(Z_cal.astype(np.float32))[:, 1], mlp.predict_proba(Z_te.astype(np.float32))[:, 1],
                    t_mlp),
            "LR": (lr.predict_proba(Z_cal)[:, 1], lr.predict_proba(Z_te)[:, 1], t_lr),
        }
    for base, (p_cal, p_te, t_base) in bases.items():
        evaluate(rows, name, "unconstrained", base, np.nan, y_te, s_te, (p_te > 0.5).astype(int), p_te, t_base)
        for tol in TOLERANCES:
            for crit, rnd, label in (("equalized_odds", False, "fairsk calibrated EOdds"),
                                     ("equalized_odds", True, "fairsk calibrated EOdds (randomized)"),
                                     ("equal_opportunity", False, "fairsk calibrated EO")):
                if rnd and base == "LR":
                    continue
                t = time.perf_counter()
                cal = ErrorRateCalibrator(crit, tol, randomize=rnd).fit(p_cal, y_cal, s_cal)
                seconds = time.perf_counter() - t
                evaluate(rows, name, label, base, tol, y_te, s_te, cal.predict(p_te, s_te),
                         cal.emit_probability(p_te, s_te), seconds, cal)
        print(f"  {name}: {base} done", flush=True)

    # cross-fitted: thresholds learnt on out-of-fold scores of all training rows, applied
    # to the base model refitted on all of them
    strata = np.char.add(s.astype(str), y.astype(str))
    key = ("cv", id(X))
    if key not in models_cache:
        pre_all = _encoder(X).fit(X)
        models_cache[key] = (pre_all, cross_fitted_bases(pre_all.transform(X), y, strata))
    pre_all, cv_bases = models_cache[key]
    Z_te_all = pre_all.transform(X_te)
    for base, (p_oof, model, t_base) in cv_bases.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            p_te = model.predict_proba(Z_te_all.astype(np.float32) if base == "MLP" else Z_te_all)[:, 1]
        for tol in TOLERANCES:
            for crit, rnd, label in (("equalized_odds", False, "fairsk cross-fitted EOdds"),
                                     ("equalized_odds", True, "fairsk cross-fitted EOdds (randomized)"),
                                     ("equal_opportunity", False, "fairsk cross-fitted EO")):
                t = time.perf_counter()
                cal = ErrorRateCalibrator(crit, tol, randomize=rnd).fit(p_oof, y, s)
                seconds = time.perf_counter() - t + t_base
                evaluate(rows, name, label, base, tol, y_te, s_te, cal.predict(p_te, s_te),
                         cal.emit_probability(p_te, s_te), seconds, cal)
    print(f"  {name}: cross-fitted done", flush=True)

    # F-Layer: the MLP trained through the error-rate layer, cross-fitted, then held-out
    Z_all, Z_te32 = pre_all.transform(X).astype(np.float32), Z_te_all.astype(np.float32)
    flayer_rows(rows, name, Z_all, y, s, Z_te32, y_te, s_te, "fairsk F-Layer cross-fitted",
                calibration_cv=N_FOLDS)
    held_out = np.isin(np.arange(len(y)), idx_cal)
    flayer_rows(rows, name, pre.transform(X).astype(np.float32), y, s, Z_te.astype(np.float32), y_te, s_te,
                "fairsk F-Layer", mask=held_out)

    # fairlearn, logistic-regression base, on fit + calibration rows
    X_all = pd.concat([X_fit, X_cal])
    y_all, s_all = np.r_[y_fit, y_cal], np.r_[s_fit, s_cal]
    for constraints, label in (("equalized_odds", "fairlearn ThresholdOptimizer EOdds"),
                               ("true_positive_rate_parity", "fairlearn ThresholdOptimizer TPR")):
        # fairlearn relaxes only the single-rate constraints (tol); equalized odds is exact
        for tol in TOLERANCES if constraints != "equalized_odds" else [0.0]:
            t = time.perf_counter()
            to = ThresholdOptimizer(estimator=make_pipeline(_encoder(X), LogisticRegression(solver="liblinear")),
                                    constraints=constraints, predict_method="predict_proba",
                                    tol=None if tol == 0 else tol)
            to.fit(X_all, y_all, sensitive_features=s_all)
            seconds = time.perf_counter() - t
            labels = to.predict(X_te, sensitive_features=s_te, random_state=0)
            proba = to._pmf_predict(X_te, sensitive_features=s_te)[:, 1]
            evaluate(rows, name, label, "LR", tol, y_te, s_te, labels, proba, seconds)
    print(f"  {name}: ThresholdOptimizer done", flush=True)
    for moment, label in ((EqualizedOdds, "fairlearn ExpGrad EOdds"),
                          (TruePositiveRateParity, "fairlearn ExpGrad TPR")):
        t = time.perf_counter()
        pre_all = _encoder(X).fit(X_all)  # the reduction reweights rows: the base takes encoded arrays
        eg = ExponentiatedGradient(LogisticRegression(solver="liblinear"),
                                   constraints=moment(difference_bound=MAIN_TOL), max_iter=30)
        eg.fit(pre_all.transform(X_all), y_all, sensitive_features=s_all)
        seconds = time.perf_counter() - t
        labels = eg.predict(pre_all.transform(X_te), random_state=0)
        proba = eg._pmf_predict(pre_all.transform(X_te))[:, 1]
        evaluate(rows, name, label, "LR", MAIN_TOL, y_te, s_te, labels, proba, seconds)
    print(f"  {name}: ExponentiatedGradient done", flush=True)


def write_table(df: pd.DataFrame, path: Path, command: str, total: float, quick: bool) -> None:
    rows_note = ("Adult: 3,000 rows of the training file, the first 3,000 of the test file" if quick else
                 "Adult: 12,000 rows drawn from the training file, tested on the whole test file (15,060 rows)")
    lines = ["# Equal opportunity and equalized odds: fairsk calibration against fairlearn", "",
             f"Made by `{command}` ({total:.0f} s on 2 shared CPU cores). {rows_note}; German credit: "
             "700 training and 300 test rows (stratified). fairsk's models are trained on 70% of the "
             "training rows and calibrated on the other 30% (stratified by group and label); \"cross-fitted\" "
             f"rows calibrate instead on out-of-fold scores of all training rows ({N_FOLDS} fold models) and "
             "apply the thresholds to the base model refitted on all of them; fairlearn's "
             "methods use all training rows (they need no held-out rows). MLP: `FairLayerClassifier` "
             "fitted without groups (the same net without its layer; 64 hidden units, 15 epochs); LR: "
             "logistic regression (liblinear). \"F-Layer\": the same MLP trained through the error-rate layer "
             "(`FairLayerClassifier(criterion=\"equalized_odds\" | \"equal_opportunity\", tolerance=tol, "
             "solver=\"exact\")`): the probabilities of every training batch are projected so that the "
             "criterion holds on that batch within the tolerance (\"batch gap\": `train_worst_batch_gap_`, "
             "the largest gap of any training batch, checked by the script to be at most the tolerance + 1e-6); "
             "its per-group thresholds are then calibrated on the same held-out rows as the other held-out rows "
             "(`calibration_mask`), or cross-fitted (`calibration_cv=5`: 5 fold models trained through the layer, "
             "the net refitted on all training rows).", "",
             "Test gaps are measured on the test rows, with a 95% bootstrap interval over those rows. "
             "\"predicted\" is the gap fairsk's calibrator announced before seeing the test rows "
             "(`estimate_gap(n_test)`: the thresholds' population rates drawn by a bootstrap of the "
             "calibration, plus the binomial noise of a test set of the test rows' size), for its own "
             "criterion; \"in?\" says whether the test gap of that criterion lies in "
             "the announced interval. EOdds = equalized odds, EO = equal opportunity (TPR parity). "
             "Deterministic fairsk labels have no AUC (two values). Rows at tolerance "
             f"{MAIN_TOL}, fairlearn's exact ThresholdOptimizer(equalized_odds) and the unconstrained models; "
             "every tolerance (0, 0.02, 0.05, 0.1) is in `odds.csv` and the plot.", ""]
    main = df[(df.tolerance == MAIN_TOL) | df.tolerance.isna() | (df.method == "fairlearn ThresholdOptimizer EOdds")]
    for task, part in main.groupby("task", sort=False):
        lines += [f"## {task}", "",
                  "| method | base | tol | accuracy | AUC | EOdds gap (labels) [95%] | EOdds gap (proba) "
                  "| EO gap (labels) [95%] | predicted gap [95%] | in? | batch gap |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in part.itertuples():
            pred = covered = ""
            if not np.isnan(r.predicted_gap):
                pred = f"{r.predicted_gap:.3f} [{r.predicted_low:.3f}, {r.predicted_high:.3f}]"
                measured = r.eo_gap if r.method.endswith("EO") else r.eodds_gap
                covered = "yes" if r.predicted_low - 1e-9 <= measured <= r.predicted_high + 1e-9 else "no"
            auc = "" if np.isnan(r.auc) else f"{r.auc:.3f}"
            tol = "" if np.isnan(r.tolerance) else f"{r.tolerance:g}"
            batch = "" if np.isnan(r.train_worst_batch_gap) else f"{r.train_worst_batch_gap:.4f}"
            lines.append(f"| {r.method} | {r.base} | {tol} | {r.accuracy:.3f} | {auc} | {r.eodds_gap:.3f} "
                         f"[{r.eodds_low:.3f}, {r.eodds_high:.3f}] | {r.eodds_gap_proba:.3f} | {r.eo_gap:.3f} "
                         f"[{r.eo_low:.3f}, {r.eo_high:.3f}] | {pred} | {covered} | {batch} |")
        lines.append("")
    fairsk = df[df.method.str.startswith("fairsk")]
    measured = np.where(fairsk.method.str.endswith("EO"), fairsk.eo_gap, fairsk.eodds_gap)
    inside = (fairsk.predicted_low - 1e-9 <= measured) & (measured <= fairsk.predicted_high + 1e-9)
    lines += [f"Over all {len(fairsk)} fairsk rows (every tolerance), the test gap lies in the announced "
              f"interval in {int(inside.sum())}; the test gap is within tolerance + the interval's width in "
              f"{int((measured <= fairsk.tolerance + fairsk.predicted_high - fairsk.predicted_low + 1e-9).sum())}.",
              ""]
    path.write_text("\n".join(lines) + "\n")


def plot(df: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task_names = list(dict.fromkeys(df.task))
    fig, axes = plt.subplots(2, len(task_names), figsize=(5.5 * len(task_names), 9), squeeze=False)
    # top row: equalized-odds methods on the equalized-odds gap; bottom: equal opportunity
    panels = {
        "eodds": {
            ("fairsk calibrated EOdds", "MLP"): ("C0", "o", "-"),
            ("fairsk calibrated EOdds (randomized)", "MLP"): ("C0", "s", ":"),
            ("fairsk calibrated EOdds", "LR"): ("C2", "o", "-"),
            ("fairsk cross-fitted EOdds", "LR"): ("C1", "o", "--"),
            ("fairsk cross-fitted EOdds (randomized)", "LR"): ("C1", "s", ":"),
            ("fairsk cross-fitted EOdds (randomized)", "MLP"): ("C9", "s", ":"),
            ("fairsk F-Layer cross-fitted EOdds", "MLP"): ("C6", "h", "-"),
            ("fairsk F-Layer EOdds", "MLP"): ("C8", "h", ":"),
            ("fairlearn ThresholdOptimizer EOdds", "LR"): ("C3", "D", ""),
            ("fairlearn ExpGrad EOdds", "LR"): ("C4", "P", ""),
        },
        "eo": {
            ("fairsk calibrated EO", "MLP"): ("C0", "^", "-"),
            ("fairsk calibrated EO", "LR"): ("C2", "^", "-"),
            ("fairsk cross-fitted EO", "LR"): ("C1", "^", "--"),
            ("fairsk F-Layer cross-fitted EO", "MLP"): ("C6", "p", "-"),
            ("fairsk F-Layer EO", "MLP"): ("C8", "p", ":"),
            ("fairlearn ThresholdOptimizer TPR", "LR"): ("C3", "v", "-"),
            ("fairlearn ExpGrad TPR", "LR"): ("C4", "X", ""),
        },
    }
    unconstrained = {("unconstrained", "MLP"): ("k", "*", ""), ("unconstrained", "LR"): ("0.5", "*", "")}
    for row, (gap, styles) in enumerate(panels.items()):
        name = "equalized-odds" if gap == "eodds" else "equal-opportunity"
        for ax, task in zip(axes[row], task_names):
            part = df[df.task == task]
            for (method, base), (color, marker, line) in {**styles, **unconstrained}.items():
                sub = part[(part.method == method) & (part.base == base)].sort_values("tolerance")
                sub = sub[(sub.positive_rate > 0) & (sub.positive_rate < 1)]  # constant rules: in the csv only
                if sub.empty:
                    continue
                x = sub[f"{gap}_gap"]
                xerr = [np.clip(x - sub[f"{gap}_low"], 0, None), np.clip(sub[f"{gap}_high"] - x, 0, None)]
                ax.errorbar(x, sub.accuracy, xerr=xerr, color=color, marker=marker, linestyle=line or "none",
                            capsize=2, alpha=0.8, lw=0.8, label=f"{method} ({base})")
            ax.set_title(f"{task}: {'equalized odds' if gap == 'eodds' else 'equal opportunity'}")
            ax.set_xlabel(f"test {name} gap of the labels (95% interval)")
            ax.set_ylabel("test accuracy")
            ax.grid(alpha=0.3)
        axes[row][0].legend(fontsize=6.5, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows, cache = [], {}
    command = "PYTHONPATH=. python benchmarks/odds.py" + (" --quick" if args.quick else "")
    if list(args.datasets) != list(DATASETS):
        command += " --datasets " + " ".join(args.datasets)
    stem = "odds_quick" if args.quick else "odds"
    for task in tasks(args.quick, args.datasets):
        print(task[0], flush=True)
        run_task(rows, *task, cache)
        # written after every task: an interrupted run keeps the tasks it finished
        df = pd.DataFrame(rows)
        total = time.perf_counter() - t0
        df.to_csv(args.out / f"{stem}.csv", index=False, float_format="%.4f")
        write_table(df, args.out / f"{stem}.md", command, total, args.quick)
        plot(df, args.out / f"{stem}.png")
        print(f"  written after {total:.0f} s", flush=True)
    print(f"done in {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
