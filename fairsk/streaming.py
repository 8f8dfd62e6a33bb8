"""StreamingFairPredictor: fairness of everything emitted so far, at any batch size.

The stream keeps, per sensitive attribute and group, the count, the sum of raw scores
and the sum of emitted scores (a :class:`StreamState`); a *rule* (``mode=``) turns
each call's raw scores into emitted scores from that state.

``mode="pooled"`` (default)
    1. *plug-in shift*: the exact offline projection of the running raw group means
       (weights = counts; optionally started from the training set's means, see
       ``prior_samples``) gives per-group shifts ``t_g`` (what the batch projection of
       the whole stream so far would apply); the call's scores are shifted by them;
    2. *pooled projection*: the call's scores are then projected, exactly (inside the
       estimator's ``bounds`` when it has some), so that the pooled means of
       **everything emitted so far** (history fixed, this call free) lie in bands
       ``[c - e_g, c + tolerance + e_g]`` around one common interval. The slack
       ``e_g = slack * scale_ / sqrt(N_g)`` shrinks as group ``g`` grows (``N_g``
       samples emitted, ``scale_`` the spread of the raw scores within groups at
       fit).

    Guarantee (one sensitive attribute, any stream, any batch size down to 1): after
    every call, for every two groups ``g, h`` seen so far,
    ``|mean_g - mean_h| <= tolerance + e_g + e_h``; so the pooled gap tends to at most
    ``tolerance`` as every group grows. ``slack=0`` gives the strict bound
    ``pooled gap <= tolerance`` after every call (which, at small tolerances and one
    sample per call, can only be met by emitting nearly constant scores). The proof
    is in the user guide ("Streaming").

``mode="paper"``
    The online primal-dual algorithm of the paper (one attribute): each batch's
    scores minimise ``||y - z||^2 + dual * b * gap(y)``, then
    ``dual <- max(0, dual + eta0 / sqrt(t) * b * (gap(y) - tolerance))``. Batches
    with fewer than two groups pass through unchanged and do not update the dual
    (as in the paper's evaluation). It bounds a weighted average of batch gaps, not
    the pooled gap.
"""

from __future__ import annotations

import json
import math
import os
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import _num_samples, check_is_fitted

from ._groups import GroupEncoder, check_attribute_count, encode_sensitive
from ._proba import logit
from .decisions import StreamingLabeler
from .projection.kernels import BoxSum, bisect_decreasing, dykstra
from .projection.kernels import interval_start as interval_start_1d

__all__ = ["SharedStream", "StreamingFairPredictor", "StreamState"]

#: raw scores beyond this magnitude are refused (group sums of float64 would overflow)
_MAX_RAW = 1e150


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """The positive class's probability from a binary classifier's logits (n, 1)."""
    return 1.0 / (1.0 + np.exp(-np.clip(z, -700.0, 700.0)))


def _dykstra(y: np.ndarray, project_attribute, n_attributes: int) -> np.ndarray:
    """Dykstra's algorithm over the attributes' projections: the projection kernels'
    iteration (one home for it; the stream only supplies the per-attribute step)."""
    out, _ = dykstra(y, [lambda x, a=a: project_attribute(a, x) for a in range(n_attributes)])
    return out


# -- the state ---------------------------------------------------------------------------
@dataclass
class StreamState:
    """Everything a stream has learnt since fit or :meth:`StreamingFairPredictor.reset`.

    Per sensitive attribute ``a``: ``labels[a]`` maps each group label to its slot,
    ``count[a]`` (k,), ``raw_sum[a]`` and ``out_sum[a]`` (k, c) are the number of
    samples, the sum of raw scores and the sum of emitted scores per slot.
    ``rule`` holds the rule's own arrays (``mode="pooled"``: ``shifts`` and ``slack``
    per attribute, (k, c); ``mode="paper"``: ``dual`` and ``steps``).

    :meth:`to_arrays` / :meth:`from_arrays` convert to and from a flat dict of NumPy
    arrays (what :mod:`fairsk.persistence` saves, without pickle).
    """

    labels: list[dict] = field(default_factory=list)
    count: list[np.ndarray] = field(default_factory=list)
    raw_sum: list[np.ndarray] = field(default_factory=list)
    out_sum: list[np.ndarray] = field(default_factory=list)
    n_seen: int = 0
    rule: dict = field(default_factory=dict)

    @property
    def n_attributes(self) -> int:
        return len(self.labels)

    def add_groups(self, a: int, new: int, c: int) -> None:
        """Append ``new`` empty slots to attribute ``a``."""
        self.count[a] = np.concatenate([self.count[a], np.zeros(new)])
        for stats in (self.raw_sum, self.out_sum):
            stats[a] = np.vstack([stats[a], np.zeros((new, c))])
        for name, value in self.rule.items():
            if isinstance(value, list):  # per-attribute rule arrays (k, c)
                fill = np.inf if name == "slack" else 0.0
                value[a] = np.vstack([value[a], np.full((new, c), fill)])

    def record(self, z: np.ndarray, out: np.ndarray, codes: np.ndarray) -> None:
        """Add one call's raw and emitted scores."""
        self.n_seen += out.shape[0]
        for a in range(codes.shape[1]):
            k = len(self.count[a])
            self.count[a] = self.count[a] + np.bincount(codes[:, a], minlength=k)
            self.raw_sum[a] = self.raw_sum[a] + _group_sums(z, codes[:, a], k)
            self.out_sum[a] = self.out_sum[a] + _group_sums(out, codes[:, a], k)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """A flat ``{name: ndarray}`` with no object arrays (loadable with ``allow_pickle=False``)."""
        arrays = {"n_seen": np.asarray(self.n_seen, dtype=np.int64), "attributes": np.asarray(self.n_attributes)}
        for a, lookup in enumerate(self.labels):
            labels = sorted(lookup, key=lookup.get)
            arr = np.asarray(labels)
            if len({type(v) for v in labels}) > 1 or arr.dtype == object:
                raise TypeError(f"the labels of attribute {a} ({sorted({type(v).__name__ for v in labels})}) "
                                "cannot be saved without pickle")
            arrays[f"labels.{a}"] = arr
            arrays[f"count.{a}"] = self.count[a]
            arrays[f"raw_sum.{a}"] = self.raw_sum[a]
            arrays[f"out_sum.{a}"] = self.out_sum[a]
        for name, value in self.rule.items():
            if isinstance(value, list):
                for a, arr in enumerate(value):
                    arrays[f"rule.{name}.{a}"] = np.asarray(arr)
            else:
                arrays[f"rule.{name}"] = np.asarray(value)
        return arrays

    @classmethod
    def from_arrays(cls, arrays) -> StreamState:
        """The inverse of :meth:`to_arrays`."""
        n_attr = int(arrays["attributes"])
        state = cls(n_seen=int(arrays["n_seen"]))
        for a in range(n_attr):
            state.labels.append({label: i for i, label in enumerate(arrays[f"labels.{a}"].tolist())})
            state.count.append(np.array(arrays[f"count.{a}"], dtype=np.float64))
            state.raw_sum.append(np.array(arrays[f"raw_sum.{a}"], dtype=np.float64))
            state.out_sum.append(np.array(arrays[f"out_sum.{a}"], dtype=np.float64))
        for key in sorted(arrays):
            parts = key.split(".")
            if parts[0] != "rule":
                continue
            value = np.array(arrays[key])
            if len(parts) == 2:
                state.rule[parts[1]] = value.item()
            else:
                state.rule.setdefault(parts[1], [None] * n_attr)[int(parts[2])] = value
        return state


