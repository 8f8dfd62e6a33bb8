"""Several attributes and a box over partitions: the cell active-set iteration of
``fairsk.dask`` (:func:`fairsk.dask._shifts.boxed_cell_offsets`) against the in-memory
exact layer on random instances: how many it solves, its passes, its largest
difference to the layer.

Run::

    PYTHONPATH=. python benchmarks/dask_cells.py --instances 300   # benchmarks/results/dask_cells.txt
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from fairsk import FairnessLayer
from fairsk.dask import _shifts
from fairsk.exceptions import InfeasibleProjectionError


def cell_projection(z: np.ndarray, codes: np.ndarray, parts: list, spec: _shifts.Spec):
    """The projection of ``z`` (n, c) found from per-cell reductions over ``parts`` (slices)."""
    # each attribute's groups numbered 0..k-1 without gaps, as fairsk.dask numbers them
    codes = np.stack([np.unique(codes[:, a], return_inverse=True)[1].reshape(-1) for a in range(codes.shape[1])], 1)
    cells = sorted({tuple(r) for r in codes.tolist()})
    index = {cell: i for i, cell in enumerate(cells)}
    row_cell = np.array([index[tuple(r)] for r in codes.tolist()])
    counts = np.bincount(row_cell, minlength=len(cells)).astype(np.float64)
    sums = np.stack([np.bincount(row_cell, weights=z[:, j], minlength=len(cells)) for j in range(z.shape[1])], 1)
    cell_groups = [np.array([cell[a] for cell in cells]) for a in range(codes.shape[1])]

    def run_pass(T, T_prev, released, delta):
        return _shifts.merge_cell_passes([
            _shifts.partition_cell_pass(lambda cell, zp=z[sl], cp=row_cell[sl]: zp[cp == index[cell]], T, T_prev,
                                        released, delta, spec.lb, spec.ub) for sl in parts])

    scale = float(np.abs(np.clip(z, spec.lb, spec.ub)).max())
    offsets, passes = _shifts.boxed_cell_offsets(cells, cell_groups, counts, sums, spec, scale, run_pass)
    return np.clip(z + offsets[row_cell], spec.lb, spec.ub), passes


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=300)
    args = parser.parse_args(argv)
    solved, refused, passes, worst = 0, [], [], 0.0
    for seed in range(args.instances):
        rng = np.random.default_rng(seed)
        n_attr, c, n = 2 + seed % 2, 1 + seed % 2, int(rng.integers(20, 400))
        lb, ub = [(0.0, 1.0), (-math.inf, 0.5), (0.0, math.inf)][seed % 3]
        tol = [0.0, 0.01, 0.1][(seed // 3) % 3]
        codes = np.stack([rng.integers(0, int(rng.integers(2, 4)), n) for _ in range(n_attr)], 1)
        z = rng.normal(size=(n, c)) + 0.5 * codes[:, :1] - 0.3 * codes[:, -1:] + 0.5
        try:
            got, p = cell_projection(z, codes, [slice(0, n // 2), slice(n // 2, n)], _shifts.Spec("ecp", tol, lb, ub))
        except InfeasibleProjectionError:
            refused.append((seed, n_attr, tol))
            continue
        layer = FairnessLayer("ecp", tol, "exact", bounds=(None if math.isinf(lb) else lb,
                                                           None if math.isinf(ub) else ub))
        expected = layer(torch.as_tensor(z if c > 1 else z[:, 0]), torch.as_tensor(codes)).numpy().reshape(n, c)
        worst = max(worst, float(np.abs(got - expected).max()))
        solved += 1
        passes.append(p)
    print(f"instances: {args.instances} (2-3 attributes, 1-2 columns, 20-400 rows, boxes [0,1], (-inf,0.5], "
          f"[0,inf), tolerances 0, 0.01, 0.1)")
    print(f"solved: {solved}, refused (InfeasibleProjectionError): {len(refused)} {refused}")
    print(f"passes: median {np.median(passes):.0f}, max {max(passes)}; largest |difference| to the in-memory layer: "
          f"{worst:.2e}")


if __name__ == "__main__":
    main()
