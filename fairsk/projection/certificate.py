"""The output check: no output leaves the layer without meeting its constraints.

Rule, stated once here: the float64 solution is checked to ``1e-6`` (absolute) in
float64; a float32 output is checked *as returned*, to ``1e-5`` (absolute). float32
rounds each output by up to ``2**-24 * |out|``, which moves a gap between group means
by up to ``2 * 2**-24 * max|out|``: the float64 projection is therefore solved with the
tolerance reduced by that margin (:func:`float32_margin`), so that the rounded output
still meets the tolerance; when the margin exceeds what the tolerance and the ``1e-5``
allowance leave (outputs of magnitude above about ``1e5 * tolerance``), float32 cannot
represent a fair output and the projection is refused with a message saying so.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .._groups import GroupIndex, group_sums
from .spec import SolverError, Spec

#: absolute allowance of the check on every output, by dtype
CHECK_ATOL = {torch.float64: 1e-6, torch.float32: 1e-5}
_F32_UNIT = 2.0**-24


def float32_margin(scale: float) -> float:
    """Largest change of a gap between group means when outputs of magnitude
    ``scale`` are rounded to float32."""
    return 2.0 * _F32_UNIT * scale


def violation(y: np.ndarray, groups: GroupIndex, spec: Spec) -> float:
    """Largest violation of any constraint by ``y`` (n, c) float64 (nan if not finite)."""
    return _violation(y, groups, spec)[0]


def _violation(y: np.ndarray, groups: GroupIndex, spec: Spec) -> tuple[float, float | None]:
    """:func:`violation`, and ``max |y|`` when the box check has read it (else None)."""
    worst, scale = 0.0, None
    if y.size and (spec.has_box or groups.n_slots == 0):
        # NaN propagates through min and max, and an infinity is one of them
        low, high = float(y.min()), float(y.max())
        if not (math.isfinite(low) and math.isfinite(high)):
            return float("nan"), None
        lb, ub = spec.box
        worst, scale = max(worst, lb - low, high - ub), max(-low, high)
    if y.shape[0] == 0 or groups.n_slots == 0:
        return worst, scale
    # every output is in a group of each attribute: a NaN or an infinity in y makes a
    # group mean non-finite (so does a sum that overflows); refused before the
    # criteria, whose max() could drop a NaN
    if groups.n_attributes == 1 and y.shape[1] == 1 and groups.n_slots <= 64:
        r = None if spec.targets is None else spec.targets[:, 0].tolist()
        v = column_violation(y[:, 0], groups.codes(0), groups.counts, spec.criterion, spec.tolerance, r)
        return (max(worst, v), scale) if math.isfinite(v) else (v, None)
    means = groups.means(y)
    if not np.isfinite(means).all():
        return float("nan"), None
    for a in range(groups.n_attributes):
        sl = groups.attribute(a)
        r = None if spec.targets is None else spec.targets[sl]
        worst = max(worst, spec.criterion.violation(means[sl], spec.tolerance, r))
    return worst, scale


def column_violation(y: np.ndarray, codes: np.ndarray, counts: np.ndarray, criterion, tol: float,
                     r: list | None) -> float:
    """Largest violation of the constraints of one attribute of a few groups by one
    column ``y`` (n,) (nan when a group mean is not finite): one ``bincount``, and the
    criterion on the means as Python floats (the usual batch)."""
    values = [s / c for s, c in zip(group_sums(y, codes, counts.shape[0]).tolist(), counts.tolist())]
    if not all(map(math.isfinite, values)):
        return float("nan")
    return criterion.violation_of_column(values, tol, r)


def certify(out: np.ndarray, groups: GroupIndex, spec: Spec, dtype: torch.dtype) -> None:
    """Raise :class:`SolverError` unless ``out`` (float64), returned in ``dtype``,
    meets the constraints (see the module's rule)."""
    atol = CHECK_ATOL[dtype]
    # non-finite outputs make the violation NaN (see violation); the message says which
    worst, scale = _violation(out, groups, spec)
    if not np.isfinite(worst) and out.size:
        raise SolverError("returned non-finite values (NaN or inf), e.g. from group sums that overflow")
    if dtype == torch.float32 and np.isfinite(worst) and out.size:
        if scale is None:
            scale = float(np.abs(out).max())
        if worst + float32_margin(scale) > atol:
            # the bound does not prove it: check the float32 values themselves
            worst32 = violation(out.astype(np.float32).astype(np.float64), groups, spec)
            if worst32 <= atol:
                return
            if worst <= atol:  # the float64 answer is fair: float32's rounding breaks it
                raise SolverError(
                    f"the float32 output breaks the {spec.criterion.name!r} constraints by {worst32:.3g} "
                    f"(> {atol:.1g}): at magnitude {scale:.3g} float32 cannot resolve tolerance="
                    f"{spec.tolerance}; pass float64 outputs or centre them"
                )
            worst = max(worst, worst32)  # the answer itself is unfair: the message below
    if not np.isfinite(worst) or worst > atol:
        raise SolverError(
            f"returned an output that breaks the {spec.criterion.name!r} constraints by {worst:.3g} (> {atol:.1g})"
        )


def certify_optimal(out: np.ndarray, reference: np.ndarray) -> None:
    """Raise :class:`SolverError` when ``out`` is more than ``1e-6`` (relative to the
    outputs' magnitude above 1) from ``reference``, the exact projection."""
    scale = max(1.0, float(np.abs(reference).max())) if reference.size else 1.0
    gap = float(np.abs(out - reference).max()) if out.size else 0.0
    if not gap <= 1e-6 * scale:
        raise SolverError(f"returned a feasible output {gap:.3g} away from the projection")
