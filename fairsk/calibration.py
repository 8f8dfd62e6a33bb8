"""Per-group thresholds for equal opportunity and equalized odds, learnt on held-out data.

At prediction time the true labels are unknown, so no output of a single call can be
guaranteed to have equal error rates across groups. What can be done honestly, in the
manner of Hardt, Price and Srebro (2016, "Equality of opportunity in supervised
learning"), is to learn per-group decision thresholds on the scores of held-out
*calibration* data so that the criterion holds there, and to estimate, with a
confidence interval, the gap the thresholds will have on new data.
"""

from __future__ import annotations

import warnings
from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._groups import check_attribute_count, encode_sensitive
from .metrics import equal_opportunity_gap, equalized_odds_gap

__all__ = ["ErrorRateCalibrator", "error_rate_gap"]

_EPS = 1e-12


def error_rate_gap(criterion: str, y_true: Any, y_pred: Any, sensitive_features: Any, pos_label: Any = 1) -> float:
    """:func:`~fairsk.metrics.equal_opportunity_gap` or :func:`~fairsk.metrics.equalized_odds_gap` by name.

    Examples
    --------
    >>> from fairsk.calibration import error_rate_gap
    >>> error_rate_gap("equalized_odds", [1, 0, 1, 0], [1, 0, 0, 0], [0, 0, 1, 1])
    1.0
    """
    if criterion == "equal_opportunity":
        return equal_opportunity_gap(y_true, y_pred, sensitive_features, pos_label=pos_label)
    if criterion == "equalized_odds":
        return equalized_odds_gap(y_true, y_pred, sensitive_features, pos_label=pos_label)
    raise ValueError(f"criterion must be 'equal_opportunity' or 'equalized_odds', got {criterion!r}")


