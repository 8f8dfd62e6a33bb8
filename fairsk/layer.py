"""The fairness layer: a differentiable projection onto group-parity constraints."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ._groups import encode_groups
from .exceptions import InfeasibleProjectionError
from .solvers import SOLVERS, Spec, _single, violation

__all__ = ["FairnessLayer", "CRITERIA"]

CRITERIA = ("ecp", "eer")

#: absolute tolerance of the check made on every output, by dtype (float32 is
#: relative to the output's scale above 1, since its resolution is ~1e-7 of it)
CHECK_ATOL = {torch.float64: 1e-6, torch.float32: 1e-5}


def validate_layer_params(criterion: Any, tolerance: Any, solver: Any, bounds: Any) -> tuple:
    """Check the layer's parameters; return ``(tolerance, lb, ub)`` as floats."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {tuple(SOLVERS)}, got {solver!r}")
    try:
        tol = float(tolerance)
    except (TypeError, ValueError):
        raise ValueError(f"tolerance must be a number, got {tolerance!r}") from None
    if not np.isfinite(tol) or tol < 0:
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    lb = ub = None
    if bounds is not None:
        try:
            lb, ub = bounds
        except (TypeError, ValueError):
            raise ValueError(f"bounds must be a pair (lb, ub), got {bounds!r}") from None
        lb = None if lb is None else float(lb)
        ub = None if ub is None else float(ub)
        for name, v in (("lb", lb), ("ub", ub)):
            if v is not None and np.isnan(v):
                raise ValueError(f"bounds: {name} is NaN")
        if lb is not None and ub is not None and not lb < ub:
            raise ValueError(f"bounds must satisfy lb < ub, got {bounds!r}")
    return tol, lb, ub


