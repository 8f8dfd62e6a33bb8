"""Fair labels: speed at 10^6 rows, cost of the feasible methods, and Adult per call and per stream.

    PYTHONPATH=. python benchmarks/decisions.py [--quick] > benchmarks/results/decisions.txt

1. ``fair_labels`` against a plain threshold (``p > 1/2``) on the same probabilities,
   median of 3 runs, ratio in the same run; then a ``FairLayerClassifier``'s
   ``predict`` (the logit path) against ``predict_proba`` followed by ``fair_labels``
   (what ``predict`` with labels at parity costs), on the same rows.
2. Several attributes or classes: how often the verified feasible labelling is
   optimal, and its expected-accuracy loss per row, against brute force over all
   labellings of small random instances.
3. Adult (logistic regression on the training file, probabilities of the test file):
   accuracy and selection-rate gap of the argmax and of ``fair_labels``; the stream
   (``StreamingLabeler``, batch size 1) in file order and shuffled: final gap, the
   largest ratio of gap to stated bound over all calls, accuracy against the batch.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import time

import numpy as np
import torch

from fairsk.decisions import StreamingLabeler, fair_labels, label_gap


def median_time(fn, repeats=3):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def synthetic(n, groups, seed=0):
    rng = np.random.default_rng(seed)
    cols = [rng.choice(k, size=n, p=np.arange(1, k + 1) / (k * (k + 1) / 2)) for k in groups]
    codes = np.stack(cols, 1)
    p = np.clip(rng.beta(2, 3, n) + 0.15 * (codes[:, 0] % 2), 0, 1)
    return p, codes


def section_speed(sizes, repeats):
    print(f"1. fair_labels against a plain threshold on the same probabilities (median of {repeats} runs)")
    print(f"{'rows':>9} {'groups':>8} {'tol':>5} {'threshold ms':>13} {'fair_labels ms':>15} {'ratio':>8} {'gap':>7}")
    for n in sizes:
        for groups in [(2,), (20,), (2, 5)]:
            if len(groups) > 1 and n > 10**6:
                continue
            p, codes = synthetic(n, groups)
            g = codes[:, 0] if len(groups) == 1 else codes
            t_thr = median_time(lambda: (p > 0.5).astype(np.int64), repeats)
            labels = fair_labels(p, g, 0.02)
            t_fair = median_time(lambda: fair_labels(p, g, 0.02), repeats)
            name = "x".join(map(str, groups))
            print(f"{n:>9} {name:>8} {0.02:>5} {1000 * t_thr:>13.2f} {1000 * t_fair:>15.1f} {t_fair / t_thr:>8.0f} "
                  f"{label_gap(labels, g):>7.4f}")


def section_estimator(n, repeats):
    from fairsk import FairLayerClassifier

    rng = np.random.default_rng(1)
    d = 20
    X_small = rng.normal(size=(4000, d)).astype(np.float32)
    s_small = rng.integers(0, 2, 4000)
    y_small = (X_small[:, 0] + 0.8 * s_small + rng.normal(size=4000) > 0.5).astype(int)
    est = FairLayerClassifier(hidden_layer_sizes=(64,), tolerance=0.02, solver="exact", max_epochs=2,
                              random_state=0)
    est.fit(X_small, y_small, sensitive_features=s_small)
    X = rng.normal(size=(n, d)).astype(np.float32)
    s = rng.integers(0, 2, n)
    t_logits = median_time(lambda: est.predict(X, sensitive_features=s), repeats)

    def labels_path():
        proba = est.predict_proba(X, sensitive_features=s)
        return est.classes_[fair_labels(proba[:, 1], s, 0.02)]

    t_labels = median_time(labels_path, repeats)
    t_proba = median_time(lambda: est.predict_proba(X, sensitive_features=s), repeats)
    print(f"\n   FairLayerClassifier, {n} rows x {d} features, hidden (64,), one attribute with 2 groups:")
    print(f"   predict (logit path, argmax)          {t_logits:.3f} s")
    print(f"   predict_proba alone                   {t_proba:.3f} s")
    print(f"   predict_proba + fair_labels           {t_labels:.3f} s   ratio to the logit path "
          f"{t_labels / t_logits:.2f}x")


def brute_force(P, codes, tol):
    n, k = P.shape
    labs = np.array(list(itertools.product(range(k), repeat=n)), dtype=np.int64)
    ok = np.ones(len(labs), dtype=bool)
    for a in range(codes.shape[1]):
        for c in [1] if k == 2 else range(k):
            rates = np.stack([np.mean(labs[:, codes[:, a] == g] == c, 1) for g in np.unique(codes[:, a])], 1)
            ok &= rates.max(1) - rates.min(1) <= tol
    return P[np.arange(n), labs].sum(1)[ok].max()


def section_cost(n_instances):
    print("\n2. Feasible methods against brute force over all labellings (random instances, groups of 3 values,")
    print("   tolerances in {0, 0.2, 1/3, 0.5, U(0,1)}); loss = expected correct labels lost per row")
    print(f"{'case':<26} {'n':>6} {'optimal':>10} {'mean loss':>10} {'max loss':>9}")
    rng = np.random.default_rng(5)
    cases = [("binary, 1 attribute", 2, 1, 12), ("binary, 2 attributes", 2, 2, 12), ("binary, 3 attributes", 2, 3, 12),
             ("3 classes, 1 attribute", 3, 1, 8), ("3 classes, 2 attributes", 3, 2, 8),
             ("4 classes, 1 attribute", 4, 1, 7)]
    for name, k, n_attr, n_max in cases:
        losses = []
        for _ in range(n_instances):
            n = int(rng.integers(2, n_max + 1))
            codes = rng.integers(0, 3, (n, n_attr))
            P = rng.dirichlet(np.ones(k), n)
            tol = float(rng.choice([0.0, 0.2, 1 / 3, 0.5, rng.random()]))
            labels = fair_labels(P[:, 1] if k == 2 else P, codes, tol)
            losses.append((brute_force(P, codes, tol) - P[np.arange(n), labels].sum()) / n)
        losses = np.array(losses)
        print(f"{name:<26} {'2-' + str(n_max):>6} {np.mean(losses < 1e-9):>10.1%} {losses.mean():>10.4f} "
              f"{losses.max():>9.4f}")


def section_adult():
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from fairsk.datasets import load_adult

    X_tr, y_tr, _ = load_adult(subset="train")
    X_te, y_te, s_te = load_adult(subset="test")
    cat = X_tr.select_dtypes(exclude="number").columns
    num = X_tr.select_dtypes("number").columns
    model = make_pipeline(make_column_transformer((OneHotEncoder(handle_unknown="ignore"), cat),
                                                  (StandardScaler(), num)), LogisticRegression(max_iter=500))
    model.fit(X_tr, y_tr)
    p = model.predict_proba(X_te)[:, 1]
    y = np.asarray(y_te).astype(int)
    codes = np.stack([np.unique(s_te[c].astype(str), return_inverse=True)[1] for c in ("sex", "race")], 1)
    print(f"\n3. Adult test set ({len(y)} rows), logistic regression probabilities")
    print(f"{'attributes':<13} {'tol':>5} {'method':<22} {'accuracy':>9} {'gap':>8}")
    for attrs, g in (("sex", codes[:, 0]), ("sex, race", codes)):
        free = (p > 0.5).astype(int)
        print(f"{attrs:<13} {'':>5} {'argmax':<22} {np.mean(free == y):>9.4f} {label_gap(free, g):>8.4f}")
        for tol in (0.01, 0.02, 0.05):
            labels = fair_labels(p, g, tol)
            print(f"{attrs:<13} {tol:>5} {'fair_labels':<22} {np.mean(labels == y):>9.4f} {label_gap(labels, g):>8.4f}")
    print(f"\n   stream, batch size 1, tolerance 0.02 (gap/bound: largest over all {len(y)} calls)")
    print(f"{'attributes':<13} {'order':<9} {'final gap':>9} {'gap/bound':>9} {'accuracy':>9} {'batch acc':>9} "
          f"{'diff':>7} {'ms/row':>7}")
    perm = np.random.default_rng(0).permutation(len(y))
    for attrs, g in (("sex", codes[:, :1]), ("sex, race", codes)):
        for order_name, order in (("file", np.arange(len(y))), ("shuffled", perm)):
            pp, gg, yy = p[order], g[order], y[order]
            stream = StreamingLabeler(0.02)
            out = np.empty(len(yy), dtype=np.int64)
            worst = 0.0
            t0 = time.perf_counter()
            for i in range(len(yy)):
                out[i] = stream.partial_labels(pp[i : i + 1], gg[i : i + 1])[0]
                worst = max(worst, stream.pooled_gap() / stream.bound())
            elapsed = time.perf_counter() - t0
            batch = fair_labels(pp, gg, 0.02)
            acc, bacc = np.mean(out == yy), np.mean(batch == yy)
            print(f"{attrs:<13} {order_name:<9} {label_gap(out, gg):>9.4f} {worst:>9.3f} {acc:>9.4f} {bacc:>9.4f} "
                  f"{100 * (acc - bacc):>+6.2f}p {1000 * elapsed / len(yy):>7.3f}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="10^5 rows, fewer instances")
    args = parser.parse_args()
    print(f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; quick={args.quick}\n")
    sizes = [10**5] if args.quick else [10**5, 10**6]
    section_speed(sizes, 3)
    section_estimator(10**5 if args.quick else 10**6, 3)
    section_cost(20 if args.quick else 100)
    section_adult()


if __name__ == "__main__":
    main()
