"""The paper's baselines, with the FairLayer estimators' parameters and methods.

Each is a FairLayer estimator with other hooks: what is trained
(``_training_module``: the body alone), an extra loss term (``_loss_penalty``: the
gap penalty, through the net's ``get_loss``) and what prediction does with the raw
outputs (``_fair_output``).

* :class:`ProjectionRegressor` / :class:`ProjectionClassifier`: train the same net
  without the layer, apply the same projection at prediction only.
* :class:`PenaltyRegressor` / :class:`PenaltyClassifier`: train without the layer on
  ``loss + lam * sum of squared pairwise group-mean gaps`` (per batch, per attribute);
  predict the raw outputs. ``lam="auto"`` picks, on a held-out split, the smallest
  ``lam`` of ``lam_grid`` whose validation gap meets ``tolerance`` (the paper's
  cross-validation rule); the *strict penalty* is a fixed huge ``lam`` (``lam=1e3``).
"""

from __future__ import annotations

from numbers import Real

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import train_test_split
from sklearn.utils import _safe_indexing
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _num_samples

from ._groups import encode_sensitive
from ._net import FairModule, GapPenalty
from ._proba import ProbaModule
from .estimators import FairLayerClassifier, FairLayerRegressor, _FairLayerBase
from .metrics import parity_gap

__all__ = ["ProjectionRegressor", "ProjectionClassifier", "PenaltyRegressor", "PenaltyClassifier"]


class ProjectionRegressor(FairLayerRegressor):
    """Train without the fairness layer, project at prediction (the paper's "Projection").

    Same parameters as :class:`~fairsk.FairLayerRegressor`; the training batches are
    still stratified by group.

    Examples
    --------
    >>> import numpy as np
    >>> from fairsk.baselines import ProjectionRegressor
    >>> from fairsk.metrics import parity_gap
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3)); s = rng.integers(0, 2, 200); y = X[:, 0] + s
    >>> reg = ProjectionRegressor(tolerance=0.05, max_epochs=5, random_state=0, solver="exact")
    >>> reg = reg.fit(X, y, sensitive_features=s)
    >>> parity_gap(reg.predict(X, sensitive_features=s), s) <= 0.05 + 1e-6
    True
    """

    def _training_module(self, body):
        return FairModule(body, None)  # trained without the layer; _fair_output projects at prediction


class ProjectionClassifier(FairLayerClassifier):
    """Train without the fairness layer, project at prediction ("Projection").

    Same parameters as :class:`~fairsk.FairLayerClassifier`. The net is the
    unconstrained one (binary cross-entropy on its logits) in every mode;
    ``enforce_on`` chooses what prediction projects: the logits (``"logits"``), or
    the probabilities (``"proba"``), and then also the labels (``"labels"``: the
    fair labels of the projected probabilities), with the same guarantees as
    :class:`~fairsk.FairLayerClassifier`.

    Examples
    --------
    >>> import numpy as np
    >>> from fairsk.baselines import ProjectionClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3)); s = rng.integers(0, 2, 200); y = (X[:, 0] + s > 0.5).astype(int)
    >>> clf = ProjectionClassifier(max_epochs=5, random_state=0, solver="exact").fit(X, y, sensitive_features=s)
    >>> clf.predict(X[:5], sensitive_features=s[:5]).shape
    (5,)
    """

    # the error-rate criteria need the layer in training (the labels are unknown at prediction)
    _added_constraints: dict = {"criterion": [StrOptions({"ecp"})]}

    def _training_module(self, body):
        return FairModule(body, None)  # trained without the layer; _fair_output projects at prediction

    def _trains_on_proba(self) -> bool:
        return False  # the unconstrained net, trained on its logits


