"""Keras losses of keras_margins (thin wrappers over ``km.ops``)."""

from keras_margins.losses._base import MarginLoss, ModelLoss
from keras_margins.losses.adaface import AdaFace
from keras_margins.losses.binomial_deviance import BinomialDevianceLoss
from keras_margins.losses.circle import CircleLoss, PairCircleLoss
from keras_margins.losses.curricular import CurricularFace
from keras_margins.losses.elasticface import ElasticFace
from keras_margins.losses.ensemble import LossEnsemble
from keras_margins.losses.largest_margin_softmax import LargestMarginSoftmax, LMSoftmax
from keras_margins.losses.magface import MagFace
from keras_margins.losses.margin_softmax import (
    ArcFace,
    CosFace,
    MarginSoftmax,
    NormFace,
    SphereFace,
)
from keras_margins.losses.partial_fc import PartialFC
from keras_margins.losses.pod import POD
from keras_margins.losses.proxy_nca import ProxyNCALoss
from keras_margins.losses.sample_margin import SampleMarginRegularizer
from keras_margins.losses.subcenter import SubCenterArcFace, subcenter_report
from keras_margins.losses.triplet import TripletMarginLoss
from keras_margins.losses.uniface import UniFace
from keras_margins.losses.virtual_softmax import VirtualSoftmax
