"""FairLayerRegressor and FairLayerClassifier: skorch nets ending in the fairness layer.

One path of data: ``fit(X, y, sensitive_features=...)`` -> :meth:`_split_sensitive`
(groups from the argument or from ``sensitive_columns``) -> :meth:`_encode_groups`
(labels -> integer codes, learnt in fit) -> a skorch :class:`~fairsk._net.FairNet`
whose module is body + :class:`~fairsk.FairnessLayer`, trained on stratified batches.
At prediction the body's raw outputs for *all* rows of the call are projected at once
(:meth:`_project`), so the guarantee holds over the whole call.
"""

from __future__ import annotations

import copy
import warnings
from numbers import Integral, Real

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, _num_samples, check_is_fitted, validate_data
from skorch.callbacks import EarlyStopping
from skorch.dataset import ValidSplit

from ._groups import GroupEncoder
from ._net import FairModule, FairNet, build_body
from .layer import FairnessLayer, validate_layer_params

__all__ = ["FairLayerRegressor", "FairLayerClassifier"]

_PREDICT_CHUNK = 65536


class _FairLayerBase(BaseEstimator):
    # what the layer does where; the baselines (fairsk.baselines) override these
    _layer_in_training = True
    _layer_at_predict = True

    def _penalty_weight(self) -> float:
        return 0.0

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like"],
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
        max_epochs=60,
        lr=0.01,
        batch_size=128,
        early_stopping=False,
        validation_fraction=0.1,
        patience=5,
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
        self.random_state = random_state
        self.verbose = verbose
        self._extra_params = {k: v for k, v in module_params.items() if not k.startswith("module__")}
        for key, value in module_params.items():
            if key.startswith("module__"):
                setattr(self, key, value)

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


    # -- groups ---------------------------------------------------------------------
    def _split_sensitive(self, X):
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

    def _resolve_groups(self, X, sensitive_features):
        X_feat, from_columns = self._split_sensitive(X)
        if from_columns is not None and sensitive_features is not None:
            raise ValueError("pass sensitive_features or set sensitive_columns, not both")
        return X_feat, (from_columns if from_columns is not None else sensitive_features)

    def _encode_groups(self, sensitive, n: int, fit: bool):
        """Integer codes (n, a) with the labels learnt in fit; unseen labels get new codes."""
        if sensitive is None:
            if fit or getattr(self, "group_labels_", None) is not None:
                warnings.warn(
                    f"{type(self).__name__} got no sensitive_features (and no sensitive_columns): "
                    "it behaves as an ordinary unconstrained model",
                    UserWarning,
                    stacklevel=3,
                )
            return None
        if fit:
            encoder = GroupEncoder()
            codes = encoder.fit_transform(sensitive, n)
            self.group_labels_ = encoder.labels_
            return codes
        if self.group_labels_ is None:
            return GroupEncoder().fit_transform(sensitive, n)
        return self._group_encoder().transform(sensitive, n)

    def _group_encoder(self) -> GroupEncoder:
        """The fitted labels as an encoder (unseen labels get codes of their own)."""
        encoder = GroupEncoder(unseen="new")
        encoder.labels_ = [list(a) for a in self.group_labels_]
        return encoder

    # -- the interface streaming, persistence and the scorers use ---------------------
    def split_sensitive(self, X, sensitive_features=None):
        """``(features, sensitive features or None)`` of one call.

        The sensitive features come from the argument or from the columns named by
        ``sensitive_columns`` (passing both is an error); the features are ``X``
        without those columns. Part of the small interface through which
        :class:`~fairsk.StreamingFairPredictor`, :mod:`fairsk.persistence` and the
        scorers talk to an estimator.
        """
        return self._resolve_groups(X, sensitive_features)

    def raw_output(self, X, sensitive_features=None):
        """``(z, sensitive)``: the body's outputs (n, c) in float64 for every row of
        ``X``, before any projection (with the EER offsets learnt in fit), and the
        call's sensitive features (or None)."""
        check_is_fitted(self, "net_")
        X_feat, sensitive = self._resolve_groups(X, sensitive_features)
        X_feat = self._check_features(X_feat)
        z = self._raw(X_feat)
        if sensitive is not None and self.criterion == "eer" and getattr(self, "eer_offsets_", None) is not None:
            groups = self._encode_groups(sensitive, X_feat.shape[0], fit=False)
            z = z + torch.as_tensor(self._eer_offsets(groups))
        return z.numpy(), sensitive

    def _check_features(self, X):
        """validate_data at prediction, with a fast path for a plain float array (a
        stream's one-row calls would otherwise spend most of their time here)."""
        if isinstance(X, np.ndarray) and X.ndim == 2 and X.dtype.kind == "f" and X.shape[1] == self.n_features_in_:
            if not np.isfinite(X).all():
                raise ValueError("Input X contains NaN or infinity.")
            return X
        return _dense(validate_data(self, X, dtype=[np.float64, np.float32], reset=False, accept_sparse=True))

    def format_output(self, out: np.ndarray) -> np.ndarray:
        """Scores (n, c) as this estimator returns them (``predict`` of a regressor,
        ``decision_function`` of a classifier): one column becomes 1-D unless the
        model was fitted on a 2-D target."""
        return out if getattr(self, "_y_2d", False) else out[:, 0]

    # -- fitting --------------------------------------------------------------------
    def _layer(self) -> FairnessLayer:
        return FairnessLayer(self.criterion, self.tolerance, self.solver, self.bounds)

    def _fit(self, X, y_train, sample_weight, sensitive_features, n_outputs, criterion):
        self._validate_params()
        if getattr(self, "_extra_params", None):
            raise ValueError(f"unexpected parameters {sorted(self._extra_params)} (body parameters go in module__*)")
        validate_layer_params(self.criterion, self.tolerance, self.solver, self.bounds)
        X_feat, sensitive = self._resolve_groups(X, sensitive_features)
        X_feat = _dense(validate_data(self, X_feat, dtype=np.float32, reset=True, accept_sparse=True))
        n = X_feat.shape[0]
        groups = self._encode_groups(sensitive, n, fit=True)
        if groups is None:
            self.group_labels_ = None
        weight = None if sample_weight is None else _check_sample_weight(sample_weight, X_feat, dtype=np.float32)
        seed = np.random.RandomState(self.random_state).randint(2**31 - 1)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            body = build_body(
                self.module,
                {k[len("module__"):]: v for k, v in self.get_params().items() if k.startswith("module__")},
                X_feat.shape[1],
                n_outputs,
                self.hidden_layer_sizes,
            )
            callbacks = [("early_stopping", EarlyStopping(patience=self.patience))] if self.early_stopping else []
            self.net_ = FairNet(
                FairModule(body, self._layer()),
                criterion=criterion,
                criterion__reduction="none",
                optimizer=torch.optim.Adam,
                lr=self.lr,
                max_epochs=self.max_epochs,
                batch_size=self.batch_size,
                train_split=ValidSplit(self.validation_fraction, random_state=seed) if self.early_stopping else None,
                callbacks=callbacks,
                iterator_valid__shuffle=False,
                verbose=self.verbose,
                batch_seed=seed,
                penalty=self._penalty_weight(),
            )
            inputs = {"X": X_feat}
            if groups is not None:
                inputs["strata"] = groups  # stratified batches (and the penalty baselines)
                if self._layer_in_training:
                    inputs["groups"] = groups
                    if self.criterion == "eer":
                        inputs["y"] = y_train.astype(np.float32)
            if weight is not None:
                inputs["sample_weight"] = weight
            self.net_.fit(inputs, y_train)
        # predictions run a float64 copy: outputs then do not depend on how many
        # rows one call holds (float32 BLAS blocks differ with the batch shape)
        self.body64_ = copy.deepcopy(self.net_.module_.body).double().eval()
        self.eer_cells_ = self.eer_offsets_ = None
        if self.criterion == "eer" and groups is not None:
            self._fit_eer_offsets(X_feat, y_train, groups)
        return self

    def _fit_eer_offsets(self, X_feat, y_train, groups) -> None:
        """EER needs targets, unknown at prediction: keep instead each cell's (one group
        of every attribute) mean correction when the training set is projected as one
        batch. Applied at prediction, it makes predictions on the training data meet
        the criterion (exactly without a box) and carries the same offsets to new data."""
        z = self._raw(X_feat)
        target = torch.as_tensor(np.asarray(y_train, dtype=np.float64).reshape(len(z), -1))
        projected = self._layer()(z, torch.as_tensor(groups), target)
        cells, inverse = np.unique(groups, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        shift = (projected - z).numpy()
        counts = np.bincount(inverse, minlength=len(cells))[:, None]
        sums = np.stack([np.bincount(inverse, weights=shift[:, j], minlength=len(cells))
                         for j in range(shift.shape[1])], 1)
        self.eer_cells_, self.eer_offsets_ = cells, sums / counts

    def _eer_offsets(self, groups: np.ndarray) -> np.ndarray:
        """Offsets (n, c) of the cells of ``groups``; zero, with a warning, for unseen cells."""
        both = np.concatenate([self.eer_cells_, groups], 0)
        _, inverse = np.unique(both, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        known = {cell: i for i, cell in enumerate(inverse[: len(self.eer_cells_)])}
        rows = np.array([known.get(cell, -1) for cell in inverse[len(self.eer_cells_):]], dtype=np.int64)
        if (rows < 0).any():
            warnings.warn("some combinations of groups were not seen in fit: no EER offset for them", UserWarning,
                          stacklevel=3)
        padded = np.vstack([self.eer_offsets_, np.zeros((1, self.eer_offsets_.shape[1]))])
        return padded[rows]

    # -- prediction -----------------------------------------------------------------
    def _raw(self, X_feat) -> torch.Tensor:
        """The body's outputs for all rows, in float64 (no projection)."""
        body = self.body64_
        outs = []
        X64 = np.asarray(X_feat, dtype=np.float64)
        with torch.no_grad():
            for start in range(0, X64.shape[0], _PREDICT_CHUNK):
                outs.append(body(torch.as_tensor(X64[start : start + _PREDICT_CHUNK])))
        if not outs:
            return torch.zeros((0, self.n_outputs_), dtype=torch.float64)
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        return out.reshape(X_feat.shape[0], -1)

    def _project(self, X, sensitive_features) -> np.ndarray:
        """Raw outputs of the whole call, projected at once onto the fair set."""
        check_is_fitted(self, "net_")
        X_feat, sensitive = self._resolve_groups(X, sensitive_features)
        X_feat = _dense(validate_data(self, X_feat, dtype=[np.float64, np.float32], reset=False, accept_sparse=True))
        z = self._raw(X_feat)
        groups = self._encode_groups(sensitive, X_feat.shape[0], fit=False)
        if self.criterion == "eer" and groups is not None and getattr(self, "eer_offsets_", None) is not None:
            z = z + torch.as_tensor(self._eer_offsets(groups))
        if groups is None or self.criterion == "eer" or not self._layer_at_predict:
            # eer needs the targets: the layer itself acts in training only
            out = z if self.bounds is None else z.clamp(min=self.bounds[0], max=self.bounds[1])
        else:
            out = self._layer()(z, torch.as_tensor(groups))
        return out.numpy()

    def _score(self, metric, X, y, sample_weight, sensitive_features) -> float:
        pred = self.predict(X, sensitive_features=sensitive_features)
        return float(metric(y, pred, sample_weight=sample_weight))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        tags.target_tags.multi_output = isinstance(self, RegressorMixin)
        tags.input_tags.sparse = True  # densified (the body is a dense torch net)
        return tags


class FairLayerRegressor(RegressorMixin, _FairLayerBase):
    """Neural network regressor whose last module is the fairness layer.

    The network (an MLP, or ``module=``) is trained *through* the projection onto
    the set where group means are at parity, on stratified mini-batches.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(64,)
        Widths of the default MLP body's hidden layers.
    module : torch.nn.Module class, default=None
        A custom body; its parameters go in ``module__*`` keyword arguments, and it
        receives ``n_features_in`` and ``n_outputs`` when its signature has them.
    criterion : {"ecp", "eer"}, default="ecp"
        See :class:`~fairsk.FairnessLayer`. ``"eer"`` needs the targets, so the layer
        acts in training; ``predict`` adds to the body's outputs each cell's (one
        group of every attribute) mean correction on the training set, so that
        predictions on the training data meet the criterion (exactly, without a box).
        New data get the same offsets; nothing is guaranteed there.
    tolerance : float, default=0.01
        Allowed gap between group means.
    sensitive_columns : str, int or list, default=None
        Columns of ``X`` holding the sensitive features (they are then not used as
        features). Otherwise pass ``sensitive_features`` to each method.
    solver : {"qpth", "exact"}, default="qpth"
    bounds : tuple (lb, ub), default=None
        Optional box on the outputs.
    max_epochs, lr, batch_size : int, float, int
        Training length, Adam's learning rate, mini-batch size.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` and stop after ``patience`` epochs without
        improvement of the validation loss.
    validation_fraction : float, default=0.1
    patience : int, default=5
    random_state : int, RandomState or None, default=None
        Seeds the weights and the batches: equal seeds give equal fits.
    verbose : int, default=0
        1 prints skorch's table of epochs.

    Attributes
    ----------
    net_ : skorch.NeuralNet
        The trained net; ``net_.module_.body`` and ``net_.module_.layer``.
    group_labels_ : list of arrays or None
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
    """

    def fit(self, X, y, sample_weight=None, sensitive_features=None) -> FairLayerRegressor:
        """Train the network through the fairness layer."""
        y = _check_target(y)
        self._y_2d = y.ndim == 2
        y_train = y.reshape(len(y), -1).astype(np.float32)
        self.n_outputs_ = y_train.shape[1]
        if len(y_train) != _n_rows(X):
            raise ValueError(f"X has {_n_rows(X)} rows but y has {len(y_train)}")
        return self._fit(X, y_train, sample_weight, sensitive_features, self.n_outputs_, torch.nn.MSELoss)

    def predict(self, X, sensitive_features=None) -> np.ndarray:
        """Predictions of all rows, projected together: the call's group means meet the criterion."""
        out = self._project(X, sensitive_features)
        return out if self._y_2d else out[:, 0]

    def score(self, X, y, sample_weight=None, sensitive_features=None) -> float:
        """R^2 of the (projected) predictions."""
        from sklearn.metrics import r2_score

        return self._score(r2_score, X, y, sample_weight, sensitive_features)


class FairLayerClassifier(ClassifierMixin, _FairLayerBase):
    """Neural network classifier whose last module is the fairness layer (on logits).

    Binary targets use one logit (binary cross-entropy); ``k > 2`` classes use ``k``
    logits (cross-entropy), each constrained separately. The guarantee is on the
    logits of ``decision_function`` (as in the paper): for every class column, the
    group means of the logits of one call are within ``tolerance``. Probabilities
    and labels are monotone functions of those logits and are not themselves
    guaranteed to be at parity.

    Parameters are those of :class:`FairLayerRegressor` (``criterion`` must be
    ``"ecp"``; ``bounds`` applies to the logits).

    Attributes
    ----------
    classes_ : ndarray
    net_, group_labels_, n_features_in_ : see :class:`FairLayerRegressor`

    Examples
    --------
    >>> import numpy as np
    >>> from fairsk import FairLayerClassifier
    >>> from fairsk.metrics import parity_gap
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3)); s = rng.integers(0, 2, 200)
    >>> y = (X[:, 0] + s > 0.5).astype(int)
    >>> clf = FairLayerClassifier(tolerance=0.1, max_epochs=5, random_state=0, solver="exact")
    >>> clf = clf.fit(X, y, sensitive_features=s)
    >>> parity_gap(clf.decision_function(X, sensitive_features=s), s) <= 0.1 + 1e-6
    True
    """

    def fit(self, X, y, sample_weight=None, sensitive_features=None) -> FairLayerClassifier:
        """Train the network through the fairness layer (on its logits)."""
        if self.criterion != "ecp":
            raise ValueError("FairLayerClassifier supports criterion='ecp' only (the paper's logit parity)")
        y = _check_target(y, classification=True)
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D for a classifier, got shape {y.shape}")
        check_classification_targets(y)
        self._encoder = LabelEncoder().fit(y)
        self.classes_ = self._encoder.classes_
        if len(y) != _n_rows(X):
            raise ValueError(f"X has {_n_rows(X)} rows but y has {len(y)}")
        codes = self._encoder.transform(y)
        if len(self.classes_) <= 2:
            self.n_outputs_ = 1
            y_train = codes.astype(np.float32).reshape(-1, 1)
            return self._fit(X, y_train, sample_weight, sensitive_features, 1, torch.nn.BCEWithLogitsLoss)
        self.n_outputs_ = len(self.classes_)
        return self._fit(X, codes.astype(np.int64), sample_weight, sensitive_features, self.n_outputs_,
                         torch.nn.CrossEntropyLoss)

    def decision_function(self, X, sensitive_features=None) -> np.ndarray:
        """Projected logits of all rows of the call (the guaranteed output)."""
        return self.format_output(self._project(X, sensitive_features))

    def format_output(self, out: np.ndarray) -> np.ndarray:
        return out[:, 0] if out.shape[1] == 1 else out

    def labels_from_scores(self, scores: np.ndarray) -> np.ndarray:
        """Class labels of logits (n, c) (the argmax; one column: positive above 0)."""
        if scores.shape[1] == 1:
            return self.classes_[(scores[:, 0] > 0).astype(int)]
        return self.classes_[np.argmax(scores, 1)]

    def predict_proba(self, X, sensitive_features=None) -> np.ndarray:
        """Class probabilities from the projected logits."""
        logits = torch.as_tensor(self._project(X, sensitive_features))
        if self.n_outputs_ == 1:
            if len(self.classes_) == 1:
                return np.ones((logits.shape[0], 1))
            p = torch.sigmoid(logits[:, 0]).numpy()
            return np.stack([1 - p, p], 1)
        return torch.softmax(logits, 1).numpy()

    def predict(self, X, sensitive_features=None) -> np.ndarray:
        """Class labels from the projected logits."""
        proba = self.predict_proba(X, sensitive_features)
        return self.classes_[np.argmax(proba, 1)]

    def score(self, X, y, sample_weight=None, sensitive_features=None) -> float:
        """Accuracy of the labels from the projected logits."""
        from sklearn.metrics import accuracy_score

        return self._score(accuracy_score, X, y, sample_weight, sensitive_features)


def _dense(X):
    """Sparse input (e.g. one-hot encoded) is densified: the body is a dense torch net."""
    return X.toarray() if hasattr(X, "toarray") else X


def _n_rows(X) -> int:
    return _num_samples(X)


def _check_target(y, classification: bool = False) -> np.ndarray:
    if y is None:
        raise ValueError("requires y to be passed, but the target y is None")
    y = np.asarray(y)
    if y.ndim == 0 or y.shape[0] == 0:
        raise ValueError("y must be a non-empty 1-D or 2-D array")
    if y.ndim > 2:
        raise ValueError(f"y must be 1-D or 2-D, got shape {y.shape}")
    if y.ndim == 2 and y.shape[1] == 1 and classification:
        warnings.warn("A column-vector y was passed when a 1d array was expected", _data_conversion_warning(),
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


def _data_conversion_warning():
    from sklearn.exceptions import DataConversionWarning

    return DataConversionWarning
