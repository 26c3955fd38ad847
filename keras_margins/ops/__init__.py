"""Functional core of keras_margins: pure ``keras.ops`` functions, one formula each."""

from keras_margins.ops.adaface import adaface, adaface_norm_stats
from keras_margins.ops.angular import feature_norm, stateless_normal
from keras_margins.ops.circle import circle_class_level, circle_from_similarity, circle_pairwise
from keras_margins.ops.cosine import cosine_similarity
from keras_margins.ops.curricular import curricular_face, curricular_t
from keras_margins.ops.elasticface import elastic_face, elastic_margins
from keras_margins.ops.magface import (
    magface,
    magface_margin,
    magface_min_regularizer_weight,
    magface_regularizer,
)
from keras_margins.ops.margin_softmax import (
    largest_margin_softmax,
    margin_softmax,
    margin_target,
)
from keras_margins.ops.margins import class_margin, sample_margin, zero_centroid
from keras_margins.ops.normalize import l2_normalize
from keras_margins.ops.pairs import pair_masks, pairwise_cosine
from keras_margins.ops.pedcc import pedcc_centroids
from keras_margins.ops.pod import pod_loss, pod_terms
from keras_margins.ops.sampling import sample_classes
from keras_margins.ops.subcenter import subcenter_max
from keras_margins.ops.uniface import uniface, uniface_initial_bias
from keras_margins.ops.virtual_softmax import virtual_log_probs, virtual_softmax
