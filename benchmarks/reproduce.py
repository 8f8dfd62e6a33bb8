"""F-Layer against the paper's baselines and fairlearn, on the same splits.

    python benchmarks/reproduce.py [--quick] [--datasets adult adult-sex-race german employee-rating ...]
                                   [--employee-csv PATH] [--adult-rows N] [--out DIR]
    python benchmarks/reproduce.py --plot-only docs/results/decisions   # redraw tradeoff.png

For each dataset, seed and tolerance it trains, with the same MLP and training recipe
(``TRAINING``, ``--epochs``, the seed): F-Layer, Projection and Penalty (lam by held-out
gap) in their modes (``MODES``: "logits", the paper's guarantee; "labels" and "proba",
the decision guarantees), the strict penalty (lam = 1e3) and an unconstrained net; and,
for classification, fairlearn's ExponentiatedGradient and ThresholdOptimizer (demographic
parity, a logistic regression base, at the same tolerance) and ThresholdOptimizer on
the unconstrained net. Every method is measured the same way on the same test rows:
accuracy, AUC, the selection-rate gap of its labels and the gap of its probabilities
(the largest over the sensitive attributes). It prints a line per fitted model and one
table per dataset, writes ``results.csv``, ``results_raw.csv``, ``versus_fairlearn.csv``
and ``results.md`` and draws ``tradeoff.png``.

The fairsk methods use ``solver="exact"`` (the closed form; qpth's interior point is
orders of magnitude slower at these batch sizes). Data come from
:mod:`fairsk.datasets`: Adult and German credit are bundled, diabetes is
scikit-learn's; the paper's employee table is not shipped, so the employee cases
(``employee``: the paper's regression; ``employee-rating``: performance rating >= 3,
marital status as the group) run only with ``--employee-csv`` (or the
``FAIRSK_EMPLOYEE_CSV`` environment variable).

``--quick`` is the short run of ``make demo``: Adult only (8,000 training rows), 2
seeds, tolerance 0.02, 5 epochs, written to ``demo_results/``.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, mean_squared_error, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from fairsk import FairLayerClassifier, FairLayerRegressor, FairnessLayer
from fairsk.baselines import PenaltyClassifier, PenaltyRegressor, ProjectionClassifier, ProjectionRegressor
from fairsk.datasets import (
    load_adult,
    load_diabetes_sex,
    load_employee_performance,
    load_employee_rating,
    load_german_credit,
)
from fairsk.metrics import encode_sensitive, parity_gap, residual_gap, selection_rate_gap

#: binary decisions (every method, every mode) and the paper's regression cases
CLASSIFICATION = ("adult", "adult-sex-race", "german", "employee-rating")
DATASETS = (*CLASSIFICATION, "employee", "diabetes")
#: sensitive attributes of each case (the label and probability gaps are the largest over them)
SENSITIVE = {"adult": ("sex",), "adult-sex-race": ("sex", "race"), "german": ("sex",),
             "employee-rating": ("MaritalStatus",)}
#: the one training recipe of every net (the same body, optimiser and schedule for all)
TRAINING = dict(hidden_layer_sizes=(64,), lr=3e-3, batch_size=128)

#: what the printed columns mean (printed under the tables)
LEGEND = """\
gap       parity gap (largest minus smallest group mean) of the test logits (classifiers, mode
          "logits" only) or predictions (regressors), one call over the whole test set;
          employee: the residual gap. Bounded by F-Layer and Projection in mode "logits".
rate_gap  gap in selection rates of the predicted labels (share predicted 1 per group, largest
          minus smallest; with several attributes the largest over them): demographic parity,
          fairlearn's criterion. Bounded per call in mode "labels" (F-Layer, Projection).
proba_gap gap of the group means of the predicted probability of class 1 (fairlearn EG: its
          randomised classifier's probability; ThresholdOptimizer's are not public); bounded
          in modes "labels" and "proba".
met       seeds in which the method's own criterion was within the tolerance: gap in mode
          "logits", rate_gap in mode "labels" and for fairlearn, proba_gap in mode "proba"
          ("-": the unconstrained net has no tolerance).
