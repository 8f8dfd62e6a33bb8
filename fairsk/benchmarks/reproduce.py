"""F-Layer against the paper's baselines and fairlearn, on the same splits.

``python -m fairsk.benchmarks [--quick] [--datasets adult german employee diabetes]``
(also the ``fairsk-reproduce`` command and ``benchmarks/reproduce.py``).

For each dataset, seed and tolerance it trains F-Layer, Projection, Penalty (lam by
held-out gap), Strict penalty (lam = 1e3), an unconstrained net (all the same MLP,
epochs and seed) and, for classification, fairlearn's ExponentiatedGradient and
ThresholdOptimizer (demographic parity, logistic regression base) when fairlearn is
installed. It prints one table per dataset, writes ``results.csv`` and
``results.md`` and draws ``tradeoff.png`` (accuracy or MSE against the test gap).

Gaps: for the nets, the parity gap of the test logits (classifiers) or predictions
(regressors) of one call over the whole test set, the quantity F-Layer guarantees;
for every classifier also the demographic-parity gap of predicted labels ("rate
gap"), fairlearn's criterion. "met" compares each method's own criterion with the
tolerance: logit/prediction gap for the nets, rate gap for fairlearn.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.compose import ColumnTransformer
from sklearn.metrics import accuracy_score, mean_squared_error, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from .. import FairLayerClassifier, FairLayerRegressor, FairnessLayer
from ..baselines import PenaltyClassifier, PenaltyRegressor, ProjectionClassifier, ProjectionRegressor
from ..datasets import load_adult, load_diabetes_sex, load_employee_performance, load_german_credit
from ..metrics import encode_sensitive, parity_gap, residual_gap

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _encode(X_tr: pd.DataFrame, X_te: pd.DataFrame):
    cat = [c for c in X_tr.columns if not pd.api.types.is_numeric_dtype(X_tr[c])]
    num = [c for c in X_tr.columns if c not in cat]
    pre = ColumnTransformer(
        [("num", StandardScaler(), num), ("cat", OneHotEncoder(handle_unknown="ignore"), cat)], sparse_threshold=0
    )
    return pre.fit_transform(X_tr).astype(np.float64), pre.transform(X_te).astype(np.float64)


def load_case(name: str, seed: int, adult_rows: int | None, data_dir: Path):
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
        path = data_dir / "employee_performance.csv"
        X, y, s = load_employee_performance(path)
        kind, criterion = "reg", "eer"
    else:
        raise ValueError(f"unknown dataset {name!r}")
    strat = y if kind == "clf" else None
    X_tr, X_te, y_tr, y_te, s_tr, s_te = train_test_split(X, y, s, test_size=0.3, random_state=seed, stratify=strat)
    A_tr, A_te = _encode(X_tr, X_te)
    s_tr, s_te = np.asarray(s_tr), np.asarray(s_te)
    y_tr, y_te = np.asarray(y_tr, dtype=float if kind == "reg" else None), np.asarray(y_te)
    if name == "diabetes":  # targets in units of the training standard deviation (raw: ~150 +- 77)
        mu, sd = y_tr.mean(), y_tr.std()
        y_tr, y_te = (y_tr - mu) / sd, (y_te - mu) / sd
    return kind, criterion, A_tr, y_tr, s_tr, A_te, y_te, s_te


def _nets(kind, criterion, tol, seed, epochs):
    common = dict(hidden_layer_sizes=(64,), max_epochs=epochs, batch_size=128, lr=1e-3, random_state=seed,
                  solver="exact", tolerance=tol, criterion=criterion)
    if kind == "clf":
        F, P, Pen = FairLayerClassifier, ProjectionClassifier, PenaltyClassifier
    else:
        F, P, Pen = FairLayerRegressor, ProjectionRegressor, PenaltyRegressor
    nets = {"F-Layer": F(**common), "Unconstrained": F(**{**common, "tolerance": 1e9})}
    if criterion == "ecp":  # projection at predict and parity penalties need no targets
        nets["Projection"] = P(**common)
        nets["Penalty"] = Pen(lam="auto", lam_grid=(0.1, 1.0, 10.0, 100.0), **common)
        nets["Strict penalty"] = Pen(lam=1e3, **common)
    return nets


def _fairlearn(tol, seed):
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


def _rate_gap(labels, s) -> float:
    return parity_gap(labels.astype(float), s)


def evaluate_case(name, seed, tolerances, epochs, adult_rows, data_dir) -> list[dict]:
    kind, criterion, A_tr, y_tr, s_tr, A_te, y_te, s_te = load_case(name, seed, adult_rows, data_dir)
    rows = []
    for tol in tolerances:
        models = _nets(kind, criterion, tol, seed, epochs)
        if kind == "clf":
            models.update(_fairlearn(tol, seed))
        for method, est in models.items():
            if method == "Unconstrained" and tol != tolerances[0]:
                continue  # does not depend on the tolerance
            t0 = time.perf_counter()
            if method.startswith("fairlearn"):
                est.fit(A_tr, y_tr, sensitive_features=s_tr)
            elif method == "Unconstrained":
                est.fit(A_tr, y_tr)
            else:
                est.fit(A_tr, y_tr, sensitive_features=s_tr)
            fit_s = time.perf_counter() - t0
            row = dict(dataset=name, criterion=criterion, seed=seed, tolerance=tol, method=method, fit_s=fit_s)
            kw = {} if method == "Unconstrained" else {"sensitive_features": s_te}
            if kind == "clf":
                if method == "fairlearn ThresholdOpt":
                    labels = est.predict(A_te, sensitive_features=s_te, random_state=seed)
                    score, logit_gap = np.nan, np.nan
                elif method == "fairlearn EG":
                    labels = est.predict(A_te, random_state=seed)
                    score = est._pmf_predict(A_te)[:, 1]
                    logit_gap = np.nan
                else:
                    score = est.decision_function(A_te, **kw)
                    labels = est.predict(A_te, **kw)
                    logit_gap = parity_gap(score, s_te)
                row.update(accuracy=accuracy_score(y_te, labels),
                           auc=roc_auc_score(y_te, score) if np.isfinite(np.asarray(score, float)).all() else np.nan,
                           gap=logit_gap, rate_gap=_rate_gap(np.asarray(labels), s_te))
                own = row["rate_gap"] if method.startswith("fairlearn") else logit_gap
            else:
                pred = est.predict(A_te, **kw)
                row.update(mse=mean_squared_error(y_te, pred))
                if criterion == "eer":
                    row["gap"] = residual_gap(y_te, pred, s_te)
                    # the paper's in-sample audit: project the training predictions
                    # with their targets (exact EER, guaranteed) and report the MSE
                    fit_pred = est.predict(A_tr, **({} if method == "Unconstrained" else {"sensitive_features": s_tr}))
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
    metrics = [c for c in ("accuracy", "auc", "mse", "gap", "rate_gap", "train_gap", "audit_mse", "audit_gap", "fit_s")
               if c in df.columns and df[c].notna().any()]
    g = df.groupby(["dataset", "tolerance", "method"], sort=False)
    out = g[metrics].mean()
    out["met"] = g["met"].apply(lambda m: "-" if m.isna().all() else f"{int(m.sum())}/{m.notna().sum()}")
    out["seeds"] = g.size()
    return out.reset_index()


def plot(df: pd.DataFrame, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    summary = summarise(df)
    names = list(dict.fromkeys(summary["dataset"]))
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        part = summary[summary["dataset"] == name]
        score = "accuracy" if "accuracy" in part and part["accuracy"].notna().any() else "mse"
        audit = "audit_mse" in part and part["audit_mse"].notna().any()
        if audit:  # EER: the paper's in-sample audit (training predictions projected with targets)
            score = "audit_mse"
        for method, rows in part.groupby("method", sort=False):
            gap = rows["audit_gap"] if audit else rows["gap"].where(rows["gap"].notna(), rows.get("rate_gap"))
            label = method + (" + audit projection" if audit else "")
            ax.plot(gap, rows[score], marker="o", label=label)
        ax.set_xscale("symlog", linthresh=1e-3)
        ax.set_xlabel("test gap (logits / predictions; labels for fairlearn)")
        ax.set_ylabel(score)
        ax.set_title(name + (" (EER, in-sample audit)" if audit else ""))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _markdown(df: pd.DataFrame) -> str:
    cells = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row] for row in df.itertuples(index=False)]
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])


def run(datasets, seeds, tolerances, epochs=20, adult_rows=None, out_dir="docs/results", data_dir=SHARED_DATA,
        verbose=True) -> pd.DataFrame:
    """Run the comparison; write results.csv, results.md and tradeoff.png to ``out_dir``."""
    warnings.simplefilter("ignore")
    rows = []
    for name in datasets:
        if name == "employee" and not (Path(data_dir) / "employee_performance.csv").exists():
            print(f"skipping employee: no employee_performance.csv in {data_dir} (the file is not shipped)")
            continue
        for seed in seeds:
            if verbose:
                print(f"[{time.strftime('%H:%M:%S')}] {name}, seed {seed} ...", flush=True)
            rows += evaluate_case(name, seed, tolerances, epochs, adult_rows, Path(data_dir))
    df = pd.DataFrame(rows)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "results_raw.csv", index=False)
    summary = summarise(df)
    summary.to_csv(out / "results.csv", index=False)
    with open(out / "results.md", "w") as fh:
        for name, part in summary.groupby("dataset", sort=False):
            fh.write(f"### {name}\n\n{_markdown(part.drop(columns='dataset').dropna(axis=1, how='all'))}\n\n")
    png = plot(df, out / "tradeoff.png")
    if verbose:
        fmt = ("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.4f}".format)
        with pd.option_context(*fmt):
            for name, part in summary.groupby("dataset", sort=False):
                print(f"\n== {name}\n{part.drop(columns='dataset').dropna(axis=1, how='all').to_string(index=False)}")
        print(f"\nwrote {out / 'results.csv'}, {out / 'results.md'}" + (f", {png}" if png else ""))
    return df


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Adult only (8,000 training rows), 2 seeds, 1 tolerance")
    parser.add_argument("--datasets", nargs="*", default=["adult", "german", "employee", "diabetes"])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--tolerances", type=float, nargs="*", default=[0.01, 0.05])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--adult-rows", type=int, default=10000)
    parser.add_argument("--out", default="docs/results")
    parser.add_argument("--data-dir", default=str(SHARED_DATA))
    args = parser.parse_args(argv)
    if args.quick:
        run(["adult"], [0, 1], [0.02], epochs=5, adult_rows=8000, out_dir=args.out + "/quick", data_dir=args.data_dir)
        return
    run(args.datasets, args.seeds, args.tolerances, args.epochs, args.adult_rows, args.out, args.data_dir)


if __name__ == "__main__":
    main()
