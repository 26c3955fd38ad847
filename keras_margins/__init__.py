"""keras_margins: margin-based heads and metric-learning losses for Keras 3.

    import keras_margins as km
    model = keras.Sequential([backbone, km.layers.LargestMarginHead(10)])
    model.compile("adam", loss=km.losses.ArcFace(), metrics=["accuracy"], jit_compile=True)
"""

import os as _os

# TensorFlow's C++ start-up banner (oneDNN, CPU features) is noise for users; respect any
# value they set themselves.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

from keras_margins import (  # noqa: E402
    callbacks,
    data,
    export,
    layers,
    losses,
    metrics,
    miners,
    models,
    ops,
    plots,  # matplotlib is imported on first use
    regularizers,
    testing,
    tuning,
)