# -- the rules ---------------------------------------------------------------------------
class _PooledRule:
    """Plug-in shift, then the exact pooled projection (see the module documentation)."""

    def __init__(self, tol: float, slack: float, scale: np.ndarray, bounds, prior: list | None):
        self.tol, self.slack, self.scale = tol, slack, scale
        self.lb = -math.inf if bounds is None or bounds[0] is None else float(bounds[0])
        self.ub = math.inf if bounds is None or bounds[1] is None else float(bounds[1])
        self.box = bounds is not None and (math.isfinite(self.lb) or math.isfinite(self.ub))
        self.prior = prior  # per attribute: (counts (k0,), raw sums (k0, c)) weighted, or None

    @staticmethod
    def new_state() -> dict:
        return {"shifts": [], "slack": []}

    @staticmethod
    def dual(rule: dict) -> np.ndarray:
        return np.concatenate(rule["shifts"], 0) if rule["shifts"] else np.zeros((0, 0))

    def step(self, z: np.ndarray, codes: np.ndarray, state: StreamState) -> np.ndarray:
        tol = self.tol
        # 1. plug-in shifts from the raw statistics including this call
        y = z.copy()
        for a in range(codes.shape[1]):
            k = len(state.count[a])
            count = state.count[a] + np.bincount(codes[:, a], minlength=k)
            raw = state.raw_sum[a] + _group_sums(z, codes[:, a], k)
            if self.prior is not None and a < len(self.prior):
                p_count, p_sum = self.prior[a]
                count, raw = count.copy(), raw.copy()
                count[: len(p_count)] += p_count
                raw[: len(p_count)] += p_sum
            t = np.array([_plug_in_shifts(raw[:, j].tolist(), count.tolist(), tol) for j in range(z.shape[1])]).T
            state.rule["shifts"][a] = t
            y -= t[codes[:, a]]
            if self.slack > 0:
                # the debt: what the emitted sums owe to the plug-in target (raw sums minus
                # the current shifts), repaid over the group's samples so far and now
                before = state.count[a]
                debt = state.out_sum[a] - state.raw_sum[a] + before[:, None] * t
                total = before + np.bincount(codes[:, a], minlength=k)
                y -= (debt / np.maximum(total, 1)[:, None])[codes[:, a]]
        # 2. exact projection of this call onto "pooled means within the bands"
        slack = [self._call_slack(state, codes, a, y.shape[1]) for a in range(codes.shape[1])]
        if codes.shape[1] == 1:
            out = self._pooled_projection(y, codes, 0, state, slack[0])
        else:
            out = _dykstra(y, lambda a, x: self._pooled_projection(x, codes, a, state, slack[a]), codes.shape[1])
            if self.box:  # Dykstra's iterate lies in the box only up to rounding
                out = np.clip(out, self.lb, self.ub)
        self._settle_slack(state, codes, out, slack)
        return out

    def _formula(self, counts: np.ndarray, c: int) -> np.ndarray:
        """``slack * scale_ / sqrt(N_g)`` (k, c); infinite for a group never emitted."""
        root = np.sqrt(np.asarray(counts, dtype=np.float64))
        with np.errstate(divide="ignore"):
            inv = np.where(root > 0, 1.0 / np.where(root > 0, root, 1.0), np.inf)
        return self.slack * inv[:, None] * np.broadcast_to(self.scale, (c,))[None, :]

    def _call_slack(self, state: StreamState, codes: np.ndarray, a: int, c: int) -> np.ndarray:
        """Slack per group for this call: the formula at the counts after it for the
        present groups, the settled value for the others. With a box, a present group
        whose shrunk band cannot be reached (or met with the others) keeps its settled
        slack for this call (which the previous call showed feasible)."""
        k = len(state.count[a])
        n_call = np.bincount(codes[:, a], minlength=k)
        present = n_call > 0
        settled = state.rule["slack"][a]
        if self.slack == 0:
            return np.zeros((k, c))
        new = np.where(present[:, None], self._formula(state.count[a] + n_call, c), settled)
        if not self.box:
            return new
        for j in range(c):
            lo, hi = _c_range(state, a, j, n_call, new[:, j], self.tol, self.lb, self.ub)
            if lo > hi + 1e-12 * (1.0 + abs(lo) + abs(hi)):
                new[present, j] = settled[present, j]
        return new

    def _settle_slack(self, state, codes, out, slack) -> None:
        """After the call: each seen group's slack is the one its band now needs, never
        below this call's (so the bound reported is the bound met)."""
        if self.slack == 0:
            return
        for a in range(codes.shape[1]):
            k = len(state.count[a])
            total = state.count[a] + np.bincount(codes[:, a], minlength=k)
            seen = total > 0
            sums = state.out_sum[a] + _group_sums(out, codes[:, a], k)
            for j in range(out.shape[1]):
                e = slack[a][:, j]
                if seen.sum() < 2:
                    state.rule["slack"][a][:, j] = np.where(seen, e, state.rule["slack"][a][:, j])
                    continue
                m = sums[seen, j] / total[seen]
                es = np.minimum(e[seen], 1e300)
                lo, hi = float(np.max(m - self.tol - es)), float(np.min(m + es))
                if lo <= hi:
                    settled = es
                else:  # rounding, or attributes that conflict: the bound becomes what was met
                    c0 = 0.5 * (lo + hi)
                    settled = np.maximum.reduce([es, c0 - m, m - self.tol - c0])
                state.rule["slack"][a][seen, j] = settled

    def _pooled_projection(self, y: np.ndarray, codes: np.ndarray, a: int, state: StreamState,
                           slack: np.ndarray) -> np.ndarray:
        """Shift this call's groups (attribute a) so all pooled means fit their bands.

        The work on the k groups is done in Python floats: a stream's calls are tiny,
        and array calls would cost more than the arithmetic.
        """
        tol = self.tol
        k = len(state.count[a])
        n_call = np.bincount(codes[:, a], minlength=k).tolist()
        before = state.count[a].tolist()
        present = [g for g in range(k) if n_call[g] > 0]
        absent = [g for g in range(k) if n_call[g] == 0 and before[g] > 0]
        if len(present) + len(absent) < 2:
            return np.clip(y, self.lb, self.ub) if self.box else y
        if self.box:
            return self._pooled_projection_box(y, codes, a, state, slack, present, absent)
        total = [before[g] + n_call[g] for g in range(k)]
        pooled = state.out_sum[a] + _group_sums(y, codes[:, a], k)
        weights = [total[g] ** 2 / n_call[g] for g in present]
        delta = np.zeros((k, y.shape[1]))
        for j in range(y.shape[1]):
            col = pooled[:, j].tolist()
            e = slack[:, j].tolist()
            means0 = [col[g] / total[g] for g in present]
            width, lo, hi = tol, -math.inf, math.inf
            if absent:
                history = state.out_sum[a][:, j].tolist()
                fixed = [history[g] / before[g] for g in absent]
                lo = max(m - tol - e[g] for g, m in zip(absent, fixed))
                hi = min(m + e[g] for g, m in zip(absent, fixed))
                if lo > hi:  # the history itself breaks the bound (attributes in conflict): never tighter
                    width, lo = width + (lo - hi), hi
            pe = [e[g] for g in present]
            if len(present) >= 2:
                # convex in the start: the constrained optimum is the clamped free one
                free = interval_start_1d(means0, weights, width) if not any(pe) else \
                    _band_start(means0, weights, pe, width)
                start = min(max(free, lo), hi)
            else:  # one group moves: it must land within its band around the fixed means
                start = min(max(means0[0] - width / 2, lo), hi)
            for g, m, eg in zip(present, means0, pe):
                moved = m - min(max(m, start - eg), start + width + eg)  # change of the pooled mean
                delta[g, j] = moved * (total[g] / n_call[g])
        return y - delta[codes[:, a]]

    def _pooled_projection_box(self, y, codes, a, state, slack, present, absent) -> np.ndarray:
        """As :meth:`_pooled_projection`, inside the box: each present group is shifted
        by one scalar and clipped; the interval start solves ``sum_g T_g t_g(c) = 0``
        (stationarity in ``c``) by bisection within the range where every group's band
        is reachable."""
        tol, lb, ub = self.tol, self.lb, self.ub
        k = len(state.count[a])
        n_call = np.bincount(codes[:, a], minlength=k)
        total = state.count[a] + n_call
        out = np.empty_like(y)
        for j in range(y.shape[1]):
            col = y[:, j]
            e = slack[:, j]
            history = state.out_sum[a][:, j]
            c_lo, c_hi = _c_range(state, a, j, n_call, e, self.tol, lb, ub)
            tol = self.tol
            if c_lo > c_hi:  # the history breaks the bound (rounding, or attributes in conflict): never tighter
                tol, c_lo = tol + (c_lo - c_hi), c_hi
            groups = {g: BoxSum(np.sort(col[codes[:, a] == g]), lb, ub) for g in present}
            free = {g: (history[g] + float(np.clip(col[codes[:, a] == g], lb, ub).sum())) / total[g]
                    for g in present}

            def shifts(c: float, free=free, e=e, groups=groups, history=history, tol=tol) -> dict:
                res = {}
                for g in present:
                    target = min(max(free[g], c - e[g]), c + tol + e[g])
                    res[g] = 0.0 if target == free[g] else groups[g].shift_for(target * total[g] - history[g])
                return res

            def balance(c: float, shifts=shifts) -> float:
                return sum(total[g] * t for g, t in shifts(c).items())

            if len(present) == 1 and absent:
                g = present[0]
                c = min(max(free[g] - tol / 2, c_lo), c_hi)
            else:
                lo = max(c_lo, min(free[g] - tol - e[g] for g in present))
                hi = min(c_hi, max(free[g] + e[g] for g in present))
                if lo >= hi:
                    c = lo if lo <= c_hi else c_hi
                elif balance(lo) <= 0:
                    c = lo
                elif balance(hi) >= 0:
                    c = hi
                else:
                    c = bisect_decreasing(balance, lo, hi)
            t = np.zeros(k)
            for g, tg in shifts(c).items():
                t[g] = tg
            out[:, j] = np.clip(col - t[codes[:, a]], lb, ub)
        return out


