"""fairsk: deep models with guaranteed group fairness, as scikit-learn estimators."""

from .estimators import FairLayerClassifier, FairLayerRegressor, SingleGroupWarning
from .layer import FairnessLayer
from .routing import request_sensitive
from .streaming import StreamingFairPredictor

__version__ = "0.1.0"

__all__ = ["FairnessLayer", "FairLayerRegressor", "FairLayerClassifier", "StreamingFairPredictor",
           "SingleGroupWarning", "request_sensitive", "__version__"]
