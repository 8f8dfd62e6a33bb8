"""Solvers for the fairness projection (see :class:`fairsk.FairnessLayer`).

``exact``: closed form / breakpoints in the space of per-group shifts.
``qpth``: a batched differentiable QP (qpth), well conditioned.
Both take a float64 ``(n, c)`` tensor and return the projection, differentiably.
"""

from ._problem import Spec, projector_vjp, violation
from .exact import solve_exact
from .qpth_solver import solve_qpth

SOLVERS = {"exact": solve_exact, "qpth": solve_qpth}

__all__ = ["SOLVERS", "Spec", "projector_vjp", "solve_exact", "solve_qpth", "violation"]