class ErrorRateCalibrator(BaseEstimator):
    """Per-group thresholds on scores so that error rates are equal on calibration data.

    Fitted on held-out scores of a binary classifier (``scores``, higher = more
    positive), their true labels and their groups. Every group (with several
    sensitive attributes: every combination of their values) gets a threshold; a
    row is labelled positive when its score exceeds its group's threshold.

    Parameters
    ----------
    criterion : {"equal_opportunity", "equalized_odds"}, default="equalized_odds"
        Equal true-positive rates, or equal true- and false-positive rates.
    tolerance : float, default=0.02
        Allowed difference of two groups' rates on the calibration data.
    randomize : bool, default=False
        ``False``: one deterministic threshold per group, the exact best for
        accuracy among all choices of one threshold per group that meet the
        criterion on the calibration data. ``True``: each group mixes a few
        thresholds at random (a row between them is labelled positive with some
        probability); the mixture is the exact best among all randomized
        per-group threshold rules (a linear program), and meets the criterion in
        expectation over the randomization.
    pos_label : int, float, bool or str, default=1
        The positive label.
    n_bootstrap : int, default=100
        Bootstrap resamples of the calibration rows behind the estimated gap on new
        data (each one a new calibration).
    confidence : float, default=0.95
        Level of the interval.
    test_size : int, "calibration" or None, default="calibration"
        The data the gap of ``gap_estimate_`` and ``gap_interval_`` is for: the
        measured gap on that many new rows (an int), on as many new rows as were
        calibrated on (``"calibration"``), or the gap on the population itself
        (``None``, no test set's own noise). :meth:`estimate_gap` gives the
        estimate and interval for any other size after fitting.
    random_state : int or None, default=0
        Seeds the bootstrap and the randomized labels (a given input
        always gets the same labels).

    Attributes
    ----------
    classes_ : ndarray of shape (2,)
        The negative and the positive label.
    group_labels_ : list of tuple
        The groups (one tuple of attribute values each), in the order of the
        thresholds.
    thresholds_ : ndarray of shape (n_groups,)
        ``randomize=False``: predict positive when ``score > thresholds_[g]``
        (``inf``: never, ``-inf``: always).
    mixtures_ : list of (ndarray, ndarray)
        Per group, thresholds and their probabilities (one threshold with
        probability 1 when ``randomize=False``).
    calibration_accuracy_ : float
        Accuracy on the calibration data (expected accuracy if randomized).
    calibration_gap_ : float
        The criterion's gap on the calibration data (of the expected labels if
        randomized); at most ``tolerance`` (up to 1e-9, or the linear program's
        1e-7 feasibility if randomized).
    gap_estimate_ : float
        Estimated gap of the labels on new data from the same population, measured
        on ``test_size`` rows: the median of the bootstrap draws (see Notes).
    gap_interval_ : tuple of float
        The interval (level ``confidence``) in which such a measured gap falls.
    accuracy_estimate_ : float
        Estimated accuracy on the population (the calibration accuracy corrected by
        the bootstrap's estimate of its optimism).
    rate_draws_ : ndarray of shape (n_bootstrap, n_strata, n_groups)
        Bootstrap draws of the thresholds' rates on the population: per true-label
        stratum (positives, then for equalized odds negatives) and group; NaN for a
        group without rows of that label.
    stratum_counts_ : ndarray of shape (n_strata, n_groups)
        The calibration rows of each stratum and group.
    n_calibration_ : int
        The number of calibration rows.

    Notes
    -----
    The guarantee is on the calibration data only. On new data the gap is a random
    quantity: ``gap_estimate_`` and ``gap_interval_`` estimate it (they are not
    bounds), and a shift of the population is not covered at all.

    A measured gap has two sources of error, and the interval draws both. (1) The
    thresholds' rates on the population differ from their rates on the calibration
    rows they were chosen on. Every bootstrap resample of the calibration rows
    gets its own thresholds, and their rates on the calibration rows minus their
    rates on the resample (the bootstrap world's "population minus fitting data",
    which includes how the search exploits the noise of the rows it sees) is added
    to the fitted thresholds' calibration rates: a draw of their population rates.
    (2) A test set of ``m`` rows measures each group's rate on its own rows only:
    each draw's rates become binomial proportions over the test set's rows of that
    group and label (the calibration mix scaled to ``m``). The gap of each draw is
    a maximum of absolute differences computed like the measured one, so its
    upward bias on small samples and a lower end near 0 when the true gap is
    small are both reproduced rather than corrected. The interval is between the
    order statistics of the draws that hold one more draw with probability
    ``confidence`` (plain percentiles of 100 draws hold only about 93%).

    Evaluating thresholds learnt on a resample on its out-of-bag rows was the
    other candidate; it doubles their error (a resample of a sample) and fixes
    the test set's size at about 37% of the calibration rows, so it is not used.

    Coverage of nominal 95% intervals, measured (``benchmarks/odds_coverage_sim.py``):
    scores from known normal populations (two groups, 1,500 calibration rows,
    tolerance 0.02, 200 populations each): the population gap 188/200 (equal
    opportunity) and 198/200 (equalized odds), the gap measured on 1,500 new rows
    191/200 and 189/200; 500 calibration rows against 5,000 test rows 143/150 and
    140/150 (equalized odds); randomized, 3,000 against 400 rows, 145/150 and
    146/150. On Adult (10 splits, about 9,000 calibration and 18,000 test rows,
    ``benchmarks/odds_coverage.py``) the interval for the test set's size covered
    the measured gap 10/10 times for each criterion. More calibration rows give
    narrower intervals.

    With ``randomize=False`` an exact solution always exists (labelling every row
    negative is feasible), but at a small tolerance it may cost much accuracy
    (at ``tolerance=0`` with continuous scores it is often that trivial rule);
    the randomized rule keeps more.

    Examples
    --------
    >>> import numpy as np
    >>> from fairsk.calibration import ErrorRateCalibrator
    >>> rng = np.random.default_rng(0)
    >>> groups = rng.integers(0, 2, 2000)
    >>> y = (rng.random(2000) < 0.4).astype(int)
    >>> scores = rng.normal(y + 0.5 * groups, 1.0)
    >>> cal = ErrorRateCalibrator(tolerance=0.02).fit(scores, y, groups)
    >>> cal.thresholds_.round(2).tolist()
    [0.87, 1.36]
    >>> from fairsk.metrics import equalized_odds_gap
    >>> equalized_odds_gap(y, cal.predict(scores, groups), groups) <= 0.02
    True
    >>> low, high = cal.gap_interval_  # the gap to expect on new data
    """

    _parameter_constraints: dict = {
        "criterion": [StrOptions({"equal_opportunity", "equalized_odds"})],
        "tolerance": [Interval(Real, 0, None, closed="left")],
        "randomize": ["boolean"],
        "pos_label": [Real, str, "boolean"],
        "n_bootstrap": [Interval(Integral, 1, None, closed="left")],
        "confidence": [Interval(Real, 0, 1, closed="neither")],
        "test_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"calibration"}), None],
        "random_state": [Integral, None],
    }

    def __init__(
        self,
        criterion: str = "equalized_odds",
        tolerance: float = 0.02,
        *,
        randomize: bool = False,
        pos_label: Any = 1,
        n_bootstrap: int = 100,
        confidence: float = 0.95,
        test_size: int | str | None = "calibration",
        random_state: int | None = 0,
    ) -> None:
        self.criterion = criterion
        self.tolerance = tolerance
        self.randomize = randomize
        self.pos_label = pos_label
        self.n_bootstrap = n_bootstrap
        self.confidence = confidence
        self.test_size = test_size
        self.random_state = random_state

    # -- fit -------------------------------------------------------------------------
    def fit(self, scores: Any, y: Any, sensitive_features: Any) -> ErrorRateCalibrator:
        """Learn the thresholds on calibration data and estimate the gap on new data."""
        self._validate_params()
        s = _as_scores(scores)
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != s.shape[0]:
            raise ValueError(f"y must be 1-D with {s.shape[0]} rows to match the scores, got shape {y.shape}")
        classes = np.unique(y)
        if classes.size != 2 or self.pos_label not in classes:
            raise ValueError(f"y must hold two classes, pos_label={self.pos_label!r} among them; got {list(classes)}")
        self.classes_ = np.array([classes[classes != self.pos_label][0], self.pos_label], dtype=classes.dtype)
        positive = y == self.pos_label
        cells, self.group_labels_ = _cells(sensitive_features, s.shape[0])
        rule = _fit_rule(s, positive, cells, len(self.group_labels_), self.criterion, float(self.tolerance),
                         self.randomize)
        self.mixtures_ = rule
        self.thresholds_ = np.array([t[0] if len(t) == 1 else np.nan for t, _ in rule])
        expected = _emit_probability(rule, s, cells)
        self.calibration_accuracy_ = float(np.mean(np.where(positive, expected, 1 - expected)))
        self.calibration_gap_ = error_rate_gap(self.criterion, positive.astype(int), expected, cells)
        self.n_calibration_ = int(s.shape[0])
        self._estimate_gap(s, positive, cells, expected)
        return self

    def _estimate_gap(self, s: np.ndarray, positive: np.ndarray, cells: np.ndarray, expected: np.ndarray) -> None:
        """Bootstrap draws of the rates the thresholds have on the population (see Notes).

        Each resample of the calibration rows gets its own thresholds; how their rates
        on the calibration rows differ from their rates on the resample they were
        learnt on (the bootstrap world's "population minus fitting data") is added to
        the fitted thresholds' calibration rates. Resampling is stratified by group and
        label so that every group keeps its rows of both labels.
        """
        rng = np.random.default_rng(self.random_state)
        k = int(cells.max()) + 1
        strata = [np.flatnonzero((cells == g) & (positive == v)) for g in range(k) for v in (False, True)]
        strata = [rows for rows in strata if rows.size]
        ones = np.ones(s.shape[0])
        base = _rates(self.criterion, positive, expected, cells, k, ones)
        base_accuracy = np.mean(np.where(positive, expected, 1 - expected))
        draws = np.empty((self.n_bootstrap,) + base.shape)
        accuracies = np.empty(self.n_bootstrap)
        for b in range(self.n_bootstrap):
            idx = np.concatenate([rng.choice(rows, rows.size) for rows in strata])
            rule = _fit_rule(s[idx], positive[idx], cells[idx], k, self.criterion, float(self.tolerance),
                             self.randomize)
            p = _emit_probability(rule, s, cells)
            w = np.bincount(idx, minlength=s.shape[0]).astype(np.float64)
            optimism = _rates(self.criterion, positive, p, cells, k, ones) - _rates(self.criterion, positive, p,
                                                                                      cells, k, w)
            draws[b] = np.clip(base + optimism, 0.0, 1.0)
            correct = np.where(positive, p, 1 - p)
            accuracies[b] = base_accuracy + np.mean(correct) - np.average(correct, weights=w)
        self.rate_draws_ = draws
        self.stratum_counts_ = _counts(self.criterion, positive, cells, k)
        self.accuracy_estimate_ = float(np.clip(np.mean(accuracies), 0.0, 1.0))
        self.gap_estimate_, self.gap_interval_ = self.estimate_gap(self.test_size)

    def estimate_gap(self, test_size: Any = None) -> tuple[float, tuple[float, float]]:
        """The gap to expect on new data, and its interval (level ``confidence``).

        Parameters
        ----------
        test_size : int, "calibration" or None, default=None
            ``None``: the thresholds' gap on the population the calibration rows
            were drawn from. An int: the gap measured on that many new rows (with
            the calibration rows' mix of groups and labels), which adds those rows'
            sampling noise. ``"calibration"``: as many rows as were calibrated on.

        Returns
        -------
        estimate : float
            The median of the bootstrap draws of the gap.
        interval : tuple of float
            Their percentile interval.
        """
        check_is_fitted(self, "rate_draws_")
        draws = np.asarray(self.rate_draws_, dtype=np.float64)
        counts = np.asarray(self.stratum_counts_, dtype=np.float64)
        if isinstance(test_size, str) and test_size == "calibration":
            test_size = int(self.n_calibration_)
        if test_size is not None:
            if isinstance(test_size, bool) or not isinstance(test_size, Integral) or test_size < 1:
                raise ValueError(f"test_size must be a positive int, 'calibration' or None, got {test_size!r}")
            # the rows of each group and label in a test set of that size, as in calibration
            m = np.maximum(np.rint(counts / self.n_calibration_ * test_size), 1).astype(np.int64)
            seed = [0 if self.random_state is None else self.random_state, int(test_size)]
            rng = np.random.default_rng(seed)
            present = counts > 0
            noisy = np.where(present, rng.binomial(np.where(present, m, 0), np.where(present, draws, 0)), 0)
            draws = np.where(present, noisy / m, np.nan)
        gaps = np.nanmax(np.nanmax(draws, axis=2) - np.nanmin(draws, axis=2), axis=1)
        return float(np.median(gaps)), _prediction_interval(gaps, self.confidence)

    # -- state -----------------------------------------------------------------------
    _FITTED = ("classes_", "group_labels_", "thresholds_", "calibration_accuracy_", "calibration_gap_",
               "gap_estimate_", "gap_interval_", "accuracy_estimate_", "rate_draws_", "stratum_counts_",
               "n_calibration_")

    def get_fitted_state(self) -> dict:
        """The fitted attributes as arrays, lists and numbers (no pickle needed)."""
        check_is_fitted(self, "mixtures_")
        attributes = {name: getattr(self, name) for name in self._FITTED}
        attributes["group_labels_"] = [list(g) for g in self.group_labels_]
        attributes["mixture_thresholds"] = [t for t, _ in self.mixtures_]
        attributes["mixture_weights"] = [w for _, w in self.mixtures_]
        return {"attributes": attributes}

    @classmethod
    def from_fitted_state(cls, params: dict, state: dict) -> ErrorRateCalibrator:
        """A fitted calibrator that predicts as the one that gave ``state``."""
        attributes = dict(state["attributes"])
        est = cls(**params)
        thresholds, weights = attributes.pop("mixture_thresholds"), attributes.pop("mixture_weights")
        est.mixtures_ = [(np.asarray(t, dtype=np.float64), np.asarray(w, dtype=np.float64))
                         for t, w in zip(thresholds, weights)]
        for name, value in attributes.items():
            setattr(est, name, value)
        est.classes_ = np.asarray(est.classes_)
        est.thresholds_ = np.asarray(est.thresholds_, dtype=np.float64)
        est.group_labels_ = [tuple(g) for g in est.group_labels_]
        est.gap_interval_ = tuple(est.gap_interval_)
        if hasattr(est, "rate_draws_"):
            est.rate_draws_ = np.asarray(est.rate_draws_, dtype=np.float64)
            est.stratum_counts_ = np.asarray(est.stratum_counts_, dtype=np.int64)
        return est

    # -- predict ---------------------------------------------------------------------
    def emit_probability(self, scores: Any, sensitive_features: Any) -> np.ndarray:
        """Probability that each row is labelled positive (0 or 1 unless randomized)."""
        check_is_fitted(self, "mixtures_")
        s = _as_scores(scores)
        return _emit_probability(self.mixtures_, s, self._cells(sensitive_features, s.shape[0]))

    def predict(self, scores: Any, sensitive_features: Any) -> np.ndarray:
        """Labels: positive above the group's threshold (drawn, if randomized)."""
        p = self.emit_probability(scores, sensitive_features)
        if self.randomize:
            positive = np.random.default_rng(self.random_state).random(p.shape[0]) < p
        else:
            positive = p > 0.5
        return self.classes_[positive.astype(int)]

    def _cells(self, sensitive_features: Any, n: int) -> np.ndarray:
        codes, labels = encode_sensitive(sensitive_features, n)
        check_attribute_count(codes.shape[1], len(self.group_labels_[0]), "the calibrator was fitted with")
        index = {g: i for i, g in enumerate(self.group_labels_)}
        keys = [tuple(_plain(labels[a][c]) for a, c in enumerate(row)) for row in codes]
        unseen = sorted({str(k) for k in keys if k not in index})
        if unseen:
            raise ValueError(f"groups not seen in calibration have no threshold: {unseen[:5]}")
        return np.array([index[k] for k in keys], dtype=np.int64)


