"""Training for decisions: does training through the projection of the probabilities
beat projecting an unconstrained net's probabilities at prediction only?

    PYTHONPATH=. python benchmarks/decisions_training.py [--train-rows N] [--seeds K] \
        > benchmarks/results/decisions_training.txt

Adult, sensitive feature sex: a stratified random sample of ``--train-rows`` rows of
the training file, the whole test file for evaluation (one call). For each seed and
tolerance (0.01, 0.05):

* F-Layer: ``FairLayerClassifier(enforce_on="proba")``, trained through the
  projection of its probabilities; evaluated in ``"proba"`` (argmax of the fair
  probabilities) and ``"labels"`` (fair labels of the fair probabilities) mode: the
  two modes train the same net, so one fit serves both;
* Projection: ``ProjectionClassifier`` (the unconstrained net, trained on its
  logits; it does not depend on the tolerance), whose probabilities are projected
  at prediction only, in the same two modes.

Reported: test accuracy, selection-rate gap of the labels and probability gap
(largest difference of group means of ``predict_proba[:, 1]``), mean and standard
deviation over seeds, and the paired difference F-Layer minus Projection.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from sklearn.compose import make_column_selector, make_column_transformer
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from fairsk import FairLayerClassifier
from fairsk.baselines import ProjectionClassifier
from fairsk.datasets import load_adult
from fairsk.metrics import parity_gap, selection_rate_gap

TOLERANCES = (0.01, 0.05)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--train-rows", type=int, default=8000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    print(f"# python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"Adult (sex), {args.train_rows} training rows, {args.seeds} seeds, {args.epochs} epochs, "
          "hidden_layer_sizes=(64,), solver='exact', batch_size=256, lr=0.01")
    X, y, s = load_adult(subset="train", sensitive=("sex",))
    X_test, y_test, s_test = load_adult(subset="test", sensitive=("sex",))
    s, s_test = s["sex"].to_numpy(), s_test["sex"].to_numpy()
    y, y_test = y.to_numpy(), y_test.to_numpy()
    rows = {}  # (method, mode, tol) -> list of (acc, label gap, proba gap)
    t_start = time.perf_counter()
    for seed in range(args.seeds):
        idx, _ = train_test_split(np.arange(len(y)), train_size=args.train_rows, random_state=seed,
                                  stratify=np.char.add(s.astype(str), y.astype(str)))
        encode = make_column_transformer(
            (StandardScaler(), make_column_selector(dtype_include="number")),
            (OneHotEncoder(handle_unknown="ignore"), make_column_selector(dtype_include="category")),
            sparse_threshold=0,
        )
        A = encode.fit_transform(X.iloc[idx])
        A_test = encode.transform(X_test)
        common = dict(max_epochs=args.epochs, random_state=seed, solver="exact")
        proj = ProjectionClassifier(enforce_on="proba", **common).fit(A, y[idx], sensitive_features=s[idx])
        for tol in TOLERANCES:
            flayer = FairLayerClassifier(enforce_on="proba", tolerance=tol, **common)
            flayer.fit(A, y[idx], sensitive_features=s[idx])
            proj.set_params(tolerance=tol)
            for name, est in (("F-Layer", flayer), ("Projection", proj)):
                for mode in ("proba", "labels"):
                    est.set_params(enforce_on=mode)
                    labels = est.predict(A_test, sensitive_features=s_test)
                    proba = est.predict_proba(A_test, sensitive_features=s_test)[:, 1]
                    rows.setdefault((name, mode, tol), []).append(
                        (float(np.mean(labels == y_test)), selection_rate_gap(labels, s_test),
                         parity_gap(proba, s_test)))
        print(f"# seed {seed} done, {time.perf_counter() - t_start:.0f} s", flush=True)
    print(f"{'method':>10} {'mode':>7} {'tol':>5} {'accuracy':>16} {'label gap':>16} {'proba gap':>16}")
    for (name, mode, tol), vals in sorted(rows.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][0])):
        v = np.array(vals)
        cells = " ".join(f"{m:8.4f} ± {sd:5.4f}" for m, sd in zip(v.mean(0), v.std(0)))
        print(f"{name:>10} {mode:>7} {tol:5.2f} {cells}")
    print("paired difference F-Layer - Projection (mean ± sd over seeds; accuracy in points):")
    for tol in TOLERANCES:
        for mode in ("proba", "labels"):
            d = np.array(rows["F-Layer", mode, tol]) - np.array(rows["Projection", mode, tol])
            print(f"  tol {tol:.2f} {mode:>7}: accuracy {100 * d[:, 0].mean():+.2f} ± {100 * d[:, 0].std():.2f}, "
                  f"label gap {d[:, 1].mean():+.4f}, proba gap {d[:, 2].mean():+.4f}")


if __name__ == "__main__":
    main()
