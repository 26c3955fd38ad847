"""Data: the embedded digits dataset, P×K sampling, TFDS loaders."""

from keras_margins.data.digits import digits_classification, digits_zero_shot
