"""The fairness projection: criteria, kernels, solvers, certificate and dispatcher.

=====================  =========================================================
module                 owns
=====================  =========================================================
``criteria/``          the criteria (``Parity`` "ecp", ``EqualResiduals`` "eer")
                       and their registry ``CRITERIA``
``spec``               ``Spec`` (what one projection must satisfy), ``SolverError``
``kernels``            every numerical kernel, once (NumPy)
``exact``              the exact solver (closed forms, shift QP, box inverse)
``qpth_solver``        the qpth solver (a batched differentiable QP)
``certificate``        the output check, and the float32 rule
``dispatch``           the solver registry ``SOLVERS`` and the one fallback chain
=====================  =========================================================
"""

from .certificate import CHECK_ATOL, certify, float32_margin, violation
from .criteria import CRITERIA, Criterion, get_criterion
from .dispatch import SOLVERS, project
from .spec import SolverError, Spec

__all__ = ["CHECK_ATOL", "CRITERIA", "Criterion", "SOLVERS", "SolverError", "Spec", "certify", "float32_margin",
           "get_criterion", "project", "violation"]
