"""What the in-memory metrics (:mod:`fairsk.metrics`) and those over Dask
(:mod:`fairsk.dask`) share: how predictions are read, and what a per-group report
shows of a calibrated model. Kept apart from both so that neither imports the other."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def as_2d_float(y: Any, name: str) -> np.ndarray:
    """``y`` as finite float64 values (n, c); a clear error otherwise."""
    if hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    arr = np.asarray(y, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 1-D or 2-D, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def read_labels(y_pred: Any) -> tuple[np.ndarray, bool]:
    """One label per row, and whether they were Python objects (then compared as
    strings, so that ``pos_label`` must be too); missing labels are an error."""
    if hasattr(y_pred, "detach"):
        y_pred = y_pred.detach().cpu().numpy()
    labels = np.asarray(y_pred)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(f"y_pred must hold one label per row, got shape {labels.shape}")
    was_object = labels.dtype == object
    if was_object and labels.size:
        if pd.isna(labels).any():
            raise ValueError("y_pred contains missing values")
        labels = labels.astype(str)
    return labels, was_object


def calibration_attrs(estimator) -> dict:
    """The estimates of a calibrated error-rate model, for the report's ``attrs``."""
    return {
        "criterion": estimator.criterion,
        "gap_estimate": float(estimator.gap_estimate_),
        "gap_interval": tuple(float(v) for v in estimator.gap_interval_),
        "calibration_gap": float(estimator.calibration_gap_),
        "train_worst_batch_gap": getattr(estimator, "train_worst_batch_gap_", None),
    }
