"""One group pass at 10^6 rows: NumPy's kernels against the ones the layer takes.

    python benchmarks/group_passes.py

For k groups (8, 512, 10,000), the least of 11 rounds of 5 calls of: NumPy's weighted
``bincount`` against :func:`fairsk._groups.group_sums` (torch's ``scatter_add_`` from
65,536 rows), NumPy's ``bincount`` counts against :func:`fairsk._groups.group_counts`,
and the check of an (n, 3) int64 code tensor (NumPy's unsigned maximum against
``torch.aminmax``). Each pair is timed in turn in the same run, and the sums are
checked equal to the bit. Results: ``benchmarks/results/group_passes.txt``.
"""

from __future__ import annotations

import timeit

import numpy as np
import torch

from fairsk._groups import group_counts, group_sums


def least_ms(fn) -> float:
    return min(timeit.repeat(fn, number=5, repeat=11)) / 5 * 1e3


def main() -> None:
    n = 1_000_000
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; n = {n:,}; ms per pass (least of 11 x 5)")
    print(f"{'k':>6} {'numpy sums':>11} {'group_sums':>11} {'numpy counts':>13} {'group_counts':>13}")
    for k in (8, 512, 10_000):
        codes, v = rng.integers(0, k, n), rng.normal(size=n)
        assert np.array_equal(group_sums(v, codes, k), np.bincount(codes, weights=v, minlength=k))
        assert np.array_equal(group_counts(codes, k), np.bincount(codes, minlength=k))
        print(f"{k:>6} {least_ms(lambda: np.bincount(codes, weights=v, minlength=k)):11.3f}"
              f" {least_ms(lambda: group_sums(v, codes, k)):11.3f}"
              f" {least_ms(lambda: np.bincount(codes, minlength=k)):13.3f}"
              f" {least_ms(lambda: group_counts(codes, k)):13.3f}", flush=True)
    g = torch.from_numpy(rng.integers(0, 8, (n, 3)))
    a = g.numpy()
    print(f"check of (n, 3) int64 codes: numpy unsigned max {least_ms(lambda: a.view(np.uint64).max()):.3f} ms,"
          f" torch.aminmax {least_ms(lambda: torch.aminmax(g)):.3f} ms")


if __name__ == "__main__":
    main()
