"""fairsk: deep models with guaranteed group fairness, as scikit-learn estimators."""

from .estimators import FairLayerClassifier, FairLayerRegressor
from .layer import FairnessLayer
from .streaming import StreamingFairPredictor

__version__ = "0.1.0"

__all__ = ["FairnessLayer", "FairLayerRegressor", "FairLayerClassifier", "StreamingFairPredictor", "__version__"]
