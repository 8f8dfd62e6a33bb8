"""The exact solver's fast path: one attribute, no box, on the CPU, in NumPy.

This is the case every training step and most predict calls hit. The general path
(:mod:`fairsk.solvers.exact` and :func:`fairsk.solvers._problem.projector_vjp`) builds a
:class:`~fairsk._groups.GroupIndex` and runs some forty small torch operations per call:
at training batch sizes torch's per-operation overhead, not arithmetic, is the cost.
Here the whole call is a few ``bincount``/gather passes over the batch plus ``O(k^2)``
work on the group means, and the means computed by the output check are reused by the
backward pass. The maths is the general path's, step for step; the tests compare the
two (``tests/test_fast_path.py``).

Data passes at large ``n``: recode (one ``bincount``, skipped gather when every code
is present), group sums, output, output check; backward: group sums and one gather.
A NaN or infinity in ``z`` shows up in the group sums, so it costs no extra pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ._problem import Spec


def recode(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense codes of the present values (int64) and their counts (float64).

    NumPy twin of :func:`fairsk._groups._recode`: one ``bincount``; the lookup pass
    is skipped when every code below the largest is present (the usual case).
    """
    n = codes.shape[0]
    top = int(codes.max()) + 1
    if top > max(4 * n, 1024):
        _, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
        return inverse.reshape(-1), counts.astype(np.float64)
    counts = np.bincount(codes, minlength=top)
    present = counts > 0
    if present.all():
        return codes, counts.astype(np.float64)
    return (np.cumsum(present) - 1)[codes], counts[present].astype(np.float64)


def group_means(v: np.ndarray, codes: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Group means (k, c) of the columns of ``v`` (n, c)."""
    k = counts.shape[0]
    sums = np.empty((k, v.shape[1]))
    for j in range(v.shape[1]):
        sums[:, j] = np.bincount(codes, weights=v[:, j], minlength=k)
    return sums / counts[:, None]


def interval_start_1d(m: np.ndarray, w: np.ndarray, tol: float) -> float:
    """Lower end ``c`` of the interval ``[c, c + tol]`` closest to the means ``m``.

    Root of ``F(c) = sum_g w_g ((m_g - tol - c)_+ - (c - m_g)_+)``: non-increasing and
    linear between the breakpoints ``m_g - tol`` and ``m_g``, so ``F`` at the sorted
    breakpoints locates the segment and one linear step lands on the root.
    """
    bps = np.sort(np.concatenate((m - tol, m)))
    above = np.maximum(m - tol - bps[:, None], 0.0)  # (2k, k), at every breakpoint c
    below = np.maximum(bps[:, None] - m, 0.0)
    f = (w * (above - below)).sum(1)
    # last breakpoint with F >= 0 (F at the first one is >= 0 by construction)
    j = max(int(np.count_nonzero(f >= 0)) - 1, 0)
    b0 = float(bps[j])
    if j + 1 == bps.shape[0]:
        return b0
    b1, f0, f1 = float(bps[j + 1]), float(f[j]), float(f[j + 1])
    if f0 > 0 and f0 > f1 and b1 > b0:
        return b0 + f0 / ((f0 - f1) / (b1 - b0))
    return b0


def new_means(means: np.ndarray, counts: np.ndarray, spec: Spec, targets: np.ndarray | None) -> np.ndarray:
    """The projected group means (k, c): clipped into one interval (ecp) or band (eer)."""
    if spec.criterion == "eer":
        return np.minimum(np.maximum(means, targets - spec.tolerance), targets + spec.tolerance)
    if means.shape[0] < 2:
        return means
    out = np.empty_like(means)
    for j in range(means.shape[1]):
        c = interval_start_1d(means[:, j], counts, spec.tolerance)
        out[:, j] = np.minimum(np.maximum(means[:, j], c), c + spec.tolerance)
    return out


def worst_violation(means: np.ndarray, spec: Spec, targets: np.ndarray | None) -> float:
    """Largest constraint violation given the output's group means (nan if non-finite)."""
    if spec.criterion == "eer":
        return float((np.abs(means - targets) - spec.tolerance).max())
    if means.shape[0] < 2:
        return float(np.where(np.isfinite(means), 0.0, np.nan).max())
    return float((means.max(0) - means.min(0) - spec.tolerance).max())


@dataclass
class Solution:
    """What the backward pass needs from the forward: the output's group means."""

    codes: np.ndarray
    counts: np.ndarray
    out: np.ndarray  # (n, c) float64 output (its largest magnitude scales "tight")
    out_means: np.ndarray  # (k, c) float64 group means of ``out``
    spec: Spec
    targets: np.ndarray | None


def project(z: np.ndarray, codes: np.ndarray, counts: np.ndarray, spec: Spec,
            targets: np.ndarray | None) -> tuple[np.ndarray | None, np.ndarray]:
    """Projection of ``z`` (n, c) float64: ``(output, output group means)``.

    Returns ``(None, means)`` when the group sums of ``z`` are not finite (NaN/inf in
    ``z``, or an overflow); the caller decides what that means.
    """
    means = group_means(z, codes, counts)
    if not np.isfinite(means).all():
        return None, means
    shift = new_means(means, counts, spec, targets) - means
    if z.shape[1] == 1:
        out = (z[:, 0] + shift[:, 0][codes])[:, None]
    else:
        out = z + shift[codes]
    return out, group_means(out, codes, counts)


def tight_groups(sol: Solution) -> np.ndarray:
    """Groups (k, c) whose constraint is active at the output; as ``tight_slots``."""
    m, spec = sol.out_means, sol.spec
    # as projector_vjp: rounding of the means is relative to the outputs' magnitude
    delta = 1e-9 * (1.0 + float(np.abs(sol.out).max()) + abs(spec.tolerance))
    if spec.criterion == "eer":
        return np.abs(m - sol.targets) >= spec.tolerance - delta
    if m.shape[0] < 2:
        return np.zeros(m.shape, dtype=bool)
    hi, lo = m.max(0), m.min(0)
    active = (hi - lo) >= spec.tolerance - delta
    return active & ((m >= hi - delta) | (m <= lo + delta))


def vjp(grad: np.ndarray, sol: Solution) -> np.ndarray:
    """``J grad`` (n, c): remove from ``grad`` its projection onto the active rows.

    As ``_single_attribute_correction`` with every coordinate free: on each tight
    group the correction is the group mean ``m_g`` of ``grad``, less (ecp) the
    count-weighted mean ``lam`` of those means, so that the multipliers sum to zero.
    """
    tight = tight_groups(sol)
    if not tight.any():
        return grad
    out = grad.copy()
    n = sol.counts
    for j in np.flatnonzero(tight.any(0)):
        t = tight[:, j]
        m = np.where(t, np.bincount(sol.codes, weights=grad[:, j], minlength=n.shape[0]) / n, 0.0)
        if sol.spec.criterion == "ecp":
            m = np.where(t, m - (n * m).sum() / n[t].sum(), 0.0)
        out[:, j] -= m[sol.codes]
    return out


class SingleAttributeProjection(torch.autograd.Function):
    """Carries a precomputed projection ``out`` (a NumPy array in ``z``'s dtype) into
    the graph; the backward pass is :func:`vjp`."""

    @staticmethod
    def forward(ctx, z: Tensor, out: np.ndarray, sol: Solution) -> Tensor:
        ctx.sol = sol
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad: Tensor):
        g = grad.detach().to(torch.float64).numpy()
        return torch.from_numpy(vjp(g, ctx.sol)).to(grad.dtype), None, None
