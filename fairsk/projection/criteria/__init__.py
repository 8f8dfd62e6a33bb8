"""The fairness criteria, registered under their public names.

Adding a criterion: one module with a :class:`~.base.Criterion` subclass, and one
line in :data:`CRITERIA`.
"""

from __future__ import annotations

from .base import Criterion
from .equal_residuals import EqualResiduals
from .error_rates import EqualizedOdds, EqualOpportunity, ErrorRates
from .parity import Parity

#: public name -> criterion
CRITERIA: dict[str, Criterion] = {c.name: c for c in (Parity(), EqualResiduals(), EqualOpportunity(), EqualizedOdds())}


def get_criterion(name) -> Criterion:
    """The criterion registered as ``name`` (a criterion object passes through)."""
    if isinstance(name, Criterion):
        return name
    try:
        return CRITERIA[name]
    except (KeyError, TypeError):
        raise ValueError(f"criterion must be one of {tuple(CRITERIA)}, got {name!r}") from None


__all__ = ["CRITERIA", "Criterion", "EqualOpportunity", "EqualResiduals", "EqualizedOdds", "ErrorRates", "Parity",
           "get_criterion"]
