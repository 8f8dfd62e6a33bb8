"""Reproduction of the paper's comparison on real data (``python -m fairsk.benchmarks``)."""

from .reproduce import main, run

__all__ = ["main", "run"]
