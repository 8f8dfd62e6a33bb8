"""Performance of fairsk against the alternatives, each baseline measured in the same run.

    python benchmarks/performance.py [--quick]

1. layer scaling: forward+backward of FairnessLayer(solver="exact") for n up to
   1,000,000, k groups in {2, 8, 64}, 1 to 3 attributes, with and without a box, against
   one bincount-based group-mean pass over the same tensor (the floor: reading the
   predictions once); peak resident memory of a fresh process per size;
2. training overhead: one epoch of FairLayerClassifier / FairLayerRegressor on Adult
   against the same skorch net without the layer (no sensitive features), exact and qpth;
3. inference: predict on 1,000,000 rows with the whole-call projection, against the
   unconstrained net's predict;
4. streaming: partial_predict latency at batch size 1 and throughput at 16 and 256,
   against calling the fitted net's body directly on the same batches.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import warnings

import numpy as np
import torch
from layer import timed  # benchmarks/layer.py: median of repeated calls after a warm-up


def layer_scaling(sizes, quick):
    from fairsk import FairnessLayer

    print("\n1. layer scaling (ECP tolerance 0.01, float64), median forward+backward")
    print(f"{'n':>9} {'k':>3} {'a':>2} {'box':>4} {'exact ms':>9} {'qpth ms':>8} {'bincount ms':>12}"
          f" {'exact/bincount':>15} {'qpth/exact':>11}")
    configs = [(2, 1, False), (8, 1, False), (64, 1, False), (8, 2, False), (8, 3, False), (8, 1, True)]
    if quick:
        configs = configs[:2]
    for n in sizes:
        for k, a, box in configs:
            gen = torch.Generator().manual_seed(0)
            z = torch.randn(n, dtype=torch.float64, generator=gen)
            groups = torch.randint(0, k, (n, a), generator=gen)

            def step(solver):
                layer = FairnessLayer("ecp", 0.01, solver, (-1.0, 1.0) if box else None)

                def run():
                    v = z.clone().requires_grad_(True)
                    layer(v, groups).sum().backward()

                return run

            def floor():
                g = groups[:, 0]
                torch.bincount(g, weights=z, minlength=k) / torch.bincount(g, minlength=k)

            reps = 3 if n >= 100_000 else 7
            t_exact, t_floor = timed(step("exact"), reps), timed(floor, reps)
            # qpth with a box solves over the n outputs (dense): only for small n
            t_qpth = timed(step("qpth"), 3) if (not box or n <= 1024) and n <= 100_000 else float("nan")
            qpth_txt = f"{t_qpth * 1e3:8.2f}" if np.isfinite(t_qpth) else f"{'n/a':>8}"
            ratio_txt = f"{t_qpth / t_exact:11.1f}" if np.isfinite(t_qpth) else f"{'n/a':>11}"
            print(f"{n:>9} {k:>3} {a:>2} {'yes' if box else 'no':>4} {t_exact * 1e3:9.2f} {qpth_txt}"
                  f" {t_floor * 1e3:12.3f} {t_exact / t_floor:15.1f} {ratio_txt}")
    print("   qpth: n/a with a box above n = 1024 (a dense QP over the n outputs) and above n = 100,000")


_MEM_CHILD = """
import sys, torch
from fairsk import FairnessLayer

def mib(key):  # from /proc/self/status, in MiB
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024

