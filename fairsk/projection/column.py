"""The usual training batch, projected with as few array calls as it allows.

One output column on the host, one attribute of at most 64 groups (every code
present, or recoded as :func:`~fairsk._groups.recode` does), the exact solver and a
criterion on group means that needs no targets: this module computes what the
general route (:class:`~fairsk._groups.GroupIndex`, :class:`~.spec.Spec`, the
dispatcher, :func:`~.exact.answer_of`, :func:`~.certificate.certify`,
:func:`~.exact.output_of`) computes for that batch, with the same array operations
on the same values, so the outputs and gradients are the same to the last bit, and
the output is certified by the same rule before it is returned. It skips the
general route's objects and the array calls whose answer the batch's min and max
already give.

Whenever the batch is not of that kind, or anything is unusual (a value that is not
finite, a code that is negative or large, an active-set iteration that does not
settle in its closed-form steps, a certificate that the float32 bound does not
settle at once), :func:`project_column` returns None and the caller takes the
general route, which then raises, warns or falls back to another solver exactly as
it always does.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .._groups import column_codes, recode
from .certificate import CHECK_ATOL, column_violation, float32_margin
from .exact import ONE_ATTRIBUTE_BOX_STEPS, settle_column, shift_column
from .kernels import one_attribute_values

#: the most groups this route takes (the general route's Python-float threshold)
MAX_GROUPS = 64
#: the most rows this route takes: it saves a fixed cost per call, which matters for
#: training batches; larger batches go straight to the general route (whose passes
#: over the data are the same), so that a batch the route declines is not read twice
MAX_ROWS = 1 << 16

_NUMPY = {torch.float32: np.float32, torch.float64: np.float64}


def project_column(z: Tensor, groups, criterion, tol: float, lb: float | None, ub: float | None) -> Tensor | None:
    """The certified exact projection of ``z`` (n, 1), float32 or float64 on the CPU,
    for the groups ``groups`` (an int64 CPU tensor (n,) or (n, 1)); None when the
    general route must answer (see the module's notes).

    ``tol`` is the layer's tolerance (the float32 margin is taken here, as the layer
    takes it); ``criterion`` a :class:`~.criteria.Criterion` without targets.
    """
    n = z.shape[0]
    codes = column_codes(groups, n) if n <= MAX_ROWS else None
    if codes is None:
        return None
    col = z.detach().numpy().reshape(n)
    high = float(col.max())
    low = float(col.min())
    if not (math.isfinite(high) and math.isfinite(low)):
        return None  # the general route's message
    scale = max(high, -low)
    if z.dtype == torch.float32 and tol > 0:  # the float32 rule (certificate)
        tol = max(0.0, tol - float32_margin(scale))
    top = int(codes.max())
    if top >= MAX_GROUPS:
        return None
    try:
        codes, counts = recode(codes, top)
    except ValueError:  # a negative code: the general route's message
        return None
    boxed = lb is not None or ub is not None
    if boxed:
        lb, ub = -math.inf if lb is None else float(lb), math.inf if ub is None else float(ub)
        answer = _boxed(col, codes, counts, criterion, tol, lb, ub, low, high)
    else:
        answer = _unboxed(col, codes, counts, criterion, tol, scale)
    if answer is None:
        return None
    out, tight, free, extremes, bound = answer
    # the certificate: the rule of fairsk.projection.certificate, on the same values
    worst = column_violation(out, codes, counts, criterion, tol, None)
    if not math.isfinite(worst):
        return None
    if boxed:
        worst = max(worst, lb - extremes[0], extremes[1] - ub)
    atol = CHECK_ATOL[z.dtype]
    # ``bound`` is max |out| (with a box) or a bound above it: when the margin of the
    # bound passes, so does the margin of the maximum
    if z.dtype == torch.float32 and worst + float32_margin(bound) > atol:
        if boxed or worst + float32_margin(float(np.abs(out).max())) > atol:
            return None  # the general route checks the float32 values themselves
    if not worst <= atol:
        return None  # the general route tries the next solver, or refuses
    res = torch.from_numpy((out if z.dtype == torch.float64 else out.astype(_NUMPY[z.dtype])).reshape(n, 1))
    if z.requires_grad and torch.is_grad_enabled():
        return _ColumnProjection.apply(z, res, _Batch(codes, counts, tight, free, criterion.couples_multipliers))
    return res


def _unboxed(col, codes, counts, criterion, tol, scale):
    """:func:`~.exact._project_attribute` without a box (a few groups, one column):
    ``(out, tight, None, None, bound on max |out|)``."""
    shifted = shift_column(col, codes, counts, criterion, tol, None)
    if shifted is None:
        return None
    out, tight, shift = shifted
    # |z_i + shift_g| <= max |z| + max |shift|, and rounding keeps the order
    return out, tight, None, None, scale + max(map(abs, shift))


def _boxed(col, codes, counts, criterion, tol, lb, ub, low, high):
    """:func:`~.exact._project_attribute` with a box, settled by its closed-form steps:
    ``(out, tight, free or None when every output is free, (min, max) of out, max |out|)``."""
    z64 = col if col.dtype == np.float64 else col.astype(np.float64)
    settled = settle_column(z64, codes, counts, criterion, tol, lb, ub, None, ONE_ATTRIBUTE_BOX_STEPS, low, high)
    if settled is None:
        return None
    shifted, tight, delta, s_low, s_high = settled
    if s_low > lb + delta and s_high < ub - delta:  # every output free, none clipped
        if shifted is col:  # nothing moved: the output is a copy, never the input itself
            shifted = shifted.copy()
        return shifted, tight, None, (s_low, s_high), max(s_high, -s_low)
    free = (shifted > lb + delta) & (shifted < ub - delta)
    # clip is monotone: the extremes of the clipped outputs are the clipped extremes
    o_low, o_high = min(max(s_low, lb), ub), min(max(s_high, lb), ub)
    return np.clip(shifted, lb, ub), tight, free, (o_low, o_high), max(o_high, -o_low)


class _Batch:
    """What the backward of one batch reads (one argument: the autograd call stays cheap)."""

    __slots__ = ("codes", "counts", "tight", "free", "couples")

    def __init__(self, codes, counts, tight, free, couples):
        self.codes, self.counts, self.tight, self.free, self.couples = codes, counts, tight, free, couples


class _ColumnProjection(torch.autograd.Function):
    """The certified output as a graph node; backward: the projector of
    :func:`~.kernels.projector_vjp` for one column and one attribute
    (:func:`~.kernels.one_attribute_values`), in the same operations."""

    @staticmethod
    def forward(ctx, z, out, batch):
        ctx.batch = batch
        return out

    @staticmethod
    def backward(ctx, grad):
        b = ctx.batch
        free = b.free
        if free is None and not any(b.tight):
            # the identity, as a new tensor: never hand autograd the incoming gradient's
            # memory (z.grad would share it with the caller's grad_output)
            return grad.clone(), None, None
        g = grad.detach().numpy().reshape(-1)
        if free is not None:
            g = g * free
        if any(b.tight):
            corr = np.take(one_attribute_values(g, free, b.tight, b.codes, b.counts, b.couples), b.codes, mode="clip")
            if free is not None:
                corr *= free
            g = g - corr
        if g.dtype != _NUMPY[grad.dtype]:
            g = g.astype(_NUMPY[grad.dtype])
        return torch.from_numpy(g.reshape(grad.shape)), None, None
