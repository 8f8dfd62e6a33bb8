"""FairLayerRegressor and FairLayerClassifier: skorch nets ending in the fairness layer.

One path of data: ``fit(X, y, sensitive_features=...)`` -> :meth:`~_FairLayerBase.split_sensitive`
(groups from the argument or from ``sensitive_columns``) -> a fitted
:class:`~fairsk._groups.GroupEncoder` (labels -> integer codes) -> a
:class:`~fairsk._net.FairDataset` trained by a skorch :class:`~fairsk._net.FairNet`
whose module is built by the hook :meth:`~_FairLayerBase._training_module`
(body + :class:`~fairsk.FairnessLayer`), on stratified batches.
At prediction the body's raw outputs for *all* rows of the call are made fair at
once by the hook :meth:`~_FairLayerBase._fair_output` (the exact projection), so the
guarantee holds over the whole call.

Subclasses change behaviour through three small hooks: ``_training_module(body)``
(what is trained), ``_loss_penalty()`` (an extra loss term) and
``_fair_output(z, groups)`` (what prediction does with the raw outputs); the
baselines in :mod:`fairsk.baselines` are written that way.
"""

from __future__ import annotations

import copy
import inspect
import warnings
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, _num_samples, check_is_fitted, validate_data
from skorch.callbacks import EarlyStopping, ProgressBar
from skorch.dataset import ValidSplit
from torch import nn

from ._groups import GroupEncoder
from ._net import EpochFairness, FairDataset, FairModule, FairNet, _intersections, build_body, resolve_device
from ._proba import (
    PREDICT_SWEEPS,
    ProbaModule,
    SqueezedBCELoss,
    SqueezedNLLLoss,
    check_columns,
    fair_probabilities,
    logit,
)
from ._warn import warn
from .calibration import ErrorRateCalibrator, _cross_fitted_calibration
from .decisions import fair_labels
from .layer import FairnessLayer, validate_layer_params
from .odds import ErrorRateLayer, ErrorRateModule, WorstBatchGap
from .projection import get_criterion

__all__ = ["FairLayerRegressor", "FairLayerClassifier", "SingleGroupWarning"]

_PREDICT_CHUNK = 65536

#: fitted attributes that make up an estimator's state (see ``get_fitted_state``)
_STATE_ATTRIBUTES = ("n_features_in_", "n_outputs_", "_y_2d", "classes_", "group_labels_", "feature_names_in_",
                     "eer_cells_", "eer_offsets_", "lam_", "lam_search_", "train_worst_batch_gap_", "calibrator_")


def _keyword_only(init) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(init).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]