n = int(sys.argv[1])
z = torch.randn(n, dtype=torch.float64).requires_grad_(True); g = torch.randint(0, 8, (n,))
FairnessLayer("ecp", 0.01, "exact")(z[:10], g[:10])  # warm-up: lazy imports and allocations
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
before = mib("VmRSS:")
FairnessLayer("ecp", 0.01, "exact")(z, g).sum().backward()
print(mib("VmHWM:") - before)
"""


def memory(sizes):
    # ru_maxrss survives fork+exec (a child reports its parent's peak), so each child
    # resets its own peak after allocating the inputs and reads /proc/self/status
    print("\n   peak resident memory of one forward+backward beyond its inputs (a fresh process per")
    print("   size; k=8, one attribute; Linux /proc peak counter reset after the inputs exist)")
    for n in sizes:
        out = subprocess.run([sys.executable, "-c", _MEM_CHILD, str(n)], capture_output=True, text=True, check=True)
        mib = float(out.stdout.strip())
        print(f"{n:>9}  {mib:8.1f} MiB  ({mib * 2**20 / n:6.1f} bytes per sample)")


def adult_arrays(rows):
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from fairsk.datasets import load_adult

    X, y, s = load_adult(subset="train", sensitive=("sex",))
    X, y, s = X.iloc[:rows], y.iloc[:rows], s.iloc[:rows]
    cat = [c for c in X.columns if str(X[c].dtype) == "category"]
    num = [c for c in X.columns if c not in cat]
    pre = ColumnTransformer([("n", StandardScaler(), num), ("c", OneHotEncoder(handle_unknown="ignore"), cat)],
                            sparse_threshold=0)
    return pre.fit_transform(X).astype(np.float32), y.to_numpy(), s["sex"].to_numpy()


def training_overhead(rows, batch_sizes):
    from fairsk import FairLayerClassifier, FairLayerRegressor

    A, y, s = adult_arrays(rows)
    print(f"\n2. training: one epoch on {len(y)} Adult rows (median of 3 fits); plain net = the same")
    print("   estimator and skorch net without sensitive features (no layer, shuffled batches)")
    print(f"{'estimator':<22} {'batch':>6} {'solver':>6} {'with layer s':>13} {'plain net s':>12} {'overhead':>9}")
    target = {"FairLayerClassifier": y, "FairLayerRegressor": y.astype(float)}
    for Est in (FairLayerClassifier, FairLayerRegressor):
        for batch in batch_sizes:
            common = dict(max_epochs=1, random_state=0, batch_size=batch)
            plain = timed(lambda: Est(**common).fit(A, target[Est.__name__]), 3)
            for solver in ("exact", "qpth"):
                if solver == "qpth" and batch != batch_sizes[0]:
                    continue
                with_layer = timed(lambda: Est(**common, solver=solver)
                                   .fit(A, target[Est.__name__], sensitive_features=s), 3)
                print(f"{Est.__name__:<22} {batch:>6} {solver:>6} {with_layer:13.2f} {plain:12.2f}"
                      f" {with_layer / plain:8.2f}x")


def inference(n_rows):
    from fairsk import FairLayerClassifier

    A, y, s = adult_arrays(5000)
    clf = FairLayerClassifier(max_epochs=2, random_state=0, solver="exact").fit(A, y, sensitive_features=s)
    reps = -(-n_rows // len(y))
    A_big, s_big = np.tile(A, (reps, 1))[:n_rows], np.tile(s, reps)[:n_rows]
    t_fair = timed(lambda: clf.decision_function(A_big, sensitive_features=s_big), 3)
    t_plain = timed(lambda: clf.body64_(torch.as_tensor(A_big, dtype=torch.float64)), 3)
    print(f"\n3. inference: decision_function on {n_rows:,} rows (one call, projected together)")
    print(f"   fair {t_fair:.2f} s, unconstrained net {t_plain:.2f} s, ratio {t_fair / t_plain:.2f}x"
          f" ({n_rows / t_fair:,.0f} rows/s)")


def streaming(n_calls):
    from fairsk import FairLayerClassifier, StreamingFairPredictor

    A, y, s = adult_arrays(5000)
    stream = StreamingFairPredictor(FairLayerClassifier(max_epochs=2, random_state=0, solver="exact"),
                                    tolerance=0.02).fit(A, y, sensitive_features=s)
    body = stream.estimator_.body64_
    print("\n4. streaming: partial_predict against calling the net's body on the same batch")
    print(f"{'batch':>6} {'partial_predict ms/call':>24} {'body ms/call':>13} {'overhead ms/call':>17}"
          f" {'samples/s':>10}")
    for b in (1, 16, 256):
        stream.reset()
        calls = [(A[i : i + b], s[i : i + b]) for i in range(0, min(len(y), n_calls * b), b)][:n_calls]

        def run_stream():
            for Xb, sb in calls:
                stream.partial_predict(Xb, sensitive_features=sb)

        def run_body():
            with torch.no_grad():
                for Xb, _ in calls:
                    body(torch.as_tensor(Xb, dtype=torch.float64))

        t_s, t_b = timed(run_stream, 3) / len(calls), timed(run_body, 3) / len(calls)
        print(f"{b:>6} {t_s * 1e3:24.3f} {t_b * 1e3:13.3f} {(t_s - t_b) * 1e3:17.3f} {b / t_s:10.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sections", nargs="*", default=["layer", "memory", "training", "inference", "streaming"])
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {json.dumps({'quick': args.quick})}")
    sizes = [1_000, 100_000] if args.quick else [64, 1_024, 100_000, 1_000_000]
    run = set(args.sections)
    if "layer" in run:
        layer_scaling(sizes, args.quick)
    if "memory" in run:
        memory([100_000, 1_000_000] if args.quick else [1_000_000, 4_000_000, 8_000_000])
    if "training" in run:
        training_overhead(3000 if args.quick else 30000, [128] if args.quick else [128, 256, 512])
    if "inference" in run:
        inference(100_000 if args.quick else 1_000_000)
    if "streaming" in run:
        streaming(200 if args.quick else 1000)


if __name__ == "__main__":
    main()