rate_met  seeds in which rate_gap was within the tolerance, for every method."""
LEGEND_EER = """\
train_gap residual gap of the predictions on the training split; audit_mse, audit_gap: MSE and
          residual gap of those predictions projected with their targets (the paper's audit)."""


def _encode(X_tr: pd.DataFrame, X_te: pd.DataFrame):
    cat = [c for c in X_tr.columns if not pd.api.types.is_numeric_dtype(X_tr[c])]
    num = [c for c in X_tr.columns if c not in cat]
    pre = ColumnTransformer(
        [("num", StandardScaler(), num), ("cat", OneHotEncoder(handle_unknown="ignore"), cat)], sparse_threshold=0
    )
    return pre.fit_transform(X_tr).astype(np.float64), pre.transform(X_te).astype(np.float64)


def _sensitive_array(s: pd.DataFrame) -> np.ndarray:
    """One column: a 1-D array; several: a 2-D array, one column per attribute."""
    arr = s.to_numpy().astype(str)
    return arr[:, 0] if arr.shape[1] == 1 else arr


def load_case(name: str, seed: int, adult_rows: int | None, employee_csv: str | Path | None = None):
    """(kind, criterion, A_tr, y_tr, s_tr, A_te, y_te, s_te) for one dataset and seed.

    The sensitive features are a 1-D array for one attribute, a 2-D array (one column
    per attribute) for several."""
    if name in ("adult", "adult-sex-race"):
        cols = SENSITIVE[name]
        X_tr, y_tr, s_tr = load_adult(subset="train", sensitive=cols)
        X_te, y_te, s_te = load_adult(subset="test", sensitive=cols)
        if adult_rows:
            keep = np.random.default_rng(seed).choice(len(y_tr), size=min(adult_rows, len(y_tr)), replace=False)
            X_tr, y_tr, s_tr = X_tr.iloc[keep], y_tr.iloc[keep], s_tr.iloc[keep]
        A_tr, A_te = _encode(X_tr, X_te)
        s_tr, s_te = _sensitive_array(s_tr), _sensitive_array(s_te)
        return "clf", "ecp", A_tr, y_tr.to_numpy(), s_tr, A_te, y_te.to_numpy(), s_te
    if name == "german":
        X, y, s = load_german_credit(sensitive=("sex",))
        kind, criterion, s = "clf", "ecp", s["sex"]
    elif name == "employee-rating":
        if employee_csv is None:
            raise ValueError("the employee-rating case needs the path of employee_performance.csv (--employee-csv)")
        X, y, s = load_employee_rating(employee_csv, sensitive=SENSITIVE[name])
        kind, criterion, s = "clf", "ecp", _sensitive_array(s)
    elif name == "diabetes":
        X, y, s = load_diabetes_sex()
        kind, criterion = "reg", "ecp"
    elif name == "employee":
        if employee_csv is None:
            raise ValueError("the employee case needs the path of employee_performance.csv (--employee-csv)")
        X, y, s = load_employee_performance(employee_csv)
        kind, criterion = "reg", "eer"
    else:
        raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}")
    strat = y if kind == "clf" else None
    X_tr, X_te, y_tr, y_te, s_tr, s_te = train_test_split(X, y, s, test_size=0.3, random_state=seed, stratify=strat)
    A_tr, A_te = _encode(X_tr, X_te)
    s_tr, s_te = np.asarray(s_tr), np.asarray(s_te)
    y_tr, y_te = np.asarray(y_tr, dtype=float if kind == "reg" else None), np.asarray(y_te)
    if name == "diabetes":  # targets in units of the training standard deviation (raw: ~150 +- 77)
        mu, sd = y_tr.mean(), y_tr.std()
        y_tr, y_te = (y_tr - mu) / sd, (y_te - mu) / sd
    return kind, criterion, A_tr, y_tr, s_tr, A_te, y_te, s_te


#: the classifiers' modes: "logits" is the paper's guarantee, "labels" and "proba" the
#: decision guarantees; Penalty has no per-call projection, so its "labels" mode would be
#: its "proba" net with argmax labels (the same model): it runs in "logits" and "proba"
MODES = {"F-Layer": ("logits", "labels", "proba"), "Projection": ("logits", "labels", "proba"),
         "Penalty": ("logits", "proba"), "Strict penalty": ("logits",)}


