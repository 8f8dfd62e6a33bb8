"""Speed of ``predict`` by ``enforce_on``: labels at parity against the paper's logits.

    PYTHONPATH=. python benchmarks/enforce_on_speed.py [--rows N] > benchmarks/results/enforce_on_speed.txt

One ``FairLayerClassifier`` per mode is fitted on the same small synthetic data (20
features, two sensitive attributes of 2 and 5 groups); then ``predict`` of one call
on ``N`` rows (default 10^6) is timed for every mode, median of 3 runs, in the same
run. The ratio "labels / logits" is what the default costs over the paper's mode:
body + sigmoid + exact projection of the probabilities (box [0, 1]) + the fair
labels, against body + exact projection of the logits + threshold.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from fairsk import FairLayerClassifier
from fairsk.metrics import parity_gap, selection_rate_gap


def median_time(fn, repeats=3):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def data(n, seed):
    rng = np.random.default_rng(seed)
    s = np.stack([rng.integers(0, 2, n), rng.integers(0, 5, n)], 1)
    X = rng.normal(size=(n, 20)) + 0.5 * s[:, :1]
    y = (X[:, 0] + 0.5 * X[:, 1] + 0.3 * rng.normal(size=n) > 0.7).astype(int)
    return X, y, s


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10**6)
    parser.add_argument("--attributes", type=int, default=1, choices=(1, 2))
    args = parser.parse_args()
    print(f"# python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.rows} rows, {args.attributes} sensitive attribute(s)")
    X, y, s = data(3000, 0)
    Xp, _, sp = data(args.rows, 1)
    if args.attributes == 1:
        s, sp = s[:, 0], sp[:, 0]
    times = {}
    print(f"{'enforce_on':>10} {'predict s':>10} {'label gap':>10} {'proba gap':>10} {'logit gap':>10}")
    for mode in ("logits", "proba", "labels"):
        clf = FairLayerClassifier(enforce_on=mode, tolerance=0.02, max_epochs=3, random_state=0, solver="exact")
        clf.fit(X, y, sensitive_features=s)
        t, labels = median_time(lambda: clf.predict(Xp, sensitive_features=sp))
        times[mode] = t
        proba = clf.predict_proba(Xp, sensitive_features=sp)[:, 1]
        logits = clf.decision_function(Xp, sensitive_features=sp)
        print(f"{mode:>10} {t:10.3f} {selection_rate_gap(labels, sp):10.4f} {parity_gap(proba, sp):10.4f} "
              f"{parity_gap(logits, sp):10.4f}")
    print(f"ratio labels / logits: {times['labels'] / times['logits']:.2f}x; "
          f"proba / logits: {times['proba'] / times['logits']:.2f}x")


if __name__ == "__main__":
    main()
