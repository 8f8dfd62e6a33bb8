"""What a fairness criterion provides to the projection's solvers.

A criterion constrains, per sensitive attribute and output column, the means of the
output over the attribute's groups. The solvers only ask it the questions below, on
the ``k`` group means of one attribute (small NumPy arrays), never on the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class Criterion:
    """Base class: one instance per criterion, registered under its public name."""

    #: the public spelling (``FairnessLayer(criterion=name)``)
    name: str = ""
    #: whether the constraints involve the group means of the targets ``y``
    needs_targets: bool = False
    #: whether the multipliers of the active rows of one attribute sum to zero
    #: (rows are differences of group means), which couples them in the backward
    couples_multipliers: bool = False
    #: whether every problem without a box is feasible
    always_feasible_without_box: bool = True

    def project_means(self, m: np.ndarray, w: np.ndarray, tol: float, r: np.ndarray | None, delta: float
                      ) -> tuple[np.ndarray, np.ndarray]:
        """One attribute, one column, no box: the projected group means and the tight
        groups (active within ``delta``, as :meth:`active`). ``m`` group means, ``w``
        group sizes, ``r`` target means (k,)."""
        raise NotImplementedError

    def project_values(self, m: list[float], w: list[float], tol: float, r: list[float] | None, delta: float
                       ) -> tuple[list[float], list[bool]]:
        """:meth:`project_means` of a few groups given as Python floats (lists in, lists
        out), for the usual batch where array calls cost more than the arithmetic."""
        new, tight = self.project_means(np.array(m), np.array(w), tol, None if r is None else np.array(r), delta)
        return new.tolist(), tight.tolist()

    def box_means(self, m0: np.ndarray, w: np.ndarray, tol: float, r: np.ndarray | None, lb: float, ub: float,
                  shifts_for: Callable[[np.ndarray], np.ndarray], delta: float) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`project_means` with a box: ``m0`` are the means of the clipped
        column, and ``shifts_for(means)`` the per-group shifts that reach ``means``."""
        raise NotImplementedError

    def violation(self, means: np.ndarray, tol: float, r: np.ndarray | None) -> float:
        """Largest violation (k, c) -> float; ``nan`` when a mean is not finite."""
        raise NotImplementedError

    def violation_of_column(self, values: list[float], tol: float, r: list[float] | None) -> float:
        """:meth:`violation` of one column of finite group means given as Python floats
        (``r`` likewise): the certificate's question on a batch's usual shape, where a
        few floats beat array reductions."""
        return self.violation(np.array(values)[:, None], tol, None if r is None else np.array(r)[:, None])

    def active(self, means: np.ndarray, tol: float, r: np.ndarray | None, delta: float) -> np.ndarray:
        """Groups (k, c) whose constraint is active at ``means`` (within ``delta``)."""
        raise NotImplementedError

    def rows(self, k: int, tol: float, r: np.ndarray | None, c: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """Linear rows over one attribute's group means, ``coef @ means <= rhs``:
        ``(coef (R, k), rhs (R, c), equality)``. With ``equality`` the rows are
        ``coef @ means == rhs`` instead (the tolerance-0 case, where pairs of opposite
        inequalities would leave an interior-point method no interior)."""
        raise NotImplementedError

    def interval_rows(self, k: int, tol: float, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Rows with one auxiliary variable per attribute, ``coef @ means + aux * d <=
        rhs``: ``(coef (R, k), aux (R,), rhs (R, c))`` with ``R = O(k)``, where the
        auxiliary ``d`` is the offset of a shared quantity from ``centre`` (c,) (for
        parity, the interval's lower end), at its optimum 0 when ``centre`` is the
        exact projection's value. None: :meth:`rows` is already ``O(k)``."""
        return None

    def most_violated(self, m: np.ndarray, tol: float, r: np.ndarray | None) -> tuple[float, dict, float]:
        """The most violated row at the means ``m`` (k,): ``(violation, {group:
        coefficient}, rhs)`` for ``sum coef_g mean_g <= rhs``."""
        raise NotImplementedError
