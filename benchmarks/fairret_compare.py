"""fairsk's layer against fairret's demographic-parity penalty, the same MLP, one run.

    python benchmarks/fairret_compare.py [--rows N] [--epochs E] [--seeds S ...]

fairret (https://github.com/aida-ugent/fairret) adds a fairness *penalty* to the loss:
here ``NormLoss(PositiveRate())`` on the predicted probabilities, weighted by
``--strengths``. fairsk puts a *projection* at the end of the net: the batch's
probabilities are projected onto "group means within ``tolerance``" (box [0, 1]) and
the net trains through it; at prediction the whole test call is projected.

Both are trained by the same plain PyTorch loop (same MLP, optimiser, batches, seed),
so the time per epoch compares the fairness machinery alone, against the same loop
without any (the plain net) in the same run; the methods' epochs are interleaved and
timed by wall clock and by process CPU time (the ratio uses CPU time, steadier on a
shared machine). Reported per method: seconds per epoch,
test accuracy, AUC, the probability gap (group means of P(y=1)) and the label
selection-rate gap of the test set. Results: ``benchmarks/results/fairret_compare.txt``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.metrics import accuracy_score, roc_auc_score

from fairsk import FairnessLayer
from fairsk.decisions import fair_labels
from fairsk.metrics import parity_gap, selection_rate_gap


def adult(rows: int, seed: int):
    from reproduce import load_case  # benchmarks/reproduce.py: the same preprocessing

    _, _, A_tr, y_tr, s_tr, A_te, y_te, s_te = load_case("adult", seed, rows)
    codes = {v: i for i, v in enumerate(sorted(set(s_tr)))}
    g_tr = np.array([codes[v] for v in s_tr])
    g_te = np.array([codes[v] for v in s_te])
    return A_tr.astype(np.float32), y_tr.astype(np.float32), g_tr, A_te.astype(np.float32), y_te, g_te


def mlp(d: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))


def train(method: str, strength: float, tol: float, data, epochs: int, seed: int, batch: int = 128):
    """Trains one net, one epoch per ``next()``: yields each epoch's (wall, CPU) seconds
    and returns the test probabilities (``StopIteration.value``)."""
    A_tr, y_tr, g_tr, A_te, _, g_te = data
    net = mlp(A_tr.shape[1], seed)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    bce = torch.nn.BCELoss()
    X, y, g = torch.from_numpy(A_tr), torch.from_numpy(y_tr), torch.from_numpy(g_tr)
    if method == "fairret":
        from fairret.loss import NormLoss
        from fairret.statistic import PositiveRate

        penalty = NormLoss(PositiveRate())
        onehot = torch.nn.functional.one_hot(g).float()
    layer = FairnessLayer("ecp", tol, "exact", (0.0, 1.0)) if method == "fairsk" else None
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        start, cpu = time.perf_counter(), time.process_time()
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), batch):
            idx = order[i: i + batch]
            p = torch.sigmoid(net(X[idx])[:, 0])
            if method == "fairsk":
                p = layer(p.double(), g[idx]).float().clamp(1e-6, 1 - 1e-6)
            loss = bce(p, y[idx])
            if method == "fairret":
                loss = loss + strength * penalty(p.unsqueeze(1), onehot[idx], pred_as_logit=False)
            opt.zero_grad()
            loss.backward()
            opt.step()
        yield time.perf_counter() - start, time.process_time() - cpu
    with torch.no_grad():
        p_te = torch.sigmoid(net(torch.from_numpy(A_te))[:, 0]).double()
        if method == "fairsk":  # the whole test call, projected (as FairLayerClassifier predicts)
            p_te = layer(p_te, torch.from_numpy(g_te))
    return p_te.numpy()


def run_interleaved(jobs: list) -> list:
    """Runs the training generators one epoch each in turn (so a busy machine slows them
    alike); returns per job the median (wall, CPU) seconds per epoch and its result."""
    times, results, active = [[] for _ in jobs], [None] * len(jobs), list(range(len(jobs)))
    while active:
        for i in list(active):
            try:
                times[i].append(next(jobs[i]))
            except StopIteration as stop:
                results[i] = stop.value
                active.remove(i)
    return [(float(np.median([t[0] for t in ts])), float(np.median([t[1] for t in ts])), r)
            for ts, r in zip(times, results)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1])
    parser.add_argument("--tolerances", type=float, nargs="*", default=[0.01, 0.05])
    parser.add_argument("--strengths", type=float, nargs="*", default=[0.1, 1.0, 10.0])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"Adult (sex), {args.rows} training rows, full test set, MLP 64, Adam 1e-3, batch 128, "
          f"{args.epochs} epochs; median seconds per epoch of the same training loop, the methods' epochs "
          "interleaved; wall clock and process CPU time")
    print(f"{'seed':>4} {'method':<24} {'wall s':>7} {'cpu s':>7} {'vs plain':>9} {'accuracy':>9} {'AUC':>6}"
          f" {'proba gap':>10} {'label gap':>10} {'labels (fair) gap':>18}")
    for seed in args.seeds:
        data = adult(args.rows, seed)
        run_interleaved([train("plain", 0.0, 0.0, data, 1, seed)])  # warm-up (first-call costs), not reported
        _, _, _, _, y_te, g_te = data
        runs = [("plain", 0.0, 0.0)] + [("fairret", lam, 0.0) for lam in args.strengths]
        runs += [("fairsk", 0.0, tol) for tol in args.tolerances]
        done = run_interleaved([train(method, lam, tol, data, args.epochs, seed) for method, lam, tol in runs])
        plain_cpu = done[0][1]
        for (method, lam, tol), (wall, cpu, p) in zip(runs, done):
            name = {"plain": "plain net", "fairret": f"fairret NormLoss x{lam:g}",
                    "fairsk": f"fairsk layer tol {tol:g}"}[method]
            labels = (p >= 0.5).astype(int)
            fair = fair_labels(p, g_te, tol) if method == "fairsk" else None
            fair_gap = f"{selection_rate_gap(fair, g_te):18.4f}" if fair is not None else f"{'-':>18}"
            print(f"{seed:>4} {name:<24} {wall:7.3f} {cpu:7.3f} {cpu / plain_cpu:8.2f}x"
                  f" {accuracy_score(y_te, labels):9.4f} {roc_auc_score(y_te, p):6.3f} {parity_gap(p, g_te):10.4f}"
                  f" {selection_rate_gap(labels, g_te):10.4f} {fair_gap}", flush=True)
    print("\nvs plain: CPU time per epoch against the plain net's; proba gap: largest minus smallest group"
          "\nmean of P(y=1) on the test set; label gap: the same for the labels p >= 0.5; labels (fair):"
          "\nfairsk's fair_labels of the projected probabilities at the same tolerance (what"
          "\nFairLayerClassifier(enforce_on='labels') predicts).")


if __name__ == "__main__":
    main()
