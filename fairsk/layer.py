"""The fairness layer: a differentiable projection onto group-parity constraints."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ._groups import TORCH_MIN_ROWS, GroupIndex, column_codes, encode_groups, recode, torch_readable
from .projection import CHECK_ATOL, SOLVERS, Spec, device, float32_margin, get_criterion, project
from .projection import CRITERIA as _CRITERION_REGISTRY
from .projection.column import project_column
from .projection.exact import solve_exact
from .projection.kernels import max_abs

__all__ = ["FairnessLayer", "CRITERIA", "validate_layer_params"]

#: the public names of the criteria (the registry lives in :mod:`fairsk.projection.criteria`)
CRITERIA = tuple(_CRITERION_REGISTRY)


def validate_layer_params(criterion: Any, tolerance: Any, solver: Any, bounds: Any) -> tuple:
    """Check the layer's parameters; return ``(tolerance, lb, ub)`` as floats."""
    if not isinstance(criterion, str) or criterion not in _CRITERION_REGISTRY:
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
      checked against its constraints before it is returned, as returned: to 1e-6
      (absolute) in float64, to 1e-5 (absolute) in float32. For float32 the
      tolerance of the float64 solve is reduced by the rounding float32 adds
      (``2 * 2**-24 * max|z|``); when float32 cannot resolve the tolerance at the
      outputs' magnitude the projection is refused (pass float64, or centre the
      outputs). If the requested solver fails, the other is tried once (with a
      warning); when no answer passes the check,
      :class:`~fairsk.exceptions.InfeasibleProjectionError` is raised.
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
        validate_layer_params(criterion, tolerance, solver, bounds)
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
        tol, lb, ub = _validated(self.criterion, self.tolerance, self.solver, self.bounds)
        z2 = _as_output_matrix(z)
        criterion = get_criterion(self.criterion)
        needs_targets = criterion.needs_targets
        if device.applies(z2, groups, self.solver, self.criterion, lb, ub):  # the batch stays on its accelerator
            yt = _as_targets(y, z2) if needs_targets else None
            out = device.project_on_device(z2, groups, yt, self.criterion, tol, lb, ub)
            if out is not None:
                return out if out.shape == z.shape else out.reshape(z.shape)
        if (self.solver == "exact" and z2.shape[1] == 1 and z2.device.type == "cpu" and not needs_targets
                and not getattr(criterion, "label_strata", False) and SOLVERS["exact"] is solve_exact):
            # the usual training batch: the same projection and certificate with fewer
            # array calls (None: anything else, which the general route answers)
            out = project_column(z2, groups, criterion, tol, lb, ub)
            if out is not None:
                return out if out.shape == z.shape else out.reshape(z.shape)
        # the finiteness check (NaN propagates through max and min, an infinity is one of
        # them) and the scale of the float32 rule, from the same reductions
        scale = _max_abs(z2.detach()) if z2.numel() else 0.0
        if not math.isfinite(scale):
            raise ValueError("z contains NaN or infinite values")
        if z2.dtype == torch.float32 and tol > 0 and z2.numel():
            # the float32 rule (fairsk.projection.certificate): leave room for rounding
            tol = max(0.0, tol - float32_margin(scale))
        gidx = _one_column_index(groups, z2.shape[0])
        if gidx is None:
            codes, top = _as_group_codes(groups, z2.shape[0])
            gidx = encode_groups(codes, top)  # codes checked non-negative, top their largest
        targets = None
        if needs_targets:
            yt = _as_targets(y, z2)
            targets = gidx.means(yt.detach().cpu().numpy()) if yt.shape[0] else None
        spec = Spec(self.criterion, tol, lb, ub, targets)
        out = project(z2, gidx, spec, self.solver)
        return out if out.shape == z.shape else out.reshape(z.shape)


def _validated(criterion: Any, tolerance: Any, solver: Any, bounds: Any) -> tuple:
    """:func:`validate_layer_params`, remembered for plain parameters already checked
    (a training loop calls the layer with the same ones on every batch)."""
    plain = (type(criterion) is str and type(solver) is str and type(tolerance) in (int, float)
             and (bounds is None or (type(bounds) is tuple and len(bounds) == 2
                                     and all(b is None or type(b) in (int, float) for b in bounds))))
    if not plain:
        return validate_layer_params(criterion, tolerance, solver, bounds)
    return _validated_plain(criterion, tolerance, solver, bounds)


@functools.lru_cache(maxsize=64)
def _validated_plain(criterion: str, tolerance: float, solver: str, bounds: tuple | None) -> tuple:
    return validate_layer_params(criterion, tolerance, solver, bounds)


def _max_abs(z: Tensor) -> float:
    """``max |z|`` (NaN when ``z`` holds one): on the host, the kernels' reductions of a
    NumPy view (no temporary at large n); on a device, one of ``|z|`` there."""
    if z.device.type != "cpu":
        return float(z.abs().max())
    return max_abs(z.numpy())


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


def _one_column_index(groups: Any, n: int) -> GroupIndex | None:
    """The groups of the usual training batch, a CPU int64 tensor of shape (n,) or
    (n, 1) with small codes, indexed from one ``max`` and one ``bincount`` (a negative
    code makes the bincount refuse); None for anything else, which
    :func:`_as_group_codes` and :func:`encode_groups` check and index."""
    col = column_codes(groups, n)
    if col is None:
        return None
    top = int(col.max())
    if top >= max(4 * n, 1024):  # sparse or huge codes: the general route's np.unique
        return None
    try:
        codes, counts = recode(col, top)
    except ValueError:  # raised by bincount on a negative code
        raise ValueError("groups must hold non-negative integer codes") from None
    return GroupIndex(codes.reshape(n, 1), counts, (counts.shape[0],))


def _as_group_codes(groups: Any, n: int) -> tuple[np.ndarray, int]:
    """Group codes as an (n, a) int64 array on the host, and the largest code (-1
    when empty), or a clear error. The projection's group statistics live on the host
    (:class:`~fairsk._groups.GroupIndex`): a device tensor is copied there once."""
    if isinstance(groups, Tensor):
        if groups.is_floating_point() or groups.is_complex():
            raise ValueError(f"groups must hold integer codes, got dtype {groups.dtype}")
        arr = groups.detach().cpu().numpy()
    else:
        arr = np.asarray(groups)
        if arr.dtype.kind not in "biu":
            raise ValueError(f"groups must hold integer codes, got dtype {arr.dtype}")
    if arr.ndim not in (1, 2) or arr.shape[0] != n:
        raise ValueError(f"groups must have shape ({n},) or ({n}, a) to match z, got {tuple(arr.shape)}")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.shape[1] == 0:  # nothing to be fair about: most likely a column selection gone wrong
        raise ValueError(f"groups has no attribute columns (shape {tuple(arr.shape)}): pass at least one column "
                         "of group codes")
    if not arr.size:
        return arr.astype(np.int64), -1
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 8 and int(arr.max()) > np.iinfo(np.int64).max:
        raise ValueError("groups holds codes too large for int64")
    arr = arr.astype(np.int64, copy=False)
    # one reduction for both checks: on a large batch torch's aminmax (torch's threads
    # share it); else read as unsigned, where a negative code is above every valid one
    if arr.size >= TORCH_MIN_ROWS and torch_readable(arr):
        low, top = (int(v) for v in torch.aminmax(torch.from_numpy(arr)))
    else:
        top = int(arr.view(np.uint64).max())
        low = -1 if top > np.iinfo(np.int64).max else 0
    if low < 0:
        raise ValueError("groups must hold non-negative integer codes")
    return arr, top
