"""Linear head for Virtual Softmax (Chen, Deng & Shen, NeurIPS 2018)."""

import keras
from keras import ops

from keras_margins import ops as kmops
from keras_margins.layers.largest_margin_head import LargestMarginHead


@keras.saving.register_keras_serializable(package="keras_margins")
class VirtualSoftmaxHead(LargestMarginHead):
    """Bias-free linear head z = x·W whose virtual class lives in training only.

    It works in a plain ``keras.Sequential`` with ``km.losses.VirtualSoftmax``, with no
    labels as inputs (``docs/papers.md`` §2):

    * training: u_j = z_j − log(Σ_k e^{z_k} + e^{||W_j||·||x||}) (``km.ops.virtual_log_probs``),
      log p(j | x) under the paper's model if j were the label; the NLL −u_y is exactly the
      Virtual Softmax loss (value and gradient);
    * inference: log_softmax(z), whose argmax is argmax(x·W), so ``evaluate`` reports the
      plain softmax cross-entropy and ``predict`` gives class log-probabilities.

    The (D, C) kernel is at ``.kernel``.

    Args:
        num_classes: C >= 2.
        virtual_clip: optional cap on the virtual logit, > 0 (default None; public ports use
            15 or 50).
        **kwargs: the other arguments of ``LargestMarginHead`` (``kernel_initializer``,
            ``kernel_regularizer``, ``kernel_constraint``) and of ``keras.layers.Layer``.

    Example:
        >>> model = keras.Sequential([backbone, km.layers.VirtualSoftmaxHead(10)])
        >>> model.compile("adam", loss=km.losses.VirtualSoftmax(), jit_compile=True)
        >>> model.fit(x, y); model.predict(x).argmax(-1)

    Reference:
        - Chen, Deng & Shen, 2018. Virtual Class Enhanced Discriminative Embedding Learning, NeurIPS 2018.
    """

    def __init__(self, num_classes, virtual_clip=None, **kwargs):
        super().__init__(num_classes, **kwargs)
        if virtual_clip is not None and not virtual_clip > 0:
            raise ValueError(f"`virtual_clip` must be > 0 or None; got {virtual_clip}.")
        self.virtual_clip = virtual_clip

    def call(self, inputs, training=None):
        features = self._check_features(inputs)
        if training:
            return kmops.virtual_log_probs(features, self.kernel, self.virtual_clip)
        return ops.log_softmax(ops.matmul(features, self.kernel), axis=-1)

    def get_config(self):
        config = super().get_config()
        config["virtual_clip"] = self.virtual_clip
        return config
