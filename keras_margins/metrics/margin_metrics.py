"""Margin monitors as Keras metrics (Zhou et al., ICLR 2022)."""

import keras
import numpy as np
from keras import ops

from keras_margins._arguments import reject_unknown
from keras_margins.ops import sample_margin
from keras_margins.ops._validation import concrete_value


@keras.saving.register_keras_serializable(package="keras_margins")
class SampleMargin(keras.metrics.Mean):
    """Mean sample margin γ = cos θ_y − max_{j≠y} cos θ_j over the data seen.

    Use on a cosine head's output (LargestMarginHead, PEDCCHead). Positive means correctly
    classified with room to spare; the maximum is 2. A label outside [0, C) raises eagerly
    and makes the result NaN under ``jit_compile``.

    Args:
        name: metric name (default ``"sample_margin"``).
        dtype: dtype of the running mean (default ``"float32"``).
        **kwargs: none accepted; an unknown keyword is a ``TypeError`` naming the closest
            valid argument.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> m = km.metrics.SampleMargin()
    >>> m.update_state([0, 1], np.array([[0.9, 0.1, -0.2], [0.7, 0.4, 0.2]]))
    >>> print(round(float(m.result()), 4))   # mean of 0.8 and -0.3
    0.25

    Usage with ``compile()``:

        model.compile("adam", loss=km.losses.LMSoftmax(), metrics=[km.metrics.SampleMargin()])

    Reference:
        - Zhou et al., 2022. [Learning Towards the Largest Margins](https://arxiv.org/abs/2206.11589), ICLR
          2022 (sample margin).
    """

    def __init__(self, name="sample_margin", dtype="float32", **kwargs):
        reject_unknown(type(self), kwargs, accepted=())
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
        **kwargs: none accepted; an unknown keyword is a ``TypeError`` naming the closest
            valid argument.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> m = km.metrics.MinSampleMargin()
    >>> m.update_state([0, 1], np.array([[0.9, 0.1, -0.2], [0.7, 0.4, 0.2]]))
    >>> print(round(float(m.result()), 4))
    -0.3

    Usage with ``compile()``:

        model.compile("adam", loss=km.losses.LMSoftmax(), metrics=[km.metrics.MinSampleMargin()])

    Reference:
        - Zhou et al., 2022. [Learning Towards the Largest Margins](https://arxiv.org/abs/2206.11589), ICLR
          2022 (sample margin of a data set).
    """

    def __init__(self, name="min_sample_margin", dtype="float32", **kwargs):
        reject_unknown(type(self), kwargs, accepted=())
        super().__init__(name=name, dtype=dtype)
        self.minimum = self.add_variable(shape=(), initializer="zeros", name="minimum")
        self.seen = self.add_variable(shape=(), initializer="zeros", name="seen")

    def update_state(self, y_true, y_pred, sample_weight=None):
        """``sample_weight`` (N,) or (N, 1), >= 0: samples of weight 0 are left out of the
        minimum, every positive weight counts alike (a minimum has nothing to weigh)."""
        margins = sample_margin(y_true, y_pred)
        if sample_weight is None:
            included = ops.ones_like(margins, dtype="bool")
        else:
            included = _included_samples(sample_weight, margins)
        any_included = ops.any(included)
        minimum, seen = ops.convert_to_tensor(self.minimum.value), ops.convert_to_tensor(self.seen.value)
        batch_min = ops.min(ops.where(included, margins, float("inf")))
        current = ops.where(seen > 0, ops.minimum(minimum, batch_min), batch_min)
        current = ops.where(any_included, current, minimum)  # an all-zero-weight batch
        # A NaN margin (an invalid label under jit_compile) must stick: XLA's min on TF
        # skips NaN, so propagate it explicitly.
        nan_margin = ops.any(ops.logical_and(ops.isnan(margins), included))
        poisoned = ops.logical_or(nan_margin, ops.isnan(minimum))
        current = ops.where(poisoned, float("nan"), current)
        self.minimum.assign(ops.cast(current, self.dtype))
        self.seen.assign(ops.cast(ops.where(any_included, 1.0, seen), self.seen.dtype))

    def result(self):
        # ``.value`` honours a StatelessScope (stateless_result, the JAX trainer); converting
        # the variable itself would read the stored value on TensorFlow.
        return ops.convert_to_tensor(self.minimum.value)

    def reset_state(self):
        self.minimum.assign(0.0)
        self.seen.assign(0.0)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


def _included_samples(sample_weight, margins):
    """Boolean (N,) mask ``sample_weight > 0``; ValueError for a bad shape or, when the values
    can be read (eager), negative or NaN weights."""
    weights = ops.convert_to_tensor(sample_weight, dtype="float32")
    if len(weights.shape) == 2 and weights.shape[-1] == 1:
        weights = ops.squeeze(weights, axis=-1)
    n = margins.shape[0]
    if len(weights.shape) != 1 or (None not in (n, weights.shape[0]) and weights.shape[0] != n):
        raise ValueError(
            f"`sample_weight` must have shape (N,) or (N, 1) with N = {n} samples; "
            f"got shape {tuple(sample_weight.shape) if hasattr(sample_weight, 'shape') else sample_weight!r}."
        )
    values = concrete_value(weights)
    if values is not None and (np.any(np.isnan(values)) or np.any(values < 0)):
        raise ValueError(f"`sample_weight` must be >= 0 and not NaN; got {values}.")
    return weights > 0
