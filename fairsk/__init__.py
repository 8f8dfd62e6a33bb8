"""fairsk: deep models with guaranteed group fairness, as scikit-learn estimators."""

from .estimators import FairLayerClassifier, FairLayerRegressor
from .layer import FairnessLayer

__version__ = "0.1.0"

__all__ = ["FairnessLayer", "FairLayerRegressor", "FairLayerClassifier", "__version__"]
