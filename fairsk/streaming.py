"""StreamingFairPredictor: fairness of everything emitted so far, at any batch size.

Two modes (``mode=``):

``"pooled"`` (default)
    Keeps, per attribute and group, the count, the sum of raw scores and the sum of
    emitted scores. For each call:

    1. *plug-in shift*: the exact offline projection of the running raw group means
       (weights = counts) gives per-group shifts ``t_g`` (what the batch projection of
       the whole stream so far would apply); the call's scores are shifted by them;
    2. *pooled projection*: the call's scores are then projected, exactly, so that
       the pooled means of **everything emitted so far** (history fixed, this call
       free) lie in one interval of width ``tolerance``. Moving a group's pooled
       mean by ``d`` costs ``d^2 (N_g + n_g)^2 / n_g``; the interval start is the
       root of the same breakpoint function as the batch layer's, clamped so the
       interval contains the pooled means of the groups absent from the call.

    Guarantee (one sensitive attribute): after every call, the pooled parity gap of
    all emitted scores is at most ``tolerance`` (up to rounding), at every batch size
    down to 1, with no assumption on the stream. Proof: by induction; the groups
    absent from a call keep their pooled means, which lie within ``tolerance`` of
    each other, and step 2 places the present ones in an interval of width
    ``tolerance`` containing them. Step 1 only makes step 2's correction small: for
    an i.i.d. stream the plug-in shifts converge to the offline projection's at rate
    ``O(1/sqrt(N_g))``. With several attributes the per-attribute projections are
    combined by Dykstra's algorithm; a call can then be infeasible (one sample cannot
    sit in two disjoint intervals), in which case the gap may exceed ``tolerance``
    until later calls repair it; ``pooled_gap_`` always reports the truth.

``"paper"``
    The online primal-dual algorithm of the paper (one attribute): each batch's
    scores minimise ``||y - z||^2 + dual * b * gap(y)``, then
    ``dual <- max(0, dual + eta0 / sqrt(t) * b * (gap(y) - tolerance))``. Batches
    with fewer than two groups pass through unchanged and do not update the dual
    (as in the paper's evaluation). It bounds a weighted average of batch gaps, not
    the pooled gap.
"""

from __future__ import annotations

import threading
from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import _num_samples, check_is_fitted

from ._groups import encode_sensitive
from .projection.kernels import interval_start as interval_start_1d

__all__ = ["StreamingFairPredictor"]

_DYKSTRA_SWEEPS = 500


def _estimator_has(name):
    def check(self):
        return hasattr(self.estimator_ if hasattr(self, "estimator_") else self.estimator, name)

    return check


