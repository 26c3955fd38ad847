"""Metrics: margin monitors (Keras metrics), retrieval and verification scores."""

from keras_margins.metrics.margin_metrics import MinSampleMargin, SampleMargin
from keras_margins.metrics.retrieval import retrieval_scores
from keras_margins.metrics.verification import verification_scores
