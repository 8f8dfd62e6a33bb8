"""Exceptions raised by fairsk."""

__all__ = ["InfeasibleProjectionError"]


class InfeasibleProjectionError(ValueError):
    """A projection could not produce an output that meets its constraints.

    Raised instead of returning an output that breaks the fairness constraints or
    the box, for instance when ``criterion="eer"`` asks for group means that the
    box ``bounds`` cannot reach, or when a numerical solver stops short.
    """