class StreamingFairPredictor(BaseEstimator):
    """Serve a fitted fairness-layer model on a stream, keeping the pooled outputs fair.

    Parameters
    ----------
    estimator : FairLayerRegressor or FairLayerClassifier
        Cloned and fitted by :meth:`fit`.
    tolerance : float or None, default=None
        The pooled parity budget; None takes the estimator's ``tolerance``.
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
    >>> stream.n_seen_, stream.pooled_gap_ <= 0.05 + 1e-9
    (50, True)
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit", "predict"])],
        "tolerance": [Interval(Real, 0, None, closed="left"), None],
        "eta0": [Interval(Real, 0, None, closed="neither")],
        "mode": [StrOptions({"pooled", "paper"})],
        "unknown_group": [StrOptions({"new", "error"})],
    }

    def __init__(self, estimator, *, tolerance=None, eta0=0.5, mode="pooled", unknown_group="new"):
        self.estimator = estimator
        self.tolerance = tolerance
        self.eta0 = eta0
        self.mode = mode
        self.unknown_group = unknown_group

    # -- fitting and batch prediction -------------------------------------------------
    def fit(self, X, y, sample_weight=None, sensitive_features=None) -> StreamingFairPredictor:
        """Fit a clone of ``estimator`` and start an empty stream."""
        self._validate_params()
        self.estimator_ = clone(self.estimator).fit(
            X, y, sample_weight=sample_weight, sensitive_features=sensitive_features
        )
        for name in ("classes_", "n_features_in_", "feature_names_in_"):
            if hasattr(self.estimator_, name):
                setattr(self, name, getattr(self.estimator_, name))
        self.reset()
        return self

    def predict(self, X, sensitive_features=None):
        """The ordinary batch projection of the fitted model (no stream state)."""
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict(X, sensitive_features=sensitive_features)

    @available_if(_estimator_has("predict_proba"))
    def predict_proba(self, X, sensitive_features=None):
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict_proba(X, sensitive_features=sensitive_features)

    @available_if(_estimator_has("decision_function"))
    def decision_function(self, X, sensitive_features=None):
        check_is_fitted(self, "estimator_")
        return self.estimator_.decision_function(X, sensitive_features=sensitive_features)

    def score(self, X, y, sample_weight=None, sensitive_features=None) -> float:
        check_is_fitted(self, "estimator_")
        return self.estimator_.score(X, y, sample_weight=sample_weight, sensitive_features=sensitive_features)

    def __sklearn_tags__(self):
        tags = self.estimator.__sklearn_tags__()
        tags.non_deterministic = getattr(self.estimator, "random_state", None) is None
        return tags

    # -- the stream ---------------------------------------------------------------------
    @property
    def _tol(self) -> float:
        return float(self.estimator_.tolerance if self.tolerance is None else self.tolerance)

    def reset(self) -> StreamingFairPredictor:
        """Forget the stream; the fitted model stays."""
        check_is_fitted(self, "estimator_")
        self._lock = threading.Lock()
        self._labels: list[dict] = []  # per attribute: label -> slot
        self._count: list[np.ndarray] = []  # per attribute: (k,)
        self._raw_sum: list[np.ndarray] = []  # (k, c)
        self._out_sum: list[np.ndarray] = []  # (k, c)
        self._paper_steps = 0
        self.n_seen_ = 0
        self.dual_ = 0.0 if self.mode == "paper" else np.zeros((0, 0))
        self.group_means_ = {}
        self.pooled_gap_ = 0.0
        return self

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if "estimator_" in state:
            self._lock = threading.Lock()

    def partial_predict(self, X, sensitive_features=None) -> np.ndarray:
        """Predict one batch of the stream (any size, down to 1) and update the state.

        Regressor: the adjusted predictions. Classifier: labels from the adjusted
        logits (use :meth:`partial_decision_function` for the logits themselves).
        """
        scores = self._partial(X, sensitive_features)
        if hasattr(self.estimator_, "labels_from_scores"):
            return self.estimator_.labels_from_scores(scores)
        return self.estimator_.format_output(scores)

    @available_if(_estimator_has("decision_function"))
    def partial_decision_function(self, X, sensitive_features=None) -> np.ndarray:
        """The adjusted logits of one batch of the stream (updates the state)."""
        scores = self._partial(X, sensitive_features)
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def _partial(self, X, sensitive_features) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        est = self.estimator_
        if (X.shape[0] if isinstance(X, np.ndarray) else _num_samples(X)) == 0:
            raise ValueError("partial_predict got an empty batch")
        z, sensitive = est.raw_output(X, sensitive_features)  # (n, c) raw scores, float64
        if sensitive is None:
            raise ValueError("partial_predict needs sensitive_features (or an estimator with sensitive_columns)")
        n = z.shape[0]
        with self._lock:  # one stream: calls are serialised, no update is lost
            codes = self._known_slots(sensitive, n)
            if codes is None:
                codes_local, labels_local = encode_sensitive(sensitive, n)
                codes = self._slots(codes_local, labels_local, z.shape[1])
            out = self._step_paper(z, codes) if self.mode == "paper" else self._step_pooled(z, codes)
            bounds = getattr(est, "bounds", None)
            if bounds is not None:
                out = np.clip(out, bounds[0], bounds[1])
            self._record(z, out, codes)
        return out

    def _known_slots(self, sensitive, n: int) -> np.ndarray | None:
        """Slots of a plain array of labels the stream already knows, by direct lookup.

        ``None`` (take the general route: :func:`encode_sensitive` + :meth:`_slots`)
        for anything else: other input types, a new label, a missing value. Labels
        are matched as the general route matches them: object columns by ``str``,
        others by value.
        """
        if not self._labels or not isinstance(sensitive, np.ndarray) or sensitive.ndim not in (1, 2):
            return None
        columns = [sensitive] if sensitive.ndim == 1 else list(sensitive.T)
        if len(columns) != len(self._labels) or sensitive.shape[0] != n:
            return None
        codes = np.empty((n, len(columns)), dtype=np.int64)
        for a, column in enumerate(columns):
            values = column.tolist()
            if column.dtype.kind in "Of" and any(v is None or v != v for v in values):
                return None  # missing: the general route raises
            if column.dtype == object:
                values = [str(v) for v in values]
            lookup = self._labels[a]
            try:
                codes[:, a] = [lookup[v] for v in values]
            except (KeyError, TypeError):  # a new label, or an unhashable one
                return None
        return codes

    def _slots(self, codes_local, labels_local, c) -> np.ndarray:
        """Map this call's labels to the stream's persistent slots (new ones appended)."""
        if not self._labels:
            fitted = getattr(self.estimator_, "group_labels_", None) or [[] for _ in labels_local]
            if len(fitted) != len(labels_local):  # fitted with another number of attributes
                raise ValueError(
                    f"sensitive_features has {len(labels_local)} attributes but the model was fitted with {len(fitted)}"
                )
            for known in fitted:
                self._labels.append({label: i for i, label in enumerate(known)})
                k = len(known)
                self._count.append(np.zeros(k))
                self._raw_sum.append(np.zeros((k, c)))
                self._out_sum.append(np.zeros((k, c)))
        if len(labels_local) != len(self._labels):
            raise ValueError(
                f"sensitive_features has {len(labels_local)} attributes but the stream has {len(self._labels)}"
            )
        fitted_labels = getattr(self.estimator_, "group_labels_", None)
        codes = np.empty_like(codes_local)
        for a, labels in enumerate(labels_local):
            lookup = self._labels[a]
            fitted = set(fitted_labels[a]) if fitted_labels else set()
            mapping = np.empty(len(labels), dtype=np.int64)
            for i, label in enumerate(labels):
                if label not in lookup:
                    if self.unknown_group == "error" and label not in fitted:
                        raise ValueError(
                            f"group {label!r} of attribute {a} was not seen in fit (unknown_group='error')"
                        )
                    lookup[label] = len(lookup)
                    self._count[a] = np.append(self._count[a], 0.0)
                    self._raw_sum[a] = np.vstack([self._raw_sum[a], np.zeros((1, c))])
                    self._out_sum[a] = np.vstack([self._out_sum[a], np.zeros((1, c))])
                mapping[i] = lookup[label]
            codes[:, a] = mapping[codes_local[:, a]]
        return codes

    def _step_pooled(self, z: np.ndarray, codes: np.ndarray) -> np.ndarray:
        tol = self._tol
        # 1. plug-in shifts from the raw statistics including this call
        y = z.copy()
        shifts = []
        for a in range(codes.shape[1]):
            k = len(self._count[a])
            count = (self._count[a] + np.bincount(codes[:, a], minlength=k)).tolist()
            raw = self._raw_sum[a] + _group_sums(z, codes[:, a], k)
            t = np.array([_plug_in_shifts(raw[:, j].tolist(), count, tol) for j in range(z.shape[1])]).T
            shifts.append(t)
            y -= t[codes[:, a]]
        self.dual_ = np.concatenate(shifts, 0)
        # 2. exact projection of this call onto "pooled means within tolerance"
        if codes.shape[1] == 1:
            return self._pooled_projection(y, codes, 0)
        incr = [np.zeros_like(y) for _ in range(codes.shape[1])]
        for _ in range(_DYKSTRA_SWEEPS):
            moved = 0.0
            for a in range(codes.shape[1]):
                shifted = y + incr[a]
                new = self._pooled_projection(shifted, codes, a)
                incr[a] = shifted - new
                moved = max(moved, float(np.abs(new - y).max()))
                y = new
            if moved <= 1e-12 * (1.0 + float(np.abs(y).max())):
                break
        return y

    def _pooled_projection(self, y: np.ndarray, codes: np.ndarray, a: int) -> np.ndarray:
        """Shift this call's groups (attribute a) so all pooled means fit one interval.

        The work on the k groups is done in Python floats: a stream's calls are tiny,
        and array calls would cost more than the arithmetic.
        """
        tol = self._tol
        k = len(self._count[a])
        n_call = np.bincount(codes[:, a], minlength=k).tolist()
        before = self._count[a].tolist()
        present = [g for g in range(k) if n_call[g] > 0]
        absent = [g for g in range(k) if n_call[g] == 0 and before[g] > 0]
        if len(present) + len(absent) < 2:
            return y
        total = [before[g] + n_call[g] for g in range(k)]
        pooled = self._out_sum[a] + _group_sums(y, codes[:, a], k)
        weights = [total[g] ** 2 / n_call[g] for g in present]
        delta = np.zeros((k, y.shape[1]))
        for j in range(y.shape[1]):
            col = pooled[:, j].tolist()
            means0 = [col[g] / total[g] for g in present]
            width, lo, hi = tol, -np.inf, np.inf
            if absent:
                history = self._out_sum[a][:, j].tolist()
                fixed = [history[g] / before[g] for g in absent]
                width = max(width, max(fixed) - min(fixed))  # never tighter than history
                lo, hi = max(fixed) - width, min(fixed)
            if len(present) >= 2:
                # convex in the start: the constrained optimum is the clamped free one
                start = min(max(interval_start_1d(means0, weights, width), lo), hi)
            else:  # one group moves: it must land within `width` of every fixed mean
                start = min(max(means0[0] - width / 2, lo), hi)
            for g, m in zip(present, means0):
                moved = m - min(max(m, start), start + width)  # change of the pooled mean
                delta[g, j] = moved * (total[g] / n_call[g])
        return y - delta[codes[:, a]]

    def _step_paper(self, z: np.ndarray, codes: np.ndarray) -> np.ndarray:
        if codes.shape[1] != 1:
            raise ValueError("mode='paper' handles one sensitive attribute (the paper's setting)")
        tol = self._tol
        g = codes[:, 0]
        slots, local = np.unique(g, return_inverse=True)
        if len(slots) < 2:
            return z
        n = len(g)
        counts = np.bincount(local).astype(float)
        means = _group_sums(z, local, len(slots)) / counts[:, None]
        lam = float(self.dual_)
        new = _penalised_means(means, counts, lam * n / 2)
        y = z + (new - means)[local]
        gap = float((new.max(0) - new.min(0)).max())
        self._paper_steps += 1
        step = self.eta0 / np.sqrt(self._paper_steps)
        self.dual_ = max(0.0, lam + step * n * (gap - tol))
        return y

    def _record(self, z, out, codes) -> None:
        self.n_seen_ += out.shape[0]
        gap = 0.0
        means = {}
        for a in range(codes.shape[1]):
            k = len(self._count[a])
            self._count[a] += np.bincount(codes[:, a], minlength=k)
            self._raw_sum[a] += _group_sums(z, codes[:, a], k)
            self._out_sum[a] += _group_sums(out, codes[:, a], k)
            count = self._count[a].tolist()
            per_column = [
                [s / n if n > 0 else None for s, n in zip(self._out_sum[a][:, j].tolist(), count)]
                for j in range(out.shape[1])
            ]
            for col in per_column:
                seen = [m for m in col if m is not None]
                gap = max(gap, max(seen) - min(seen))
            for label, slot in self._labels[a].items():
                if count[slot] > 0:
                    one = out.shape[1] == 1
                    means[(a, label)] = per_column[0][slot] if one else self._out_sum[a][slot] / count[slot]
        self.pooled_gap_ = gap
        self.group_means_ = means


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

