"""Common plumbing of the class heads (private)."""

import keras

from keras_margins.ops._common import as_float, static_shape


class ClassHead(keras.layers.Layer):
    """Base of the heads: (N, D) features -> (N, C) class scores, kernel (D, C) at ``.kernel``.

    Heads compute in float32 even under a mixed-precision policy (scores feed a softmax with
    scales up to 64, which overflows float16), unless an explicit ``dtype`` is given.

    Args:
        num_classes: C >= 2.
        **kwargs: base ``keras.layers.Layer`` arguments (``dtype`` defaults to float32).
    """

    def __init__(self, num_classes, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise ValueError(f"`num_classes` must be an integer >= 2; got {num_classes!r}.")
        self.num_classes = num_classes

    def _feature_dim(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) != 2:
            raise ValueError(
                f"{type(self).__name__} expects features of shape (N, D); got input shape {shape}."
            )
        if shape[-1] is None:
            raise ValueError(f"{type(self).__name__} needs a known feature size D; got {shape}.")
        return shape[-1]

    def _check_features(self, features):
        """Validated float features (N, D) matching the kernel's D (what ``call`` should use)."""
        features = as_float(features, "features", 2, "(N, D)")
        shape = static_shape(features)
        expected = self.kernel.shape[0]
        if shape[1] is not None and shape[1] != expected:
            raise ValueError(
                f"`features` has D={shape[1]} but {type(self).__name__} was built for D={expected}."
            )
        return features

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config["num_classes"] = self.num_classes
        return config
