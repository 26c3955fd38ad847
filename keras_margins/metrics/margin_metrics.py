"""Margin monitors as Keras metrics (Zhou et al. 2022, SPEC §1.1)."""

import keras
from keras import ops

from keras_margins.ops import sample_margin


@keras.saving.register_keras_serializable(package="keras_margins")
class SampleMargin(keras.metrics.Mean):
    """Mean sample margin γ = cos θ_y − max_{j≠y} cos θ_j over the data seen (SPEC §1.1).

    Use on a cosine head's output (LargestMarginHead, PEDCCHead). Positive means correctly
    classified with room to spare; the maximum is 2.

    Example:
        >>> model.compile("adam", loss=km.losses.LMSoftmax(), metrics=[km.metrics.SampleMargin()])
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

    Example:
        >>> model.compile("adam", loss=km.losses.LMSoftmax(), metrics=[km.metrics.MinSampleMargin()])
    """

    def __init__(self, name="min_sample_margin", dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        self.minimum = self.add_variable(shape=(), initializer="zeros", name="minimum")
        self.seen = self.add_variable(shape=(), initializer="zeros", name="seen")

    def update_state(self, y_true, y_pred, sample_weight=None):
        batch_min = ops.min(sample_margin(y_true, y_pred))
        current = ops.where(self.seen > 0, ops.minimum(self.minimum, batch_min), batch_min)
        self.minimum.assign(ops.cast(current, self.dtype))
        self.seen.assign(1.0)

    def result(self):
        return ops.convert_to_tensor(self.minimum)

    def reset_state(self):
        self.minimum.assign(0.0)
        self.seen.assign(0.0)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}