# -- the search ------------------------------------------------------------------------


def _as_scores(scores: Any) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 2 and s.shape[1] == 2:  # predict_proba of a binary classifier
        s = s[:, 1]
    if s.ndim == 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D (the positive class's score), got shape {s.shape}")
    if s.shape[0] == 0:
        raise ValueError("scores is empty")
    if not np.isfinite(s).all():
        raise ValueError("scores contains NaN or infinite values")
    return s


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _cells(sensitive_features: Any, n: int) -> tuple[np.ndarray, list]:
    """One code per combination of the attributes' values, and the combinations."""
    codes, labels = encode_sensitive(sensitive_features, n)
    combos, cells = np.unique(codes, axis=0, return_inverse=True)
    names = [tuple(_plain(labels[a][c]) for a, c in enumerate(row)) for row in combos]
    return cells.reshape(-1).astype(np.int64), names


class _Curve:
    """One group's ROC points: cut ``i`` labels positive the ``i`` highest distinct scores."""

    def __init__(self, s: np.ndarray, positive: np.ndarray) -> None:
        order = np.argsort(-s, kind="stable")
        s, positive = s[order], positive[order]
        distinct = np.r_[True, s[1:] != s[:-1]] if s.size else np.zeros(0, bool)
        block = np.cumsum(distinct) - 1  # block of equal scores of every row
        m = int(block[-1]) + 1 if s.size else 0
        tp = np.r_[0, np.cumsum(np.bincount(block, weights=positive, minlength=m))]
        fp = np.r_[0, np.cumsum(np.bincount(block, weights=~positive, minlength=m))]
        values = s[distinct]
        # cut i sits between the i-th and (i+1)-th highest distinct score
        self.thresholds = np.r_[np.inf, (values[:-1] + values[1:]) / 2, -np.inf] if m else np.array([np.inf])
        self.n_pos, self.n_neg = float(tp[-1]), float(fp[-1])
        self.tpr = tp / self.n_pos if self.n_pos else None
        self.fpr = fp / self.n_neg if self.n_neg else None
        self.correct = tp + (self.n_neg - fp)  # correctly labelled rows at each cut

    @classmethod
    def subset(cls, c: _Curve, idx: np.ndarray) -> _Curve:
        """The same group's curve restricted to the cuts ``idx``."""
        out = cls.__new__(cls)
        out.thresholds, out.n_pos, out.n_neg = c.thresholds[idx], c.n_pos, c.n_neg
        out.tpr = None if c.tpr is None else c.tpr[idx]
        out.fpr = None if c.fpr is None else c.fpr[idx]
        out.correct = c.correct[idx]
        return out


def _fit_rule(s, positive, cells, k, criterion, tol, randomize) -> list:
    curves = [_Curve(s[cells == g], positive[cells == g]) for g in range(k)]
    if randomize:
        return _best_mixtures(curves, criterion, tol)
    cuts = _best_cuts(curves, criterion, tol)
    return [(np.array([c.thresholds[i]]), np.array([1.0])) for c, i in zip(curves, cuts)]


def _windows(rates: np.ndarray | None, m: int, starts: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """For every window ``[L, L + tol]`` (L in ``starts``), the first and last cut whose
    rate lies in it (rates are non-decreasing in the cut, so these cuts are contiguous)."""
    if rates is None:  # the group has no row of this label: unconstrained
        return np.zeros(starts.size, np.int64), np.full(starts.size, m, np.int64)
    lo = np.searchsorted(rates, starts - _EPS, side="left")
    hi = np.searchsorted(rates, starts + tol + _EPS, side="right") - 1
    return lo, hi


class _RangeMax:
    """Sparse table: the maximum of ``a[lo..hi]`` for many ranges at once."""

    def __init__(self, a: np.ndarray) -> None:
        levels = [a]
        j = 1
        while 2 * j <= a.size:
            prev = levels[-1]
            levels.append(np.maximum(prev[:-j], prev[j:]))
            j *= 2
        self.table = np.full((len(levels), a.size), -np.inf)
        for i, row in enumerate(levels):
            self.table[i, : row.size] = row

    def __call__(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        ok = lo <= hi
        length = np.where(ok, hi - lo + 1, 1)
        level = np.frexp(length)[1] - 1  # floor(log2(length)), exactly
        lo_ok = np.where(ok, lo, 0)
        out = np.maximum(self.table[level, lo_ok], self.table[level, np.where(ok, hi, 0) - (1 << level) + 1])
        return np.where(ok, out, -np.inf)


def _best_cuts(curves: list[_Curve], criterion: str, tol: float) -> list[int]:
    """The exact best deterministic cut per group.

    In an optimal choice the true-positive rates lie in a window ``[L1, L1 + tol]``
    whose start is one of them (slide it up to the smallest), and likewise the
    false-positive rates (equalized odds). Every pair of window starts is tried;
    for a pair, each group's admissible cuts form one contiguous range (both rates
    grow with the cut), whose best accuracy is a range-maximum query. Two groups:
    every cut of the first, and the best admissible cut of the second.
    """
    both = criterion == "equalized_odds"
    if len(curves) == 2:
        return _best_cuts_pair(curves, both, tol)
    tprs = [c.tpr for c in curves if c.tpr is not None]
    starts1 = np.unique(np.concatenate(tprs)) if tprs else np.zeros(1)
    fprs = [c.fpr for c in curves if c.fpr is not None] if both else []
    starts2 = np.unique(np.concatenate(fprs)) if fprs else np.zeros(1)
    win1 = [_windows(c.tpr, c.correct.size - 1, starts1, tol) for c in curves]
    win2 = [_windows(c.fpr if fprs else None, c.correct.size - 1, starts2, tol) for c in curves]
    rmq = [_RangeMax(c.correct) for c in curves]
    # loop over the shorter list of starts, vectorise over the longer one
    swap = starts2.size > starts1.size
    outer, inner = (win1, win2) if swap else (win2, win1)
    best, best_at = -np.inf, None
    for i in range(starts1.size if swap else starts2.size):
        total = 0.0
        for (lo_o, hi_o), (lo_i, hi_i), r in zip(outer, inner, rmq):
            total = total + r(np.maximum(lo_o[i], lo_i), np.minimum(hi_o[i], hi_i))
        j = int(np.argmax(total))
        if total[j] > best + 1e-9:
            best, best_at = total[j], ((i, j) if swap else (j, i))
    if best_at is None:  # unreachable: labelling every row negative is always feasible
        raise RuntimeError("no feasible thresholds found")
    i, j = best_at
    cuts = []
    for c, (lo1, hi1), (lo2, hi2) in zip(curves, win1, win2):
        lo, hi = max(int(lo1[i]), int(lo2[j])), min(int(hi1[i]), int(hi2[j]))
        cuts.append(lo + int(np.argmax(c.correct[lo : hi + 1])))
    return cuts


def _best_cuts_pair(curves: list[_Curve], both: bool, tol: float) -> list[int]:
    """Two groups: for every cut of the first, the admissible cuts of the second are
    those whose rates are within ``tol`` of its rates, one contiguous range."""
    a, b = curves
    m = b.correct.size - 1
    lo = np.zeros(a.correct.size, np.int64)
    hi = np.full(a.correct.size, m, np.int64)
    for ra, rb in ((a.tpr, b.tpr), (a.fpr, b.fpr) if both else (None, None)):
        if ra is None or rb is None:  # a group without rows of this label: no constraint
            continue
        lo = np.maximum(lo, np.searchsorted(rb, ra - tol - _EPS, side="left"))
        hi = np.minimum(hi, np.searchsorted(rb, ra + tol + _EPS, side="right") - 1)
    total = a.correct + _RangeMax(b.correct)(lo, hi)
    i = int(np.argmax(total))
    if not np.isfinite(total[i]):  # unreachable: labelling every row negative is always feasible
        raise RuntimeError("no feasible thresholds found")
    return [i, int(lo[i]) + int(np.argmax(b.correct[lo[i] : hi[i] + 1]))]


def _hull_vertices(c: _Curve) -> np.ndarray:
    """Indices of the cuts at the vertices of the convex hull of the ROC points."""
    m = c.correct.size
    if c.tpr is None or c.fpr is None:  # one rate only: the two ends span every cut
        return np.unique([0, m - 1])
    pts = np.stack([c.fpr, c.tpr], 1)  # sorted by fpr, then tpr (both grow with the cut)
    _, first = np.unique(pts, axis=0, return_index=True)  # one cut per distinct point
    if first.size >= 3:
        from scipy.spatial import ConvexHull, QhullError

        try:
            return np.sort(first[ConvexHull(pts[first]).vertices])
        except QhullError:  # all points on one line: the chain below handles it
            pass

    def chain(order):
        out: list[int] = []
        for i in order:
            while len(out) >= 2:
                (x1, y1), (x2, y2), (x3, y3) = pts[out[-2]], pts[out[-1]], pts[i]
                if (x2 - x1) * (y3 - y1) - (y2 - y1) * (x3 - x1) > 1e-15:
                    break
                out.pop()
            out.append(i)
        return out

    return np.unique(chain(range(m)) + chain(range(m - 1, -1, -1)))


def _best_mixtures(curves: list[_Curve], criterion: str, tol: float) -> list:
    """The exact best randomized rule: a linear program over mixtures of each group's cuts.

    Variables: the weight of every cut of every group (a mixture per group), and the
    windows' starts ``L1``, ``L2``. Maximise the expected number of correct labels
    subject to every group's expected rates lying in ``[L, L + tol]``.
    """
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix

    # a mixture's rates and accuracy are linear in its weights, so mixing the vertices
    # of the convex hull of a group's ROC points reaches every mixture's rates: same optimum
    keep = [_hull_vertices(c) for c in curves]
    curves = [_Curve.subset(c, idx) for c, idx in zip(curves, keep)]
    sizes = [c.correct.size for c in curves]
    offsets = np.r_[0, np.cumsum(sizes)]
    n_w = int(offsets[-1])
    n_var = n_w + 2  # ..., L1, L2
    rows, cols, vals, b_ub = [], [], [], []
    eq_rows, eq_cols = [], []
    r = 0
    for g, c in enumerate(curves):
        idx = np.arange(offsets[g], offsets[g + 1])
        eq_rows += [g] * idx.size
        eq_cols += idx.tolist()
        rates = [(c.tpr, n_w)]
        if criterion == "equalized_odds":
            rates.append((c.fpr, n_w + 1))
        for rate, start in rates:
            if rate is None:
                continue
            # L - rate.w <= 0 and rate.w - L <= tol
            for sign, bound in ((-1.0, 0.0), (1.0, tol)):
                rows += [r] * (idx.size + 1)
                cols += idx.tolist() + [start]
                vals += (sign * rate).tolist() + [-sign]
                b_ub.append(bound)
                r += 1
    cost = np.zeros(n_var)
    cost[:n_w] = -np.concatenate([c.correct for c in curves])
    a_ub = coo_matrix((vals, (rows, cols)), shape=(r, n_var)) if r else None
    a_eq = coo_matrix((np.ones(len(eq_rows)), (eq_rows, eq_cols)), shape=(len(curves), n_var))
    res = linprog(cost, A_ub=a_ub, b_ub=b_ub if r else None, A_eq=a_eq, b_eq=np.ones(len(curves)),
                  bounds=[(0, None)] * n_w + [(0, 1), (0, 1)], method="highs")
    if res.status != 0:
        raise RuntimeError(f"the linear program failed: {res.message}")
    rule = []
    for g, c in enumerate(curves):
        w = np.clip(res.x[offsets[g] : offsets[g + 1]], 0, None)
        keep = np.flatnonzero(w > 1e-9)
        rule.append((c.thresholds[keep], w[keep] / w[keep].sum()))
    return rule


def _emit_probability(rule: list, s: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """``P(label positive)``: the weight of the group's thresholds below the score."""
    p = np.zeros(s.shape[0])
    for g, (thresholds, weights) in enumerate(rule):
        mask = cells == g
        if mask.any():
            p[mask] = (s[mask, None] > thresholds[None, :]) @ weights
    return p


def _prediction_interval(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    """The order statistics of ``draws`` between which one more draw from their
    distribution falls with probability at least ``confidence`` (for B draws, the
    i-th smallest is below a new draw with probability i / (B + 1)); the plain
    percentiles of 100 draws would cover only about 93% for a nominal 95%."""
    b = np.sort(draws)
    alpha = (1 - confidence) / 2
    lo = max(int(np.floor(alpha * (b.size + 1))), 1)
    hi = min(int(np.ceil((1 - alpha) * (b.size + 1))), b.size)
    return float(b[lo - 1]), float(b[hi - 1])


def _strata(criterion: str, positive: np.ndarray) -> tuple:
    return (positive,) if criterion == "equal_opportunity" else (positive, ~positive)


def _rates(criterion: str, positive: np.ndarray, labels: np.ndarray, cells: np.ndarray, k: int,
           w: np.ndarray) -> np.ndarray:
    """(strata, groups): the rate of positive ``labels`` (0/1 or probabilities) among the
    rows of each true-label stratum (positives first) and group, with row weights ``w``;
    NaN where a group has no such row."""
    out = np.full((len(_strata(criterion, positive)), k), np.nan)
    for j, mask in enumerate(_strata(criterion, positive)):
        count = np.bincount(cells[mask], weights=w[mask], minlength=k)
        hits = np.bincount(cells[mask], weights=w[mask] * labels[mask], minlength=k)
        out[j, count > 0] = hits[count > 0] / count[count > 0]
    return out


def _counts(criterion: str, positive: np.ndarray, cells: np.ndarray, k: int) -> np.ndarray:
    """(strata, groups): the number of rows of each true-label stratum and group."""
    return np.stack([np.bincount(cells[mask], minlength=k) for mask in _strata(criterion, positive)])


# -- cross-fitting (used by FairLayerClassifier(calibration_cv=k)) -----------------------


def _cross_fitted_calibration(est: Any, X: Any, y: np.ndarray, codes: np.ndarray, sample_weight: Any,
                              sensitive_features: Any, sensitive: Any) -> Any:
    """Fit ``est`` on every row and its thresholds on out-of-fold scores of every row.

    ``est.calibration_cv`` fold models (clones of ``est``, trained through the layer
    without calibration) score the rows they did not see; the folds are stratified
    by group and label. The net of ``est`` is then trained on all rows, and the
    thresholds are learnt on the out-of-fold scores, as scikit-learn's
    ``CalibratedClassifierCV(ensemble=False)`` calibrates on ``cross_val_predict``.
    """
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold
    from sklearn.utils import _safe_indexing

    n = len(y)
    group_codes, _ = encode_sensitive(sensitive, n)
    strata = np.unique(np.column_stack([group_codes, codes]), axis=0, return_inverse=True)[1].reshape(-1)
    weight = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if weight is not None and weight.ndim == 0:  # one weight for every row
        weight = np.full(n, float(weight))

    def rows(value, idx):
        return None if value is None else _safe_indexing(value, idx)

    folds = StratifiedKFold(est.calibration_cv, shuffle=True, random_state=est._seed() % (2**31 - 1))
    scores = np.empty(n)
    with warnings.catch_warnings():
        # a group and label with fewer rows than folds is spread as far as it goes
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = list(folds.split(np.zeros(n), strata))
    for train, test in splits:
        fold = clone(est).set_params(calibration_cv=None, calibration_fraction=None)
        fold.fit(rows(X, train), y[train], sample_weight=rows(weight, train),
                 sensitive_features=rows(sensitive_features, train))
        scores[test] = fold._outputs_and_groups(rows(X, test), rows(sensitive_features, test))[0][:, 0]
    est._fit_codes(X, codes, weight, sensitive_features)
    est._read_worst_batch_gap()
    groups = est._outputs_and_groups(X, sensitive_features)[1]
    positive = np.isin(y, est.classes_[1:]).astype(int)
    if positive.min() == positive.max():
        raise ValueError("y holds a single class: thresholds on error rates need rows of both classes")
    calibrator = ErrorRateCalibrator(est.criterion, float(est.tolerance), randomize=est.randomize, pos_label=1,
                                     random_state=est._seed())
    est._set_calibration_attributes(calibrator.fit(scores, positive, groups))
    return est
