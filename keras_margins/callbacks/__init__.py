"""Keras callbacks of keras_margins."""

from keras_margins.callbacks.margin_monitor import MarginMonitor
from keras_margins.callbacks.pod_delta import PODDelta
from keras_margins.callbacks.retrieval_evaluation import RetrievalEvaluation
