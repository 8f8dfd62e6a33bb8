"""How long a *default* FairLayerClassifier takes on a small tabular table, and how good it is.

    python benchmarks/defaults.py [--train-rows 3658] [--test-rows 5000] [--set key=value ...]

Trains on the first ``--train-rows`` rows of Adult's training file (one-hot encoded,
scaled; sensitive attribute: sex, two groups) with every parameter at its default
except ``random_state=0``, and evaluates on the first ``--test-rows`` rows of the test
file: fit time, accuracy of ``predict`` and the parity gap of ``decision_function``
(one call over all test rows, the output the tolerance bounds). scikit-learn's
``MLPClassifier`` with its defaults is timed on the same data for scale.
``--set max_epochs=60 --set batch_size=128 --set lr=0.01`` reproduces older defaults.
"""

from __future__ import annotations

import argparse
import ast
import time
import warnings

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from fairsk import FairLayerClassifier
from fairsk.datasets import load_adult
from fairsk.metrics import parity_gap


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train-rows", type=int, default=3658)
    parser.add_argument("--test-rows", type=int, default=5000)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a FairLayerClassifier parameter")
    args = parser.parse_args()
    overrides = {k: _value(v) for k, v in (item.split("=", 1) for item in args.set)}
    X_tr, y_tr, s_tr = load_adult(subset="train")
    X_te, y_te, s_te = load_adult(subset="test")
    X_tr, y_tr, s_tr = (v.iloc[: args.train_rows] for v in (X_tr, y_tr, s_tr["sex"]))
    X_te, y_te, s_te = (v.iloc[: args.test_rows] for v in (X_te, y_te, s_te["sex"]))
    cat = [c for c in X_tr.columns if str(X_tr[c].dtype) == "category"]
    num = [c for c in X_tr.columns if c not in cat]
    pre = ColumnTransformer([("num", StandardScaler(), num), ("cat", OneHotEncoder(handle_unknown="ignore"), cat)],
                            sparse_threshold=0)
    A_tr = pre.fit_transform(X_tr).astype(np.float32)
    A_te = pre.transform(X_te).astype(np.float32)
    y_tr, y_te = y_tr.to_numpy(), y_te.to_numpy()
    print(f"Adult: {len(y_tr)} train rows, {len(y_te)} test rows, {A_tr.shape[1]} features; sensitive: sex")
    print(f"FairLayerClassifier parameters changed from the defaults: {dict(random_state=0, **overrides)}\n")
    print(f"{'model':<32} {'fit s':>7} {'accuracy':>9} {'gap':>8}")

    t0 = time.perf_counter()
    clf = FairLayerClassifier(random_state=0, **overrides).fit(A_tr, y_tr, sensitive_features=s_tr)
    fit_s = time.perf_counter() - t0
    acc = float((clf.predict(A_te, sensitive_features=s_te) == y_te).mean())
    gap = parity_gap(clf.decision_function(A_te, sensitive_features=s_te), s_te)
    print(f"{'FairLayerClassifier (tol 0.01)':<32} {fit_s:7.1f} {acc:9.4f} {gap:8.4f}")

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = MLPClassifier(random_state=0).fit(A_tr, y_tr)
    fit_s = time.perf_counter() - t0
    acc = float((mlp.predict(A_te) == y_te).mean())
    gap = parity_gap(mlp.predict_proba(A_te)[:, 1], s_te)
    print(f"{'MLPClassifier (unconstrained)':<32} {fit_s:7.1f} {acc:9.4f} {'-':>8}")
    print("\ngap: largest difference between the two groups' mean logits of one decision_function call"
          f" (the quantity the tolerance bounds); MLPClassifier's probability gap for reference: {gap:.4f}")


if __name__ == "__main__":
    main()
