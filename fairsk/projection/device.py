"""The exact projection kept on the outputs' device (one attribute, no box).

On an accelerator, the host solvers (:mod:`.exact`, :mod:`.qpth_solver`) copy the
batch to the host and back: two transfers of ``n`` values each way per training
step. Without a box and with one sensitive attribute the projection only needs the
``k`` group means (:meth:`~.criteria.Criterion.project_means` works on them), so
here the batch never leaves its device:

* group codes, counts and means by ``torch.unique``/``index_add_`` on the device;
* the ``k x c`` means go to the host, the criterion places the projected means
  there, and the ``k x c`` shifts come back; every output is moved by its group's
  shift with one gather on the device;
* the certificate (:mod:`.certificate`'s rule: the output *as returned*, within
  ``CHECK_ATOL``) reads the group means of the returned values, ``k x c`` again;
* the backward (the projector of :func:`~.kernels.projector_vjp`, one attribute,
  every output free) is a group sum, a few ``k``-sized operations and a gather,
  without a host transfer.

Anything else (several attributes, a box, an output that fails the check) is left
to the host path, which returns ``None`` here.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .certificate import CHECK_ATOL, float32_margin
from .criteria import get_criterion
from .kernels import active_tolerance


def applies(z: Tensor, groups, solver: str, lb: float | None, ub: float | None) -> bool:
    """Whether the call takes the device path: outputs on an accelerator, the exact
    solver, no box and one attribute given as a tensor on the same device."""
    return (_on_accelerator(z) and solver == "exact" and lb is None and ub is None
            and isinstance(groups, Tensor) and groups.device == z.device
            and (groups.dim() == 1 or (groups.dim() == 2 and groups.shape[1] == 1)))


def _on_accelerator(z: Tensor) -> bool:
    return z.device.type != "cpu"


def project_on_device(z: Tensor, groups: Tensor, y: Tensor | None, criterion: str, tol: float
                      ) -> Tensor | None:
    """The certified projection of ``z`` (n, c) float32 or float64 on its device,
    returned in its dtype; ``None`` when the host path must answer instead (empty
    batch, values or codes it rejects with its own message, a failed check).

    Three reads from the device: the outputs' scale with the codes' range, the group
    statistics, and the check."""
    n, c = z.shape
    if n == 0 or groups.is_floating_point() or groups.is_complex() or groups.shape[0] != n:
        return None
    dtype, crit = z.dtype, get_criterion(criterion)
    codes = groups.reshape(n).long()
    scale, low, top = torch.stack([z.detach().abs().max().double(), codes.min().double(), codes.max().double()]
                                  ).tolist()
    if not math.isfinite(scale) or low < 0:
        return None
    if dtype == torch.float32 and tol > 0:  # the float32 rule of the certificate
        tol = max(0.0, tol - float32_margin(scale))
    z64 = z.to(torch.float64)
    if top + 1 > max(2 * n, _DIRECT_SLOTS):  # sparse codes: renumber (one more read)
        _, codes = torch.unique(codes, return_inverse=True)
        top = float(codes.max())
    k = int(top) + 1
    counts = torch.bincount(codes, minlength=k).to(torch.float64)
    parts = [z64.detach(), *([] if y is None else [y.to(device=z.device, dtype=torch.float64).reshape(n, -1)
                                                     .expand(n, c)])]
    sums = z64.new_zeros((k, c * len(parts) + 1)).index_add_(0, codes, torch.cat(parts + [z64.new_ones(n, 1)], 1))
    host = sums.cpu().numpy()  # the group statistics: k x (c or 2c) sums and the counts
    present = host[:, -1] > 0
    w = host[present, -1]
    m = host[present, :c] / w[:, None]
    r_all = None if y is None else host[present, c:2 * c] / w[:, None]
    if not np.isfinite(m).all():
        return None
    new, tight = np.empty_like(m), np.zeros(m.shape, dtype=bool)
    for j in range(c):
        delta = active_tolerance(max(-float(m[:, j].min()), float(m[:, j].max())) + tol)
        r = None if r_all is None else r_all[:, j]
        new[:, j], tight[:, j] = crit.project_means(m[:, j], w, tol, r, delta)
    shifts, tight_k = np.zeros((k, c)), np.zeros((k, c), dtype=bool)
    shifts[present], tight_k[present] = new - m, tight
    dev = z.device
    out = _DeviceProjection.apply(z64, torch.from_numpy(shifts).to(dev), codes, counts.clamp(min=1),
                                  torch.from_numpy(tight_k).to(dev), crit.couples_multipliers).to(dtype)
    # the check reads the returned values' group means: float32 rounding included
    check = _group_means(out.detach().to(torch.float64), codes, counts.clamp(min=1), k).cpu().numpy()[present]
    worst = crit.violation(check, tol, r_all)
    if not np.isfinite(worst) or worst > CHECK_ATOL[dtype]:
        return None
    return out


#: codes up to this value index the group table directly (absent codes are empty slots)
_DIRECT_SLOTS = 1 << 16


def _group_means(v: Tensor, codes: Tensor, counts: Tensor, k: int) -> Tensor:
    return v.new_zeros((k, v.shape[1])).index_add_(0, codes, v) / counts.unsqueeze(1)


class _DeviceProjection(torch.autograd.Function):
    """``z + shifts[codes]``; backward: the projector onto the null space of the tight
    groups' mean functionals (coupled within the attribute for differences of means)."""

    @staticmethod
    def forward(ctx, z, shifts, codes, counts, tight, couples):
        ctx.save_for_backward(codes, counts, tight)
        ctx.couples = couples
        return z.detach() + shifts.index_select(0, codes)

    @staticmethod
    def backward(ctx, grad):
        codes, counts, tight = ctx.saved_tensors
        k = counts.shape[0]
        m = _group_means(grad, codes, counts, k)  # (k, c)
        t = tight.to(grad.dtype)
        v = m * t
        if ctx.couples:
            # multipliers summing to zero: remove the count-weighted mean over the
            # tight groups (no tight group in a column: nothing to remove)
            den = (counts.unsqueeze(1) * t).sum(0)
            lam = (counts.unsqueeze(1) * v).sum(0) / den.clamp(min=1)
            v = (v - lam) * t
        return grad - v.index_select(0, codes), None, None, None, None, None
