"""Cosine head on fixed PEDCC centroids (Zhu & Zu, arXiv:2111.15449)."""

import keras
from keras import ops

from keras_margins import ops as kmops
from keras_margins.layers._base import ClassHead


@keras.saving.register_keras_serializable(package="keras_margins")
class PEDCCHead(ClassHead):
    """(N, D) features -> (N, C) cosines to C predefined evenly-distributed class centroids.

    The centroids (``km.ops.pedcc_centroids(C, D, seed)``: the exact regular simplex for
    C ≤ D+1, repulsion on the sphere otherwise) are a non-trainable (D, C) weight at
    ``.kernel``: saved in ``.keras`` files and restored from them on load, never retrained.
    The argmax of the output is the class, the paper's inference rule. Train with
    ``km.losses.POD`` inside ``km.models.MarginModel``, or with any cosine loss (``ArcFace``,
    ``LMSoftmax``...) in a plain ``keras.Sequential``.

    Args:
        num_classes: C >= 2.
        seed: integer seed of the centroids' random rotation (default 0).
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``: float32 by
            default, also under mixed precision).

    Example:
        >>> model = km.models.MarginModel(backbone, km.layers.PEDCCHead(10))
        >>> model.compile("adam", loss=km.losses.POD(), metrics=["accuracy"], jit_compile=True)
        >>> model.fit(x, y, callbacks=[km.callbacks.PODDelta()])

    Reference:
        - Zhu & Zu, 2021. POD loss on predefined evenly-distributed class centroids, [arXiv:2111.15449](https://arxiv.org/abs/2111.15449).
    """

    score_kind = "cosine"
    fixed_centers = True

    def __init__(self, num_classes, seed=0, **kwargs):
        super().__init__(num_classes, **kwargs)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"`seed` must be an integer; got {seed!r}.")
        self.seed = seed

    def build(self, input_shape):
        dim = self._feature_dim(input_shape)
        centroids = kmops.pedcc_centroids(self.num_classes, dim, self.seed)
        # Generated once here; a reloaded model overwrites them with the saved values.
        self.kernel = self.add_weight(
            name="class_kernel",
            shape=(dim, self.num_classes),
            initializer=lambda shape, dtype=None: ops.cast(centroids, dtype),
            trainable=False,
        )

    def call(self, inputs):
        return kmops.cosine_similarity(self._check_features(inputs), self.kernel)

    def get_config(self):
        config = super().get_config()
        config["seed"] = self.seed
        return config
