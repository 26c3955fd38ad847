"""Metrics: margin monitors (Keras metrics), retrieval, verification and long-tailed scores."""

from keras_margins.metrics.group_accuracy import group_accuracy
from keras_margins.metrics.margin_metrics import MinSampleMargin, SampleMargin
from keras_margins.metrics.open_set import open_set_identification, tar_at_far, threshold_at_far
from keras_margins.metrics.retrieval import retrieval_scores
from keras_margins.metrics.verification import verification_scores
