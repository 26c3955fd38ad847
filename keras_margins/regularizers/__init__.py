"""Keras regularizers of keras_margins."""

from keras_margins.regularizers.zero_centroid import ZeroCentroid