def _c_range(state: StreamState, a: int, j: int, n_call: np.ndarray, e: np.ndarray, tol: float,
             lb: float, ub: float):
    """``(lo, hi)``: the interval starts ``c`` for which every group's band
    ``[c - e_g, c + tol + e_g]`` holds its fixed pooled mean (absent groups) or can be
    reached by clipped outputs (present groups); ``lo > hi`` when there is none."""
    before, history = state.count[a], state.out_sum[a][:, j]
    lo, hi = -math.inf, math.inf
    for g in range(len(before)):
        n, N = float(n_call[g]), float(before[g])
        if n == 0 and N == 0:
            continue
        if n == 0:
            r_lo = r_hi = history[g] / N
        else:
            r_lo, r_hi = (history[g] + n * lb) / (N + n), (history[g] + n * ub) / (N + n)
        lo, hi = max(lo, r_lo - tol - e[g]), min(hi, r_hi + e[g])
    return lo, hi


class _PaperRule:
    """The paper's online primal-dual step (one attribute)."""

    def __init__(self, tol: float, eta0: float):
        self.tol, self.eta0 = tol, eta0

    @staticmethod
    def new_state() -> dict:
        return {"dual": 0.0, "steps": 0}

    @staticmethod
    def dual(rule: dict) -> float:
        return float(rule["dual"])

    def step(self, z: np.ndarray, codes: np.ndarray, state: StreamState) -> np.ndarray:
        if codes.shape[1] != 1:
            raise ValueError("mode='paper' handles one sensitive attribute (the paper's setting)")
        g = codes[:, 0]
        slots, local = np.unique(g, return_inverse=True)
        if len(slots) < 2:
            return z
        n = len(g)
        counts = np.bincount(local).astype(float)
        means = _group_sums(z, local, len(slots)) / counts[:, None]
        lam = float(state.rule["dual"])
        new = _penalised_means(means, counts, lam * n / 2)
        y = z + (new - means)[local]
        gap = float((new.max(0) - new.min(0)).max())
        state.rule["steps"] = int(state.rule["steps"]) + 1
        step = self.eta0 / np.sqrt(state.rule["steps"])
        state.rule["dual"] = max(0.0, lam + step * n * (gap - self.tol))
        return y


