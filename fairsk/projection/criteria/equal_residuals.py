"""Expected equalized residuals ("eer"): every group mean of the output within
``tolerance`` of the group mean of the targets."""

from __future__ import annotations

import numpy as np

from ...exceptions import InfeasibleProjectionError
from .base import Criterion


class EqualResiduals(Criterion):
    name = "eer"
    needs_targets = True
    couples_multipliers = False

    def project_means(self, m, w, tol, r, delta):
        return np.clip(m, r - tol, r + tol), np.abs(m - r) >= tol - delta

    def project_values(self, m, w, tol, r, delta):
        return ([min(max(x, t - tol), t + tol) for x, t in zip(m, r)],
                [abs(x - t) >= tol - delta for x, t in zip(m, r)])

    def box_means(self, m0, w, tol, r, lb, ub, shifts_for, delta):
        lo, hi = np.maximum(r - tol, lb), np.minimum(r + tol, ub)
        if (lo > hi).any():
            raise InfeasibleProjectionError(
                f"criterion='eer' asks for group means outside the box bounds=({lb}, {ub}): "
                f"no output can meet tolerance={tol}"
            )
        return np.clip(m0, lo, hi), np.abs(m0 - r) >= tol - delta

    def violation(self, means, tol, r):
        return float(np.abs(means - r).max()) - tol if means.size else 0.0

    def violation_of_column(self, values, tol, r):
        return max(abs(v - t) for v, t in zip(values, r)) - tol if values else 0.0

    def active(self, means, tol, r, delta):
        return np.abs(means - r) >= tol - delta

    def rows(self, k, tol, r, c):
        eye = np.eye(k)
        if tol == 0:  # mean_g == r_g
            return eye, r.reshape(k, c), True
        rhs = np.concatenate([r + tol, tol - r]).reshape(2 * k, c)
        return np.concatenate([eye, -eye]), rhs, False

    def most_violated(self, m, tol, r):
        dev = m - r
        g = int(np.argmax(np.abs(dev)))
        sign = 1.0 if dev[g] >= 0 else -1.0
        return float(abs(dev[g])) - tol, {g: sign}, float(sign * r[g] + tol)
