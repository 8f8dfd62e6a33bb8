"""Monitoring error-rate fairness of a stream whose true labels arrive later.

In lending or fraud detection a decision is emitted now and its outcome is known
weeks later. :class:`DelayedLabelMonitor` keeps what was emitted (by row id) until
the label arrives, then folds the row into per-group sufficient statistics, so that
the equal-opportunity and equalized-odds gaps of everything labelled so far, and
confidence intervals for them, are available at any time. Its whole state is plain
arrays and lists (:meth:`DelayedLabelMonitor.get_state`), so it can be stored
without pickle.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._groups import encode_sensitive

__all__ = ["DelayedLabelMonitor"]

_STATE_VERSION = 1


class DelayedLabelMonitor:
    """Running equal-opportunity and equalized-odds gaps of emitted predictions.

    Parameters
    ----------
    classes : sequence, default=(0, 1)
        The labels. With two classes, the second (or ``pos_label``) is positive and
        the monitored value is the prediction of the positive class; with more,
        every class-vs-rest split is monitored (as in
        :func:`~fairsk.metrics.equalized_odds_gap`).
    pos_label : default=None
        The positive label of a binary problem (default: ``classes[1]``).
    confidence : float, default=0.95
        Level of the intervals.
    n_draws : int, default=2000
        Draws of the parametric bootstrap behind the intervals.
    random_state : int, default=0
        Seeds the draws (the same state always gives the same interval).

    Notes
    -----
    * ``record(row_ids, predictions, sensitive_features)``: predictions are labels
      (values among ``classes``), scores of the positive class (binary), or an
      ``(n, c)`` matrix of class scores; one kind for the whole stream.
    * ``report_labels(row_ids, y_true)``: rows recorded earlier get their label
      and join the statistics; a row id never recorded (or already labelled)
      raises ``ValueError``.
    * The point estimates equal :func:`~fairsk.metrics.equal_opportunity_gap` and
      :func:`~fairsk.metrics.equalized_odds_gap` of the labelled rows. The
      intervals draw every group's mean within every stratum from a normal
      distribution with its estimated standard error (the variance is floored at
      ``1 / (4 n)`` so that a rate of 0 or 1 is not taken as certain) and take
      percentiles of the resulting gap. They describe the rows' population;
      rows still waiting for their label are not in them, and if labels arrive
      later for some groups or outcomes than for others, the labelled rows are a
      biased sample.

    Examples
    --------
    >>> from fairsk.monitoring import DelayedLabelMonitor
    >>> mon = DelayedLabelMonitor()
    >>> mon = mon.record([10, 11, 12, 13], [1, 0, 1, 1], ["a", "a", "b", "b"])
    >>> mon = mon.report_labels([10, 11, 12, 13], [1, 1, 1, 0])
    >>> mon.equal_opportunity_gap_, mon.equalized_odds_gap_
    (0.5, 0.5)
    >>> mon.n_pending_, mon.n_labelled_
    (0, 4)
    """

    def __init__(
        self,
        classes: Any = (0, 1),
        *,
        pos_label: Any = None,
        confidence: float = 0.95,
        n_draws: int = 2000,
        random_state: int = 0,
    ) -> None:
        classes = [_plain(c) for c in np.asarray(classes).tolist()]
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise ValueError(f"classes must hold at least two distinct labels, got {classes!r}")
        if pos_label is not None and pos_label not in classes:
            raise ValueError(f"pos_label={pos_label!r} is not among classes {classes!r}")
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
        if int(n_draws) < 1:
            raise ValueError(f"n_draws must be >= 1, got {n_draws!r}")
        self.classes = classes
        self.pos_label = classes[1] if pos_label is None else pos_label
        self.confidence = float(confidence)
        self.n_draws = int(n_draws)
        self.random_state = int(random_state)
        self.kind: str | None = None  # "labels" or "scores", fixed by the first record
        self.group_labels: list[list] = []
        # per attribute: counts (G, c), sums and sums of squares (G, c, k) by true class
        self.counts: list[np.ndarray] = []
        self.sums: list[np.ndarray] = []
        self.sumsq: list[np.ndarray] = []
        self._ids = np.zeros(0, dtype=np.int64)
        self._values = np.zeros((0, self.n_columns))
        self._codes = np.zeros((0, 0), dtype=np.int64)
        self._index: dict = {}

    # -- shapes ------------------------------------------------------------------------
    @property
    def binary(self) -> bool:
        return len(self.classes) == 2

    @property
    def n_columns(self) -> int:
        """Monitored columns: the positive class (binary) or one per class."""
        return 1 if self.binary else len(self.classes)

    @property
    def n_pending_(self) -> int:
        """Rows recorded and still waiting for their label."""
        return len(self._index)

    @property
    def n_labelled_(self) -> int:
        return int(self.counts[0].sum()) if self.counts else 0

    # -- the stream --------------------------------------------------------------------
    def record(self, row_ids: Any, predictions: Any, sensitive_features: Any) -> DelayedLabelMonitor:
        """Keep emitted predictions until their labels arrive."""
        ids = _as_ids(row_ids)
        values = self._as_values(predictions, ids.size)
        codes = self._encode(sensitive_features, ids.size)
        if np.unique(ids).size != ids.size:
            raise ValueError("row_ids must be unique within a call")
        if self._ids.size and ids.size and self._ids.dtype.kind != ids.dtype.kind:
            raise ValueError(f"row_ids must keep one type; got {ids.dtype} after {self._ids.dtype}")
        seen = [i for i in ids.tolist() if i in self._index]
        if seen:
            raise ValueError(f"row ids already recorded and not yet labelled: {seen[:5]}")
        self._compact()
        start = self._ids.size
        self._ids = np.concatenate([self._ids.astype(ids.dtype) if start == 0 else self._ids, ids])
        self._values = np.concatenate([self._values, values])
        if self._codes.shape[1] != codes.shape[1]:
            self._codes = np.zeros((self._codes.shape[0], codes.shape[1]), np.int64)
        self._codes = np.concatenate([self._codes, codes])
        self._index.update(zip(ids.tolist(), range(start, start + ids.size)))
        return self

    def report_labels(self, row_ids: Any, y_true: Any) -> DelayedLabelMonitor:
        """Labels that arrived, for rows recorded earlier (by their ids)."""
        ids = _as_ids(row_ids)
        y = np.asarray(y_true).reshape(-1)
        if y.size != ids.size:
            raise ValueError(f"y_true has {y.size} values but row_ids has {ids.size}")
        if np.unique(ids).size != ids.size:
            raise ValueError("row_ids must be unique within a call")
        missing = [i for i in ids.tolist() if i not in self._index]
        if missing:
            raise ValueError(f"row ids never recorded or already labelled: {missing[:5]}")
        lookup = {c: j for j, c in enumerate(self.classes)}
        unknown = {_plain(v) for v in y.tolist()} - set(lookup)
        if unknown:
            raise ValueError(f"labels not among classes {self.classes!r}: {sorted(map(str, unknown))[:5]}")
        cls = np.array([lookup[_plain(v)] for v in y.tolist()], dtype=np.int64)
        rows = np.array([self._index.pop(i) for i in ids.tolist()], dtype=np.int64)
        values = self._values[rows]
        for a in range(len(self.counts)):
            g = self._codes[rows, a]
            np.add.at(self.counts[a], (g, cls), 1)
            np.add.at(self.sums[a], (g, cls), values)
            np.add.at(self.sumsq[a], (g, cls), values**2)
        return self

    # -- estimates ---------------------------------------------------------------------
    @property
    def equal_opportunity_gap_(self) -> float:
        return self._gap("equal_opportunity")

    @property
    def equalized_odds_gap_(self) -> float:
        return self._gap("equalized_odds")

    def interval(self, criterion: str = "equalized_odds") -> tuple[float, float]:
        """Confidence interval (``confidence``) of the criterion's gap."""
        means, variances, counts = self._stratum_stats(criterion)
        if not means:
            return (0.0, 0.0)
        rng = np.random.default_rng(self.random_state)
        gaps = np.zeros(self.n_draws)
        for m, v, n in zip(means, variances, counts):
            draws = m + rng.standard_normal((self.n_draws, m.size)) * np.sqrt(v / n)
            gaps = np.maximum(gaps, draws.max(1) - draws.min(1))
        alpha = (1 - self.confidence) / 2
        return float(np.quantile(gaps, alpha)), float(np.quantile(gaps, 1 - alpha))

    def summary(self) -> dict:
        """Both gaps, their intervals, and the row counts."""
        return {
            "n_labelled": self.n_labelled_,
            "n_pending": self.n_pending_,
            "equal_opportunity_gap": self.equal_opportunity_gap_,
            "equal_opportunity_interval": self.interval("equal_opportunity"),
            "equalized_odds_gap": self.equalized_odds_gap_,
            "equalized_odds_interval": self.interval("equalized_odds"),
        }

    def _gap(self, criterion: str) -> float:
        means, _, _ = self._stratum_stats(criterion)
        return round(max((float(m.max() - m.min()) for m in means), default=0.0), 12)

    def _stratum_stats(self, criterion: str) -> tuple[list, list, list]:
        """Per (attribute, column, stratum) with two or more groups: the groups' means,
        variances of a value and counts."""
        if criterion not in ("equal_opportunity", "equalized_odds"):
            raise ValueError(f"criterion must be 'equal_opportunity' or 'equalized_odds', got {criterion!r}")
        means, variances, counts = [], [], []
        pos = self.classes.index(self.pos_label)
        for n_a, s_a, q_a in zip(self.counts, self.sums, self.sumsq):
            for k in range(self.n_columns):
                target = pos if self.binary else k
                in_stratum = np.arange(len(self.classes)) == target
                strata = [in_stratum] if criterion == "equal_opportunity" else [in_stratum, ~in_stratum]
                for sel in strata:
                    n = n_a[:, sel].sum(1)
                    present = n > 0
                    if present.sum() < 2:
                        continue
                    n, s, q = n[present], s_a[present][:, sel, k].sum(1), q_a[present][:, sel, k].sum(1)
                    m = s / n
                    var = np.where(n > 1, np.maximum(q - n * m**2, 0) / np.maximum(n - 1, 1), 0.25)
                    means.append(m)
                    variances.append(np.maximum(var, 1 / (4 * n)))
                    counts.append(n)
        return means, variances, counts

    # -- state -------------------------------------------------------------------------
    def get_state(self) -> dict:
        """Everything, as lists, numbers, strings and NumPy arrays (no pickle needed)."""
        self._compact()
        return {
            "version": _STATE_VERSION,
            "params": {
                "classes": list(self.classes),
                "pos_label": self.pos_label,
                "confidence": self.confidence,
                "n_draws": self.n_draws,
                "random_state": self.random_state,
            },
            "kind": self.kind,
            "group_labels": [list(g) for g in self.group_labels],
            "counts": [c.copy() for c in self.counts],
            "sums": [s.copy() for s in self.sums],
            "sumsq": [q.copy() for q in self.sumsq],
            "pending_ids": self._ids.copy(),
            "pending_values": self._values.copy(),
            "pending_codes": self._codes.copy(),
        }

    @classmethod
    def from_state(cls, state: dict) -> DelayedLabelMonitor:
        """A monitor that continues exactly where the one that gave ``state`` stood.

        Arrays may come back as NumPy arrays or as nested lists (e.g. from JSON).
        """
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unknown monitor state version {state.get('version')!r}")
        mon = cls(**state["params"])
        mon.kind = state["kind"]
        mon.group_labels = [list(g) for g in state["group_labels"]]
        c, k = len(mon.classes), mon.n_columns
        mon.counts = [np.asarray(a, dtype=np.int64).reshape(-1, c) for a in state["counts"]]
        mon.sums = [np.asarray(a, dtype=np.float64).reshape(-1, c, k) for a in state["sums"]]
        mon.sumsq = [np.asarray(a, dtype=np.float64).reshape(-1, c, k) for a in state["sumsq"]]
        ids = np.asarray(state["pending_ids"])
        mon._ids = ids.astype(np.int64) if ids.dtype.kind in "biuf" or ids.size == 0 else ids.astype(str)
        mon._values = np.asarray(state["pending_values"], dtype=np.float64).reshape(-1, k)
        mon._codes = np.asarray(state["pending_codes"], dtype=np.int64).reshape(mon._ids.size, -1)
        mon._index = {i: j for j, i in enumerate(mon._ids.tolist())}
        return mon

    # -- helpers -----------------------------------------------------------------------
    def _compact(self) -> None:
        """Drop labelled rows from the pending arrays."""
        if len(self._index) == self._ids.size:
            return
        keep = np.array(sorted(self._index.values()), dtype=np.int64)
        self._ids, self._values, self._codes = self._ids[keep], self._values[keep], self._codes[keep]
        self._index = {i: j for j, i in enumerate(self._ids.tolist())}

    def _as_values(self, predictions: Any, n: int) -> np.ndarray:
        pred = np.asarray(predictions)
        if pred.shape[:1] != (n,):
            raise ValueError(f"predictions has {pred.shape[0] if pred.ndim else 0} rows but row_ids has {n}")
        if pred.ndim == 2 and pred.shape[1] == 1:
            pred = pred[:, 0]
        as_list = [_plain(v) for v in pred.tolist()] if pred.ndim == 1 else None
        kind = "labels" if as_list is not None and all(v in self.classes for v in as_list) else "scores"
        if self.kind is None and n:
            self.kind = kind
        if n and kind != self.kind and not (self.kind == "scores" and pred.dtype.kind in "fiu"):
            raise ValueError(f"predictions must stay {self.kind} for the whole stream")
        if self.kind == "labels" and kind == "labels":
            if self.binary:
                return np.array([[v == self.pos_label] for v in as_list], dtype=np.float64).reshape(n, 1)
            return np.array([[v == c for c in self.classes] for v in as_list], dtype=np.float64).reshape(n, -1)
        values = np.asarray(pred, dtype=np.float64)
        if values.ndim == 2 and self.binary and values.shape[1] == 2:
            values = values[:, [self.classes.index(self.pos_label)]]
        values = values.reshape(n, -1)
        if values.shape[1] != self.n_columns:
            raise ValueError(f"scores must have {self.n_columns} column(s), got {values.shape[1]}")
        if not np.isfinite(values).all():
            raise ValueError("predictions contains NaN or infinite values")
        return values

    def _encode(self, sensitive_features: Any, n: int) -> np.ndarray:
        """Codes (n, a) in the monitor's numbering; new groups are appended."""
        codes, labels = encode_sensitive(sensitive_features, n)
        if not self.group_labels:
            self.group_labels = [[] for _ in range(codes.shape[1])]
            c, k = len(self.classes), self.n_columns
            self.counts = [np.zeros((0, c), np.int64) for _ in labels]
            self.sums = [np.zeros((0, c, k)) for _ in labels]
            self.sumsq = [np.zeros((0, c, k)) for _ in labels]
        if codes.shape[1] != len(self.group_labels):
            raise ValueError(f"sensitive_features has {codes.shape[1]} attributes, the stream has "
                             f"{len(self.group_labels)}")
        out = np.empty_like(codes)
        for a, known in enumerate(self.group_labels):
            index = {g: i for i, g in enumerate(known)}
            mapping = []
            for label in labels[a]:
                label = _plain(label)
                if label not in index:
                    index[label] = len(known)
                    known.append(label)
                mapping.append(index[label])
            out[:, a] = np.asarray(mapping, dtype=np.int64)[codes[:, a]]
            grow = len(known) - self.counts[a].shape[0]
            if grow:
                c, k = len(self.classes), self.n_columns
                self.counts[a] = np.concatenate([self.counts[a], np.zeros((grow, c), np.int64)])
                self.sums[a] = np.concatenate([self.sums[a], np.zeros((grow, c, k))])
                self.sumsq[a] = np.concatenate([self.sumsq[a], np.zeros((grow, c, k))])
        return out


def _as_ids(row_ids: Any) -> np.ndarray:
    ids = np.asarray(row_ids).reshape(-1)
    if ids.dtype.kind in "biu":
        return ids.astype(np.int64)
    if ids.dtype.kind in "US" or (ids.dtype == object and all(isinstance(i, str) for i in ids.tolist())):
        return ids.astype(str)
    raise ValueError(f"row_ids must be integers or strings, got dtype {ids.dtype}")


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v
