"""Callback logging the class margin of a head (Zhou et al. 2022, SPEC §1.1)."""

import keras

from keras_margins.ops import class_margin, zero_centroid


class MarginMonitor(keras.callbacks.Callback):
    """Adds ``class_margin`` (radians: the smallest angle between two class prototypes) and
    ``zero_centroid`` (||Σ_k ŵ_k||²) of ``head.kernel`` to the epoch logs, so they show in the
    progress bar, History, TensorBoard and can drive EarlyStopping / KerasTuner.

    Example:
        >>> head = km.layers.LargestMarginHead(10)
        >>> model.fit(x, y, callbacks=[km.callbacks.MarginMonitor(head)])
    """

    def __init__(self, head, prefix=""):
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