class _PenaltyBase(_FairLayerBase):
    _added_constraints: dict = {
        "lam": [StrOptions({"auto"}), Interval(Real, 0, None, closed="left")],
        "lam_grid": ["array-like"],
    }

    def __init__(self, *, lam="auto", lam_grid=(0.1, 1.0, 10.0, 100.0, 1000.0), **params):
        self.lam = lam
        self.lam_grid = lam_grid
        super().__init__(**params)

    def _training_module(self, body):
        return FairModule(body, None)  # trained without the layer, on loss + penalty

    def _loss_penalty(self):
        return GapPenalty(self.lam_) if self.lam_ else None

    def _predicts_with_groups(self) -> bool:
        return False

    def _penalised_output(self, X, kw):
        """The outputs whose gap the penalty reduces (the held-out gap of ``lam="auto"``)."""
        return self.decision_function(X, **kw) if hasattr(self, "decision_function") else self.predict(X, **kw)

    def _fair_output(self, z, groups):
        return super()._fair_output(z, None)  # the raw outputs (in the box, if any)

    def fit(self, X, y, sample_weight=None, sensitive_features=None):
        """Choose ``lam`` (if ``"auto"``), then train with the penalty."""
        self._validate_params()
        if self.lam == "auto":
            self.lam_, self.lam_search_ = self._choose_lam(X, y, sample_weight, sensitive_features)
        else:
            self.lam_, self.lam_search_ = float(self.lam), []
        return super().fit(X, y, sample_weight=sample_weight, sensitive_features=sensitive_features)

    def _choose_lam(self, X, y, sample_weight, sensitive_features):
        """Smallest lam of the grid whose held-out gap meets the tolerance (else the largest)."""
        _, sensitive = self.split_sensitive(X, sensitive_features)
        if sensitive is None:  # an unconstrained model (fit warns): no penalty to choose
            return 0.0, []
        codes, _ = encode_sensitive(sensitive, _num_samples(X))
        strata = np.unique(codes, axis=0, return_inverse=True)[1].reshape(-1)
        idx = np.arange(len(strata))
        try:
            tr, va = train_test_split(idx, test_size=0.25, stratify=strata, random_state=self.random_state)
        except ValueError:  # a stratum too small to split
            tr, va = train_test_split(idx, test_size=0.25, random_state=self.random_state)
        search = []
        grid = sorted(float(v) for v in self.lam_grid)
        for lam in grid:
            est = clone(self).set_params(lam=lam)
            part = {} if self.sensitive_columns is not None else {"sensitive_features": _safe_indexing(sensitive, tr)}
            sw = None if sample_weight is None else _safe_indexing(np.asarray(sample_weight), tr)
            est.fit(_safe_indexing(X, tr), _safe_indexing(np.asarray(y), tr), sample_weight=sw, **part)
            kw = {} if self.sensitive_columns is not None else {"sensitive_features": _safe_indexing(sensitive, va)}
            gap = parity_gap(est._penalised_output(_safe_indexing(X, va), kw), _safe_indexing(sensitive, va))
            search.append((lam, gap))
            if gap <= self.tolerance:
                return lam, search
        return grid[-1], search


class PenaltyRegressor(_PenaltyBase, FairLayerRegressor):
    """Regressor trained on ``loss + lam * squared group-mean gaps`` (the paper's "Penalty").

    Parameters are those of :class:`~fairsk.FairLayerRegressor` plus ``lam`` (a
    number, or ``"auto"``: the smallest of ``lam_grid`` that meets ``tolerance`` on a
    25% held-out split) and ``lam_grid``. ``lam=1e3`` is the paper's strict penalty.
    Predictions are the net's raw outputs: nothing guarantees the tolerance, and no
    sensitive features are needed at prediction (``missing_sensitive`` has no effect).

    Attributes
    ----------
    lam_ : float
        The penalty weight used.
    lam_search_ : list of (lam, validation gap)

    Examples
    --------
    >>> import numpy as np
    >>> from fairsk.baselines import PenaltyRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3)); s = rng.integers(0, 2, 200); y = X[:, 0] + s
    >>> reg = PenaltyRegressor(lam=10.0, max_epochs=5, random_state=0).fit(X, y, sensitive_features=s)
    >>> reg.lam_
    10.0
    """


class PenaltyClassifier(_PenaltyBase, FairLayerClassifier):
    """Classifier trained on ``loss + lam * squared group-mean gaps`` of its outputs.

    See :class:`PenaltyRegressor`. With ``enforce_on="logits"`` the gaps are those of
    the logits, as the paper's; with ``"proba"`` or ``"labels"`` those of the
    probabilities (the net is trained on its probabilities, with no projection).
    Prediction returns the net's raw outputs and the argmax labels in every mode:
    nothing is guaranteed.

    Examples
    --------
    >>> import numpy as np
    >>> from fairsk.baselines import PenaltyClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3)); s = rng.integers(0, 2, 200); y = (X[:, 0] + s > 0.5).astype(int)
    >>> clf = PenaltyClassifier(lam=1e3, max_epochs=5, random_state=0).fit(X, y, sensitive_features=s)
    >>> clf.lam_
    1000.0
    """

    _added_constraints: dict = {"criterion": [StrOptions({"ecp"})]}

    def _training_module(self, body):
        if self._trains_on_proba():
            return ProbaModule(body, None)  # probabilities, trained on loss + penalty, no projection
        return FairModule(body, None)

    def _penalised_output(self, X, kw):
        if self._on_proba():
            return self.predict_proba(X, **kw)[:, 1:]
        return self.decision_function(X, **kw)
