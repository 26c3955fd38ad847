"""keras_margins: margin-based heads and metric-learning losses for Keras 3.

    import keras_margins as km
    model = keras.Sequential([backbone, km.layers.LargestMarginHead(10)])
    model.compile("adam", loss=km.losses.ArcFace(), metrics=["accuracy"], jit_compile=True)
"""

__version__ = "0.1.0"

from keras_margins import callbacks, data, layers, losses, metrics, ops, regularizers, testing  # noqa: E402
from keras_margins import miners  # noqa: E402
from keras_margins import export  # noqa: E402
from keras_margins import models  # noqa: E402
from keras_margins import tuning  # noqa: E402
from keras_margins import plots  # noqa: E402  (matplotlib is imported on first use)
