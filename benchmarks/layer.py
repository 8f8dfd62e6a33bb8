"""Forward+backward time of FairnessLayer's solvers, and of cvxpylayers, in one run.

    python benchmarks/layer.py            # n in {64, 256, 1024, 4096}, k in {2, 8}
    python benchmarks/layer.py --quick    # fewer repeats

Each row is one ECP projection (tolerance 0.01, one attribute, no box) of a float64
batch, timed as the median of repeated forward+backward passes. cvxpylayers (the
paper's approach) is timed as the paper's code uses it, rebuilt on every call, when
it is installed (the ``bench`` extra); otherwise its column says so.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from fairsk import FairnessLayer


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def layer_step(solver, z, groups):
    layer = FairnessLayer("ecp", 0.01, solver)

    def run():
        v = z.clone().requires_grad_(True)
        layer(v, groups).sum().backward()

    return run


def cvxpylayers_step(z, groups, k):
    try:
        import cvxpy as cp
        from cvxpylayers.torch import CvxpyLayer
    except ImportError:
        return None
    n = z.shape[0]
    g = groups.numpy()

    def run():  # the paper's code builds the problem on every forward pass
        zp = cp.Parameter(n)
        y = cp.Variable(n)
        means = [((g == j) / max((g == j).sum(), 1)) @ y for j in range(k)]
        cons = [means[i] - means[j] <= 0.01 for i in range(k) for j in range(k) if i != j]
        prob = cp.Problem(cp.Minimize(cp.sum_squares(y - zp)), cons)
        layer = CvxpyLayer(prob, parameters=[zp], variables=[y])
        v = z.clone().requires_grad_(True)
        (out,) = layer(v)
        out.sum().backward()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", type=int, nargs="*", default=[64, 256, 1024, 4096])
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; median of {repeats} fwd+bwd passes\n")
    header = (
        f"{'n':>6} {'k':>3} {'exact (ms)':>11} {'qpth (ms)':>10} {'cvxpylayers (ms)':>17}"
        f" {'qpth/exact':>11} {'cvxpyl/exact':>13}"
    )
    print(header)
    print("-" * len(header))
    for k in (2, 8):
        for n in args.sizes:
            z = torch.randn(n, dtype=torch.float64) + torch.arange(n, dtype=torch.float64) % k
            groups = torch.arange(n) % k
            exact = timed(layer_step("exact", z, groups), repeats)
            qpth = timed(layer_step("qpth", z, groups), repeats)
            cvx_fn = cvxpylayers_step(z, groups, k) if n <= 1024 else None
            cvx = timed(cvx_fn, max(1, repeats // 3)) if cvx_fn is not None else float("nan")
            cvx_txt = f"{cvx * 1e3:17.2f}" if np.isfinite(cvx) else f"{'n/a':>17}"
            ratio_cvx = f"{cvx / exact:13.0f}" if np.isfinite(cvx) else f"{'n/a':>13}"
            print(f"{n:>6} {k:>3} {exact * 1e3:11.3f} {qpth * 1e3:10.2f} {cvx_txt} {qpth / exact:11.1f} {ratio_cvx}")
    print("\ncvxpylayers: n/a where not installed (pip install '.[bench]') or n > 1024 (minutes per pass)")


if __name__ == "__main__":
    main()