def _merged_signature(cls) -> inspect.Signature:
    """``__init__``'s signature listing the keyword parameters of ``cls`` and its bases."""
    seen, params = set(), [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or not issubclass(klass, _FairLayerBase):
            continue
        own = getattr(init, "_own_params", None)
        for p in _keyword_only(init) if own is None else own:
            if p.name not in seen:
                seen.add(p.name)
                params.append(p)
    params.append(inspect.Parameter("module_params", inspect.Parameter.VAR_KEYWORD))
    return inspect.Signature(params)


class SingleGroupWarning(UserWarning):
    """A prediction call holds a single group of an attribute: the parity constraint,
    which compares the groups *of that call*, then changes nothing."""


class _FairLayerBase(BaseEstimator):
    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "module": [type, None],
        "criterion": [StrOptions({"ecp", "eer"})],
        "tolerance": [Interval(Real, 0, None, closed="left")],
        "sensitive_columns": ["array-like", str, Integral, None],
        "solver": [StrOptions({"qpth", "exact"})],
        "bounds": [tuple, list, None],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "device": [str, torch.device],
        "missing_sensitive": [StrOptions({"error", "warn", "ignore"})],
        "progress_bar": ["boolean"],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        *,
        hidden_layer_sizes=(64,),
        module=None,
        criterion="ecp",
        tolerance=0.01,
        sensitive_columns=None,
        solver="qpth",
        bounds=None,
        max_epochs=20,
        lr=0.01,
        batch_size=256,
        early_stopping=False,
        validation_fraction=0.1,
        patience=5,
        device="cpu",
        missing_sensitive="error",
        progress_bar=False,
        random_state=None,
        verbose=0,
        **module_params,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.module = module
        self.criterion = criterion
        self.tolerance = tolerance
        self.sensitive_columns = sensitive_columns
        self.solver = solver
        self.bounds = bounds
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.device = device
        self.missing_sensitive = missing_sensitive
        self.progress_bar = progress_bar
        self.random_state = random_state
        self.verbose = verbose
        self._extra_params = {k: v for k, v in module_params.items() if not k.startswith("module__")}
        for key, value in module_params.items():
            if key.startswith("module__"):
                setattr(self, key, value)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # scikit-learn reads the parameter names from the signature of __init__. A
        # subclass adding parameters writes ``__init__(self, *, new=..., **params)``
        # and forwards ``params``; its signature is then completed here with its
        # bases' parameters, so no subclass repeats the list.
        init = cls.__dict__.get("__init__")
        if init is None:
            inherited = cls.__init__

            def init(self, **params):
                inherited(self, **params)

            init.__qualname__ = f"{cls.__qualname__}.__init__"
            init._own_params = []
            cls.__init__ = init
        elif not hasattr(init, "_own_params"):
            init._own_params = _keyword_only(init)
        init.__signature__ = _merged_signature(cls)
        # likewise the parameter constraints: the base's, updated by each class's
        # ``_added_constraints`` (the most derived class wins)
        constraints = dict(_FairLayerBase._parameter_constraints)
        for klass in reversed(cls.__mro__):
            constraints.update(klass.__dict__.get("_added_constraints", {}))
        cls._parameter_constraints = constraints

    # skorch-style module__* parameters are part of get_params / set_params
    def get_params(self, deep=True):
        params = super().get_params(deep=deep)
        params.update({k: v for k, v in vars(self).items() if k.startswith("module__")})
        return params

    def set_params(self, **params):
        for k in [k for k in params if k.startswith("module__")]:
            setattr(self, k, params.pop(k))
        if "module_params" in params:  # the **kwargs slot itself: checked in fit
            self._extra_params = {"module_params": params.pop("module_params")}
        return super().set_params(**params)

    # -- hooks (the baselines override these) -----------------------------------------
    def _training_module(self, body: nn.Module) -> nn.Module:
        """The module trained: the body followed by the fairness layer."""
        return FairModule(body, self._layer())

    def _loss_penalty(self):
        """An extra loss term ``(y_pred, batch) -> scalar`` added to every batch's loss, or None."""
        return None

    @property
    def _criterion(self):
        """The criterion object behind the ``criterion`` string (its registry entry)."""
        return get_criterion(self.criterion)

    def _label_strata(self) -> bool:
        """Whether the criterion constrains rates within true-label strata (equal
        opportunity, equalized odds): the labels are needed, so it holds on training
        batches and, through calibration, on calibration data, never per call."""
        return bool(getattr(self._criterion, "label_strata", False))

    def _predicts_with_groups(self) -> bool:
        """Whether predictions depend on the sensitive features (they are then required)."""
        return True

    @property
    def projects_at_predict(self) -> bool:
        """Whether prediction projects the call's outputs onto the fair set (ECP models
        fitted through the layer or projected at prediction; not the penalty
        baselines, nor EER, whose predictions add fitted offsets). Part of the
        interface the scale-out modules read."""
        return self._predicts_with_groups() and not self._criterion.needs_targets

    def _fair_output(self, z: torch.Tensor, groups: np.ndarray | None) -> torch.Tensor:
        """The outputs of one prediction call from the body's raw outputs ``z`` (n, c).

        ECP: the exact projection of the whole call (no gradient is needed at
        prediction and the projection is unique, so the exact solver is used whatever
        ``solver`` says). EER needs the targets: its offsets learnt in fit are already
        in ``z``; only the box applies.
        """
        if groups is None or self._criterion.needs_targets:
            return z if self.bounds is None else z.clamp(min=self.bounds[0], max=self.bounds[1])
        return self._layer(solver="exact")(z, torch.as_tensor(groups, device=z.device))

    # -- the interface streaming, persistence and the scorers use ---------------------
    def split_sensitive(self, X, sensitive_features=None):
        """``(features, sensitive features or None)`` of one call.

        The sensitive features come from the argument or from the columns named by
        ``sensitive_columns`` (passing both is an error); the features are ``X``
        without those columns. Part of the small interface through which
        :class:`~fairsk.StreamingFairPredictor`, :mod:`fairsk.persistence` and the
        scorers talk to an estimator.
        """
        X_feat, from_columns = self._columns_of(X)
        if from_columns is not None and sensitive_features is not None:
            raise ValueError("pass sensitive_features or set sensitive_columns, not both")
        return X_feat, (from_columns if from_columns is not None else sensitive_features)

    def _columns_of(self, X):
        """Features and sensitive features of ``X`` (when ``sensitive_columns`` is set)."""
        cols = self.sensitive_columns
        if cols is None:
            return X, None
        cols = [cols] if isinstance(cols, (str, Integral)) else list(cols)
        if isinstance(X, pd.DataFrame):
            missing = [c for c in cols if c not in X.columns]
            if missing and all(isinstance(c, Integral) for c in cols):
                return X.drop(columns=X.columns[cols]), X.iloc[:, cols]
            if missing:
                raise ValueError(f"sensitive_columns {missing} are not columns of X")
            return X.drop(columns=cols), X[cols]
        arr = np.asarray(X)
        if arr.ndim != 2:
            raise ValueError(f"X must be 2-D to take sensitive_columns from it, got shape {arr.shape}")
        if not all(isinstance(c, Integral) for c in cols):
            raise ValueError("sensitive_columns must be column indices when X is not a DataFrame")
        bad = [c for c in cols if not -arr.shape[1] <= c < arr.shape[1]]
        if bad:
            raise ValueError(f"sensitive_columns {bad} are out of range for X with {arr.shape[1]} columns")
        keep = np.setdiff1d(np.arange(arr.shape[1]), np.asarray(cols) % arr.shape[1])
        return arr[:, keep], arr[:, cols]

    def raw_output(self, X, sensitive_features=None):
        """``(z, sensitive)``: the body's outputs (n, c) in float64 for every row of
        ``X``, before any projection (with the EER offsets learnt in fit), and the
        call's sensitive features (or None)."""
        check_is_fitted(self, "net_")
        X_feat, sensitive = self.split_sensitive(X, sensitive_features)
        X_feat = self._check_features(X_feat)
        z = self._raw(X_feat)
        if sensitive is not None and self._has_eer_offsets():
            z = z + self._eer_offsets(self._encode(sensitive, X_feat.shape[0]), z)
        return z.cpu().numpy(), sensitive

    def format_output(self, out: np.ndarray) -> np.ndarray:
        """Scores (n, c) as this estimator returns them (``predict`` of a regressor,
        ``decision_function`` of a classifier): one column becomes 1-D unless the
        model was fitted on a 2-D target."""
        return out if getattr(self, "_y_2d", False) else out[:, 0]

    def get_fitted_state(self) -> dict:
        """The fitted state, for :mod:`fairsk.persistence`.

        Returns ``{"attributes": {...}, "body": state_dict}``: the fitted attributes
        (numbers, strings, tuples, lists and NumPy arrays only, keyed by attribute
        name) and the body's weights (CPU tensors). :meth:`from_fitted_state` turns
        them back into an estimator that predicts identically.
        """
        check_is_fitted(self, "net_")
        attributes = {}
        for name in _STATE_ATTRIBUTES:
            value = getattr(self, name, None)
            if value is None:
                continue
            if name == "group_labels_":
                value = [[_plain(v) for v in labels] for labels in value]
            elif name == "lam_search_":
                value = [(float(lam), float(gap)) for lam, gap in value]
            elif name == "calibrator_":
                value = {"params": value.get_params(), "attributes": value.get_fitted_state()["attributes"]}
            elif isinstance(value, np.generic):
                value = value.item()
            attributes[name] = value
        body = {k: v.detach().cpu().clone() for k, v in self._trained_body().state_dict().items()}
        return {"attributes": attributes, "body": body}

    @classmethod
    def from_fitted_state(cls, params: dict, state: dict, *, module: type | None = None):
        """A fitted estimator from its parameters and :meth:`get_fitted_state`'s output.

        ``params`` are ``get_params()`` (without ``module``, or with ``module=None``);
        ``module`` is the body class of a model fitted with a custom ``module=``.
        """
        params = {k: v for k, v in params.items() if k != "module"}
        est = cls(module=module, **params)
        attributes = dict(state["attributes"])
        for required in ("n_features_in_", "n_outputs_"):
            if required not in attributes:
                raise ValueError(f"the fitted state has no {required!r}")
        est.group_labels_ = None
        for name, value in attributes.items():
            if name not in _STATE_ATTRIBUTES:
                raise ValueError(f"unknown fitted attribute {name!r} in the state")
            if name in ("classes_", "feature_names_in_", "eer_cells_", "eer_offsets_"):
                value = np.asarray(value, dtype=object if name == "feature_names_in_" else None)
            elif name == "group_labels_":
                value = [list(labels) for labels in value]
            elif name == "calibrator_":
                value = ErrorRateCalibrator.from_fitted_state(dict(value["params"]),
                                                              {"attributes": dict(value["attributes"])})
            setattr(est, name, value)
        if hasattr(est, "_set_calibration_attributes") and est._label_strata():
            est._set_calibration_attributes(getattr(est, "calibrator_", None))
            est.train_worst_batch_gap_ = getattr(est, "train_worst_batch_gap_", None)
        if getattr(est, "eer_cells_", None) is not None:
            est.eer_cells_ = est.eer_cells_.astype(np.int64).reshape(len(est.eer_cells_), -1)
            est.eer_offsets_ = est.eer_offsets_.astype(np.float64).reshape(len(est.eer_cells_), -1)
        else:
            est.eer_cells_ = est.eer_offsets_ = None
        device = resolve_device(est.device)
        body = est._build_body(est.n_features_in_, est.n_outputs_)
        body.load_state_dict(state["body"])
        # an inference-ready net around the loaded body (no optimiser state is kept)
        est.net_ = FairNet(est._training_module(body), criterion=nn.MSELoss, device=str(device)).initialize()
        est.body64_ = copy.deepcopy(body).double().eval().to(device)
        return est

    # -- fitting --------------------------------------------------------------------
    def _layer(self, solver: str | None = None) -> FairnessLayer:
        return FairnessLayer(self.criterion, self.tolerance, solver or self.solver, self.bounds)

    def _build_body(self, n_features_in: int, n_outputs: int) -> nn.Module:
        module_params = {k[len("module__"):]: v for k, v in self.get_params().items() if k.startswith("module__")}
        return build_body(self.module, module_params, n_features_in, n_outputs, self.hidden_layer_sizes)

    def _trained_body(self) -> nn.Module:
        return self.net_.module_.body

    def _callbacks(self) -> list:
        callbacks = []
        if self.early_stopping:
            callbacks.append(("early_stopping", EarlyStopping(patience=self.patience)))
        if self.verbose:
            callbacks.append(("fairness", EpochFairness(classifier=isinstance(self, ClassifierMixin))))
        if self.progress_bar:
            callbacks.append(("progress_bar", ProgressBar()))
        return callbacks

    def _fit(self, X, y_train, sample_weight, sensitive_features, criterion):
        if getattr(self, "_extra_params", None):
            raise ValueError(f"unexpected parameters {sorted(self._extra_params)} (body parameters go in module__*)")
        validate_layer_params(self.criterion, self.tolerance, self.solver, self.bounds)
        device = resolve_device(self.device)
        X_feat, sensitive = self.split_sensitive(X, sensitive_features)
        X_feat = _dense(validate_data(self, X_feat, dtype=np.float32, reset=True, accept_sparse=True))
        n = X_feat.shape[0]
        self.group_labels_ = groups = None
        if sensitive is None:
            warn(f"{type(self).__name__} got no sensitive_features (and no sensitive_columns): "
                "it behaves as an ordinary unconstrained model")
        else:
            encoder = GroupEncoder()
            groups = encoder.fit_transform(sensitive, n)
            self.group_labels_ = encoder.labels_
        weight = self._training_weight(sample_weight, X_feat, y_train)
        seed = np.random.RandomState(self.random_state).randint(2**31 - 1)
        cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            body = self._build_body(X_feat.shape[1], self.n_outputs_)
            self.net_ = FairNet(
                self._training_module(body),
                criterion=criterion,
                criterion__reduction="none",
                optimizer=torch.optim.Adam,
                lr=self.lr,
                max_epochs=self.max_epochs,
                batch_size=self.batch_size,
                train_split=ValidSplit(self.validation_fraction, random_state=seed) if self.early_stopping else None,
                callbacks=self._callbacks(),
                iterator_valid__shuffle=False,
                verbose=self.verbose,
                batch_seed=seed,
                penalty=self._loss_penalty(),
                device=str(device),
            )
            target = y_train if self._criterion.needs_targets and groups is not None else None
            self.net_.fit(FairDataset(X_feat, y_train, groups=groups, target=target, sample_weight=weight), None)
        # predictions run a float64 copy: outputs then do not depend on how many
        # rows one call holds (float32 BLAS blocks differ with the batch shape)
        self.body64_ = copy.deepcopy(self._trained_body()).double().eval()
        self.eer_cells_ = self.eer_offsets_ = None
        if self._uses_eer_offsets() and groups is not None:
            self._fit_eer_offsets(X_feat, y_train, groups)
        return self

    def _training_weight(self, sample_weight, X_feat, y_train):
        return None if sample_weight is None else _check_sample_weight(sample_weight, X_feat, dtype=np.float32)

    def _fit_eer_offsets(self, X_feat, y_train, groups) -> None:
        """EER needs targets, unknown at prediction: keep instead each cell's (one group
        of every attribute) mean correction when the training set is projected as one
        batch. Applied at prediction, it makes predictions on the training data meet
        the criterion (exactly without a box) and carries the same offsets to new data."""
        z = self._raw(X_feat)
        target = torch.as_tensor(np.asarray(y_train, dtype=np.float64).reshape(len(z), -1), device=z.device)
        projected = self._layer(solver="exact")(z, torch.as_tensor(groups, device=z.device), target)
        cells, inverse = np.unique(groups, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        shift = (projected - z).cpu().numpy()
        counts = np.bincount(inverse, minlength=len(cells))[:, None]
        sums = np.stack([np.bincount(inverse, weights=shift[:, j], minlength=len(cells))
                         for j in range(shift.shape[1])], 1)
        self.eer_cells_, self.eer_offsets_ = cells, sums / counts

    def _uses_eer_offsets(self) -> bool:
        """Whether prediction adds per-cell offsets learnt in fit (EER: a criterion on
        the targets' group means; not the error-rate criteria, which are calibrated)."""
        return self._criterion.needs_targets and not self._label_strata()

    def _has_eer_offsets(self) -> bool:
        return self._uses_eer_offsets() and getattr(self, "eer_offsets_", None) is not None

    def _eer_offsets(self, groups: np.ndarray, z: torch.Tensor) -> torch.Tensor:
        """Offsets (n, c) of the cells of ``groups``; zero, with a warning, for unseen cells."""
        both = np.concatenate([self.eer_cells_, groups], 0)
        _, inverse = np.unique(both, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        known = {cell: i for i, cell in enumerate(inverse[: len(self.eer_cells_)])}
        rows = np.array([known.get(cell, -1) for cell in inverse[len(self.eer_cells_):]], dtype=np.int64)
        if (rows < 0).any():
            warn("some combinations of groups were not seen in fit: no EER offset for them")
        padded = np.vstack([self.eer_offsets_, np.zeros((1, self.eer_offsets_.shape[1]))])
        return torch.as_tensor(padded[rows], dtype=z.dtype, device=z.device)

    # -- prediction -----------------------------------------------------------------
    def _check_features(self, X):
        """validate_data at prediction, with a fast path for a plain float array (a
        stream's one-row calls would otherwise spend most of their time here)."""
        if (isinstance(X, np.ndarray) and X.ndim == 2 and X.dtype.kind == "f" and X.shape[1] == self.n_features_in_
                and not hasattr(self, "feature_names_in_")):
            if not np.isfinite(X).all():
                raise ValueError("Input X contains NaN or infinity.")
            return X
        return _dense(validate_data(self, X, dtype=[np.float64, np.float32], reset=False, accept_sparse=True))

    def _encode(self, sensitive, n: int) -> np.ndarray:
        """Codes (n, a) of the call's groups in the numbering learnt in fit."""
        if getattr(self, "group_labels_", None) is None:
            return GroupEncoder().fit_transform(sensitive, n)
        encoder = GroupEncoder(unseen="new")
        encoder.labels_ = [list(a) for a in self.group_labels_]
        return encoder.transform(sensitive, n)

    def check_missing_sensitive(self) -> None:
        """Apply ``missing_sensitive`` to a prediction call that has no sensitive features.

        A model fitted with groups refuses such a call (``"error"``, the default),
        warns (``"warn"``) or accepts it silently (``"ignore"``): its outputs would not
        meet the fairness constraint. Part of the interface the scale-out modules use.
        """
        if getattr(self, "group_labels_", None) is None or not self._predicts_with_groups():
            return
        message = (
            f"{type(self).__name__} was fitted with sensitive features but this call has none, so its "
            "outputs would not meet the fairness constraint. Pass sensitive_features= (with scikit-learn's "
            "metadata routing: fairsk.request_sensitive(estimator); after a search: "
            "search.best_estimator_.predict(X, sensitive_features=...)), or set sensitive_columns, or "
            "missing_sensitive='warn' or 'ignore' to accept unconstrained outputs"
        )
        if self.missing_sensitive == "error":
            raise ValueError(message)
        if self.missing_sensitive == "warn":
            warn(message)

    def _groups_at_predict(self, sensitive, n: int) -> np.ndarray | None:
        """The call's group codes; a model fitted with groups refuses a call without them
        (``missing_sensitive``), and a call holding one group of an attribute warns."""
        if sensitive is None:
            self.check_missing_sensitive()
            return None
        groups = self._encode(sensitive, n)
        if self._predicts_with_groups() and not self._criterion.needs_targets and n:
            single = [a for a in range(groups.shape[1]) if (groups[:, a] == groups[0, a]).all()]
            if single:
                warn(
                    f"this call holds a single group of attribute(s) {single}: the parity constraint compares the "
                    "groups of one call, so it changes nothing here. The guarantee is per call; predict rows "
                    "together, or use fairsk.StreamingFairPredictor for row-at-a-time predictions",
                    SingleGroupWarning,
                )
        return groups

    def _raw(self, X_feat) -> torch.Tensor:
        """The body's outputs for all rows, in float64 (no projection), on ``device``."""
        body = self.body64_
        device = next(body.parameters(), torch.zeros(())).device
        outs = []
        X64 = np.asarray(X_feat, dtype=np.float64)
        if not X64.flags.writeable:  # torch wants writable memory (it never writes here)
            X64 = X64.copy()
        with torch.no_grad():
            for start in range(0, X64.shape[0], _PREDICT_CHUNK):
                outs.append(body(torch.as_tensor(X64[start : start + _PREDICT_CHUNK]).to(device)))
        if not outs:
            return torch.zeros((0, self.n_outputs_), dtype=torch.float64, device=device)
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        return out.reshape(X_feat.shape[0], -1)

    def _outputs(self, X, sensitive_features) -> np.ndarray:
        """Fair outputs (n, c) of one call: raw outputs of the whole call, made fair at once."""
        return self._outputs_and_groups(X, sensitive_features)[0]

    def _outputs_and_groups(self, X, sensitive_features) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`_outputs`, and the call's group codes (n, a) or None."""
        check_is_fitted(self, "net_")
        X_feat, sensitive = self.split_sensitive(X, sensitive_features)
        X_feat = self._check_features(X_feat)
        groups = self._groups_at_predict(sensitive, X_feat.shape[0])
        z = self._raw(X_feat)
        if groups is not None and self._has_eer_offsets():
            z = z + self._eer_offsets(groups, z)
        return self._fair_output(z, groups).cpu().numpy(), groups

    def _score(self, metric, X, y, sample_weight, sensitive_features) -> float:
        pred = self.predict(X, sensitive_features=sensitive_features)
        return float(metric(y, pred, sample_weight=sample_weight))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        tags.target_tags.multi_output = isinstance(self, RegressorMixin)
        tags.input_tags.sparse = True  # densified (the body is a dense torch net)
        return tags


_COMMON_PARAMETERS = """
    hidden_layer_sizes : int or tuple of int, default=(64,)
        Widths of the default MLP body's hidden layers (an int is one layer).
    module : torch.nn.Module class, default=None
        A custom body; its parameters go in ``module__*`` keyword arguments (a key
        the body does not take is an error), and it receives ``n_features_in`` and
        ``n_outputs`` when its signature has them.
    criterion : {criterion}
    tolerance : float, default=0.01
        Allowed gap between group means.
    sensitive_columns : str, int or list, default=None
        Columns of ``X`` holding the sensitive features (they are then not used as
        features). Otherwise pass ``sensitive_features`` to each method.
    solver : {{"qpth", "exact"}}, default="qpth"
        The layer's solver in training. Prediction always uses the exact solver:
        no gradient is needed there and the projection is unique, so both solvers
        give the same outputs (to 1e-6) and the exact one is faster and scales.
    bounds : tuple (lb, ub), default=None
        Optional box on the outputs.
    max_epochs, lr, batch_size : int, float, int, default=20, 0.01, 256
        Training length, Adam's learning rate, mini-batch size.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` and stop after ``patience`` epochs without
        improvement of the validation loss.
    validation_fraction : float, default=0.1
    patience : int, default=5
    device : str or torch.device, default="cpu"
        Where training and prediction run, in skorch's spelling (``"cpu"``,
        ``"cuda"``, ``"cuda:1"``). A device this machine lacks is an error at fit.
    missing_sensitive : {{"error", "warn", "ignore"}}, default="error"
        What a model fitted with sensitive features does when a prediction call
        (``predict``, ``decision_function``, ``predict_proba``, ``score``) has none:
        raise, or return unconstrained outputs with or without a warning.
    progress_bar : bool, default=False
        Show a progress bar of each training epoch (skorch's ``ProgressBar``).
    random_state : int, RandomState or None, default=None
        Seeds the weights and the batches: equal seeds give equal fits.
    verbose : int, default=0
        1 prints a table of epochs: training loss, and the parity gap of the
        training outputs over the epoch (``train_gap``; and ``train_acc`` for a
        classifier)."""

_GUARANTEE_NOTE = """
    The guarantee holds over the rows of one call: rows predicted in separate calls
    are not constrained together (a call holding a single group of an attribute
    warns with :class:`SingleGroupWarning`). For predictions one row at a time use
    :class:`~fairsk.StreamingFairPredictor`."""


class FairLayerRegressor(RegressorMixin, _FairLayerBase):
    __doc__ = """Neural network regressor whose last module is the fairness layer.

    The network (an MLP, or ``module=``) is trained *through* the projection onto
    the set where group means are at parity, on stratified mini-batches.
    {note}

    Parameters
    ----------{params}

    Attributes
    ----------
    net_ : skorch.NeuralNet
        The trained net; ``net_.module_.body`` and ``net_.module_.layer``.
    group_labels_ : list of lists or None
        The groups seen in fit, per attribute.
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from fairsk import FairLayerRegressor
    >>> from fairsk.metrics import parity_gap
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3)); s = rng.integers(0, 2, 200)
    >>> y = X[:, 0] + s
    >>> reg = FairLayerRegressor(tolerance=0.05, max_epochs=5, random_state=0, solver="exact")
    >>> reg = reg.fit(X, y, sensitive_features=s)
    >>> parity_gap(reg.predict(X, sensitive_features=s), s) <= 0.05 + 1e-6
    True
    """.format(note=_GUARANTEE_NOTE, params=_COMMON_PARAMETERS.format(criterion="""{"ecp", "eer"}, default="ecp"
        See :class:`~fairsk.FairnessLayer`. ``"eer"`` needs the targets, so the layer
        acts in training; ``predict`` adds to the body's outputs each cell's (one
        group of every attribute) mean correction on the training set, so that
        predictions on the training data meet the criterion (exactly, without a box).
        New data get the same offsets; nothing is guaranteed there."""))

    def fit(self, X, y, sample_weight=None, sensitive_features=None) -> FairLayerRegressor:
        """Train the network through the fairness layer."""
        self._validate_params()
        y = _check_target(y)
        self._y_2d = y.ndim == 2
        y_train = y.reshape(len(y), -1).astype(np.float32)
        self.n_outputs_ = y_train.shape[1]
        if len(y_train) != _num_samples(X):
            raise ValueError(f"X has {_num_samples(X)} rows but y has {len(y_train)}")
        return self._fit(X, y_train, sample_weight, sensitive_features, nn.MSELoss)

    def predict(self, X, sensitive_features=None) -> np.ndarray:
        """Predictions of all rows, made fair together: the call's group means meet the criterion."""
        return self.format_output(self._outputs(X, sensitive_features))

    def score(self, X, y, sample_weight=None, sensitive_features=None) -> float:
        """R^2 of the (projected) predictions."""
        from sklearn.metrics import r2_score

        return self._score(r2_score, X, y, sample_weight, sensitive_features)


_ENFORCE_ON_TABLE = """
    ================  ==================================  ============================  =====================
    ``enforce_on``    ``predict`` (labels)                ``predict_proba``             ``decision_function``
    ================  ==================================  ============================  =====================
    ``"labels"``      selection rates of one call's       group means of one call       same ranking as
                      groups within ``tolerance``         within ``tolerance``, every   ``predict_proba``
                      (exact; most accurate in            class column
                      expectation)
    ``"proba"``       argmax, no guarantee                as above                      same ranking as
                                                                                        ``predict_proba``
    ``"logits"``      argmax, no guarantee                none                          group means of one
                                                                                        call within
                                                                                        ``tolerance``
    ================  ==================================  ============================  =====================
"""


class FairLayerClassifier(ClassifierMixin, _FairLayerBase):
    __doc__ = """Neural network classifier whose last module is the fairness layer.

    ``enforce_on`` chooses the output that carries the guarantee:
    {table}
    * ``"labels"`` (default) and ``"proba"`` (binary targets): the net maps its logit
      ``z`` to ``p = sigmoid(z)`` and the layer projects ``p`` onto the set where
      group means are at parity inside the box ``[0, 1]``; the loss is the binary
      cross-entropy of the projected probabilities, so the net learns to be accurate
      inside the fair set. At prediction the probabilities of the whole call are
      projected at once. With ``"labels"``, ``predict`` then returns
      :func:`fairsk.decisions.fair_labels` of those probabilities: the labelling
      whose per-group selection rates (rate of the positive class among each
      group's rows of the call) are within ``tolerance`` for every sensitive
      attribute, maximising the expected number of correct labels (exact for one
      attribute; verified feasible with several). Rates are recomputed and checked
      before they are returned. ``decision_function`` is the logit of the fair
      probability (finite: about -708 at 0 and +708 at 1).
    * The same modes with ``k > 2`` classes: ``softmax`` probabilities are moved
      into the set where rows stay on the simplex and every class column's group
      means are within ``tolerance`` (Dykstra's algorithm between the simplex and
      the layer's parity set, a few sweeps per training batch and up to 200 at
      prediction, then a mix with the mean row that makes the result feasible;
      rows and column means are checked before they are returned). This is the
      Euclidean projection in the limit of many sweeps, a feasible point close to it
      otherwise. ``"labels"``: :func:`fairsk.decisions.fair_labels` gives every
      class's selection rates within ``tolerance`` (feasible and checked, not always
      the most accurate); ``decision_function`` returns the log-probabilities.
    * ``"logits"``: the paper's. Binary targets use one logit (binary
      cross-entropy); ``k > 2`` classes use ``k`` logits (cross-entropy), each
      constrained separately; for every class column the group means of the logits
      of one call are within ``tolerance``. Probabilities and labels are monotone
      functions of those logits and are not themselves at parity.

    Probability means are certified as the layer certifies its outputs (to 1e-6);
    selection rates exactly, in float64 as ``count / size``.
    {note}

    Parameters
    ----------
    enforce_on : {{"labels", "proba", "logits"}}, default="labels"
        Which output carries the guarantee (table above). Models saved before this
        parameter existed load with ``"logits"``, the behaviour they were fitted with.
    class_weight : dict, "balanced" or None, default=None
        Weights of the classes in the loss, as in scikit-learn's classifiers
        (``"balanced"``: inversely proportional to the class frequencies);
        multiplied with ``sample_weight``.
    calibration_fraction : float in [0, 1) or None, default=0.2
        Error-rate criteria only: the fraction of the fit rows (stratified by group
        and label, seeded by ``random_state``) held out of training to learn the
        per-group thresholds of ``predict``. ``0`` or ``None``: no calibration
        (``predict`` is then the argmax). ``fit(..., calibration_mask=mask)`` chooses
        the rows instead (a boolean array, one value per row, routed like
        ``sensitive_features``); :meth:`calibrate` calibrates on other data.
    calibration_cv : int >= 2 or None, default=None
        Error-rate criteria only: cross-fitted calibration instead of held-out rows.
        That many fold models (stratified by group and label) score the rows they
        did not see; the thresholds are learnt on these out-of-fold scores of every
        row and the net is trained on every row (``calibration_fraction`` is then
        unused). Costs ``calibration_cv`` extra fits; for small data.
    randomize : bool, default=False
        Error-rate criteria only: ``True`` lets each group mix thresholds at random
        (the most accurate randomized rule; the criterion then holds for the
        expected labels on the calibration data).{params}

    Attributes
    ----------
    classes_ : ndarray
    net_, group_labels_, n_features_in_ : see :class:`FairLayerRegressor`
    train_worst_batch_gap_ : float or None
        Error-rate criteria: the largest gap of one training batch's projected
        probabilities (recomputed in NumPy after every batch; per epoch in
        ``net_.history[:, "train_worst_batch_gap"]``). None without groups.
    calibrator_ : :class:`~fairsk.calibration.ErrorRateCalibrator` or None
        Error-rate criteria: the thresholds behind ``predict`` (None: uncalibrated).
    thresholds_ : ndarray or None
        ``calibrator_.thresholds_``: per combination of the groups of every
        attribute (in the order of ``calibrator_.group_labels_``, tuples of group
        codes), ``predict`` is positive when ``predict_proba[:, 1]`` exceeds it
        (NaN for a randomized group).
    calibration_gap_ : float or None
        The gap of ``predict`` on the calibration rows, at most ``tolerance``.
    gap_estimate_, gap_interval_ : float, tuple of float, or None
        The estimated gap of ``predict`` measured on as many new rows (from the
        calibration rows' population) as were calibrated on, and its bootstrap
        interval (95%): estimates, not bounds. Other test sizes:
        ``calibrator_.estimate_gap(n_rows)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fairsk import FairLayerClassifier
    >>> from fairsk.metrics import parity_gap, selection_rate_gap
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3)); s = rng.integers(0, 2, 200)
    >>> y = (X[:, 0] + s > 0.5).astype(int)
    >>> clf = FairLayerClassifier(tolerance=0.1, max_epochs=5, random_state=0, solver="exact")
    >>> clf = clf.fit(X, y, sensitive_features=s)
    >>> selection_rate_gap(clf.predict(X, sensitive_features=s), s) <= 0.1
    True
    >>> parity_gap(clf.predict_proba(X, sensitive_features=s)[:, 1], s) <= 0.1 + 1e-6
    True
    >>> eo = FairLayerClassifier(criterion="equal_opportunity", tolerance=0.05, max_epochs=5, random_state=0,
    ...                          solver="exact").fit(X, y, sensitive_features=s)
    >>> eo.train_worst_batch_gap_ <= 0.05 + 1e-5 and eo.calibration_gap_ <= 0.05
    True
    """.format(table=_ENFORCE_ON_TABLE, note=_GUARANTEE_NOTE, params=_COMMON_PARAMETERS.format(
        criterion="""{"ecp", "equal_opportunity", "equalized_odds"}, default="ecp"
        ``"ecp"``: parity of group means (of the logits or of the probabilities,
        by ``enforce_on``); ``bounds`` applies to the logits
        (``enforce_on="logits"`` only: probabilities are kept in ``[0, 1]``).
        ``"equal_opportunity"`` / ``"equalized_odds"`` (binary targets,
        ``enforce_on="labels"``): equal true- (and false-) positive rates. Every
        training batch's probabilities are projected within its true-label strata
        (exact); ``predict`` applies per-group thresholds learnt on held-out
        calibration rows, where the criterion holds; on new data nothing is
        guaranteed and the gap is estimated (``gap_estimate_``,
        ``gap_interval_``). ``predict_proba`` is the body's ``sigmoid`` and
        ``decision_function`` its logit, not projected."""))

    _added_constraints: dict = {
        "criterion": [StrOptions({"ecp", "equal_opportunity", "equalized_odds"})],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "enforce_on": [StrOptions({"labels", "proba", "logits"})],
        "calibration_fraction": [Interval(Real, 0, 1, closed="left"), None],
        "calibration_cv": [Interval(Integral, 2, None, closed="left"), None],
        "randomize": ["boolean"],
    }

    def __init__(self, *, class_weight=None, enforce_on="labels", calibration_fraction=0.2, calibration_cv=None,
                 randomize=False, **params):
        self.class_weight = class_weight
        self.enforce_on = enforce_on
        self.calibration_fraction = calibration_fraction
        self.calibration_cv = calibration_cv
        self.randomize = randomize
        super().__init__(**params)

    # models pickled or saved before ``enforce_on`` existed were logit models; those
    # saved before the error-rate criteria get their defaults
    def __setstate__(self, state):
        defaults = {"enforce_on": "logits", "calibration_fraction": 0.2, "calibration_cv": None, "randomize": False}
        state = {**{k: v for k, v in defaults.items() if k not in state}, **state}
        super().__setstate__(state)

    @classmethod
    def from_fitted_state(cls, params: dict, state: dict, *, module: type | None = None):
        params = dict(params)
        params.setdefault("enforce_on", "logits")
        return super().from_fitted_state(params, state, module=module)

    def fit(self, X, y, sample_weight=None, sensitive_features=None, calibration_mask=None) -> FairLayerClassifier:
        """Train the network through the fairness layer (on its logits or its probabilities).

        With ``criterion="equal_opportunity"`` or ``"equalized_odds"`` and sensitive
        features, the rows of ``calibration_mask`` (a boolean array, one value per
        row; routed like ``sensitive_features``), or else a stratified
        ``calibration_fraction`` of the rows, are held out of training and used to
        fit the per-group thresholds of ``predict`` (:meth:`calibrate`).
        """
        self._validate_params()
        y = _check_target(y, classification=True)
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D for a classifier, got shape {y.shape}")
        check_classification_targets(y)
        classes, codes = np.unique(y, return_inverse=True)
        codes = codes.reshape(-1)
        if len(y) != _num_samples(X):
            raise ValueError(f"X has {_num_samples(X)} rows but y has {len(y)}")
        if self.enforce_on != "logits" and self.bounds is not None:
            raise ValueError(f"bounds apply to logits (enforce_on='logits'); with enforce_on="
                             f"{self.enforce_on!r} the probabilities are kept in [0, 1]")
        if self._label_strata():
            return self._fit_error_rates(X, y, classes, codes, sample_weight, sensitive_features, calibration_mask)
        if calibration_mask is not None:
            raise ValueError(f"calibration_mask is used by criterion='equal_opportunity' or 'equalized_odds' only, "
                             f"not criterion={self.criterion!r}")
        self.classes_ = classes
        return self._fit_codes(X, codes, sample_weight, sensitive_features)

    def _fit_codes(self, X, codes, sample_weight, sensitive_features) -> FairLayerClassifier:
        """Train on the class codes of ``classes_`` (one output column for two classes)."""
        if len(self.classes_) <= 2:
            self.n_outputs_ = 1
            y_train = codes.astype(np.float32).reshape(-1, 1)
            loss = SqueezedBCELoss if self._trains_on_proba() else nn.BCEWithLogitsLoss
            return self._fit(X, y_train, sample_weight, sensitive_features, loss)
        self.n_outputs_ = len(self.classes_)
        loss = SqueezedNLLLoss if self._trains_on_proba() else nn.CrossEntropyLoss
        return self._fit(X, codes.astype(np.int64), sample_weight, sensitive_features, loss)

    def _fit_error_rates(self, X, y, classes, codes, sample_weight, sensitive_features, calibration_mask):
        """Equal opportunity / equalized odds: hold out the calibration rows, train on
        the others through the projection within true-label strata, calibrate."""
        if self.enforce_on != "labels":
            raise ValueError(f"criterion={self.criterion!r} trains on probabilities projected within the true-label "
                             "strata of each batch and calibrates the labels of predict: it needs enforce_on='labels' "
                             f"(got {self.enforce_on!r})")
        _, sensitive = self.split_sensitive(X, sensitive_features)
        n = len(y)
        if sensitive is not None and len(classes) != 2:
            raise ValueError(f"criterion={self.criterion!r} supports binary targets (true- and false-positive "
                             f"rates of one positive class); y has {len(classes)} class(es)")
        if calibration_mask is not None and sensitive is None:
            raise ValueError("calibration_mask was given but no sensitive_features (nor sensitive_columns): "
                             "there is nothing to calibrate")
        if self.calibration_cv is not None and calibration_mask is not None:
            raise ValueError("calibration_mask and calibration_cv exclude each other: calibrate on the masked rows, "
                             "or cross-fit on every row")
        self.classes_ = classes
        if self.calibration_cv is not None and sensitive is not None:
            return _cross_fitted_calibration(self, X, y, codes, sample_weight, sensitive_features, sensitive)
        held = None if sensitive is None else self._calibration_rows(codes, sensitive, n, calibration_mask)
        if held is None:
            self._fit_codes(X, codes, sample_weight, sensitive_features)
            self._read_worst_batch_gap()
            self._set_calibration_attributes(None)
            return self
        from sklearn.utils import _safe_indexing

        train, cal = np.flatnonzero(~held), np.flatnonzero(held)

        def rows(value, idx):
            return None if value is None else _safe_indexing(value, idx)

        weight = None if sample_weight is None else np.asarray(sample_weight)
        if weight is not None and weight.ndim == 0:  # one weight for every row
            weight = np.full(n, float(weight))
        self._fit_codes(rows(X, train), codes[train], rows(weight, train), rows(sensitive_features, train))
        self._read_worst_batch_gap()
        return self.calibrate(rows(X, cal), rows(y, cal), sensitive_features=rows(sensitive_features, cal))

    def _calibration_rows(self, codes: np.ndarray, sensitive, n: int, mask) -> np.ndarray | None:
        """Boolean (n,): the rows held out for calibration (None: no calibration)."""
        if mask is not None:
            m = np.asarray(mask)
            if m.shape != (n,) or m.dtype.kind not in "biu" or not np.isin(m, (0, 1)).all():
                raise ValueError(f"calibration_mask must be a boolean array with one value per row of X ({n}), "
                                 f"got shape {m.shape} and dtype {m.dtype}")
            m = m.astype(bool)
            if m.all() or not m.any():
                raise ValueError("calibration_mask must mark some rows for calibration and leave some for training")
            return m
        if not self.calibration_fraction:
            return None
        # stratified by group (every attribute) and label, so that every group keeps
        # rows of each label on both sides whenever it has two
        strata = _intersections(np.column_stack([GroupEncoder().fit_transform(sensitive, n), codes]))
        rng = np.random.default_rng([self._seed(), 1])
        held = np.zeros(n, dtype=bool)
        for s in np.unique(strata):
            members = np.flatnonzero(strata == s)
            if members.size < 2:
                continue
            k = min(max(int(round(self.calibration_fraction * members.size)), 1), members.size - 1)
            held[rng.permutation(members)[:k]] = True
        return held if held.any() else None

    def _seed(self) -> int:
        return int(np.random.RandomState(self.random_state).randint(2**31 - 1))

    def calibrate(self, X, y, sensitive_features=None) -> FairLayerClassifier:
        """Fit the per-group thresholds of ``predict`` on calibration data (error-rate criteria).

        The thresholds apply to ``predict_proba(X)[:, 1]``; they are the most accurate
        choice of one threshold per group (or, with ``randomize=True``, of a random
        mixture of thresholds per group) whose true- (and, for equalized odds,
        false-) positive rates on these rows are within ``tolerance``
        (:class:`~fairsk.calibration.ErrorRateCalibrator`). Groups are the
        combinations of the attributes' values; a group absent here has no threshold,
        and ``predict`` refuses its rows. Called by ``fit`` on the held-out rows;
        call it again to calibrate on other data (e.g. a fresh sample of the
        population the model will serve). Returns self.
        """
        check_is_fitted(self, "net_")
        if not self._label_strata():
            raise ValueError(f"calibrate applies to criterion='equal_opportunity' or 'equalized_odds', "
                             f"not {self.criterion!r}")
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D, got shape {y.shape}")
        out, groups = self._outputs_and_groups(X, sensitive_features)
        if groups is None:
            raise ValueError("calibrate needs sensitive_features (or sensitive_columns)")
        if len(y) != out.shape[0]:
            raise ValueError(f"X has {out.shape[0]} rows but y has {len(y)}")
        unknown = sorted({str(v) for v in np.unique(y)} - {str(c) for c in self.classes_})
        if unknown:
            raise ValueError(f"y holds labels {unknown} that are not among the classes seen in fit")
        positive = np.isin(y, self.classes_[1:]).astype(int)
        if positive.min() == positive.max():
            raise ValueError("the calibration rows hold a single class: thresholds on error rates need rows of both "
                             "classes (use more calibration rows, or a larger calibration_fraction)")
        calibrator = ErrorRateCalibrator(self.criterion, float(self.tolerance), randomize=self.randomize,
                                         pos_label=1, random_state=self._seed())
        self._set_calibration_attributes(calibrator.fit(out[:, 0], positive, groups))
        return self

    def _set_calibration_attributes(self, calibrator) -> None:
        """The fitted attributes read off the calibrator (None: uncalibrated)."""
        self.calibrator_ = calibrator
        self.thresholds_ = None if calibrator is None else calibrator.thresholds_
        self.calibration_gap_ = None if calibrator is None else calibrator.calibration_gap_
        self.gap_estimate_ = None if calibrator is None else calibrator.gap_estimate_
        self.gap_interval_ = None if calibrator is None else calibrator.gap_interval_

    def _read_worst_batch_gap(self) -> None:
        """``train_worst_batch_gap_`` from the epochs' records (None: no batch had groups)."""
        worst = [e["train_worst_batch_gap"] for e in self.net_.history if "train_worst_batch_gap" in e]
        self.train_worst_batch_gap_ = float(max(worst)) if worst else None

    # -- hooks --------------------------------------------------------------------
    def _on_proba(self) -> bool:
        """Whether the outputs are (fair) probabilities rather than logits."""
        return self.enforce_on != "logits"

    def _trains_on_proba(self) -> bool:
        """Whether the net is trained on (projected) probabilities; the Projection
        baseline trains the unconstrained net on its logits instead."""
        return self._on_proba()

    def _callbacks(self) -> list:
        callbacks = super()._callbacks()
        for _, callback in callbacks:
            if isinstance(callback, EpochFairness) and self._trains_on_proba():
                callback.threshold = 0.5  # train_acc of probabilities
        if self._label_strata():
            callbacks.append(("worst_batch_gap", WorstBatchGap(self.criterion)))
        return callbacks

    def _proba_layer(self, solver: str | None = None) -> FairnessLayer:
        return FairnessLayer(self.criterion, self.tolerance, solver or self.solver, (0.0, 1.0))

    def _training_module(self, body: nn.Module) -> nn.Module:
        if self._label_strata():
            layer = ErrorRateLayer(self._criterion.name, tolerance=self.tolerance, bounds=(0.0, 1.0),
                                   solver=self.solver)
            return ErrorRateModule(body, layer)
        if self._trains_on_proba():
            return ProbaModule(body, self._proba_layer())
        return super()._training_module(body)

    def _fair_output(self, z: torch.Tensor, groups: np.ndarray | None) -> torch.Tensor:
        """Logits: as the base class. Probabilities: ``sigmoid(z)`` projected with the
        box ``[0, 1]`` over the whole call (exact solver). Error-rate criteria:
        ``sigmoid(z)`` (the labels are unknown: nothing to project on)."""
        if not self._on_proba():
            return super()._fair_output(z, groups)
        if groups is None or self._label_strata():
            return fair_probabilities(z, None, None, 0)
        groups = torch.as_tensor(groups, device=z.device)
        out = fair_probabilities(z, groups, self._proba_layer(solver="exact"), PREDICT_SWEEPS)
        if out.shape[1] > 1:  # the layer certifies one column; the simplex method is checked here
            check_columns(out.cpu().numpy(), groups.cpu().numpy(), float(self.tolerance))
        return out

    def _fair_labels(self) -> bool:
        """Whether ``predict`` returns labels at parity (the baselines' penalty does not)."""
        return self.enforce_on == "labels" and self._predicts_with_groups()

    def _training_weight(self, sample_weight, X_feat, y_train):
        weight = super()._training_weight(sample_weight, X_feat, y_train)
        if self.class_weight is None:
            return weight
        y = self.classes_[np.asarray(y_train).reshape(-1).astype(np.int64)]  # the class codes
        if isinstance(self.class_weight, dict):
            unknown = [c for c in self.class_weight if c not in set(self.classes_.tolist())]
            if unknown:
                raise ValueError(f"class_weight has classes {unknown} that are not in y")
        by_class = compute_sample_weight(self.class_weight, y).astype(np.float32)
        return by_class if weight is None else weight * by_class

    # -- prediction -----------------------------------------------------------------
    def decision_function(self, X, sensitive_features=None) -> np.ndarray:
        """Scores of all rows of the call: the projected logits (``"logits"``, the
        guaranteed output), or the logits of the fair probabilities (same ranking
        as ``predict_proba``)."""
        out = self._outputs(X, sensitive_features)
        if self._on_proba():
            if out.shape[1] == 1:
                return logit(out[:, 0])
            return np.log(np.maximum(out, np.finfo(np.float64).tiny))  # log-probabilities
        return self.format_output(out)

    def format_output(self, out: np.ndarray) -> np.ndarray:
        return out[:, 0] if out.shape[1] == 1 else out

    def labels_from_scores(self, scores: np.ndarray) -> np.ndarray:
        """Class labels of logits (n, c) (the argmax; one column: positive above 0)."""
        if scores.shape[1] == 1:
            return self.classes_[(scores[:, 0] > 0).astype(int)]
        return self.classes_[np.argmax(scores, 1)]

    def _proba_of(self, out: np.ndarray) -> np.ndarray:
        """Class probabilities (n, n_classes) from the fair outputs of one call."""
        if self.n_outputs_ == 1:
            if len(self.classes_) == 1:
                return np.ones((out.shape[0], 1))
            p = out[:, 0] if self._on_proba() else torch.sigmoid(torch.as_tensor(out[:, 0])).numpy()
            return np.stack([1 - p, p], 1)
        return out if self._on_proba() else torch.softmax(torch.as_tensor(out), 1).numpy()

    def predict_proba(self, X, sensitive_features=None) -> np.ndarray:
        """Class probabilities of all rows of the call: projected (group means within
        ``tolerance``) with ``"labels"`` and ``"proba"``, from the projected logits
        with ``"logits"``."""
        return self._proba_of(self._outputs(X, sensitive_features))

    def predict(self, X, sensitive_features=None) -> np.ndarray:
        """Class labels of all rows of the call: labels at parity (``"labels"``: per-group
        selection rates within ``tolerance``), or the argmax of ``predict_proba``."""
        out, groups = self._outputs_and_groups(X, sensitive_features)
        proba = self._proba_of(out)
        if self._label_strata():
            if groups is None or getattr(self, "calibrator_", None) is None:
                return self.classes_[np.argmax(proba, 1)]
            return self.classes_[self.calibrator_.predict(out[:, 0], groups).astype(np.int64)]
        if groups is None or len(self.classes_) < 2 or not self._fair_labels():
            return self.classes_[np.argmax(proba, 1)]
        return self.classes_[fair_labels(proba[:, 1] if proba.shape[1] == 2 else proba, groups, self.tolerance)]

    def score(self, X, y, sample_weight=None, sensitive_features=None) -> float:
        """Accuracy of ``predict``'s labels."""
        from sklearn.metrics import accuracy_score

        return self._score(accuracy_score, X, y, sample_weight, sensitive_features)



# -- helpers --------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """A NumPy scalar as the Python scalar it holds (JSON-able)."""
    return value.item() if isinstance(value, np.generic) else value


def _dense(X):
    """Sparse input (e.g. one-hot encoded) is densified: the body is a dense torch net."""
    return X.toarray() if hasattr(X, "toarray") else X


def _check_target(y, classification: bool = False) -> np.ndarray:
    if y is None:
        raise ValueError("requires y to be passed, but the target y is None")
    y = np.asarray(y)
    if y.ndim == 0 or y.shape[0] == 0:
        raise ValueError("y must be a non-empty 1-D or 2-D array")
    if y.ndim > 2:
        raise ValueError(f"y must be 1-D or 2-D, got shape {y.shape}")
    if y.ndim == 2 and y.shape[1] == 1 and classification:
        from sklearn.exceptions import DataConversionWarning

        warnings.warn("A column-vector y was passed when a 1d array was expected", DataConversionWarning,
                      stacklevel=3)
        y = y[:, 0]
    if y.dtype.kind in "fc" or not classification:
        try:
            yf = y.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError("y must be numeric") from None
        if not np.all(np.isfinite(yf)):
            raise ValueError("Input y contains NaN or infinity.")
    elif y.dtype == object and pd.isna(pd.Series(y.ravel())).any():
        raise ValueError("Input y contains NaN.")
    return y
