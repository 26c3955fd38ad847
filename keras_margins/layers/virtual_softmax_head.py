"""Linear head for Virtual Softmax (Chen, Deng & Shen, NeurIPS 2018; SPEC §5)."""

import keras
from keras import ops

from keras_margins import ops as kmops
from keras_margins.layers.largest_margin_head import LargestMarginHead


@keras.saving.register_keras_serializable(package="keras_margins")
class VirtualSoftmaxHead(LargestMarginHead):
    """Bias-free linear head z = x·W (kernel (D, C) at ``.kernel``) whose virtual class lives
    in training only, so it works in a plain ``keras.Sequential`` with
    ``km.losses.VirtualSoftmax`` (SPEC §5, DESIGN contract 4):

    * training: u_j = z_j − log(Σ_k e^{z_k} + e^{||W_j||·||x||}) (``km.ops.virtual_log_probs``),
      log p(j | x) under the paper's model if j were the label; the NLL −u_y is exactly the
      Virtual Softmax loss (value and gradient);
    * inference: log_softmax(z), whose argmax is argmax(x·W), so ``evaluate`` reports the
      plain softmax cross-entropy and ``predict`` gives class log-probabilities.

    Same arguments as ``LargestMarginHead`` (initialiser, regulariser, constraint of the
    kernel) plus ``virtual_clip`` (cap on the virtual logit, off by default; public ports use
    15 or 50).

    Example:
        >>> model = keras.Sequential([backbone, km.layers.VirtualSoftmaxHead(10)])
        >>> model.compile("adam", loss=km.losses.VirtualSoftmax(), jit_compile=True)
        >>> model.fit(x, y); model.predict(x).argmax(-1)
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
