"""StreamingFairPredictor at every tolerance and batch size, accuracy beside the gap.

    python benchmarks/streaming.py [--quick] [--tables adult,german] [--slack 1.0]

For each table (Adult: train/test files; German credit: a stratified 60/40 split),
tolerance (0, 0.001, 0.005, 0.02, 0.1) and batch size (1, 16, 256), it streams the
test rows in a fixed random order and prints, for the default rule
(``mode="pooled"``, shrinking slack) and for the strict rule (``slack=0``):

* the pooled parity gap of all emitted logits, and the bound the rule guarantees
  for it at the end of the stream (``tolerance + max e_g + e_h``);
* the accuracy of the streamed labels and its difference to the offline batch
  projection (one ``decision_function`` call over the whole stream, at the same
  tolerance), in points;
* the number of distinct emitted logits (a stream that discards its input emits few).

``--quick`` runs batch sizes 16 and 256 only. Results: benchmarks/results/streaming.txt.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from sklearn.compose import ColumnTransformer
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from fairsk import FairLayerClassifier, StreamingFairPredictor
from fairsk.datasets import load_adult, load_german_credit
from fairsk.metrics import parity_gap

TOLERANCES = (0.0, 0.001, 0.005, 0.02, 0.1)


def _encode(X_tr, X_te):
    cat = [c for c in X_tr.columns if str(X_tr[c].dtype) in ("category", "object")]
    num = [c for c in X_tr.columns if c not in cat]
    pre = ColumnTransformer([("n", StandardScaler(), num), ("c", OneHotEncoder(handle_unknown="ignore"), cat)],
                            sparse_threshold=0)
    return pre.fit_transform(X_tr), pre.transform(X_te)


def adult():
    X_tr, y_tr, s_tr = load_adult(subset="train", sensitive=("sex",))
    X_te, y_te, s_te = load_adult(subset="test", sensitive=("sex",))
    A_tr, A_te = _encode(X_tr, X_te)
    order = np.random.default_rng(0).permutation(len(y_te))  # the test file is not in random order
    return (A_tr, y_tr.to_numpy(), s_tr["sex"].to_numpy(), A_te[order], y_te.to_numpy()[order],
            s_te["sex"].to_numpy()[order])


def german():
    X, y, s = load_german_credit(sensitive=("sex",))
    X_tr, X_te, y_tr, y_te, s_tr, s_te = train_test_split(X, y.to_numpy(), s["sex"].to_numpy(), test_size=0.4,
                                                          random_state=0, stratify=y)
    A_tr, A_te = _encode(X_tr, X_te)
    return A_tr, y_tr, s_tr, A_te, y_te, s_te


def stream_once(est, tol, b, A, s, **params):
    stream = StreamingFairPredictor(est, tolerance=tol, **params)
    stream.estimator_ = est  # the fitted model, shared by every run
    stream._fit_stream_statistics(*_TRAIN[id(est)])
    stream.reset()
    logits = []
    t0 = time.perf_counter()
    for start in range(0, len(s), b):
        rows = slice(start, start + b)
        logits.append(stream.partial_decision_function(A[rows], sensitive_features=s[rows]))
    per_sample = (time.perf_counter() - t0) / len(s) * 1e3
    return np.concatenate(logits), stream, per_sample


_TRAIN: dict = {}


def run(name, data, batch_sizes, train, slack):
    A_tr, y_tr, s_tr, A_te, y_te, s_te = data
    print(f"\n== {name}: {len(y_te)} streamed samples (fit on {len(y_tr)}), sensitive attribute: sex")
    print(f"{'tol':>6} {'rule':<7} {'batch':>5} {'gap':>7} {'bound':>7} {'accuracy':>9} {'batch acc':>9}"
          f" {'vs batch':>9} {'distinct':>8} {'ms/sample':>9}")
    for tol in TOLERANCES:
        est = FairLayerClassifier(tolerance=tol, random_state=0, solver="exact", **train)
        est.fit(A_tr, y_tr, sensitive_features=s_tr)
        _TRAIN[id(est)] = (A_tr, s_tr)
        batch = est.decision_function(A_te, sensitive_features=s_te)
        acc_batch = float(((batch > 0).astype(int) == y_te).mean())
        for rule, params in (("shrink", {"slack": slack}), ("strict", {"slack": 0.0})):
            for b in batch_sizes:
                logits, stream, ms = stream_once(est, tol, b, A_te, s_te, **params)
                acc = float(((logits > 0).astype(int) == y_te).mean())
                gap = parity_gap(logits, s_te)
                assert abs(gap - stream.pooled_gap_) < 1e-9
                print(f"{tol:6.3f} {rule:<7} {b:>5} {gap:7.4f} {stream.pooled_bound_:7.4f} {acc:9.4f}"
                      f" {acc_batch:9.4f} {100 * (acc - acc_batch):+8.2f}p {len(np.unique(logits)):>8}"
                      f" {ms:9.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="batch sizes 16 and 256 only")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--tables", default="adult,german")
    parser.add_argument("--slack", type=float, default=1.0)
    args = parser.parse_args()
    sizes = [16, 256] if args.quick else [1, 16, 256]
    torch.set_num_threads(1)  # one-row calls: thread start-up would dominate (and the machine is shared)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if "adult" in args.tables:
            run("Adult", adult(), sizes, dict(max_epochs=args.epochs, batch_size=256, lr=1e-3), args.slack)
        if "german" in args.tables:
            run("German credit", german(), sizes, dict(max_epochs=40, batch_size=64, lr=3e-3), args.slack)
    print("\nshrink: mode='pooled' (default), the pooled gap is at most tolerance + e_g + e_h, "
          "e_g = slack * scale_ / sqrt(N_g);\nstrict: slack=0, the pooled gap is at most tolerance after every call. "
          "Gaps are on logits; 'vs batch' is the streamed labels' accuracy minus the batch call's.")


if __name__ == "__main__":
    main()
