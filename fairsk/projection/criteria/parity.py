"""Expected conditional parity ("ecp"): within each attribute, every pair of group
means at most ``tolerance`` apart."""

from __future__ import annotations

import numpy as np

from ..kernels import _PYTHON_MAX_GROUPS, bisect_decreasing, boundary_decreasing, interval_start
from .base import Criterion


class Parity(Criterion):
    name = "ecp"
    needs_targets = False
    couples_multipliers = True

    def project_means(self, m, w, tol, r, delta):
        # the closest means within one interval [c, c + tol]: clip to it
        if m.shape[0] <= _PYTHON_MAX_GROUPS:  # a few groups: Python floats beat array calls
            new, tight = self.project_values(m.tolist(), w.tolist(), tol, r, delta)
            return np.array(new), np.array(tight, dtype=bool)
        if m.max() - m.min() < tol - delta:
            return m, np.zeros(m.shape, dtype=bool)
        c = interval_start(m, w, tol)
        return np.clip(m, c, c + tol), (m <= c + delta) | (m >= c + tol - delta)

    def project_values(self, m, w, tol, r, delta):
        if len(m) < 2 or max(m) - min(m) < tol - delta:
            return list(m), [False] * len(m)
        c = interval_start(m, w, tol)
        top = c + tol
        return [top if x > top else c if x < c else x for x in m], [x <= c + delta or x >= top - delta for x in m]

    def box_means(self, m0, w, tol, r, lb, ub, shifts_for, delta):
        if m0.shape[0] < 2 or m0.max() - m0.min() < tol - delta:
            return m0, np.zeros(m0.shape, dtype=bool)

        # sum_g n_g t_g(c) is non-increasing in c (t_g the shift bringing group g
        # into [c, c + tol]); its root gives the interval
        lo, hi = float(m0.min()) - tol, float(m0.max())
        many = getattr(shifts_for, "many", None)
        if many is None:
            def balance(c: float) -> float:
                return float(w @ shifts_for(np.clip(m0, c, c + tol)))

            c = bisect_decreasing(balance, lo, hi)
        else:
            # the balance is linear between the values of c where a group's target
            # (c + tol below its mean, c above it) crosses a kink of its shift, or where
            # the group starts or stops moving: one array evaluation at all of them
            # brackets the root on one linear piece
            def balances(cs: np.ndarray) -> np.ndarray:
                return w @ many(np.clip(m0[:, None], cs[None, :], cs[None, :] + tol))

            runs = []
            for kinks, mg in zip(shifts_for.kinks(), m0.tolist()):
                runs.append(np.concatenate((kinks[:np.searchsorted(kinks, mg, side="right")] - tol, [mg - tol])))
                runs.append(np.concatenate(([mg], kinks[np.searchsorted(kinks, mg, side="left"):])))
            c = boundary_decreasing(balances, runs, lo, hi)
        # a group held at a bound by the box can sit exactly at an end of the interval
        # for a whole range of c: the tolerance keeps its active constraint
        return np.clip(m0, c, c + tol), (m0 <= c + delta) | (m0 >= c + tol - delta)

    def violation(self, means, tol, r):
        if means.shape[0] < 2:
            return 0.0 if np.isfinite(means).all() else float("nan")
        return float((means.max(0) - means.min(0)).max()) - tol

    def violation_of_column(self, values, tol, r):
        return max(values) - min(values) - tol if len(values) >= 2 else 0.0

    def active(self, means, tol, r, delta):
        if means.shape[0] < 2:
            return np.zeros(means.shape, dtype=bool)
        hi, lo = means.max(0), means.min(0)
        binding = (hi - lo) >= tol - delta
        return binding & ((means >= hi - delta) | (means <= lo + delta))

    def rows(self, k, tol, r, c):
        eye = np.eye(k)
        if tol == 0:  # mean_g == mean_0
            coef = eye[1:] - eye[:1]
            return coef, np.zeros((coef.shape[0], c)), True
        g, h = np.nonzero(~np.eye(k, dtype=bool))  # ordered pairs: mean_g - mean_h <= tol
        coef = eye[g] - eye[h]
        return coef, np.full((coef.shape[0], c), tol), False

    def interval_rows(self, k, tol, centre):
        # c + d <= mean_g <= c + d + tol with c the centre: 2k rows instead of k(k-1)
        eye = np.eye(k)
        coef = np.concatenate([eye, -eye])
        aux = np.concatenate([-np.ones(k), np.ones(k)])
        rhs = np.concatenate([np.broadcast_to(tol + centre, (k, centre.shape[0])),
                              np.broadcast_to(-centre, (k, centre.shape[0]))])
        return coef, aux, rhs

    def most_violated(self, m, tol, r):
        if m.shape[0] < 2:
            return -np.inf, {}, 0.0
        top, bottom = int(np.argmax(m)), int(np.argmin(m))
        return float(m[top] - m[bottom]) - tol, {top: 1.0, bottom: -1.0}, tol
