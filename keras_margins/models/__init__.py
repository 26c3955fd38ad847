"""Task models: a backbone plus a head, for losses that need more than class scores."""

from keras_margins.models.ensemble_model import EnsembleModel
from keras_margins.models.margin_model import MarginModel
