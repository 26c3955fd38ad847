"""``LastValue``: a metric that reports the last value it was given."""

import keras
from keras import ops


class LastValue(keras.metrics.Metric):
    """A scalar metric holding the last value passed to ``update_state``.

    How values computed inside a training step (a loss ensemble's coefficients c_k, a loss's
    ``logs()``) reach the fit/evaluate logs on every backend: on JAX only metric variables are
    passed to ``compute_metrics``. Package-internal (used by ``km.models.MarginModel`` and
    ``km.losses.LossEnsemble``); not exported from ``km.metrics``.

    Args:
        name: the log key.
    """

    def __init__(self, name):
        super().__init__(name=name, dtype="float32")
        self.value = self.add_variable(shape=(), initializer="zeros", name="value")

    def update_state(self, value):
        self.value.assign(ops.cast(value, "float32"))

    def result(self):
        return ops.convert_to_tensor(self.value)
