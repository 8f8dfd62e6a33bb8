"""Equal opportunity and equalized odds: parity of the group means of the
positive-class probability *within true-label strata*.

* ``"equal_opportunity"``: among the rows whose true label is positive, the group
  means are within ``tolerance`` of each other (equal true-positive rates in
  expectation);
* ``"equalized_odds"``: the same within every true-label stratum (equal true- and
  false-positive rates in expectation); with several classes, column ``k`` of the
  probabilities is constrained within the strata ``y == k`` and ``y != k``.

The strata come from the true labels of the rows, which the group-mean interface
below never sees (it works on one attribute's group means), so these criteria are
projected stratum by stratum, each stratum by the parity projection:
:class:`fairsk.odds.ErrorRateLayer`. ``FairnessLayer(criterion=...)`` with them
raises an error that says so.
"""

from __future__ import annotations

from typing import Any

from .base import Criterion


class ErrorRates(Criterion):
    """Base of the criteria on error rates (parity within true-label strata)."""

    needs_targets = True
    #: the constraints hold within strata of the true labels (not on group means)
    label_strata = True
    couples_multipliers = True
    #: whether the strata of the negative labels are constrained too
    both_strata = True

    def strata(self, labels: Any, n_columns: int | None = None):
        """Yield ``(column, masks)``: for every constrained output column, the boolean
        masks (rows) of its true-label strata.

        ``labels`` (n,) holds class indices (a NumPy array or a torch tensor; the masks
        are of the same kind). ``n_columns=None``: one column holding the
        positive-class probability, label 1 is positive; otherwise column ``k``'s
        positive label is ``k`` (class-vs-rest).
        """
        columns = [(0, 1)] if n_columns is None else [(k, k) for k in range(n_columns)]
        for column, positive in columns:
            pos = labels == positive
            yield column, ((pos, ~pos) if self.both_strata else (pos,))

    # -- the group-mean interface of FairnessLayer: not expressible --------------------
    def _per_group(self, *args, **kwargs):
        raise ValueError(
            f"criterion={self.name!r} constrains group means within strata of the true labels, which "
            "FairnessLayer (one constraint set per group) cannot express: use "
            f"fairsk.odds.ErrorRateLayer({self.name!r}, ...) on a batch, or "
            f"FairLayerClassifier(criterion={self.name!r})"
        )

    project_means = box_means = violation = active = rows = most_violated = _per_group


class EqualOpportunity(ErrorRates):
    name = "equal_opportunity"
    both_strata = False


class EqualizedOdds(ErrorRates):
    name = "equalized_odds"
    both_strata = True
