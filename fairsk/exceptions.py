"""Exceptions raised by fairsk."""

__all__ = ["InfeasibleProjectionError"]


class InfeasibleProjectionError(ValueError):
    """A projection could not produce an output that meets its constraints.

    Raised instead of returning an output that breaks the fairness constraints or
    the box, for instance when ``criterion="eer"`` asks for group means that the
    box ``bounds`` cannot reach, or when a numerical solver stops short.

    Examples
    --------
    >>> import torch
    >>> from fairsk import FairnessLayer
    >>> from fairsk.exceptions import InfeasibleProjectionError
    >>> layer = FairnessLayer("eer", 0.0, "exact", bounds=(0.0, 1.0))
    >>> try:
    ...     layer(torch.zeros(2, dtype=torch.float64), torch.tensor([0, 1]), torch.tensor([5.0, 5.0]))
    ... except InfeasibleProjectionError as err:
    ...     print("refused:", "box" in str(err))
    refused: True
    """
