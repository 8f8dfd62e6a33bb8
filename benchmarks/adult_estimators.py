"""FairLayerClassifier on the bundled Adult data (sex and race), against the same net
trained without the layer.

    python benchmarks/adult_estimators.py [--epochs 5] [--train-rows N]

Trains on Adult's training file, evaluates on its test file. For tolerance in
{0, 0.01, 0.05} it prints the parity gap of ``decision_function`` on the test set
(one call over all test rows; per attribute, the max) and the accuracy, next to the
unconstrained net (same body, seed, epochs; no sensitive features).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from fairsk import FairLayerClassifier
from fairsk.datasets import load_adult
from fairsk.metrics import parity_gap


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-rows", type=int, default=None)
    parser.add_argument("--solver", default="exact")
    args = parser.parse_args()
    X_tr, y_tr, s_tr = load_adult(subset="train")
    X_te, y_te, s_te = load_adult(subset="test")
    if args.train_rows:
        X_tr, y_tr, s_tr = X_tr.iloc[: args.train_rows], y_tr.iloc[: args.train_rows], s_tr.iloc[: args.train_rows]
    cat = [c for c in X_tr.columns if str(X_tr[c].dtype) == "category"]
    num = [c for c in X_tr.columns if c not in cat]
    pre = ColumnTransformer([("num", StandardScaler(), num), ("cat", OneHotEncoder(handle_unknown="ignore"), cat)],
                            sparse_threshold=0)
    A_tr = pre.fit_transform(X_tr).astype(np.float32)
    A_te = pre.transform(X_te).astype(np.float32)
    common = dict(hidden_layer_sizes=(64,), max_epochs=args.epochs, batch_size=256, lr=1e-3, random_state=0,
                  solver=args.solver)
    print(f"Adult: {len(y_tr)} train rows, {len(y_te)} test rows; sensitive: sex, race; {args.epochs} epochs\n")
    print(f"{'model':<24} {'gap sex':>8} {'gap race':>9} {'max gap':>8} {'met':>4} {'accuracy':>9} {'fit s':>7}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        t0 = time.perf_counter()
        plain = FairLayerClassifier(**common).fit(A_tr, y_tr)
        fit_s = time.perf_counter() - t0
        logits = plain.decision_function(A_te)
    acc = float((plain.predict(A_te) == y_te.to_numpy()).mean())
    g = [parity_gap(logits, s_te[c]) for c in ("sex", "race")]
    print(f"{'unconstrained':<24} {g[0]:8.4f} {g[1]:9.4f} {max(g):8.4f} {'':>4} {acc:9.4f} {fit_s:7.1f}")
    for tol in (0.0, 0.01, 0.05):
        t0 = time.perf_counter()
        clf = FairLayerClassifier(tolerance=tol, **common).fit(A_tr, y_tr, sensitive_features=s_tr)
        fit_s = time.perf_counter() - t0
        logits = clf.decision_function(A_te, sensitive_features=s_te)
        acc = float((clf.predict(A_te, sensitive_features=s_te) == y_te.to_numpy()).mean())
        g = [parity_gap(logits, s_te[c]) for c in ("sex", "race")]
        met = "yes" if max(g) <= tol + 1e-6 else "NO"
        print(f"{'F-Layer tol=' + str(tol):<24} {g[0]:8.4f} {g[1]:9.4f} {max(g):8.4f} {met:>4} {acc:9.4f} {fit_s:7.1f}")


if __name__ == "__main__":
    main()
