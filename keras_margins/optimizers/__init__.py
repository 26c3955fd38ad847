"""Optimizers of keras_margins."""

from keras_margins.optimizers.layer_lr_adam import LayerLRAdam