def _nets(kind, criterion, tol, seed, epochs, modes=True):
    """The nets of one cell, all with the same body and training recipe (``TRAINING``)."""
    common = dict(**TRAINING, max_epochs=epochs, random_state=seed, solver="exact", tolerance=tol,
                  criterion=criterion)
    if kind != "clf":
        nets = {"F-Layer": FairLayerRegressor(**common),
                "Unconstrained": FairLayerRegressor(**{**common, "tolerance": 1e9})}
        if criterion == "ecp":  # projection at predict and parity penalties need no targets
            nets["Projection"] = ProjectionRegressor(**common)
            nets["Penalty"] = PenaltyRegressor(lam="auto", lam_grid=(0.1, 1.0, 10.0, 100.0), **common)
            nets["Strict penalty"] = PenaltyRegressor(lam=1e3, **common)
        return nets
    make = {"F-Layer": lambda **kw: FairLayerClassifier(**kw), "Projection": lambda **kw: ProjectionClassifier(**kw),
            "Penalty": lambda **kw: PenaltyClassifier(lam="auto", lam_grid=(0.1, 1.0, 10.0, 100.0), **kw),
            "Strict penalty": lambda **kw: PenaltyClassifier(lam=1e3, **kw)}
    nets = {}
    for base, base_modes in MODES.items():
        for mode in base_modes if modes else ("logits",):
            nets[f"{base} ({mode})"] = make[base](**common, enforce_on=mode)
        if base == "F-Layer":
            nets["Unconstrained"] = FairLayerClassifier(**{**common, "tolerance": 1e9, "enforce_on": "logits"})
    return nets


def _mode(est) -> str | None:
    return getattr(est, "enforce_on", None)


def _fairlearn(tol, net=None):
    """fairlearn's demographic-parity methods on a logistic regression, and
    ThresholdOptimizer on ``net`` (the fitted unconstrained net) when given. Given
    several sensitive columns, fairlearn constrains their intersections (all
    combinations), which bounds each attribute's gap too."""
    try:
        from fairlearn.postprocessing import ThresholdOptimizer
        from fairlearn.reductions import DemographicParity, ExponentiatedGradient
    except ImportError:
        return {}
    from sklearn.linear_model import LogisticRegression

    base = LogisticRegression(max_iter=1000)
    methods = {
        "fairlearn EG": ExponentiatedGradient(base, DemographicParity(difference_bound=tol)),
        "fairlearn ThresholdOpt": ThresholdOptimizer(estimator=base, constraints="demographic_parity",
                                                     predict_method="predict_proba", tol=tol),
    }
    if net is not None:
        methods["fairlearn ThresholdOpt (net)"] = ThresholdOptimizer(
            estimator=net, constraints="demographic_parity", predict_method="predict_proba", prefit=True, tol=tol)
    return methods


def _eg_positive_probability(eg, X) -> np.ndarray:
    """P(label 1) of ExponentiatedGradient's randomised classifier, from its public
    fitted attributes: the ``weights_``-weighted average of its ``predictors_``' labels."""
    probs = np.zeros(len(X))
    for weight, predictor in zip(eg.weights_, eg.predictors_):
        if weight > 0:
            probs += weight * np.asarray(predictor.predict(X), dtype=float)
    return probs


def _rate_gap(labels, s) -> float:
    """Selection-rate gap of the labels, the largest over the sensitive attributes."""
    return selection_rate_gap(np.asarray(labels), s, pos_label=1)


class _quiet(warnings.catch_warnings):
    """Silence, inside one block only, the warnings the harness expects: the
    unconstrained net's "no sensitive features" UserWarning and the logistic base
    learner's convergence warnings inside fairlearn."""

    def __init__(self, method: str):
        super().__init__()
        self.method = method

    def __enter__(self):
        out = super().__enter__()
        if self.method == "Unconstrained":
            warnings.filterwarnings("ignore", category=UserWarning)
        if self.method.startswith("fairlearn"):
            warnings.filterwarnings("ignore", category=ConvergenceWarning)
        return out


