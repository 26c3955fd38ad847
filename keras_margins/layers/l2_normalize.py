"""L2 normalisation layer (the last layer of an exported embedding model)."""

import keras

from keras_margins import ops as kmops
from keras_margins._arguments import LAYER_ARGUMENTS, reject_unknown
from keras_margins.ops._validation import check_not_nan


@keras.saving.register_keras_serializable(package="keras_margins")
class L2Normalize(keras.layers.Layer):
    """``x / max(||x||, 1e-12)`` along ``axis``; zero rows stay zero (never NaN).

    The last layer of an exported embedding model (cosine = dot product of its outputs).

    Args:
        axis: axis to normalise along (default -1).
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``, ``trainable``, ...);
            any other keyword is a ``TypeError`` naming the closest valid argument.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> out = km.layers.L2Normalize()(np.array([[3.0, 4.0], [0.0, 0.0]]))
    >>> print(np.round(np.asarray(out), 4))
    [[0.6 0.8]
     [0.  0. ]]
    """

    def __init__(self, axis=-1, **kwargs):
        reject_unknown(type(self), kwargs, accepted=LAYER_ARGUMENTS)
        super().__init__(**kwargs)
        self.axis = axis

    def call(self, inputs):
        check_not_nan(inputs, "inputs")
        return kmops.l2_normalize(inputs, axis=self.axis)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}
