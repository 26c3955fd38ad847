"""Keras layers that own weights: classification heads and L2 normalisation."""

from keras_margins.layers._base import ClassHead, PrototypeHead
from keras_margins.layers.l2_normalize import L2Normalize
from keras_margins.layers.largest_margin_head import LargestMarginHead
from keras_margins.layers.pedcc_head import PEDCCHead
from keras_margins.layers.virtual_softmax_head import VirtualSoftmaxHead