class FairnessLayer(nn.Module):
    """Project a batch of outputs onto the set where group means are at parity.

    The layer returns the Euclidean projection of the raw outputs ``z`` onto the
    constraint set of the batch, and is differentiated through it, so a network
    trains *through* the constraint (Troxell, Roemer and Montúfar, ICML 2026).

    Parameters
    ----------
    criterion : {"ecp", "eer"}, default="ecp"
        ``"ecp"`` (expected conditional parity): for every pair of groups present,
        ``|mean_g - mean_h| <= tolerance``. ``"eer"`` (expected equalized
        residuals): for every group, ``|mean_g(out) - mean_g(y)| <= tolerance``.
    tolerance : float, default=0.0
        Allowed gap, ``>= 0``.
    solver : {"qpth", "exact"}, default="qpth"
        ``"qpth"`` solves a batched differentiable QP; ``"exact"`` uses the
        closed-form / breakpoint solution in the space of per-group shifts. Both
        give the same outputs and gradients (to 1e-6); ``"exact"`` is much faster.
    bounds : tuple (lb, ub) or None, default=None
        Optional box on the outputs; either end may be None.

    Notes
    -----
    * Each sensitive attribute (column of ``groups``) is constrained separately.
      Groups absent from a batch add no constraint; with ``"ecp"``, an attribute
      with a single group present adds none either (``"eer"`` still constrains it).
    * Columns of a 2-D ``z`` are constrained independently.
    * The solve runs in float64 whatever the input dtype, and every output is
      checked against its constraints before it is returned: to 1e-6 in float64,
      to ``1e-5 * max(1, max|out|)`` in float32. A violation raises
      :class:`~fairsk.exceptions.InfeasibleProjectionError`.
    * The Jacobian is the orthogonal projector onto the null space of the active
      constraints (and of the clipped coordinates): no gradient flows along an
      active unfairness direction, and the layer is the identity when nothing is
      active.

    Examples
    --------
    >>> import torch
    >>> from fairsk import FairnessLayer
    >>> layer = FairnessLayer(tolerance=0.1, solver="exact")
    >>> z = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    >>> groups = torch.tensor([0, 0, 1, 1])
    >>> layer(z, groups)
    tensor([0.9500, 1.9500, 1.0500, 2.0500], dtype=torch.float64)
    """

    def __init__(
        self,
        criterion: str = "ecp",
        tolerance: float = 0.0,
        solver: str = "qpth",
        bounds: tuple[float | None, float | None] | None = None,
    ) -> None:
        super().__init__()
        self._tolerance, self._lb, self._ub = validate_layer_params(criterion, tolerance, solver, bounds)
        self.criterion = criterion
        self.tolerance = tolerance
        self.solver = solver
        self.bounds = bounds

    def extra_repr(self) -> str:
        return (
            f"criterion={self.criterion!r}, tolerance={self.tolerance!r}, "
            f"solver={self.solver!r}, bounds={self.bounds!r}"
        )

    def forward(self, z: Tensor, groups: Tensor, y: Tensor | None = None) -> Tensor:
        """Project ``z`` onto the fair set of this batch.

        Parameters
        ----------
        z : Tensor of shape (n,), (n, 1) or (n, c)
            Raw outputs (float32 or float64).
        groups : integer Tensor of shape (n,) or (n, a)
            Non-negative group codes, one column per sensitive attribute.
        y : Tensor of shape (n,) or (n, c), optional
            Targets; required by ``criterion="eer"``.

        Returns
        -------
        Tensor
            The projection, same shape, dtype and device as ``z``.
        """
        tol, lb, ub = validate_layer_params(self.criterion, self.tolerance, self.solver, self.bounds)
        spec = Spec(self.criterion, tol, lb, ub)
        z2 = _as_output_matrix(z)
        groups, top = _as_group_tensor(groups, z2.shape[0], z.device)
        if self._fast_path_applies(z2, groups, spec):
            out = self._forward_single(z2, groups, top, y, spec)
            if out is not None:
                return out if z.dim() == 2 else out.reshape(z.shape)
        if not bool(torch.isfinite(z2).all()):
            raise ValueError("z contains NaN or infinite values")
        gidx = encode_groups(groups)
        if self.criterion == "eer":
            yt = _as_targets(y, z2)
            spec = replace(spec, targets=gidx.means(yt) if yt.shape[0] else None)
        out = SOLVERS[self.solver](z2.to(torch.float64), gidx, spec).to(z.dtype)
        self._check(out.detach(), gidx, spec)
        return out.reshape(z.shape)

    # -- helpers -------------------------------------------------------------------
    def _fast_path_applies(self, z2: Tensor, groups: Tensor, spec: Spec) -> bool:
        """One attribute, no box, exact solver, on the CPU: :mod:`fairsk.solvers._single`."""
        return (
            self.solver == "exact"
            and z2.is_cpu
            and z2.shape[0] > 0
            and (groups.dim() == 1 or groups.shape[1] == 1)
            and not spec.has_box
        )

    def _forward_single(self, z2: Tensor, groups: Tensor, top: int, y: Any, spec: Spec) -> Tensor | None:
        """The fast path; ``None`` hands the call to the general path (an overflow)."""
        codes, counts = _single.recode(groups.numpy().reshape(-1), top)
        zn = z2.detach().numpy()
        if zn.dtype != np.float64:
            zn = zn.astype(np.float64)
        targets = None
        if self.criterion == "eer":
            targets = _single.group_means(_as_targets(y, z2).numpy(), codes, counts)
        out, out_means = _single.project(zn, codes, counts, spec, targets)
        if out is None:  # the group sums are not finite
            if not np.isfinite(zn).all():
                raise ValueError("z contains NaN or infinite values")
            return None
        worst = _single.worst_violation(out_means, spec, targets)
        needs_grad = z2.requires_grad and torch.is_grad_enabled()
        scale = _max_abs(out) if needs_grad or z2.dtype == torch.float32 else 0.0
        result = out
        atol = CHECK_ATOL[z2.dtype]
        if z2.dtype == torch.float32:
            result = out.astype(np.float32)
            # Rounding to float32 moves each output by at most u|out| (u = 2**-24), so
            # each group mean by at most u * scale and each gap by twice that: the
            # float64 check plus this bound bounds the float32 output's violation
            # without another pass over it.
            worst += 2.0 * 2.0**-24 * scale
            atol *= max(1.0, scale)
        self._refuse_if(worst, atol)
        if needs_grad:
            sol = _single.Solution(codes, counts, out_means, scale, spec, targets)
            return _single.SingleAttributeProjection.apply(z2, result, sol)
        return torch.from_numpy(result)

    def _check(self, out: Tensor, gidx, spec: Spec) -> None:
        atol = CHECK_ATOL[out.dtype]
        if out.dtype == torch.float32 and out.numel():
            atol *= max(1.0, float(out.abs().max()))
        self._refuse_if(float(violation(out, gidx, spec)), atol)

    def _refuse_if(self, worst: float, atol: float) -> None:
        # a NaN or inf anywhere in the output makes ``worst`` non-finite
        if not np.isfinite(worst) or worst > atol:
            raise InfeasibleProjectionError(
                f"the {self.solver!r} solver returned an output that breaks the "
                f"{self.criterion!r} constraints by {worst:.3g} (> {atol:.1g}); "
                "the projection is refused rather than returned unfair"
            )


