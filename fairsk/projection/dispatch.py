"""One fallback chain: the requested solver first, then each other registered solver,
each tried at most once.

A solver is a callable ``(z, groups, spec) -> Tensor`` (``z`` float64 (n, c), ``groups``
a :class:`~fairsk._groups.GroupIndex`, ``spec`` a :class:`~.spec.Spec`) that returns
the projection, differentiably, or raises :class:`~.spec.SolverError`. A solver whose
attribute ``exact`` is true answers the projection by construction; another's answer
is also compared with the first exact solver's (tried once, its answer kept for the
chain). Every answer must pass the certificate (:mod:`.certificate`); when none does,
:class:`~fairsk.exceptions.InfeasibleProjectionError` lists each solver's reason.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from .._groups import GroupIndex
from ..exceptions import InfeasibleProjectionError
from .certificate import certify, certify_optimal
from .exact import solve_exact
from .qpth_solver import solve_qpth
from .spec import SolverError, Spec, to_host

#: public name -> solver; the fallback order is the order of this registry
SOLVERS = {"exact": solve_exact, "qpth": solve_qpth}


def project(z: Tensor, groups: GroupIndex, spec: Spec, solver: str) -> Tensor:
    """The certified projection of ``z`` (n, c), float32 or float64, in ``z``'s dtype.

    Solvers work in float64; the certificate holds the answer to the rule of ``z``'s
    dtype (:mod:`.certificate`). A solver that offers ``answer_of`` and ``output_of``
    (the exact one) is asked for its float64 answer first, which is certified before it
    becomes a tensor in ``z``'s dtype; the others get ``z`` in float64.
    """
    dtype = z.dtype
    order = [solver] + [name for name in SOLVERS if name != solver]
    answers: dict[str, Tensor] = {}
    reasons: dict[str, str] = {}
    first = SOLVERS[solver]
    if getattr(first, "answer_of", None) is not None:
        try:
            answer = first.answer_of(z, groups, spec)
            certify(answer.out, groups, spec, dtype)
            return first.output_of(z, answer, groups, spec)
        except SolverError as err:
            reasons[solver] = str(err)
    z = z if dtype == torch.float64 else z.to(torch.float64)

    def attempt(name: str) -> Tensor | None:
        if name not in answers and name not in reasons:  # each solver at most once
            try:
                out = SOLVERS[name](z, groups, spec)
                certify(to_host(out), groups, spec, dtype)
                answers[name] = out
            except SolverError as err:
                reasons[name] = str(err)
        return answers.get(name)

    for name in order:
        out = attempt(name)
        if out is None:
            continue
        answered = name
        if not getattr(SOLVERS[name], "exact", False):
            ref_name = next((r for r in order if r != name and getattr(SOLVERS[r], "exact", False)), None)
            ref = None if ref_name is None else attempt(ref_name)
            if ref is not None:
                try:
                    certify_optimal(to_host(out), to_host(ref))
                except SolverError as err:
                    reasons[name] = str(err)
                    out, answered = ref, ref_name
                else:
                    if z.requires_grad and torch.is_grad_enabled():
                        out = _CheckedBackward.apply(z, (out, ref), name)
        if answered != solver:
            failed = "; ".join(f"{k!r}: {v}" for k, v in reasons.items())
            warnings.warn(f"the {solver!r} solver failed on this batch ({failed}); the {answered} solver's answer "
                          "is returned instead", RuntimeWarning, stacklevel=_caller_level())
        return out if out.dtype == dtype else out.to(dtype)
    failed = "; ".join(f"the {k!r} solver: {v}" for k, v in reasons.items())
    raise InfeasibleProjectionError(f"no solver produced an output that meets the {spec.criterion.name!r} "
                                    f"constraints ({failed}); the projection is refused rather than returned unfair")


class _CheckedBackward(torch.autograd.Function):
    """A non-exact solver's output whose backward is checked like its forward.

    Forward: the solver's output, unchanged. Backward: the solver's vector-Jacobian
    product, compared with the exact solver's (the projector onto the active rows'
    null space, held to finite differences by the tests); when it is more than
    ``1e-6`` (relative to its magnitude above 1) away, or the solver's backward breaks
    down (qpth's KKT matrix is singular on degenerate batches), the exact product is
    returned instead, with a warning. Both products are taken from the two solvers'
    own graphs, which live as long as this node.
    """

    @staticmethod
    def forward(ctx, z, graphs, name):
        # the two outputs travel outside the argument list: as inputs, the engine would
        # still run the unused one's backward (with zeros), which may be what breaks
        ctx.graphs, ctx.z, ctx.name = graphs, z, name
        return graphs[0].detach().clone()

    @staticmethod
    def backward(ctx, grad):
        (out, ref), z, name = ctx.graphs, ctx.z, ctx.name
        with torch.enable_grad():
            (exact,) = torch.autograd.grad(ref, z, grad, retain_graph=True)
            try:
                (vjp,) = torch.autograd.grad(out, z, grad, retain_graph=True)
                reason = None
            except RuntimeError:  # e.g. a singular KKT factorisation
                vjp, reason = None, "its backward broke down"
        if vjp is not None:
            scale = max(1.0, float(exact.abs().max())) if exact.numel() else 1.0
            gap = float((vjp - exact).abs().max()) if exact.numel() else 0.0
            if not gap <= 1e-6 * scale or not bool(torch.isfinite(vjp).all()):
                reason = "it was more than 1e-6 from the projection's"
        if reason is None:
            return vjp, None, None
        # one message per reason (no numbers): Python's default filter then shows it
        # once per place, not once per training batch
        warnings.warn(f"the {name!r} solver's gradient was not used on a batch ({reason}); the exact "
                      "projection's gradient is used instead", RuntimeWarning, stacklevel=2)
        return exact, None, None


def _caller_level() -> int:
    """``stacklevel`` pointing at the first frame outside fairsk and torch."""
    import sys

    frame, level = sys._getframe(1), 1
    while frame is not None and (frame.f_globals.get("__name__", "").split(".")[0] in ("fairsk", "torch")):
        frame, level = frame.f_back, level + 1
    return level


__all__ = ["SOLVERS", "project"]
