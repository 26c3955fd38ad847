"""Margin monitors as Keras metrics (Zhou et al., ICLR 2022)."""

import keras
from keras import ops

from keras_margins.ops import sample_margin


@keras.saving.register_keras_serializable(package="keras_margins")
class SampleMargin(keras.metrics.Mean):
    """Mean sample margin γ = cos θ_y − max_{j≠y} cos θ_j over the data seen.

    Use on a cosine head's output (LargestMarginHead, PEDCCHead). Positive means correctly
    classified with room to spare; the maximum is 2. A label outside [0, C) raises eagerly
    and makes the result NaN under ``jit_compile``.

    Args:
        name: metric name (default ``"sample_margin"``).
        dtype: dtype of the running mean (default ``"float32"``).

    Example:

    >>> import numpy as np, keras_margins as km
    >>> m = km.metrics.SampleMargin()
    >>> m.update_state([0, 1], np.array([[0.9, 0.1, -0.2], [0.7, 0.4, 0.2]]))
    >>> print(round(float(m.result()), 4))   # mean of 0.8 and -0.3
    0.25

    Usage with ``compile()``:

        model.compile("adam", loss=km.losses.LMSoftmax(), metrics=[km.metrics.SampleMargin()])

    Reference:
        - Zhou et al., 2022. [Learning Towards the Largest Margins](https://arxiv.org/abs/2206.11589), ICLR 2022 (sample margin).
    """

    def __init__(self, name="sample_margin", dtype="float32"):
        super().__init__(name=name, dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(sample_margin(y_true, y_pred), sample_weight=sample_weight)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


@keras.saving.register_keras_serializable(package="keras_margins")
class MinSampleMargin(keras.metrics.Metric):
    """Smallest sample margin min_i γ_i over the data seen (the paper's dataset margin).

    NaN (until ``reset_state``) once a batch had an invalid label under ``jit_compile``.

    Args:
        name: metric name (default ``"min_sample_margin"``).
        dtype: dtype of the result (default ``"float32"``).

    Example:

    >>> import numpy as np, keras_margins as km
    >>> m = km.metrics.MinSampleMargin()
    >>> m.update_state([0, 1], np.array([[0.9, 0.1, -0.2], [0.7, 0.4, 0.2]]))
    >>> print(round(float(m.result()), 4))
    -0.3

    Usage with ``compile()``:

        model.compile("adam", loss=km.losses.LMSoftmax(), metrics=[km.metrics.MinSampleMargin()])

    Reference:
        - Zhou et al., 2022. [Learning Towards the Largest Margins](https://arxiv.org/abs/2206.11589), ICLR 2022 (sample margin of a data set).
    """

    def __init__(self, name="min_sample_margin", dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        self.minimum = self.add_variable(shape=(), initializer="zeros", name="minimum")
        self.seen = self.add_variable(shape=(), initializer="zeros", name="seen")

    def update_state(self, y_true, y_pred, sample_weight=None):
        margins = sample_margin(y_true, y_pred)
        batch_min = ops.min(margins)
        current = ops.where(self.seen > 0, ops.minimum(self.minimum, batch_min), batch_min)
        # A NaN margin (an invalid label under jit_compile) must stick: XLA's min on TF
        # skips NaN, so propagate it explicitly.
        poisoned = ops.logical_or(ops.any(ops.isnan(margins)), ops.isnan(self.minimum))
        current = ops.where(poisoned, float("nan"), current)
        self.minimum.assign(ops.cast(current, self.dtype))
        self.seen.assign(1.0)

    def result(self):
        # ``.value`` honours a StatelessScope (stateless_result, the JAX trainer); converting
        # the variable itself would read the stored value on TensorFlow.
        return ops.convert_to_tensor(self.minimum.value)

    def reset_state(self):
        self.minimum.assign(0.0)
        self.seen.assign(0.0)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}
