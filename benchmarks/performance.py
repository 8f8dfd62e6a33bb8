"""Performance of fairsk against the alternatives, each baseline measured in the same run.

    python benchmarks/performance.py [--quick]

1. layer scaling: forward+backward of FairnessLayer(solver="exact") for n up to
   1,000,000, k groups in {2, 8, 64}, 1 to 3 attributes, with and without a box, against
   one bincount-based group-mean pass over the same tensor (the floor: reading the
   predictions once); peak resident memory of a fresh process per size;
2. training overhead: seconds per epoch of FairLayerClassifier / FairLayerRegressor on
   Adult (all rows; 3000 with --quick; --training-rows N) against the same skorch net
   without the layer (no sensitive features), exact and qpth, fits interleaved, median
   of the epochs' own durations;
3. inference: predict on 1,000,000 rows with the whole-call projection, against the
   unconstrained net's predict;
4. streaming: partial_predict latency at batch size 1 and throughput at 16 and 256,
   against calling the fitted net's body directly on the same batches;
5. breakdown: CPU time of one training batch's layer (n = 128), step by step;
6. overhead (``--sections overhead``, not in the default run): where an epoch's
   overhead over the plain net goes, by ablation in the training loop itself: the
   sensitive features carried with the layer replaced by the identity, then by a
   trivial autograd node (the cost of any custom backward), then the real layer.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np
import torch
from layer import timed  # benchmarks/layer.py: median of repeated calls after a warm-up
from skorch.callbacks import Callback


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
    if rows is not None:
        X, y, s = X.iloc[:rows], y.iloc[:rows], s.iloc[:rows]
    cat = [c for c in X.columns if str(X[c].dtype) == "category"]
    num = [c for c in X.columns if c not in cat]
    pre = ColumnTransformer([("n", StandardScaler(), num), ("c", OneHotEncoder(handle_unknown="ignore"), cat)],
                            sparse_threshold=0)
    return pre.fit_transform(X).astype(np.float32), y.to_numpy(), s["sex"].to_numpy()


class EpochCPU(Callback):
    """The process CPU time of each epoch, recorded in the history as ``cpu``."""

    def on_epoch_begin(self, net, **kwargs):
        self.start_ = time.process_time()

    def on_epoch_end(self, net, **kwargs):
        net.history.record("cpu", time.process_time() - self.start_)


def _timed_class(Est):
    """``Est`` with the epoch CPU-time callback added (nothing else changes)."""

    class Timed(Est):
        def _callbacks(self):
            return [*super()._callbacks(), ("epoch_cpu", EpochCPU())]

    Timed.__name__ = Est.__name__
    return Timed


def training_overhead(rows, batch_sizes, epochs=3, repeats=3, solvers=("exact", "qpth")):
    """Median time per epoch of the plain net and of the layer nets, interleaved.

    Each repeat fits every configuration once, in turn (plain, exact, qpth), for
    ``epochs`` epochs; the times are the epochs' own durations (skorch's ``dur``, wall
    clock: no setup, encoding or copies of the fit), and the process CPU time of the
    same epochs (steadier when other processes share the cores).
    """
    from fairsk import FairLayerClassifier, FairLayerRegressor

    A, y, s = adult_arrays(rows)
    print(f"\n2. training: time per epoch on {len(y)} Adult rows (median of {repeats} fits x {epochs} epochs,")
    print("   interleaved); plain net = the same estimator and skorch net without sensitive features")
    print("   (no layer, shuffled batches); wall = skorch's epoch duration, cpu = process CPU time")
    print(f"{'estimator':<20} {'batch':>5} {'solver':>6} {'layer wall s':>12} {'plain wall s':>12} {'overhead':>8}"
          f" {'layer cpu s':>11} {'plain cpu s':>11} {'overhead':>8}")
    target = {"FairLayerClassifier": y, "FairLayerRegressor": y.astype(float)}
    for Base in (FairLayerClassifier, FairLayerRegressor):
        Est, yt = _timed_class(Base), target[Base.__name__]
        for batch in batch_sizes:
            used = solvers if batch == batch_sizes[0] else [x for x in solvers if x == "exact"]
            configs = [None, *used]

            def epoch_times(solver, n_epochs):
                est = Est(max_epochs=n_epochs, random_state=0, batch_size=batch)
                if solver is None:
                    est.fit(A, yt)
                else:
                    est.set_params(solver=solver).fit(A, yt, sensitive_features=s)
                return list(zip(est.net_.history[:, "dur"], est.net_.history[:, "cpu"]))

            for solver in configs:  # warm-up: lazy imports, first allocations
                epoch_times(solver, 1)
            times = {solver: [] for solver in configs}
            for _ in range(repeats):
                for solver in configs:
                    times[solver] += epoch_times(solver, epochs)
            plain = [statistics.median(t[i] for t in times[None]) for i in (0, 1)]
            for solver in used:
                layer = [statistics.median(t[i] for t in times[solver]) for i in (0, 1)]
                print(f"{Base.__name__:<20} {batch:>5} {solver:>6} {layer[0]:12.3f} {plain[0]:12.3f}"
                      f" {layer[0] / plain[0]:7.2f}x {layer[1]:11.3f} {plain[1]:11.3f} {layer[1] / plain[1]:7.2f}x")


def _cpu_us(fn, reps: int) -> float:
    """Least process CPU time of one call over 5 rounds of ``reps`` calls, in microseconds."""
    for _ in range(max(3, reps // 20)):
        fn()
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for _ in range(reps):
            fn()
        best = min(best, (time.process_time() - start) / reps)
    return best * 1e6


def layer_breakdown(n=128):
    """Where one training batch's layer time goes (float32 outputs, one attribute of two
    groups, tolerance 0.01): CPU microseconds per call of each step the layer takes."""
    import fairsk.projection.qpth_solver as qpth_solver
    from fairsk import FairnessLayer
    from fairsk._groups import encode_groups
    from fairsk.layer import _max_abs, _one_column_index
    from fairsk.projection import Spec, certify, get_criterion
    from fairsk.projection.column import project_column
    from fairsk.projection.exact import answer_of, output_of

    print(f"\n5. one training batch (n = {n}, float32, 2 groups, tolerance 0.01): CPU microseconds per call")
    print(f"{'box':>4} {'solver':>6} {'fwd+bwd':>8} {'forward':>8} {'column route':>12} {'inputs+index':>12}"
          f" {'exact solve':>11} {'certificate':>11} {'qpth QP fwd':>11}")
    gen = torch.Generator().manual_seed(0)
    groups = torch.randint(0, 2, (n, 1), generator=gen)
    for box in (False, True):
        z = torch.randn(n, 1, generator=gen)
        z = torch.sigmoid(z) if box else z
        spec = Spec("ecp", 0.01, *((0.0, 1.0) if box else (None, None)))
        gidx = encode_groups(groups.numpy())
        zg = z.clone().requires_grad_(True)
        out = answer_of(zg, gidx, spec).out

        def inputs():
            _one_column_index(groups, n)
            _max_abs(z)

        for solver in ("exact", "qpth"):
            layer = FairnessLayer("ecp", 0.01, solver, (0.0, 1.0) if box else None)
            reps = 20 if solver == "qpth" else 500

            def step(backward=True):
                v = z.clone().requires_grad_(True)
                y = layer(v, groups)
                if backward:
                    y.sum().backward()

            total, forward = _cpu_us(step, reps), _cpu_us(lambda: step(False), reps)
            qp = float("nan")
            if solver == "qpth":
                real, spent = qpth_solver.QPFunction, []

                def timed_qp(*args, **kwargs):
                    fn = real(*args, **kwargs)

                    def call(*inputs):
                        start = time.process_time()
                        result = fn(*inputs)
                        spent.append(time.process_time() - start)
                        return result
                    return call

                qpth_solver.QPFunction = timed_qp
                try:
                    for _ in range(reps):
                        step(False)
                finally:
                    qpth_solver.QPFunction = real
                qp = statistics.median(spent) * 1e6
            route = "-"
            if solver == "exact":
                lb_ub = (0.0, 1.0) if box else (None, None)
                route = f"{_cpu_us(lambda: project_column(z, groups, get_criterion('ecp'), 0.01, *lb_ub), 500):.0f}"
            print(f"{'yes' if box else 'no':>4} {solver:>6} {total:8.0f} {forward:8.0f} {route:>12}"
                  f" {_cpu_us(inputs, 500):12.0f}"
                  f" {_cpu_us(lambda: output_of(zg, answer_of(zg, gidx, spec), gidx, spec), 500):11.0f}"
                  f" {_cpu_us(lambda: certify(out, gidx, spec, torch.float32), 500):11.0f}"
                  f" {'-' if qp != qp else f'{qp:.0f}':>11}")
    print("   exact fwd+bwd and forward take the one-column route (fairsk.projection.column): column route =")
    print("   its solve and certificate without autograd. The general route's steps, which qpth's batches")
    print("   take: inputs+index: the layer's checks of z and the codes, and the batch's GroupIndex (one")
    print("   bincount); exact solve: the exact solver's float64 answer and its autograd node (in z's dtype,")
    print("   float32); certificate: the check of that answer; qpth QP fwd: qpth's own")
    print("   interior-point forward inside the qpth solver (the rest of a qpth batch is the wrapper: the")
    print("   exact projection it is checked against, its matrices, both certificates, the checked backward)")


class _Identity(torch.autograd.Function):
    """A graph node that does nothing: the fixed cost of a custom backward."""

    @staticmethod
    def forward(ctx, z):
        return z.view_as(z)

    @staticmethod
    def backward(ctx, grad):
        return grad


def overhead_ablation(rows, batch, epochs, repeats, more=None, estimators=None):
    """Per-batch CPU time over the plain net of: the groups carried (layer = identity),
    a trivial autograd node in place of the layer, and the layer; interleaved fits.
    ``more``: further replacements of ``FairnessLayer.forward`` by name (each given the
    real forward as its last argument); ``estimators``: the classes to fit (default both)."""
    import fairsk.layer as layer_module
    from fairsk import FairLayerClassifier, FairLayerRegressor

    A, y, s = adult_arrays(rows)
    real = layer_module.FairnessLayer.forward
    variants = {
        "groups carried, layer = identity": lambda self, z, groups, y=None: z,
        "groups carried, a trivial autograd node": lambda self, z, groups, y=None: _Identity.apply(z),
        "the layer (exact)": real,
    }
    for name, forward in (more or {}).items():
        variants[name] = lambda self, z, groups, y=None, forward=forward: forward(self, z, groups, y, real)
    print(f"\n6. overhead: CPU microseconds per batch over the plain net ({len(y)} Adult rows, batch {batch},")
    print(f"   median of {repeats} fits x {epochs} epochs, interleaved; the layer's forward replaced in the loop)")
    target = {"FairLayerClassifier": y, "FairLayerRegressor": y.astype(float)}
    n_batches = -(-len(y) // batch)
    try:
        for Base in estimators or (FairLayerClassifier, FairLayerRegressor):
            Est, yt = _timed_class(Base), target[Base.__name__]

            def epoch_cpu(name, n_epochs):
                est = Est(max_epochs=n_epochs, random_state=0, batch_size=batch, solver="exact")
                if name is None:
                    est.fit(A, yt)
                else:
                    layer_module.FairnessLayer.forward = variants[name]
                    try:
                        est.fit(A, yt, sensitive_features=s)
                    finally:
                        layer_module.FairnessLayer.forward = real
                return list(est.net_.history[:, "cpu"])

            names = [None, *variants]
            for name in names:  # warm-up
                epoch_cpu(name, 1)
            times = {name: [] for name in names}
            for _ in range(repeats):
                for name in names:
                    times[name] += epoch_cpu(name, epochs)
            plain = statistics.median(times[None])
            print(f"   {Base.__name__}: plain net {plain * 1e3:.1f} ms/epoch ({plain / n_batches * 1e6:.0f} us/batch)")
            for name in variants:
                t = statistics.median(times[name])
                print(f"     {name:<42} {(t - plain) / n_batches * 1e6:7.0f} us/batch  ({t / plain:.2f}x)")
    finally:
        layer_module.FairnessLayer.forward = real


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
    parser.add_argument("--sections", nargs="*",
                        default=["layer", "memory", "training", "inference", "streaming", "breakdown"])
    parser.add_argument("--training-rows", type=int, default=None,
                        help="Adult rows of the training section (default: 3000 with --quick, all otherwise)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per fit in the training section")
    parser.add_argument("--repeats", type=int, default=3, help="fits per configuration in the training section")
    parser.add_argument("--training-solvers", nargs="*", default=["exact", "qpth"], choices=["exact", "qpth"])
    parser.add_argument("--training-threads", type=int, default=1,
                        help="torch threads of the training and breakdown sections (default 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's); 1 keeps small-batch timings steady on a busy machine")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    options = {"quick": args.quick, "training_rows": args.training_rows, "epochs": args.epochs,
               "repeats": args.repeats}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {json.dumps(options)}")
    sizes = [1_000, 100_000] if args.quick else [64, 1_024, 100_000, 1_000_000]
    run = set(args.sections)
    if "layer" in run:
        layer_scaling(sizes, args.quick)
    if "memory" in run:
        memory([100_000, 1_000_000] if args.quick else [1_000_000, 4_000_000, 8_000_000])
    threads = torch.get_num_threads()
    # a small MLP's step gains nothing from a second thread, and on shared cores its
    # timings swing with the other processes' load: the per-batch sections run on one
    torch.set_num_threads(args.training_threads)
    if run & {"training", "breakdown", "overhead"}:
        print(f"\n(training and breakdown: {args.training_threads} torch thread(s))")
    if "training" in run:
        rows = args.training_rows or (3000 if args.quick else None)
        training_overhead(rows, [128] if args.quick else [128, 256, 512], args.epochs, args.repeats,
                          args.training_solvers)
    if "breakdown" in run:
        layer_breakdown()
    if "overhead" in run:
        overhead_ablation(args.training_rows or (3000 if args.quick else None), 128, args.epochs, args.repeats)
    torch.set_num_threads(threads)
    if "inference" in run:
        inference(100_000 if args.quick else 1_000_000)
    if "streaming" in run:
        streaming(200 if args.quick else 1000)


if __name__ == "__main__":
    main()
