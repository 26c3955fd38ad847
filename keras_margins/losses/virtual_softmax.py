"""Virtual Softmax loss on ``VirtualSoftmaxHead`` outputs (Chen et al., NeurIPS 2018)."""

import keras

from keras_margins.losses._base import MarginLoss
from keras_margins.ops._numerics import take_target
from keras_margins.ops._validation import as_labels, check_scores
from keras_margins.ops.virtual_softmax import virtual_nll, virtual_terms


@keras.saving.register_keras_serializable(package="keras_margins")
class VirtualSoftmax(MarginLoss):
    """Virtual Softmax: L = −log e^{z_y} / (Σ_j e^{z_j} + e^{||W_y||·||x||}), z = x·W.

    Pair it with ``km.layers.VirtualSoftmaxHead``: its output is log_softmax(x·W) (what
    compiled metrics see), and in training it carries the per-row log-sum-exp, ||x|| and the
    kernel's column norms, from which this loss adds the virtual class of the target column:
    L_i = −log_softmax(z)_{y_i} + softplus(||x_i||·||W_{y_i}|| − log Σ_j e^{z_j}), equal to
    ``km.ops.virtual_softmax(labels, features, head.kernel)`` in value and gradient. On an
    output without those terms (inference: ``evaluate``) it is the plain softmax
    cross-entropy −log_softmax(z)_y. No hyper-parameters. Works in ``keras.Sequential`` and
    in ``km.models.MarginModel``.

    Args:
        **kwargs: ``keras.losses.Loss`` arguments (``name``, ``reduction``, ``dtype``).

    Example:
        >>> model = keras.Sequential([backbone, km.layers.VirtualSoftmaxHead(10)])
        >>> model.compile("adam", loss=km.losses.VirtualSoftmax(), jit_compile=True)
        >>> model.fit(x, y)

    Reference:
        - Chen, Deng & Shen, 2018. Virtual Class Enhanced Discriminative Embedding Learning, NeurIPS 2018.
    """

    score_kind = "log_probs"

    def __init__(self, **kwargs):
        kwargs.setdefault("name", "virtual_softmax")
        super().__init__(**kwargs)

    def __call__(self, y_true, y_pred, sample_weight=None):
        terms = virtual_terms(y_pred)  # attached by VirtualSoftmaxHead in training only
        if terms is not None:
            y_pred = {"log_probs": y_pred, **terms}
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def per_sample(self, labels, y_pred):
        terms = y_pred if isinstance(y_pred, dict) else None
        log_probs = terms.pop("log_probs") if terms is not None else y_pred
        log_probs, num_classes = check_scores(log_probs, "y_pred")
        labels = as_labels(labels, num_classes, log_probs.shape[0])
        if terms is None:
            return -take_target(log_probs, labels)
        return virtual_nll(labels, log_probs, terms)
