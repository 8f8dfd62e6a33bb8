"""F-Layer against the paper's baselines and fairlearn, on the same splits.

    python benchmarks/reproduce.py [--quick] [--datasets adult german employee diabetes]
                                   [--employee-csv PATH] [--out DIR]
    python benchmarks/reproduce.py --plot-only docs/results   # redraw tradeoff.png

For each dataset, seed and tolerance it trains F-Layer, Projection, Penalty (lam by
held-out gap), Strict penalty (lam = 1e3), an unconstrained net (all the same MLP,
epochs and seed) and, for classification, fairlearn's ExponentiatedGradient and
ThresholdOptimizer (demographic parity, logistic regression base) when fairlearn is
installed. It prints one table per dataset, writes ``results.csv``, ``results_raw.csv``
and ``results.md`` and draws ``tradeoff.png``.

Data come from :mod:`fairsk.datasets`: Adult and German credit are bundled, diabetes is
scikit-learn's; the paper's employee table is not shipped, so the employee case runs
only with ``--employee-csv`` (or the ``FAIRSK_EMPLOYEE_CSV`` environment variable).

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
from fairsk.datasets import load_adult, load_diabetes_sex, load_employee_performance, load_german_credit
from fairsk.metrics import encode_sensitive, parity_gap, residual_gap

DATASETS = ("adult", "german", "employee", "diabetes")

#: what the printed columns mean (printed under the tables)
LEGEND = """\
gap       parity gap (largest minus smallest group mean) of the test logits (classifiers) or
          predictions (regressors), one call over the whole test set; employee: the residual gap.
          This is the gap the tolerance bounds for F-Layer and Projection.
          Classifiers: only for the paper's methods (on logits: F-Layer, Projection, Penalty).
rate_gap  gap in selection rates of the predicted labels (share predicted 1 per group, largest
          minus smallest): demographic parity, fairlearn's criterion. Bounded by the methods in
          mode "labels" (F-Layer (labels), Projection (labels)).
