"""Task models and model surgery: a backbone plus a head, and the embedding part of a model."""

from keras_margins.models.backbones import (
    BACKBONES,
    ImagePreprocessing,
    image_backbone,
    small_cnn_backbone,
)
from keras_margins.models.embedding import embedding_model, mlp_backbone, split_head
from keras_margins.models.ensemble_model import EnsembleModel
from keras_margins.models.margin_model import MarginModel