def _fit_predict_clf(method, est, A_tr, y_tr, s_tr, A_te, s_te, seed):
    """(labels, scores or NaN, logit gap or NaN, probability gap or NaN) of one
    classifier on the test rows (one call each)."""
    with _quiet(method):
        if method == "Unconstrained":
            est.fit(A_tr, y_tr)
        else:
            est.fit(A_tr, y_tr, sensitive_features=s_tr)
        if method.startswith("fairlearn ThresholdOpt"):  # its probabilities are not public
            return est.predict(A_te, sensitive_features=s_te, random_state=seed), np.nan, np.nan, np.nan
        if method == "fairlearn EG":
            proba = _eg_positive_probability(est, A_te)
            return est.predict(A_te, random_state=seed), proba, np.nan, parity_gap(proba, s_te)
        kw = {} if method == "Unconstrained" else {"sensitive_features": s_te}
        score = est.decision_function(A_te, **kw)
        proba = est.predict_proba(A_te, **kw)[:, 1]
        logit_gap = parity_gap(score, s_te) if _mode(est) == "logits" else np.nan
        return est.predict(A_te, **kw), score, logit_gap, parity_gap(proba, s_te)


#: slack of the "met" columns: rates are ratios of counts, gaps differences of floats
MET_SLACK = 1e-9


def evaluate_case(name, seed, tolerances, epochs, adult_rows, employee_csv=None, modes=True,
                  verbose=False) -> list[dict]:
    kind, criterion, A_tr, y_tr, s_tr, A_te, y_te, s_te = load_case(name, seed, adult_rows, employee_csv)
    rows = []
    unconstrained = None  # fitted once per seed (no tolerance), reused by ThresholdOptimizer (net)
    for tol in tolerances:
        models = _nets(kind, criterion, tol, seed, epochs, modes)
        if unconstrained is not None:
            del models["Unconstrained"]  # does not depend on the tolerance
        if kind == "clf":
            fairlearn = _fairlearn(tol)
            if fairlearn:  # ThresholdOptimizer on the unconstrained net, once that is fitted
                fairlearn["fairlearn ThresholdOpt (net)"] = None
            models.update(fairlearn)
        for method, est in models.items():
            if est is None:
                est = _fairlearn(tol, unconstrained)[method]
            row = dict(dataset=name, criterion=criterion, seed=seed, tolerance=tol, method=method)
            t0 = time.perf_counter()
            if kind == "clf":
                labels, score, logit_gap, proba_gap = _fit_predict_clf(method, est, A_tr, y_tr, s_tr, A_te, s_te,
                                                                       seed)
                row["fit_s"] = time.perf_counter() - t0
                if method == "Unconstrained":
                    unconstrained = est
                finite = np.isfinite(np.asarray(score, float)).all()
                row.update(accuracy=accuracy_score(y_te, labels),
                           auc=roc_auc_score(y_te, score) if finite else np.nan,
                           gap=logit_gap, rate_gap=_rate_gap(labels, s_te), proba_gap=proba_gap)
                # each method's own criterion: labels for fairlearn and "labels" mode, etc.
                own = {"labels": row["rate_gap"], "proba": proba_gap, "logits": logit_gap}.get(
                    _mode(est), row["rate_gap"])
            else:
                kw_tr = {} if method == "Unconstrained" else {"sensitive_features": s_tr}
                kw_te = {} if method == "Unconstrained" else {"sensitive_features": s_te}
                with _quiet(method):
                    est.fit(A_tr, y_tr, **kw_tr)
                    row["fit_s"] = time.perf_counter() - t0
                    pred = est.predict(A_te, **kw_te)
                    fit_pred = est.predict(A_tr, **kw_tr) if criterion == "eer" else None
                row.update(mse=mean_squared_error(y_te, pred))
                if criterion == "eer":
                    row["gap"] = residual_gap(y_te, pred, s_te)
                    # the paper's in-sample audit: project the training predictions
                    # with their targets (exact EER, guaranteed) and report the MSE
                    codes = torch.as_tensor(encode_sensitive(s_tr, len(y_tr))[0])
                    audit = FairnessLayer("eer", tol, "exact")(torch.as_tensor(fit_pred), codes,
                                                                torch.as_tensor(y_tr)).numpy()
                    row.update(train_gap=residual_gap(y_tr, fit_pred, s_tr),
                               audit_mse=mean_squared_error(y_tr, audit), audit_gap=residual_gap(y_tr, audit, s_tr))
                else:
                    row["gap"] = parity_gap(pred, s_te)
                own = row["gap"]
            constrained = method != "Unconstrained"
            row["met"] = bool(own <= tol + MET_SLACK) if constrained else None
            if kind == "clf":
                row["rate_met"] = bool(row["rate_gap"] <= tol + MET_SLACK) if constrained else None
            rows.append(row)
            if verbose:
                shown = {k: row[k] for k in ("accuracy", "rate_gap", "proba_gap", "mse", "gap") if k in row}
                print(f"[{time.strftime('%H:%M:%S')}] {name} seed {seed} tol {tol:g} {method:<28} "
                      + " ".join(f"{k} {v:.4f}" for k, v in shown.items() if np.isfinite(v))
                      + f" ({row['fit_s']:.1f} s)", flush=True)
    return rows


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    metrics = [c for c in ("accuracy", "auc", "mse", "gap", "rate_gap", "proba_gap", "train_gap", "audit_mse",
                           "audit_gap", "fit_s")
               if c in df.columns and df[c].notna().any()]
    g = df.groupby(["dataset", "tolerance", "method"], sort=False)
    out = g[metrics].mean()
    def count(m):
        return "-" if m.isna().all() else f"{int(m.sum())}/{m.notna().sum()}"

    out["met"] = g["met"].apply(count)
    if "rate_met" in df.columns and df["rate_met"].notna().any():
        out["rate_met"] = g["rate_met"].apply(count)
    out["seeds"] = g.size()
    return out.reset_index()


