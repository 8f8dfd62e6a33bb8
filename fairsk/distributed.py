"""The fairness layer over a batch split across processes (torch.distributed).

With ``DistributedDataParallel`` every rank sees one shard of each global batch. The
constraint is on the group means of the *global* batch, so projecting each shard
alone would be wrong. :class:`DistributedFairnessLayer` projects each rank's shard
against the global batch:

* forward: the per-group counts and sums (and, with a box, the statistics and the
  search passes of :func:`fairsk.dask._shifts.box_shifts`) are all-reduced; every
  rank finds the same group shifts and applies them to its shard;
* backward: the Jacobian is the projector onto the null space of the active
  constraints (and of the clipped outputs); for one attribute it needs the global
  group sums of the incoming gradient over the free outputs of the tight groups,
  and the global counts of free outputs: one all-reduce.

Outputs and gradients equal those of :class:`fairsk.FairnessLayer` on the
concatenated batch (to rounding). One sensitive attribute; ``ecp`` and ``eer``;
with or without a box. Every rank must call the layer at every step (the
collectives must match), with group codes numbered the same way on every rank.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from .dask import _shifts
from .exceptions import InfeasibleProjectionError

__all__ = ["DistributedFairnessLayer"]

_CHECK_ATOL = 1e-6  # as the layer's float64 check


class DistributedFairnessLayer(nn.Module):
    """Project each rank's shard of a batch onto the fair set of the global batch.

    Parameters
    ----------
    criterion : {"ecp", "eer"}, default="ecp"
    tolerance : float, default=0.0
    bounds : tuple (lb, ub) or None, default=None
        Optional box on the outputs; either end may be None.
    process_group : torch.distributed ProcessGroup or None, default=None
        The ranks that share the batch (None: the default group).

    Notes
    -----
    ``forward(z, groups, y=None)`` takes this rank's shard: ``z`` (n,) or (n, c)
    float, ``groups`` (n,) or (n, 1) integer codes (one attribute), ``y`` the
    targets for ``"eer"``. Shards may have any size, including 0. Outside an
    initialised process group the layer works on its own batch alone.

    Examples
    --------
    >>> import torch
    >>> from fairsk.distributed import DistributedFairnessLayer
    >>> layer = DistributedFairnessLayer(tolerance=0.1)  # one process: the ordinary layer
    >>> layer(torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64), torch.tensor([0, 0, 1, 1]))
    tensor([0.9500, 1.9500, 1.0500, 2.0500], dtype=torch.float64)
    """

    def __init__(self, criterion: str = "ecp", tolerance: float = 0.0, bounds=None, process_group=None):
        super().__init__()
        if criterion not in ("ecp", "eer"):
            raise ValueError(f"criterion must be 'ecp' or 'eer', got {criterion!r}")
        tol = float(tolerance)
        if not math.isfinite(tol) or tol < 0:
            raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
        lb, ub = (None, None) if bounds is None else bounds
        lb = -math.inf if lb is None else float(lb)
        ub = math.inf if ub is None else float(ub)
        if not lb < ub:
            raise ValueError(f"bounds must satisfy lb < ub, got {bounds!r}")
        self.criterion, self.tolerance, self.bounds = criterion, tolerance, bounds
        self.process_group = process_group
        self._spec = _shifts.Spec(criterion, tol, lb, ub)

    def extra_repr(self) -> str:
        return f"criterion={self.criterion!r}, tolerance={self.tolerance!r}, bounds={self.bounds!r}"

    def forward(self, z: Tensor, groups: Tensor, y: Tensor | None = None) -> Tensor:
        if z.dim() not in (1, 2):
            raise ValueError(f"z must have shape (n,) or (n, c), got {tuple(z.shape)}")
        g = torch.as_tensor(groups)
        if g.dim() == 2:
            if g.shape[1] != 1:
                raise ValueError("DistributedFairnessLayer supports one sensitive attribute (groups (n,) or (n, 1))")
            g = g[:, 0]
        if g.shape[0] != z.shape[0]:
            raise ValueError(f"groups has {g.shape[0]} rows but z has {z.shape[0]}")
        if g.is_floating_point() or (g.numel() and int(g.min()) < 0):
            raise ValueError("groups must hold non-negative integer codes")
        z2 = z if z.dim() == 2 else z.unsqueeze(1)
        targets = None
        if self.criterion == "eer":
            if y is None:
                raise ValueError("criterion='eer' needs the targets y")
            yt = torch.as_tensor(y, dtype=torch.float64).reshape(z2.shape[0], -1).expand(z2.shape[0], z2.shape[1])
            targets = yt.detach().cpu().numpy()
        comm = _Comm(self.process_group)
        out = _Projection.apply(z2, g.detach().cpu().numpy().astype(np.int64), targets, self._spec, comm)
        return out if z.dim() == 2 else out.reshape(z.shape)


class _Comm:
    """All-reduces of NumPy arrays over the process group (identity without one)."""

    def __init__(self, group):
        self.group = group
        self.active = dist.is_available() and dist.is_initialized()

    def sum(self, a: np.ndarray) -> np.ndarray:
        return self._reduce(a, dist.ReduceOp.SUM)

    def max(self, a: np.ndarray) -> np.ndarray:
        return self._reduce(a, dist.ReduceOp.MAX)

    def _reduce(self, a: np.ndarray, op) -> np.ndarray:
        a = np.ascontiguousarray(a, dtype=np.float64)
        if not self.active:
            return a
        t = torch.from_numpy(a.copy())
        dist.all_reduce(t, op=op, group=self.group)
        return t.numpy()

    def gather(self, obj) -> list:
        if not self.active:
            return [obj]
        out = [None] * dist.get_world_size(self.group)
        dist.all_gather_object(out, obj, group=self.group)
        return out


def _group_sums(v: np.ndarray, codes: np.ndarray, k: int) -> np.ndarray:
    """(k, c) sums of the columns of ``v`` (n, c) per code."""
    return np.stack([np.bincount(codes, weights=v[:, j], minlength=k) for j in range(v.shape[1])], 1) \
        if v.shape[1] else np.zeros((k, 0))


class _Projection(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: Tensor, codes: np.ndarray, targets, spec: _shifts.Spec, comm: _Comm) -> Tensor:
        zn = z.detach().cpu().numpy().astype(np.float64)
        n, c = zn.shape
        k = int(comm.max(np.array([codes.max() + 1 if n else 0], dtype=np.float64))[0])
        counts = comm.sum(np.bincount(codes, minlength=k).astype(np.float64))
        present = counts > 0
        if not np.isfinite(zn).all():
            raise ValueError("z contains NaN or infinite values")
        target_means = None
        if targets is not None:
            ysum = comm.sum(_group_sums(targets, codes, k))
            target_means = ysum[present] / counts[present, None]
        shift = np.zeros((k, c))  # added to each group's outputs (before the box)
        pos = np.flatnonzero(present)
        if not spec.has_box:
            sums = comm.sum(_group_sums(zn, codes, k))
            m = sums[present] / counts[present, None]
            w = counts[present].tolist()
            for j in range(c):
                tj = None if target_means is None else target_means[:, j].tolist()
                shift[pos, j] = np.asarray(_shifts.new_means(m[:, j].tolist(), w, spec, tj)) - m[:, j]
            out = zn + shift[codes]
        else:
            shift[pos] = -_box_shifts(zn, codes, k, counts, present, spec, target_means, comm)
            out = np.clip(zn + shift[codes], spec.lb, spec.ub)
        out_means = comm.sum(_group_sums(out, codes, k))[present] / counts[present, None]
        scale = float(comm.max(np.array([np.abs(out).max() if out.size else 0.0]))[0])
        _check(out_means, spec, target_means, scale)
        ctx.save_for_backward(torch.from_numpy(out))
        ctx.codes, ctx.k, ctx.counts, ctx.present = codes, k, counts, present
        ctx.out_means, ctx.scale, ctx.spec, ctx.comm, ctx.target_means = out_means, scale, spec, comm, target_means
        return torch.from_numpy(out).to(z.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (out,) = ctx.saved_tensors
        y = out.numpy()
        spec, comm, codes, k = ctx.spec, ctx.comm, ctx.codes, ctx.k
        g = grad.detach().cpu().numpy().astype(np.float64)
        delta = 1e-9 * (1.0 + ctx.scale + spec.tolerance)
        free = np.ones_like(y)
        if math.isfinite(spec.lb):
            free *= y > spec.lb + delta
        if math.isfinite(spec.ub):
            free *= y < spec.ub - delta
        g_free = g * free
        tight = _tight(ctx.out_means, spec, ctx.target_means, delta)  # (K_present, c)
        if not tight.any():
            return torch.from_numpy(g_free).to(grad.dtype), None, None, None, None
        both = comm.sum(np.concatenate([_group_sums(g_free, codes, k), _group_sums(free, codes, k)], 1))
        c = y.shape[1]
        s_grad, f = both[ctx.present, :c], both[ctx.present, c:]
        n = ctx.counts[ctx.present][:, None]
        has_free = tight & (f > 0)
        fc = np.maximum(f, 1.0)
        m = np.where(has_free, s_grad / fc, 0.0)
        v = m
        if spec.criterion == "ecp":
            num = np.where(has_free, n * m, 0.0).sum(0)
            den = np.where(has_free, n**2 / fc, 0.0).sum(0)
            lam = np.where(den > 0, num / np.maximum(den, 1e-300), 0.0)
            v = m - lam * n / fc
        corr = np.zeros((k, c))
        corr[ctx.present] = np.where(has_free, v, 0.0)
        return torch.from_numpy(g_free - corr[codes] * free).to(grad.dtype), None, None, None, None


def _tight(means: np.ndarray, spec: _shifts.Spec, targets, delta: float) -> np.ndarray:
    """Groups whose constraint is active at the output (as the layer's ``tight_slots``)."""
    if spec.criterion == "eer":
        return np.abs(means - targets) >= spec.tolerance - delta
    tight = np.zeros(means.shape, dtype=bool)
    if means.shape[0] < 2:
        return tight
    hi, lo = means.max(0), means.min(0)
    active = (hi - lo) >= spec.tolerance - delta
    return active & ((means >= hi - delta) | (means <= lo + delta))


def _check(means: np.ndarray, spec: _shifts.Spec, targets, scale: float) -> None:
    if spec.criterion == "eer":
        worst = float((np.abs(means - targets) - spec.tolerance).max()) if means.size else 0.0
    else:
        worst = float((means.max(0) - means.min(0)).max() - spec.tolerance) if means.shape[0] >= 2 else 0.0
    if not worst <= _CHECK_ATOL:
        raise InfeasibleProjectionError(
            f"the projection of the global batch breaks the {spec.criterion!r} constraints by {worst:.3g}; it is "
            "refused rather than returned unfair"
        )


def _box_shifts(zn, codes, k, counts, present, spec, target_means, comm: _Comm) -> np.ndarray:
    """Shifts t (K_present, c) with a box: the search of :func:`_shifts.box_shifts`,
    each pass one all-reduce (and one all-gather of the last few breakpoints)."""
    n, c = zn.shape
    lb, ub = spec.lb, spec.ub
    pos = np.flatnonzero(present)
    zc = np.clip(zn, lb, ub)
    sums = comm.sum(np.concatenate([_group_sums(zn, codes, k), _group_sums(zc, codes, k)], 1))
    big = np.full((k, c), np.inf)
    lo_hi = np.concatenate([big, big], 1)
    for gi in np.unique(codes):
        rows = zn[codes == gi]
        lo_hi[gi, :c], lo_hi[gi, c:] = -rows.min(0), rows.max(0)
    lo_hi = comm.max(np.where(np.isinf(lo_hi), -np.inf, lo_hi))
    cnt0 = np.zeros((k, 4, c))
    for gi in np.unique(codes):
        cnt0[gi] = _shifts.zero_counts(zn[codes == gi], lb, ub)
    cnt0 = comm.sum(cnt0.reshape(k, -1)).reshape(k, 4, c)
    stats, targets = {}, None if target_means is None else {}
    for i, gi in enumerate(pos):
        for j in range(c):
            key = ((int(gi),), j)
            stats[key] = (counts[gi], sums[gi, j], sums[gi, c + j], -lo_hi[gi, j], lo_hi[gi, c + j], cnt0[gi, :, j])
            if targets is not None:
                targets[key] = float(target_means[i, j])
    order = sorted(stats)

    def run_pass(evals: dict, collects: dict):
        local_e, local_c = _shifts.partition_box_pass(lambda key: zn[codes == key[0][0], key[1]], evals, collects,
                                                     lb, ub)
        ekeys = [key for key in order if key in evals]
        flat = [np.concatenate([local_e[key][0], local_e[key][1].ravel()]) for key in ekeys]
        total = comm.sum(np.concatenate(flat)) if flat else np.zeros(0)
        merged_e, at = {}, 0
        for key in ekeys:
            m = len(evals[key])
            merged_e[key] = (total[at : at + m], total[at + m : at + 5 * m].reshape(4, m))
            at += 5 * m
        merged_c = {}
        if collects:
            gathered = comm.gather(local_c)
            merged_c = _shifts.merge_box_passes([({}, part) for part in gathered])[1]
        return merged_e, merged_c

    shifts, _ = _shifts.box_shifts(stats, spec, run_pass, targets)
    return np.array([[shifts[((int(gi),), j)] for j in range(c)] for gi in pos])
