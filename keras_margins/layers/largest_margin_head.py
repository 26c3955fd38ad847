"""Cosine classification head with learnable class centres (Zhou et al. 2022)."""

import keras

from keras_margins import ops as kmops
from keras_margins.layers._base import ClassHead


@keras.saving.register_keras_serializable(package="keras_margins")
class LargestMarginHead(ClassHead):
    """Cosine head: (N, D) features -> (N, C) cosines cos θ_ij between ``x_i/||x_i||`` and
    ``w_j/||w_j||``. Pair it with any cosine loss (``LMSoftmax``, ``ArcFace``,
    ``CosFace``, ``SphereFace``, ``NormFace``, ``MarginSoftmax``, ``CircleLoss``): margins are
    applied in the loss, on the target column only, so ``predict`` returns plain cosines whose
    argmax is the class. The prototypes live in ``.kernel`` with shape (D, C).

    Args:
        num_classes: C >= 2.
        kernel_initializer: initialiser of the (D, C) prototypes.
        kernel_regularizer: e.g. ``km.regularizers.ZeroCentroid(5.0)`` for imbalanced data.
        kernel_constraint: optional constraint.

    Example:
        >>> model = keras.Sequential([backbone, km.layers.LargestMarginHead(10)])
        >>> model.compile("adam", loss=km.losses.ArcFace(), jit_compile=True)
        >>> model.fit(x, y)
    """

    def __init__(
        self,
        num_classes,
        kernel_initializer="glorot_normal",
        kernel_regularizer=None,
        kernel_constraint=None,
        **kwargs,
    ):
        super().__init__(num_classes, **kwargs)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)

    def build(self, input_shape):
        dim = self._feature_dim(input_shape)
        self.kernel = self.add_weight(
            name="kernel",
            shape=(dim, self.num_classes),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )

    def call(self, inputs):
        return kmops.cosine_similarity(self._check_features(inputs), self.kernel)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            }
        )
        return config
