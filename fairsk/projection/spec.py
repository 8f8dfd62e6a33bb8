"""What a projection must satisfy, and the error a solver raises when it cannot answer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .criteria import Criterion, get_criterion


def to_host(t) -> np.ndarray:
    """A tensor's values as a NumPy array on the host (detached; no copy on the CPU)."""
    t = t.detach()
    return (t if t.device.type == "cpu" else t.cpu()).numpy()


class SolverError(RuntimeError):
    """A solver could not produce a certified answer (the dispatcher then tries the
    next solver; when none is left it raises
    :class:`~fairsk.exceptions.InfeasibleProjectionError` with every reason)."""


@dataclass(frozen=True)
class Spec:
    """The constraints of one projection.

    ``criterion`` is a registered name (``"ecp"``, ``"eer"``) or a
    :class:`~fairsk.projection.criteria.Criterion`; ``targets`` the (K, c) group means
    of the targets, for criteria that need them.
    """

    criterion: Criterion
    tolerance: float
    lb: float | None = None
    ub: float | None = None
    targets: np.ndarray | None = None

    def __post_init__(self):
        object.__setattr__(self, "criterion", get_criterion(self.criterion))

    @property
    def has_box(self) -> bool:
        return self.lb is not None or self.ub is not None

    @property
    def box(self) -> tuple[float, float]:
        """``(lb, ub)`` with infinite ends where there is none."""
        return (-np.inf if self.lb is None else float(self.lb), np.inf if self.ub is None else float(self.ub))

    def targets_of(self, sl: slice, j: int) -> np.ndarray | None:
        """The target means of the slots ``sl`` in column ``j``."""
        return None if self.targets is None else self.targets[sl, j]
