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


def timed(fn, repeats: int, warmup: int = 1) -> float:
    """Median time of ``repeats`` calls of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
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


def _cvxpy_problem(n, g, k):
    import cvxpy as cp

    zp = cp.Parameter(n)
    y = cp.Variable(n)
    means = [((g == j) / max((g == j).sum(), 1)) @ y for j in range(k)]
    cons = [means[i] - means[j] <= 0.01 for i in range(k) for j in range(k) if i != j]
    return cp.Problem(cp.Minimize(cp.sum_squares(y - zp)), cons), zp, y


def cvxpylayers_step(z, groups, k, rebuild: bool):
    """cvxpylayers, rebuilt on every call as the paper's code does, or built once."""
    try:
        from cvxpylayers.torch import CvxpyLayer
    except ImportError:
        return None
    n = z.shape[0]
    g = groups.numpy()
    built = None
    if not rebuild:
        prob, zp, y = _cvxpy_problem(n, g, k)
        built = CvxpyLayer(prob, parameters=[zp], variables=[y])

    def run():
        layer = built
        if layer is None:
            prob, zp, y = _cvxpy_problem(n, g, k)
            layer = CvxpyLayer(prob, parameters=[zp], variables=[y])
        v = z.clone().requires_grad_(True)
        (out,) = layer(v)
        out.sum().backward()

    return run


def qpth_dense_step(z, groups, k):
    """qpth on the textbook formulation: n variables, Q = 2I, one inequality row
    ``mean_i - mean_j <= tol`` per ordered pair of groups (1/n_g-scaled rows). Returns
    the timed step and the largest constraint violation of its answer."""
    from qpth.qp import QPFunction

    n = z.shape[0]
    onehot = torch.nn.functional.one_hot(groups, k).to(torch.float64)
    means = (onehot / onehot.sum(0).clamp(min=1)).T  # (k, n): mean functionals
    rows = torch.stack([means[i] - means[j] for i in range(k) for j in range(k) if i != j])
    h = torch.full((rows.shape[0],), 0.01, dtype=torch.float64)
    Q = 2 * torch.eye(n, dtype=torch.float64)
    empty = torch.empty(0, dtype=torch.float64)

    def solve(v):
        return QPFunction(verbose=-1)(Q, -2 * v, rows, h, empty, empty)[0]

    def run():
        v = z.clone().requires_grad_(True)
        solve(v).sum().backward()

    with torch.no_grad():
        out = solve(z)
    worst = float((rows @ out - h).max())
    return run, worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", type=int, nargs="*", default=[64, 256, 1024, 4096])
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; median of {repeats} fwd+bwd passes\n")
    header = (
        f"{'n':>6} {'k':>3} {'exact ms':>9} {'qpth ms':>8} {'qpth-n ms':>10} {'qpth-n viol':>11}"
        f" {'cvxpyl rebuilt ms':>18} {'cvxpyl once ms':>15} {'qpth/exact':>11} {'qpth-n/exact':>13}"
        f" {'rebuilt/exact':>14} {'once/exact':>11}"
    )
    print(header)
    print("-" * len(header))
    for k in (2, 8):
        for n in args.sizes:
            z = torch.randn(n, dtype=torch.float64) + torch.arange(n, dtype=torch.float64) % k
            groups = torch.arange(n) % k
            exact = timed(layer_step("exact", z, groups), repeats * 5)
            qpth = timed(layer_step("qpth", z, groups), repeats)
            small = n <= 1024
            dense, viol = qpth_dense_step(z, groups, k) if small else (None, float("nan"))
            cells = {
                "qpth-n": timed(dense, max(1, repeats // 3)) if dense else float("nan"),
                "rebuilt": timed(fn, max(1, repeats // 3)) if small and (fn := cvxpylayers_step(z, groups, k, True))
                else float("nan"),
                "once": timed(fn, max(1, repeats // 3)) if small and (fn := cvxpylayers_step(z, groups, k, False))
                else float("nan"),
            }

            def ms(v, width):
                return f"{v * 1e3:{width}.2f}" if np.isfinite(v) else f"{'n/a':>{width}}"

            def ratio(v, width):
                return f"{v / exact:{width}.0f}" if np.isfinite(v) else f"{'n/a':>{width}}"

            viol_txt = f"{viol:11.1e}" if np.isfinite(viol) else f"{'n/a':>11}"
            print(f"{n:>6} {k:>3} {exact * 1e3:9.3f} {qpth * 1e3:8.2f} {ms(cells['qpth-n'], 10)} {viol_txt}"
                  f" {ms(cells['rebuilt'], 18)} {ms(cells['once'], 15)} {qpth / exact:11.1f}"
                  f" {ratio(cells['qpth-n'], 13)} {ratio(cells['rebuilt'], 14)} {ratio(cells['once'], 11)}")
    print("\nexact and qpth: fairsk's FairnessLayer (qpth solves over the k group shifts);")
    print("qpth-n: qpth on the textbook QP over n variables (viol: its answer's worst constraint")
    print("violation; fairsk's layer would refuse an answer above 1e-6);")
    print("cvxpylayers: rebuilt on every call (the paper's code) or built once; n/a where not")
    print("installed (pip install '.[bench]') or n > 1024 (minutes per pass)")


if __name__ == "__main__":
    main()
