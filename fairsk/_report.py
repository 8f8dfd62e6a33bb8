"""What a per-group report shows of a model, shared by the in-memory and the Dask
:func:`~fairsk.metrics.fairness_report`."""

from __future__ import annotations


def calibration_attrs(estimator) -> dict:
    """The estimates of a calibrated error-rate model, for the report's ``attrs``."""
    return {
        "criterion": estimator.criterion,
        "gap_estimate": float(estimator.gap_estimate_),
        "gap_interval": tuple(float(v) for v in estimator.gap_interval_),
        "calibration_gap": float(estimator.calibration_gap_),
        "train_worst_batch_gap": getattr(estimator, "train_worst_batch_gap_", None),
    }
