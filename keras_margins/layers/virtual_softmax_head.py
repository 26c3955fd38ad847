"""Linear head for Virtual Softmax (Chen, Deng & Shen, NeurIPS 2018)."""

import keras
from keras import ops

from keras_margins.layers._base import PrototypeHead
from keras_margins.ops.virtual_softmax import attach_virtual_terms


@keras.saving.register_keras_serializable(package="keras_margins")
class VirtualSoftmaxHead(PrototypeHead):
    """Bias-free linear head z = x·W whose virtual class lives in training only.

    It works in a plain ``keras.Sequential`` with ``km.losses.VirtualSoftmax``, with no
    labels as inputs (``docs/papers.md`` §2). In training and at inference it outputs the
    class log-probabilities log_softmax(z) (argmax = argmax(x·W)), so compiled metrics such
    as ``"accuracy"`` see the model's class scores during ``fit`` too. In training the output
    tensor also carries the per-row log-sum-exp of z, ||x|| and the kernel's column norms
    (attached the way Keras attaches masks to tensors), from which ``km.losses.VirtualSoftmax``
    adds the virtual logit ||W_y||·||x|| of the target column: exactly the paper's loss, value and gradient.
    At inference nothing is attached, so ``evaluate`` reports the plain softmax
    cross-entropy. (Another loss on the training output sees plain log-probabilities.)

    The (D, C) kernel is at ``.kernel`` (``score_kind = "log_probs"``: a linear head, not a
    cosine one).

    Args:
        num_classes: C >= 2.
        virtual_clip: optional cap on the virtual logit, > 0 (default None; public ports use
            15 or 50).
        **kwargs: the kernel arguments shared with ``LargestMarginHead``
            (``kernel_initializer``, ``kernel_regularizer``, ``kernel_constraint``,
            ``kernel_layout``) and those of ``keras.layers.Layer``.

    Example:
        >>> model = keras.Sequential([backbone, km.layers.VirtualSoftmaxHead(10)])
        >>> model.compile("adam", loss=km.losses.VirtualSoftmax(), jit_compile=True)
        >>> model.fit(x, y); model.predict(x).argmax(-1)

    Reference:
        - Chen, Deng & Shen, 2018. Virtual Class Enhanced Discriminative Embedding Learning, NeurIPS 2018.
    """

    score_kind = "log_probs"

    def __init__(self, num_classes, virtual_clip=None, **kwargs):
        super().__init__(num_classes, **kwargs)
        if virtual_clip is not None and not virtual_clip > 0:
            raise ValueError(f"`virtual_clip` must be > 0 or None; got {virtual_clip}.")
        self.virtual_clip = virtual_clip

    def call(self, inputs, training=None):
        features = self._check_features(inputs)
        if not training:
            return ops.log_softmax(ops.matmul(features, self.kernel), axis=-1)
        kernel = ops.convert_to_tensor(self.kernel)
        logits = ops.matmul(features, kernel)
        lse = ops.logsumexp(logits, axis=1, keepdims=True)
        return attach_virtual_terms(logits - lse, lse, features, kernel, self.virtual_clip)

    def get_config(self):
        config = super().get_config()
        config["virtual_clip"] = self.virtual_clip
        return config