#: the rows of the comparison with fairlearn: F-Layer (labels) against each of these
RIVALS = ("fairlearn ThresholdOpt", "fairlearn ThresholdOpt (net)", "fairlearn EG")


def versus_fairlearn(df: pd.DataFrame) -> pd.DataFrame:
    """F-Layer (labels) against fairlearn's methods, seed by seed on the same test rows.

    For each dataset, tolerance and rival: mean accuracy and label gap of both, in how
    many seeds each met the tolerance on the labels, the mean accuracy difference
    (F-Layer minus rival), and ``dominates``: in how many seeds F-Layer's accuracy was at
    or above the rival's while its label gap was at most the rival's."""
    ours = df[df["method"] == "F-Layer (labels)"].set_index(["dataset", "tolerance", "seed"])
    out = []
    for rival in RIVALS:
        theirs = df[df["method"] == rival].set_index(["dataset", "tolerance", "seed"])
        both = ours[["accuracy", "rate_gap", "rate_met"]].join(
            theirs[["accuracy", "rate_gap", "rate_met"]], rsuffix="_rival", how="inner")
        if both.empty:
            continue
        both["wins"] = (both["accuracy"] >= both["accuracy_rival"]) & (both["rate_gap"] <= both["rate_gap_rival"])
        for (name, tol), part in both.groupby(level=["dataset", "tolerance"], sort=False):
            n = len(part)
            out.append(dict(dataset=name, tolerance=tol, rival=rival,
                            flayer_acc=part["accuracy"].mean(), flayer_rate_gap=part["rate_gap"].mean(),
                            flayer_met=f"{int(part['rate_met'].sum())}/{n}",
                            rival_acc=part["accuracy_rival"].mean(), rival_rate_gap=part["rate_gap_rival"].mean(),
                            rival_met=f"{int(part['rate_met_rival'].sum())}/{n}",
                            acc_diff=(part["accuracy"] - part["accuracy_rival"]).mean(),
                            dominates=f"{int(part['wins'].sum())}/{n}"))
    if not out:
        return pd.DataFrame()
    order = {name: i for i, name in enumerate(dict.fromkeys(df["dataset"]))}
    res = pd.DataFrame(out)
    return res.sort_values(["dataset", "tolerance"], key=lambda c: c.map(order) if c.name == "dataset" else c,
                           kind="stable").reset_index(drop=True)


