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

import numpy as np
import torch
from torch import Tensor

from .certificate import CHECK_ATOL
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


def project_on_device(z: Tensor, groups: Tensor, y: Tensor | None, criterion: str, tol: float,
                      dtype: torch.dtype) -> Tensor | None:
    """The certified projection of ``z`` (n, c) float64 on its device, returned in
    ``dtype``; ``None`` when the host path must answer instead (empty batch, group
    codes it must reject with its own message, a failed check)."""
    n, c = z.shape
    if n == 0 or groups.is_floating_point() or groups.is_complex() or groups.shape[0] != n:
        return None
    crit = get_criterion(criterion)
    values, codes, counts = torch.unique(groups.reshape(n), return_inverse=True, return_counts=True)
    if int(values[0]) < 0:  # one scalar read; the host path raises its error
        return None
    k = values.shape[0]
    counts64 = counts.to(z.dtype)
    means = _group_means(z.detach(), codes, counts64, k)
    targets = None
    if crit.needs_targets:
        if y is None:
            return None
        targets = _group_means(y.to(device=z.device, dtype=z.dtype).reshape(n, -1).expand(n, c), codes, counts64, k)
    host = torch.stack([means, counts64.unsqueeze(1).expand(k, c)] + ([] if targets is None else [targets]))
    host = host.cpu().numpy()  # the one read of the forward: k x c means, counts and targets
    m, w = host[0], host[1][:, 0]
    if not np.isfinite(m).all():
        return None
    new = np.empty_like(m)
    tight = np.zeros(m.shape, dtype=bool)
    for j in range(c):
        delta = active_tolerance(max(-float(m[:, j].min()), float(m[:, j].max())) + tol)
        r = None if targets is None else host[2][:, j]
        new[:, j], tight[:, j] = crit.project_means(m[:, j], w, tol, r, delta)
    shifts = torch.from_numpy(new - m).to(z.device)
    tight_d = torch.from_numpy(tight).to(z.device)
    out = _DeviceProjection.apply(z, shifts, codes, counts64, tight_d, crit.couples_multipliers)
    returned = out.to(dtype)
    # the check reads the returned values' group means (k x c): float32 rounding included
    check = _group_means(returned.detach().to(z.dtype), codes, counts64, k).cpu().numpy()
    worst = crit.violation(check, tol, None if targets is None else host[2])
    if not np.isfinite(worst) or worst > CHECK_ATOL[dtype]:
        return None
    return returned


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