def _max_abs(a: np.ndarray) -> float:
    # two reductions beat abs() + max() on large arrays (no temporary), not on small ones
    if a.size > 65536:
        return max(float(a.max()), -float(a.min()))
    return float(np.abs(a).max())


def _as_output_matrix(z: Any) -> Tensor:
    """``z`` as an (n, c) float tensor (a view), or a clear error."""
    if not isinstance(z, Tensor):
        raise TypeError(f"z must be a torch.Tensor, got {type(z).__name__}")
    if z.dtype not in CHECK_ATOL:
        raise ValueError(f"z must be float32 or float64, got {z.dtype}")
    if z.dim() not in (1, 2):
        raise ValueError(f"z must have shape (n,) or (n, c), got {tuple(z.shape)}")
    return z.unsqueeze(1) if z.dim() == 1 else z


def _as_targets(y: Any, z2: Tensor) -> Tensor:
    """The targets as a float64 (n, c) tensor matching ``z2``, or a clear error."""
    n, c = z2.shape
    if y is None:
        raise ValueError("criterion='eer' needs the targets y")
    yt = torch.as_tensor(y, device=z2.device).to(torch.float64)
    if yt.dim() == 1:
        yt = yt.unsqueeze(1)
    if yt.dim() != 2 or yt.shape[0] != n or yt.shape[1] not in (1, c):
        raise ValueError(f"y must have shape ({n},) or ({n}, {c}), got {tuple(yt.shape)}")
    if not bool(torch.isfinite(yt).all()):
        raise ValueError("y contains NaN or infinite values")
    return yt.expand(n, c).contiguous()


def _as_group_tensor(groups: Any, n: int, device) -> tuple[Tensor, int]:
    """Group codes as a long tensor, and the largest code (-1 when empty)."""
    if isinstance(groups, Tensor):
        g = groups if groups.device == device else groups.to(device)
    else:
        arr = np.asarray(groups)
        if arr.dtype.kind not in "biu":
            raise ValueError(f"groups must hold integer codes, got dtype {arr.dtype}")
        g = torch.as_tensor(arr.astype(np.int64), device=device)
    if g.dtype == torch.bool:
        g = g.to(torch.long)
    if g.is_floating_point() or g.is_complex():
        raise ValueError(f"groups must hold integer codes, got dtype {g.dtype}")
    if g.dim() not in (1, 2) or g.shape[0] != n:
        raise ValueError(f"groups must have shape ({n},) or ({n}, a) to match z, got {tuple(g.shape)}")
    if not g.numel():
        return g.to(torch.long), -1
    low, top = torch.aminmax(g)
    if int(low) < 0:
        raise ValueError("groups must hold non-negative integer codes")
    return (g if g.dtype == torch.long else g.to(torch.long)), int(top)
