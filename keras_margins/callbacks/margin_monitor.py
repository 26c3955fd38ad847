"""Callback logging the class margin of a head (Zhou et al., ICLR 2022)."""

import keras

from keras_margins._arguments import reject_unknown
from keras_margins.ops import class_margin, zero_centroid


class MarginMonitor(keras.callbacks.Callback):
    """Adds the class margin and the zero-centroid measure of ``head.kernel`` to the epoch logs.

    ``class_margin`` (radians: the smallest angle between two class prototypes,
    ``km.ops.class_margin``) and ``zero_centroid`` (||Σ_k ŵ_k||², the sum form of
    ``km.ops.zero_centroid``) show in the progress bar, History and TensorBoard, and can drive
    EarlyStopping / KerasTuner.

    Args:
        head: a head layer with a (D, C) ``.kernel`` (e.g. ``km.layers.LargestMarginHead``).
        prefix: prepended to the two log names (default ``""``).
        **kwargs: none accepted; an unknown keyword is a ``TypeError`` naming the closest
            valid argument.

    Example:
        >>> head = km.layers.LargestMarginHead(10)
        >>> model.fit(x, y, callbacks=[km.callbacks.MarginMonitor(head)])

    Reference:
        - Zhou et al., 2022. [Learning Towards the Largest Margins](https://arxiv.org/abs/2206.11589), ICLR
          2022 (class margin, zero-centroid regularisation).
    """

    def __init__(self, head, prefix="", **kwargs):
        reject_unknown(type(self), kwargs, accepted=())
        super().__init__()
        if not hasattr(head, "kernel"):
            raise ValueError("`head` must be a head layer with a (D, C) `.kernel`.")
        self.head = head
        self.prefix = prefix

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        kernel = self.head.kernel
        logs[self.prefix + "class_margin"] = float(keras.ops.convert_to_numpy(class_margin(kernel)))
        logs[self.prefix + "zero_centroid"] = float(
            keras.ops.convert_to_numpy(zero_centroid(kernel))
        )