def versus_frontier(df: pd.DataFrame) -> pd.DataFrame:
    """fairlearn's points against F-Layer (labels)'s frontier, seed by seed.

    For each rival model (dataset, seed, tolerance) with label gap ``g`` on the test
    rows: the most accurate F-Layer (labels) model of the same dataset and seed, over
    all tolerances run, whose label gap on the same rows is at most ``g``. Meaningful
    with several tolerances (e.g. ``--tolerances 0.005 0.01 0.02 0.04 0.05``). Columns:
    the rival's mean accuracy and gap, the matched F-Layer's mean accuracy and gap,
    the tolerances of the matched models, ``matched`` (seeds with such a model) and
    ``as_accurate`` (seeds where it was at least as accurate)."""
    ours = df[df["method"] == "F-Layer (labels)"]
    out = []
    for rival in RIVALS:
        for (name, tol), theirs in df[df["method"] == rival].groupby(["dataset", "tolerance"], sort=False):
            pairs = []
            for _, r in theirs.iterrows():
                cand = ours[(ours["dataset"] == name) & (ours["seed"] == r["seed"])
                            & (ours["rate_gap"] <= r["rate_gap"] + MET_SLACK)]
                if len(cand):
                    best = cand.loc[cand["accuracy"].idxmax()]
                    pairs.append((r["accuracy"], r["rate_gap"], best["accuracy"], best["rate_gap"], best["tolerance"]))
            if not pairs:
                out.append(dict(dataset=name, rival=rival, tolerance=tol, matched=f"0/{len(theirs)}"))
                continue
            a = np.array(pairs)
            out.append(dict(dataset=name, rival=rival, tolerance=tol, rival_acc=a[:, 0].mean(),
                            rival_rate_gap=a[:, 1].mean(), flayer_acc=a[:, 2].mean(), flayer_rate_gap=a[:, 3].mean(),
                            flayer_tolerances=" ".join(f"{t:g}" for t in a[:, 4]),
                            matched=f"{len(a)}/{len(theirs)}",
                            as_accurate=f"{int((a[:, 2] >= a[:, 0]).sum())}/{len(a)}"))
    return pd.DataFrame(out)


_STYLE = {  # one colour and marker per method, the same in every panel
    "F-Layer": ("tab:blue", "o"), "Projection": ("tab:orange", "s"), "Penalty": ("tab:green", "^"),
    "Strict penalty": ("tab:olive", "v"), "Unconstrained": ("tab:gray", "X"),
    "fairlearn EG": ("tab:red", "D"), "fairlearn ThresholdOpt": ("tab:purple", "P"),
    "F-Layer (labels)": ("tab:cyan", "o"), "F-Layer (proba)": ("navy", "h"),
    "Projection (labels)": ("gold", "s"), "Projection (proba)": ("tab:brown", "p"),
    "Penalty (proba)": ("lime", "<"), "fairlearn ThresholdOpt (net)": ("magenta", "*"),
    # the paper's methods, named by their mode
    "F-Layer (logits)": ("tab:blue", "o"), "Projection (logits)": ("tab:orange", "s"),
    "Penalty (logits)": ("tab:green", "^"), "Strict penalty (logits)": ("tab:olive", "v"),
}


def _panels(summary: pd.DataFrame) -> list[tuple[str, str, str, str]]:
    """(dataset, x column, y column, title) of each panel: classification gets two
    panels (label selection-rate gap of every method; probability gap of every
    method that has probabilities; the logit gap when the results have no probability gap)."""
    panels = []
    for name in dict.fromkeys(summary["dataset"]):
        part = summary[summary["dataset"] == name]
        if "accuracy" in part and part["accuracy"].notna().any():
            panels.append((name, "rate_gap", "accuracy", f"{name}: selection-rate gap of labels"))
            if "proba_gap" in part and part["proba_gap"].notna().any():
                panels.append((name, "proba_gap", "accuracy", f"{name}: probability gap"))
            else:
                panels.append((name, "gap", "accuracy", f"{name}: logit gap (nets)"))
        elif "audit_mse" in part and part["audit_mse"].notna().any():
            panels.append((name, "audit_gap", "audit_mse", f"{name} (EER): in-sample audit"))
        else:
            panels.append((name, "gap", "mse", f"{name}: prediction gap"))
    return panels