def _estimator_has(name):
    def check(self):
        est = self.estimator_ if hasattr(self, "estimator_") else self.estimator
        return hasattr(est[-1] if isinstance(est, Pipeline) else est, name)

    return check


class StreamingFairPredictor(BaseEstimator):
    """Serve a fitted fairness-layer model on a stream, keeping the pooled outputs fair.

    Parameters
    ----------
    estimator : FairLayerRegressor, FairLayerClassifier, or a Pipeline ending in one
        Cloned and fitted by :meth:`fit`. In a Pipeline, the stream transforms ``X``
        through the steps before the last one and works on the last one's raw outputs.
    tolerance : float or None, default=None
        The pooled parity budget; None takes the (final) estimator's ``tolerance``.
    slack : float, default=1.0
        ``mode="pooled"``: the bands' slack ``e_g = slack * scale_ / sqrt(N_g)``
        (in units of the raw scores' spread within groups). ``0`` enforces the strict
        bound ``pooled gap <= tolerance`` after every call.
    prior_samples : int, default=20
        ``mode="pooled"``: the plug-in shifts start from the training set's raw group
        means, weighted as this many samples (0: from the stream alone). Only the
        shifts use them; every bound is on what the stream emitted.
    eta0 : float, default=0.5
        Dual step of ``mode="paper"`` (step ``eta0 / sqrt(t)``).
    mode : {"pooled", "paper"}, default="pooled"
        See the module documentation.
    unknown_group : {"new", "error"}, default="new"
        A group not seen in fit: ``"new"`` starts its statistics when it first
        appears (its first scores are placed inside the current fair interval);
        ``"error"`` raises ``ValueError``.

    Attributes
    ----------
    estimator_ : the fitted clone
    stream_state_ : StreamState
        Counts, sums and the rule's own state (see :class:`StreamState`).
    scale_ : ndarray (c,)
        Standard deviation of the training raw scores within groups (the slack's unit).
    n_seen_ : int
        Samples emitted by :meth:`partial_predict` since fit or :meth:`reset`.
    dual_ : ndarray or float
        ``"pooled"``: the plug-in shifts per (attribute, group) and output column
        (the pooled constraint's multipliers divided by the group counts);
        ``"paper"``: the scalar dual variable.
    group_means_ : dict
        ``{(attribute, group): mean emitted score}`` (an array for several columns).
    pooled_gap_ : float
        Parity gap of everything emitted so far (max over attributes and columns).
    pooled_bound_ : float
        ``mode="pooled"``: the bound the rule guarantees for ``pooled_gap_`` now,
        ``tolerance + max (e_g + e_h)`` over pairs of groups seen.

    Examples
    --------
    >>> import numpy as np
    >>> from fairsk import FairLayerRegressor, StreamingFairPredictor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 3)); s = rng.integers(0, 2, 300); y = X[:, 0] + s
    >>> stream = StreamingFairPredictor(FairLayerRegressor(max_epochs=3, random_state=0, solver="exact"),
    ...                                tolerance=0.05).fit(X, y, sensitive_features=s)
    >>> for i in range(50):
    ...     _ = stream.partial_predict(X[i:i + 1], sensitive_features=s[i:i + 1])
    >>> stream.n_seen_, stream.pooled_gap_ <= stream.pooled_bound_ + 1e-9
    (50, True)
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit", "predict"])],
        "tolerance": [Interval(Real, 0, None, closed="left"), None],
        "slack": [Interval(Real, 0, None, closed="left")],
        "prior_samples": [Interval(Integral, 0, None, closed="left")],
        "eta0": [Interval(Real, 0, None, closed="neither")],
        "mode": [StrOptions({"pooled", "paper"})],
        "unknown_group": [StrOptions({"new", "error"})],
        "enforce_on": [StrOptions({"labels", "proba", "logits"}), None],
    }

    def __init__(self, estimator, *, tolerance=None, slack=1.0, prior_samples=20, eta0=0.5, mode="pooled",
                 unknown_group="new", enforce_on=None):
        self.estimator = estimator
        self.enforce_on = enforce_on
        self.tolerance = tolerance
        self.slack = slack
        self.prior_samples = prior_samples
        self.eta0 = eta0
        self.mode = mode
        self.unknown_group = unknown_group

    # -- which output the stream constrains -------------------------------------------
    def _output_mode(self) -> str:
        """What the stream constrains: ``"labels"`` (the emitted labels' selection
        rates), ``"proba"`` (the emitted probabilities of the positive class, in the box
        [0, 1]) or ``"scores"`` (the scores: a regressor's predictions, a classifier's
        logits). From this predictor's ``enforce_on``, else the classifier's."""
        final = self._final()
        if not hasattr(final, "classes_"):
            return "scores"
        mode = self.enforce_on if self.enforce_on is not None else getattr(final, "enforce_on", "logits")
        if mode == "logits":
            return "scores"
        if len(final.classes_) != 2:
            raise ValueError(f"a stream of {mode} at parity (enforce_on={mode!r}) needs a binary classifier; pass "
                             "enforce_on='logits' to stream the logits of several classes")
        if self.mode != "pooled":
            raise ValueError("mode='paper' streams logits: pass enforce_on='logits'")
        return mode

    def _on_labels(self) -> bool:
        return self._output_mode() == "labels"

    # -- fitting and batch prediction -------------------------------------------------
    def fit(self, X, y, sample_weight=None, sensitive_features=None) -> StreamingFairPredictor:
        """Fit a clone of ``estimator`` and start an empty stream."""
        self._validate_params()
        est = clone(self.estimator)
        tol = getattr(est[-1] if isinstance(est, Pipeline) else est, "tolerance", None) \
            if self.tolerance is None else self.tolerance
        if self.mode == "pooled" and self.slack == 0 and tol == 0:
            raise ValueError(
                "slack=0 with tolerance=0 keeps every group's pooled mean fixed once set: a call of one sample "
                "then gets the one output that keeps it, whatever its input (the stream would emit constants). "
                "Use slack > 0 (the default), whose bound tends to the tolerance as the stream grows, or a "
                "positive tolerance"
            )
        final = est[-1] if isinstance(est, Pipeline) else est
        if getattr(getattr(final, "_criterion", None), "label_strata", False):
            raise ValueError(f"criterion={final.criterion!r} needs the true labels, unknown when a stream emits: "
                             "stream its calibrated labels with the model's own predict, and follow their error "
                             "rates as labels arrive with fairsk.monitoring.DelayedLabelMonitor")
        if not all(hasattr(final, name) for name in ("raw_output", "format_output")):
            raise ValueError(f"StreamingFairPredictor needs a fairsk estimator (or a Pipeline ending in one), got "
                             f"{type(final).__name__}")
        self.estimator_ = est.fit(X, y, **self._fit_params(est, sample_weight, sensitive_features))
        for name in ("classes_", "n_features_in_", "feature_names_in_"):
            if hasattr(self.estimator_, name):
                setattr(self, name, getattr(self.estimator_, name))
        self._fit_stream_statistics(X, sensitive_features)
        self.reset()
        return self

    @staticmethod
    def _fit_params(est, sample_weight, sensitive_features) -> dict:
        """Only what was given; a Pipeline gets it as ``<last step>__name`` unless
        metadata routing is on (then it routes the plain names itself)."""
        from sklearn import get_config

        params = {}
        if sample_weight is not None:
            params["sample_weight"] = sample_weight
        if sensitive_features is not None:
            params["sensitive_features"] = sensitive_features
        if isinstance(est, Pipeline) and not get_config().get("enable_metadata_routing", False):
            params = {f"{est.steps[-1][0]}__{k}": v for k, v in params.items()}
        return params

    def _fit_stream_statistics(self, X, sensitive_features) -> None:
        """``scale_`` (within-group spread of the training raw scores) and the prior
        of the plug-in shifts (training raw group means)."""
        final = self._final()
        z, sensitive = final.raw_output(self._features(X), sensitive_features)
        self.prior_counts_, self.prior_sums_ = [], []
        labels = getattr(final, "group_labels_", None)
        if sensitive is None or labels is None:
            if self._output_mode() == "proba":
                z = _sigmoid(z)
            self.scale_ = z.std(0) if len(z) else np.zeros(z.shape[1])
            return
        encoder = GroupEncoder()
        encoder.labels_ = [list(known) for known in labels]
        codes = encoder.transform(sensitive, z.shape[0])
        if self._output_mode() == "proba":  # the stream's values are probabilities
            z = _sigmoid(z)
        for a, known in enumerate(labels):
            self.prior_counts_.append(np.bincount(codes[:, a], minlength=len(known)).astype(np.float64))
            self.prior_sums_.append(_group_sums(z, codes[:, a], len(known)))
        means = self.prior_sums_[0] / np.maximum(self.prior_counts_[0], 1)[:, None]
        self.scale_ = np.sqrt(((z - means[codes[:, 0]]) ** 2).mean(0))  # spread within groups

    def _final(self):
        est = self.estimator_
        return est[-1] if isinstance(est, Pipeline) else est

    def _features(self, X):
        est = self.estimator_
        return est[:-1].transform(X) if isinstance(est, Pipeline) else X

    def predict(self, X, sensitive_features=None):
        """The ordinary batch projection of the fitted model (no stream state)."""
        check_is_fitted(self, "estimator_")
        return self._final().predict(self._features(X), sensitive_features=sensitive_features)

    @available_if(_estimator_has("predict_proba"))
    def predict_proba(self, X, sensitive_features=None):
        check_is_fitted(self, "estimator_")
        return self._final().predict_proba(self._features(X), sensitive_features=sensitive_features)

    @available_if(_estimator_has("decision_function"))
    def decision_function(self, X, sensitive_features=None):
        check_is_fitted(self, "estimator_")
        return self._final().decision_function(self._features(X), sensitive_features=sensitive_features)

    def score(self, X, y, sample_weight=None, sensitive_features=None) -> float:
        check_is_fitted(self, "estimator_")
        return self._final().score(self._features(X), y, sample_weight=sample_weight,
                                   sensitive_features=sensitive_features)

    def __sklearn_tags__(self):
        tags = self.estimator.__sklearn_tags__()
        tags.non_deterministic = getattr(self.estimator, "random_state", None) is None
        return tags

    # -- the stream ---------------------------------------------------------------------
    @property
    def _tol(self) -> float:
        return float(self._final().tolerance if self.tolerance is None else self.tolerance)

    def _rule(self):
        if self.mode == "paper":
            return _PaperRule(self._tol, self.eta0)
        prior = None
        if self.prior_samples > 0 and getattr(self, "prior_counts_", None):
            n_train = float(self.prior_counts_[0].sum())
            w = self.prior_samples / n_train if n_train > 0 else 0.0
            prior = [(c * w, s * w) for c, s in zip(self.prior_counts_, self.prior_sums_)]
        bounds = (0.0, 1.0) if self._output_mode() == "proba" else getattr(self._final(), "bounds", None)
        return _PooledRule(self._tol, float(self.slack), np.asarray(getattr(self, "scale_", 1.0), dtype=float),
                           bounds, prior)

    def reset(self) -> StreamingFairPredictor:
        """Forget the stream; the fitted model stays."""
        check_is_fitted(self, "estimator_")
        self._lock = threading.Lock()
        rule = _PaperRule if self.mode == "paper" else _PooledRule
        self.stream_state_ = StreamState(rule=rule.new_state())
        self.output_ = self._output_mode()
        self.labeler_ = StreamingLabeler(self._tol) if self.output_ == "labels" else None
        return self

    # the public view of the state
    @property
    def n_seen_(self) -> int:
        return self.stream_state_.n_seen

    @property
    def dual_(self):
        rule = _PaperRule if self.mode == "paper" else _PooledRule
        return rule.dual(self.stream_state_.rule)

    @property
    def group_means_(self) -> dict:
        state, means = self.stream_state_, {}
        for a, lookup in enumerate(state.labels):
            for label, slot in lookup.items():
                n = state.count[a][slot]
                if n > 0:
                    row = state.out_sum[a][slot] / n
                    means[(a, label)] = float(row[0]) if row.shape[0] == 1 else row
        return means

    @property
    def pooled_gap_(self) -> float:
        state, gap = self.stream_state_, 0.0
        for a in range(state.n_attributes):
            seen = state.count[a] > 0
            if seen.any():
                m = state.out_sum[a][seen] / state.count[a][seen][:, None]
                gap = max(gap, float((m.max(0) - m.min(0)).max()))
        return gap

    @property
    def pooled_bound_(self) -> float:
        state, bound = self.stream_state_, self._tol
        if getattr(self, "labeler_", None) is not None:  # labels: max(tol, 1 / smallest cell count)
            return self.labeler_.bound()
        if self.mode == "paper":
            return math.inf
        if self.slack == 0:
            return bound
        for a, slack in enumerate(state.rule["slack"]):
            seen = state.count[a] > 0
            if seen.sum() >= 2:
                top = np.sort(slack[seen], 0)[-2:]
                bound = max(bound, self._tol + float(top.sum(0).max()))
        return bound

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if "estimator_" in state:
            self._lock = threading.Lock()

    # -- fitted state for persistence -----------------------------------------------------
    def get_fitted_state(self) -> dict:
        """``{"attributes": ..., "stream": StreamState.to_arrays()}``: this predictor's
        own fitted state (the wrapped estimator's is its own ``get_fitted_state``)."""
        check_is_fitted(self, "estimator_")
        attributes = {"scale_": np.asarray(self.scale_), "prior_counts_": list(self.prior_counts_),
                      "prior_sums_": list(self.prior_sums_)}
        for name in ("classes_", "n_features_in_", "feature_names_in_"):
            if hasattr(self, name):
                attributes[name] = getattr(self, name)
        if getattr(self, "labeler_", None) is not None:
            attributes["labeler_state_"] = self.labeler_.get_state()
        return {"attributes": attributes, "stream": self.stream_state_.to_arrays()}

    @classmethod
    def from_fitted_state(cls, params: dict, state: dict, *, module=None) -> StreamingFairPredictor:
        """Rebuild from :meth:`get_fitted_state`: ``params`` are ``get_params(deep=False)``
        and ``state["estimator_"]`` the fitted wrapped estimator (rebuilt by the
        caller); ``module`` is unused here (the wrapped estimator takes it)."""
        est = state["estimator_"]
        stream = cls(**{**params, "estimator": params.get("estimator") or clone(est)})
        stream._validate_params()
        stream.estimator_ = est
        attributes = dict(state["attributes"])
        labeler_state = attributes.pop("labeler_state_", None)
        for name, value in attributes.items():
            setattr(stream, name, value)
        stream.reset()
        stream.stream_state_ = StreamState.from_arrays(state["stream"])
        if labeler_state is not None and stream.labeler_ is not None:
            stream.labeler_.set_state(labeler_state)
        return stream

    # -- streaming ----------------------------------------------------------------------
    def partial_predict(self, X, sensitive_features=None) -> np.ndarray:
        """Predict one batch of the stream (any size, down to 1) and update the state.

        Regressor: the adjusted predictions. Classifier: labels from the adjusted
        logits (use :meth:`partial_decision_function` for the logits themselves).
        """
        if getattr(self, "labeler_", None) is not None:
            return self._final().classes_[self._partial(X, sensitive_features, labels=True)[:, 0].astype(int)]
        if self._emits_proba():
            proba = self._partial(X, sensitive_features)[:, 0]
            return self._final().classes_[(proba >= 0.5).astype(int)]
        scores = self._partial(X, sensitive_features)
        final = self._final()
        if hasattr(final, "labels_from_scores"):
            return final.labels_from_scores(scores)
        return final.format_output(scores)

    @available_if(_estimator_has("decision_function"))
    def partial_decision_function(self, X, sensitive_features=None) -> np.ndarray:
        """The adjusted logits of one batch of the stream (updates the state)."""
        if getattr(self, "labeler_", None) is not None:
            raise ValueError("this stream emits labels at parity (enforce_on='labels'): use partial_predict, or "
                             "enforce_on='logits' to stream the logits")
        scores = self._partial(X, sensitive_features)
        if self._emits_proba():  # the logit of the emitted probability, as the classifier's
            return logit(scores[:, 0])
        return scores[:, 0] if scores.shape[1] == 1 else scores

    @available_if(_estimator_has("predict_proba"))
    def partial_predict_proba(self, X, sensitive_features=None) -> np.ndarray:
        """The probabilities (n, 2) of one batch of a stream of probabilities
        (``enforce_on="proba"``): the pooled means of the positive class's probability
        per group stay within the pooled bound (updates the state)."""
        if not self._emits_proba():
            raise ValueError(f"this stream emits {getattr(self, 'output_', 'scores')}, not probabilities: pass "
                             "enforce_on='proba' to stream probabilities at parity")
        p = self._partial(X, sensitive_features)[:, 0]
        return np.column_stack([1.0 - p, p])

    def _emits_proba(self) -> bool:
        check_is_fitted(self, "estimator_")
        if not hasattr(self, "output_"):  # fitted before streams of probabilities existed
            self.output_ = self._output_mode()
        return self.output_ == "proba"

    def _partial(self, X, sensitive_features, labels: bool = False) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        if (X.shape[0] if isinstance(X, np.ndarray) else _num_samples(X)) == 0:
            raise ValueError("partial_predict got an empty batch")
        z, sensitive = self._final().raw_output(self._features(X), sensitive_features)  # (n, c) float64
        if sensitive is None:
            raise ValueError("partial_predict needs sensitive_features (or an estimator with sensitive_columns)")
        if not np.all(np.abs(z) <= _MAX_RAW):  # also catches NaN
            raise ValueError(f"the model's raw outputs for this call are not finite or exceed {_MAX_RAW:g} in "
                             "magnitude (inputs far outside the training range?): the stream's sums would overflow")
        n = z.shape[0]
        rule = self._rule()
        with self._lock:  # one stream: calls are serialised, no update is lost
            state = self.stream_state_
            codes = self._known_slots(sensitive, n)
            if codes is None:
                codes_local, labels_local = encode_sensitive(sensitive, n)
                codes = self._slots(codes_local, labels_local, z.shape[1])
            if getattr(self, "output_", None) == "proba":
                z = _sigmoid(z)  # the stream's values: probabilities, in the box [0, 1]
                out = rule.step(z, codes, state)
            elif labels:
                # the pooled selection rates of the emitted labels, by the label rule of
                # fairsk.decisions; the state then records labels, so pooled_gap_ is the
                # gap of the selection rates
                proba = _sigmoid(z[:, 0])
                out = self.labeler_.partial_labels(proba, codes).astype(np.float64)[:, None]
            else:
                out = rule.step(z, codes, state)
            state.record(z, out, codes)
        return out

    def _known_slots(self, sensitive, n: int) -> np.ndarray | None:
        """Slots of a plain array of labels the stream already knows, by direct lookup.

        ``None`` (take the general route: :func:`encode_sensitive` + :meth:`_slots`)
        for anything else: other input types, a new label, a missing value. Labels
        are matched as the general route matches them: object columns by ``str``,
        others by value.
        """
        labels = self.stream_state_.labels
        if not labels or not isinstance(sensitive, np.ndarray) or sensitive.ndim not in (1, 2):
            return None
        columns = [sensitive] if sensitive.ndim == 1 else list(sensitive.T)
        if len(columns) != len(labels) or sensitive.shape[0] != n:
            return None
        codes = np.empty((n, len(columns)), dtype=np.int64)
        for a, column in enumerate(columns):
            values = column.tolist()
            if column.dtype.kind in "Of" and any(v is None or v != v for v in values):
                return None  # missing: the general route raises
            if column.dtype == object:
                values = [str(v) for v in values]
            lookup = labels[a]
            try:
                codes[:, a] = [lookup[v] for v in values]
            except (KeyError, TypeError):  # a new label, or an unhashable one
                return None
        return codes

    def _slots(self, codes_local, labels_local, c) -> np.ndarray:
        """Map this call's labels to the stream's persistent slots (new ones appended)."""
        state = self.stream_state_
        fitted_labels = getattr(self._final(), "group_labels_", None)
        if not state.labels:
            fitted = fitted_labels or [[] for _ in labels_local]
            check_attribute_count(len(labels_local), len(fitted))  # fitted with another number of attributes
            for known in fitted:
                state.labels.append({label: i for i, label in enumerate(known)})
                k = len(known)
                state.count.append(np.zeros(k))
                state.raw_sum.append(np.zeros((k, c)))
                state.out_sum.append(np.zeros((k, c)))
                for name, value in state.rule.items():
                    if isinstance(value, list):
                        value.append(np.full((k, c), np.inf if name == "slack" else 0.0))
        check_attribute_count(len(labels_local), state.n_attributes, "the stream has")
        codes = np.empty_like(codes_local)
        for a, labels in enumerate(labels_local):
            lookup = state.labels[a]
            fitted = set(fitted_labels[a]) if fitted_labels else set()
            mapping = np.empty(len(labels), dtype=np.int64)
            for i, label in enumerate(labels):
                if label not in lookup:
                    if self.unknown_group == "error" and label not in fitted:
                        raise ValueError(
                            f"group {label!r} of attribute {a} was not seen in fit (unknown_group='error')"
                        )
                    lookup[label] = len(lookup)
                    state.add_groups(a, 1, c)
                mapping[i] = lookup[label]
            codes[:, a] = mapping[codes_local[:, a]]
        return codes


def _band_start(m: list, w: list, e: list, tol: float) -> float:
    """Start ``c`` of the bands ``[c - e_g, c + tol + e_g]`` closest to the means ``m``
    (weights ``w``): the projection kernel's interval start with slacks ``e``."""
    return interval_start_1d(m, w, tol, e)


def _plug_in_shifts(raw: list, count: list, tol: float) -> list:
    """Per-group shifts of the exact offline projection of the running raw means (one
    column; groups never seen get 0)."""
    seen = [g for g, n in enumerate(count) if n > 0]
    shifts = [0.0] * len(count)
    if len(seen) < 2:
        return shifts
    means = [raw[g] / count[g] for g in seen]
    start = interval_start_1d(means, [count[g] for g in seen], tol)
    for g, m in zip(seen, means):
        shifts[g] = m - min(max(m, start), start + tol)
    return shifts


def _group_sums(v: np.ndarray, codes: np.ndarray, k: int) -> np.ndarray:
    if v.shape[1] == 1:  # the usual case, without np.stack's overhead
        return np.bincount(codes, weights=v[:, 0], minlength=k)[:, None]
    return np.stack([np.bincount(codes, weights=v[:, j], minlength=k) for j in range(v.shape[1])], 1)


def _penalised_means(means: np.ndarray, counts: np.ndarray, budget: float) -> np.ndarray:
    """Group means minimising ``sum n_g d_g^2 + 2 budget (max - min)``, per column.

    Means above a level ``h`` come down to it with ``sum n_g (m_g - h)_+ = budget``,
    those below ``l`` come up with ``sum n_g (l - m_g)_+ = budget``; if that leaves
    ``h <= l`` all means meet at their weighted average.
    """
    out = means.copy()
    for j in range(means.shape[1]):
        m = means[:, j]
        h = _water_level(m, counts, budget)
        l_ = -_water_level(-m, counts, budget)
        if h <= l_:
            out[:, j] = np.average(m, weights=counts)
        else:
            out[:, j] = np.clip(m, l_, h)
    return out


def _water_level(m: np.ndarray, counts: np.ndarray, budget: float) -> float:
    """The level h with ``sum n_g (m_g - h)_+ = budget`` (h = max(m) when budget = 0)."""
    order = np.argsort(-m)
    ms, ns = m[order], counts[order]
    cum_n, cum_mn = np.cumsum(ns), np.cumsum(ns * ms)
    for i in range(len(ms)):
        h = (cum_mn[i] - budget) / cum_n[i]  # level if the top i+1 groups are above it
        below = ms[i + 1] if i + 1 < len(ms) else -np.inf
        if h >= below:
            return float(h)
    return float(h)


# -- one stream served by several processes ---------------------------------------------
class SharedStream:
    """One stream served by several processes, with the pooled guarantee over everything
    all of them emitted.

    The pooled rules are sequential: each call is projected against the history of the
    whole stream. Several processes therefore share **one** state and take turns:
    the state lives in a file (:meth:`StreamState.to_arrays`, plus the label
    rule's state), and every call runs under an exclusive lock on ``path + ".lock"``
    (``fcntl.flock``: POSIX; across machines only on a file system whose locks work,
    not most NFS setups): load the state if another process changed it, emit, save,
    unlock. The calls of all processes then form one stream, in the order they took
    the lock, and every bound of :class:`StreamingFairPredictor` holds for it after
    every call, exactly as for one process.

    Merging states that processes kept apart would not do: the pooled means of the
    union weight each process's group means by its own group counts, and two streams
    each at parity can be far from it together (one emits many rows of group ``g``
    with low scores, the other many rows of ``h`` with high scores).

    Parameters
    ----------
    predictor : StreamingFairPredictor
        Fitted; every process holds its own copy (e.g. loaded with
        :mod:`fairsk.persistence`). Its stream state is replaced by the shared one.
    path : str or path-like
        The state file (created by the first call; delete it, or call :meth:`reset`,
        to start a new stream).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from fairsk import FairLayerRegressor, StreamingFairPredictor
    >>> from fairsk.streaming import SharedStream
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 3)); s = rng.integers(0, 2, 300); y = X[:, 0] + s
    >>> model = StreamingFairPredictor(FairLayerRegressor(max_epochs=3, random_state=0, solver="exact"),
    ...                               tolerance=0.05, slack=0.0).fit(X, y, sensitive_features=s)
    >>> path = os.path.join(tempfile.mkdtemp(), "stream.npz")
    >>> shared = SharedStream(model, path)  # in every serving process, the same path
    >>> for i in range(20):
    ...     _ = shared.partial_predict(X[i:i + 1], sensitive_features=s[i:i + 1])
    >>> with shared.session() as stream:  # the state of everything emitted, by all
    ...     stream.n_seen_, stream.pooled_gap_ <= 0.05 + 1e-9
    (20, True)
    """

    def __init__(self, predictor: StreamingFairPredictor, path):
        check_is_fitted(predictor, "estimator_")
        self.predictor = predictor
        self.path = os.fspath(path)
        self._version = None  # the version of the shared state this copy holds

    @contextmanager
    def session(self):
        """Hold the stream: yields the predictor with the shared state loaded, and
        saves the state when the block ends (nothing is saved if it raises)."""
        import fcntl

        with open(self.path + ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._load()
                yield self.predictor
                self._save()
            except BaseException:
                self._version = None  # the copy may be half-updated: reload next time
                raise
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def partial_predict(self, X, sensitive_features=None):
        """:meth:`StreamingFairPredictor.partial_predict` on the shared stream."""
        with self.session() as stream:
            return stream.partial_predict(X, sensitive_features=sensitive_features)

    def partial_decision_function(self, X, sensitive_features=None):
        """:meth:`StreamingFairPredictor.partial_decision_function` on the shared stream."""
        with self.session() as stream:
            return stream.partial_decision_function(X, sensitive_features=sensitive_features)

    def reset(self) -> SharedStream:
        """Start a new shared stream (for every process)."""
        with self.session() as stream:
            stream.reset()
        return self

    def _load(self) -> None:
        if not os.path.exists(self.path):
            self.predictor.reset()
            self._version = None
            return
        with np.load(self.path, allow_pickle=False) as data:
            version = str(data["version"])
            if version == self._version:
                return  # nobody emitted since this process saved
            arrays = {key: data[key] for key in data.files}
        self.predictor.reset()
        self.predictor.stream_state_ = StreamState.from_arrays(arrays)
        if self.predictor.labeler_ is not None:
            self.predictor.labeler_.set_state(json.loads(str(arrays["labeler"])))
        self._version = version

    def _save(self) -> None:
        arrays = self.predictor.stream_state_.to_arrays()
        if self.predictor.labeler_ is not None:
            arrays["labeler"] = np.asarray(json.dumps(self.predictor.labeler_.get_state()))
        self._version = uuid.uuid4().hex
        arrays["version"] = np.asarray(self._version)
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, self.path)  # readers never see a half-written file
