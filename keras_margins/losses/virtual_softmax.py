"""Virtual Softmax loss on ``VirtualSoftmaxHead`` outputs (Chen et al., NeurIPS 2018)."""

import keras

from keras_margins.losses._base import MarginLoss
from keras_margins.ops._common import as_labels, check_scores, take_target


@keras.saving.register_keras_serializable(package="keras_margins")
class VirtualSoftmax(MarginLoss):
    """Virtual Softmax: L = −log e^{z_y} / (Σ_j e^{z_j} + e^{||W_y||·||x||}), z = x·W.

    Pair it with ``km.layers.VirtualSoftmaxHead``: in training the head emits the class
    log-probabilities u_j of the virtual-class model, and this loss is their NLL −u_y, which
    equals ``km.ops.virtual_softmax(labels, features, head.kernel)``. At inference the head
    emits log_softmax(x·W), so ``evaluate`` reports the plain softmax cross-entropy. No
    hyper-parameters. Works in ``keras.Sequential`` and in ``km.models.MarginModel``.

    Args:
        **kwargs: ``keras.losses.Loss`` arguments (``name``, ``reduction``, ``dtype``).

    Example:
        >>> model = keras.Sequential([backbone, km.layers.VirtualSoftmaxHead(10)])
        >>> model.compile("adam", loss=km.losses.VirtualSoftmax(), jit_compile=True)
        >>> model.fit(x, y)

    Reference:
        - Chen, Deng & Shen, 2018. Virtual Class Enhanced Discriminative Embedding Learning, NeurIPS 2018.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("name", "virtual_softmax")
        super().__init__(**kwargs)

    def per_sample(self, labels, log_probs):
        log_probs, num_classes = check_scores(log_probs, "y_pred")
        labels = as_labels(labels, num_classes, log_probs.shape[0])
        return -take_target(log_probs, labels)