def plot(summary: pd.DataFrame, path: Path) -> Path | None:
    """Accuracy (or MSE) against the test gap, one panel per dataset and kind of gap,
    two panels a row, readable at page width; a missing matplotlib skips the plot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    panels = _panels(summary)
    ncols = 2 if len(panels) > 1 else 1
    nrows = -(-len(panels) // ncols)
    with plt.rc_context({"font.size": 13, "axes.titlesize": 14, "axes.labelsize": 13, "legend.fontsize": 13}):
        fig, axes = plt.subplots(nrows, ncols, figsize=(6.5 * ncols, 4.6 * nrows + 1.2), squeeze=False)
        for ax, (name, x, y, title) in zip(axes.flat, panels):
            part = summary[(summary["dataset"] == name) & summary[x].notna()]
            for method, rows in part.groupby("method", sort=False):
                colour, marker = _STYLE.get(method, (None, "o"))
                ax.plot(rows[x], rows[y], marker=marker, markersize=8, color=colour, label=method,
                        ls="-" if len(rows) > 1 else "none", zorder=3 if method == "F-Layer" else 2)
            for tol in part["tolerance"].unique():
                ax.axvline(tol, color="k", lw=0.6, ls=":")
            ax.set_xscale("symlog", linthresh=1e-3)
            ax.set_xlim(-3e-4, 2 * max(part[x].max(), part["tolerance"].max()))
            ax.set_xlabel({"gap": "test gap", "rate_gap": "selection-rate gap", "proba_gap": "probability gap",
                           "audit_gap": "training residual gap after audit"}[x])
            ax.set_ylabel({"audit_mse": "training MSE after audit"}.get(y, y))
            ax.set_title(title)
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        handles = {}
        for ax in axes.flat:
            for h, label in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(label, h)
        fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=4, frameon=False)
        fig.tight_layout(rect=(0, 1.1 / (4.6 * nrows + 1.2), 1, 1))
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return path


def _markdown(df: pd.DataFrame) -> str:
    cells = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row] for row in df.itertuples(index=False)]
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])


def run(datasets, seeds, tolerances, epochs=20, adult_rows=None, out_dir="docs/results", employee_csv=None,
        verbose=True) -> pd.DataFrame:
    """Run the comparison; write results.csv, results_raw.csv, results.md and tradeoff.png to ``out_dir``.

    ``results_raw.csv`` is rewritten after every dataset and seed, so an interrupted
    run keeps what it finished (``--from-raw`` writes the rest from it)."""
    rows = []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for name in datasets:
        if name.startswith("employee") and (employee_csv is None or not Path(employee_csv).exists()):
            print(f"skipping {name}: no employee_performance.csv (given: {employee_csv}); it is not shipped, "
                  "pass its path with --employee-csv")
            continue
        for seed in seeds:
            if verbose:
                print(f"[{time.strftime('%H:%M:%S')}] {name}, seed {seed} ...", flush=True)
            t0 = time.perf_counter()
            rows += evaluate_case(name, seed, tolerances, epochs, adult_rows, employee_csv, verbose=verbose)
            pd.DataFrame(rows).to_csv(out / "results_raw.csv", index=False)
            if verbose:
                print(f"[{time.strftime('%H:%M:%S')}] {name}, seed {seed}: {time.perf_counter() - t0:.0f} s "
                      f"(total {time.perf_counter() - start:.0f} s)", flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "results_raw.csv", index=False)
    write_outputs(df, out, verbose)
    return df


def write_outputs(df: pd.DataFrame, out: Path, verbose: bool = True) -> None:
    """From the per-run rows: results.csv, versus_fairlearn.csv, results.md, tradeoff.png."""
    summary = summarise(df)
    summary.to_csv(out / "results.csv", index=False)
    versus = versus_fairlearn(df) if "rate_met" in df.columns else pd.DataFrame()
    if not versus.empty:
        versus.to_csv(out / "versus_fairlearn.csv", index=False)
    several = df.groupby("dataset")["tolerance"].nunique().max() > 2 if "rate_met" in df.columns else False
    frontier = versus_frontier(df) if several else pd.DataFrame()
    if not frontier.empty:
        frontier.to_csv(out / "versus_frontier.csv", index=False)
    with open(out / "results.md", "w") as fh:
        for name, part in summary.groupby("dataset", sort=False):
            fh.write(f"### {name}\n\n{_markdown(part.drop(columns='dataset').dropna(axis=1, how='all'))}\n\n")
            if not versus.empty and (versus["dataset"] == name).any():
                table = _markdown(versus[versus["dataset"] == name].drop(columns="dataset"))
                fh.write(f"F-Layer (labels) against fairlearn, seed by seed:\n\n{table}\n\n")
            if not frontier.empty and (frontier["dataset"] == name).any():
                table = _markdown(frontier[frontier["dataset"] == name].drop(columns="dataset"))
                fh.write("fairlearn against the most accurate F-Layer (labels) model (any tolerance) whose label "
                         f"gap is at most fairlearn's, seed by seed:\n\n{table}\n\n")
    png = plot(summary, out / "tradeoff.png")
    if verbose:
        fmt = ("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.4f}".format)
        with pd.option_context(*fmt):
            for name, part in summary.groupby("dataset", sort=False):
                print(f"\n== {name}\n{part.drop(columns='dataset').dropna(axis=1, how='all').to_string(index=False)}")
            if not versus.empty:
                print(f"\n== F-Layer (labels) against fairlearn\n{versus.to_string(index=False)}")
            if not frontier.empty:
                print(f"\n== fairlearn against F-Layer (labels)'s frontier\n{frontier.to_string(index=False)}")
        print("\n" + LEGEND)
        if "audit_mse" in summary:
            print(LEGEND_EER)
        print(f"\nwrote {out / 'results.csv'}, {out / 'results.md'}" + (f", {png}" if png else ""))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="make demo's short run: Adult (8,000 training rows), 2 seeds, tolerance 0.02, 5 epochs")
    parser.add_argument("--datasets", nargs="*", default=list(CLASSIFICATION), choices=DATASETS)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--tolerances", type=float, nargs="*", default=[0.01, 0.05])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--adult-rows", type=int, default=15000,
                        help="training rows of Adult sampled per seed (0: all 30,162)")
    parser.add_argument("--out", default=None,
                        help="output folder (default docs/results/decisions; demo_results with --quick)")
    parser.add_argument("--employee-csv", default=os.environ.get("FAIRSK_EMPLOYEE_CSV"),
                        help="path of the paper's employee_performance.csv (not shipped; default $FAIRSK_EMPLOYEE_CSV)")
    parser.add_argument("--plot-only", metavar="DIR", default=None,
                        help="redraw DIR/tradeoff.png from DIR/results.csv and exit")
    parser.add_argument("--from-raw", metavar="DIR", default=None,
                        help="write the tables and the plot of DIR from DIR/results_raw.csv and exit")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # many small nets: threads cost more than they give
    if args.from_raw:
        write_outputs(pd.read_csv(Path(args.from_raw) / "results_raw.csv"), Path(args.from_raw))
        return
    if args.plot_only:
        folder = Path(args.plot_only)
        print("wrote", plot(pd.read_csv(folder / "results.csv"), folder / "tradeoff.png"))
        return
    if args.quick:
        print("=" * 80 + "\nthe comparison, short version (the full run: python benchmarks/reproduce.py)\n")
        run(["adult"], [0, 1], [0.02], epochs=5, adult_rows=8000, out_dir=args.out or "demo_results")
        return
    run(args.datasets, args.seeds, args.tolerances, args.epochs, args.adult_rows, args.out or "docs/results/decisions",
        args.employee_csv)


if __name__ == "__main__":
    main()