proba_gap gap of the group means of the predicted probability of class 1 (fairlearn EG: its
          randomised classifier's probability); bounded in modes "labels" and "proba".
met       seeds in which the method's own criterion was within the tolerance: gap for the paper's
          nets, rate_gap for mode "labels" and fairlearn, proba_gap for mode "proba" ("-": the
          unconstrained net has no tolerance)."""
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


def load_case(name: str, seed: int, adult_rows: int | None, employee_csv: str | Path | None = None):
    """(kind, criterion, A_tr, y_tr, s_tr, A_te, y_te, s_te) for one dataset and seed."""
    if name == "adult":
        X_tr, y_tr, s_tr = load_adult(subset="train", sensitive=("sex",))
        X_te, y_te, s_te = load_adult(subset="test", sensitive=("sex",))
        if adult_rows:
            keep = np.random.default_rng(seed).choice(len(y_tr), size=min(adult_rows, len(y_tr)), replace=False)
            X_tr, y_tr, s_tr = X_tr.iloc[keep], y_tr.iloc[keep], s_tr.iloc[keep]
        A_tr, A_te = _encode(X_tr, X_te)
        s_tr, s_te = s_tr["sex"].to_numpy(), s_te["sex"].to_numpy()
        return "clf", "ecp", A_tr, y_tr.to_numpy(), s_tr, A_te, y_te.to_numpy(), s_te
    if name == "german":
        X, y, s = load_german_credit(sensitive=("sex",))
        kind, criterion, s = "clf", "ecp", s["sex"]
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


#: classifiers in the modes where the guarantee is on labels or probabilities (the
#: names without a mode are the paper's, on logits)
MODES = {"F-Layer (labels)": ("F-Layer", "labels"), "F-Layer (proba)": ("F-Layer", "proba"),
         "Projection (labels)": ("Projection", "labels"), "Projection (proba)": ("Projection", "proba"),
         "Penalty (proba)": ("Penalty", "proba")}


def _nets(kind, criterion, tol, seed, epochs, modes=True):
    common = dict(hidden_layer_sizes=(64,), max_epochs=epochs, batch_size=128, lr=1e-3, random_state=seed,
                  solver="exact", tolerance=tol, criterion=criterion)
    if kind == "clf":
        F, P, Pen = FairLayerClassifier, ProjectionClassifier, PenaltyClassifier
        common["enforce_on"] = "logits"  # the paper's methods; the other modes below
    else:
        F, P, Pen = FairLayerRegressor, ProjectionRegressor, PenaltyRegressor
    nets = {"F-Layer": F(**common), "Unconstrained": F(**{**common, "tolerance": 1e9})}
    if criterion == "ecp":  # projection at predict and parity penalties need no targets
        nets["Projection"] = P(**common)
        nets["Penalty"] = Pen(lam="auto", lam_grid=(0.1, 1.0, 10.0, 100.0), **common)
        nets["Strict penalty"] = Pen(lam=1e3, **common)
    if kind == "clf" and modes:
        for name, (base, mode) in MODES.items():
            params = {**common, "enforce_on": mode}
            if base == "Penalty":
                nets[name] = Pen(lam="auto", lam_grid=(0.1, 1.0, 10.0, 100.0), **params)
            else:
                nets[name] = (F if base == "F-Layer" else P)(**params)
    return nets


def _mode(est) -> str | None:
    return getattr(est, "enforce_on", None)


def _fairlearn(tol):
    try:
        from fairlearn.postprocessing import ThresholdOptimizer
        from fairlearn.reductions import DemographicParity, ExponentiatedGradient
    except ImportError:
        return {}
    from sklearn.linear_model import LogisticRegression

    base = LogisticRegression(max_iter=1000)
    return {
        "fairlearn EG": ExponentiatedGradient(base, DemographicParity(difference_bound=tol)),
        "fairlearn ThresholdOpt": ThresholdOptimizer(estimator=base, constraints="demographic_parity",
                                                     predict_method="predict_proba"),
    }


def _eg_positive_probability(eg, X) -> np.ndarray:
    """P(label 1) of ExponentiatedGradient's randomised classifier, from its public
    fitted attributes: the ``weights_``-weighted average of its ``predictors_``' labels."""
    probs = np.zeros(len(X))
    for weight, predictor in zip(eg.weights_, eg.predictors_):
        if weight > 0:
            probs += weight * np.asarray(predictor.predict(X), dtype=float)
    return probs


def _rate_gap(labels, s) -> float:
    return parity_gap(np.asarray(labels).astype(float), s)


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
        if method == "fairlearn ThresholdOpt":  # its probabilities are not public
            return est.predict(A_te, sensitive_features=s_te, random_state=seed), np.nan, np.nan, np.nan
        if method == "fairlearn EG":
            proba = _eg_positive_probability(est, A_te)
            return est.predict(A_te, random_state=seed), proba, np.nan, parity_gap(proba, s_te)
        kw = {} if method == "Unconstrained" else {"sensitive_features": s_te}
        score = est.decision_function(A_te, **kw)
        proba = est.predict_proba(A_te, **kw)[:, 1]
        logit_gap = parity_gap(score, s_te) if _mode(est) == "logits" else np.nan
        return est.predict(A_te, **kw), score, logit_gap, parity_gap(proba, s_te)


def evaluate_case(name, seed, tolerances, epochs, adult_rows, employee_csv=None, modes=True) -> list[dict]:
    kind, criterion, A_tr, y_tr, s_tr, A_te, y_te, s_te = load_case(name, seed, adult_rows, employee_csv)
    rows = []
    for tol in tolerances:
        models = _nets(kind, criterion, tol, seed, epochs, modes)
        if kind == "clf":
            models.update(_fairlearn(tol))
        for method, est in models.items():
            if method == "Unconstrained" and tol != tolerances[0]:
                continue  # does not depend on the tolerance
            row = dict(dataset=name, criterion=criterion, seed=seed, tolerance=tol, method=method)
            t0 = time.perf_counter()
            if kind == "clf":
                labels, score, logit_gap, proba_gap = _fit_predict_clf(method, est, A_tr, y_tr, s_tr, A_te, s_te,
                                                                       seed)
                row["fit_s"] = time.perf_counter() - t0
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
            row["met"] = bool(own <= tol + 1e-6) if method != "Unconstrained" else None
            rows.append(row)
    return rows


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    metrics = [c for c in ("accuracy", "auc", "mse", "gap", "rate_gap", "proba_gap", "train_gap", "audit_mse",
                           "audit_gap", "fit_s")
               if c in df.columns and df[c].notna().any()]
    g = df.groupby(["dataset", "tolerance", "method"], sort=False)
    out = g[metrics].mean()
    out["met"] = g["met"].apply(lambda m: "-" if m.isna().all() else f"{int(m.sum())}/{m.notna().sum()}")
    out["seeds"] = g.size()
    return out.reset_index()


_STYLE = {  # one colour and marker per method, the same in every panel
    "F-Layer": ("tab:blue", "o"), "Projection": ("tab:orange", "s"), "Penalty": ("tab:green", "^"),
    "Strict penalty": ("tab:olive", "v"), "Unconstrained": ("tab:gray", "X"),
    "fairlearn EG": ("tab:red", "D"), "fairlearn ThresholdOpt": ("tab:purple", "P"),
    "F-Layer (labels)": ("tab:cyan", "o"), "F-Layer (proba)": ("navy", "h"),
    "Projection (labels)": ("gold", "s"), "Projection (proba)": ("tab:brown", "p"),
    "Penalty (proba)": ("lime", "<"),
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
    """Run the comparison; write results.csv, results_raw.csv, results.md and tradeoff.png to ``out_dir``."""
    rows = []
    for name in datasets:
        if name == "employee" and (employee_csv is None or not Path(employee_csv).exists()):
            print(f"skipping employee: no employee_performance.csv (given: {employee_csv}); it is not shipped, "
                  "pass its path with --employee-csv")
            continue
        for seed in seeds:
            if verbose:
                print(f"[{time.strftime('%H:%M:%S')}] {name}, seed {seed} ...", flush=True)
            rows += evaluate_case(name, seed, tolerances, epochs, adult_rows, employee_csv)
    df = pd.DataFrame(rows)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "results_raw.csv", index=False)
    summary = summarise(df)
    summary.to_csv(out / "results.csv", index=False)
    with open(out / "results.md", "w") as fh:
        for name, part in summary.groupby("dataset", sort=False):
            fh.write(f"### {name}\n\n{_markdown(part.drop(columns='dataset').dropna(axis=1, how='all'))}\n\n")
    png = plot(summary, out / "tradeoff.png")
    if verbose:
        fmt = ("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.4f}".format)
        with pd.option_context(*fmt):
            for name, part in summary.groupby("dataset", sort=False):
                print(f"\n== {name}\n{part.drop(columns='dataset').dropna(axis=1, how='all').to_string(index=False)}")
        print("\n" + LEGEND)
        if "audit_mse" in summary:
            print(LEGEND_EER)
        print(f"\nwrote {out / 'results.csv'}, {out / 'results.md'}" + (f", {png}" if png else ""))
    return df


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="make demo's short run: Adult (8,000 training rows), 2 seeds, tolerance 0.02, 5 epochs")
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--tolerances", type=float, nargs="*", default=[0.01, 0.05])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--adult-rows", type=int, default=10000)
    parser.add_argument("--out", default=None, help="output folder (default docs/results; demo_results with --quick)")
    parser.add_argument("--employee-csv", default=os.environ.get("FAIRSK_EMPLOYEE_CSV"),
                        help="path of the paper's employee_performance.csv (not shipped; default $FAIRSK_EMPLOYEE_CSV)")
    parser.add_argument("--plot-only", metavar="DIR", default=None,
                        help="redraw DIR/tradeoff.png from DIR/results.csv and exit")
    args = parser.parse_args(argv)
    if args.plot_only:
        folder = Path(args.plot_only)
        print("wrote", plot(pd.read_csv(folder / "results.csv"), folder / "tradeoff.png"))
        return
    if args.quick:
        print("=" * 80 + "\nthe comparison, short version (the full run: python benchmarks/reproduce.py)\n")
        run(["adult"], [0, 1], [0.02], epochs=5, adult_rows=8000, out_dir=args.out or "demo_results")
        return
    run(args.datasets, args.seeds, args.tolerances, args.epochs, args.adult_rows, args.out or "docs/results",
        args.employee_csv)


if __name__ == "__main__":
    main()
