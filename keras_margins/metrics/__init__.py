"""Metrics: margin monitors (Keras metrics), retrieval and verification scores."""

from keras_margins.metrics.margin_metrics import MinSampleMargin, SampleMargin
