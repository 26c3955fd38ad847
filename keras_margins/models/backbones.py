"""Image backbones for the papers' datasets: a small CNN for 28–32 px images and the
``keras.applications`` architectures (no weights downloaded) for the 224 px retrieval sets.

Every backbone here takes images with values in [0, 255] (``km.data.load_tfds(...,
normalize=None)``) and carries its own input scaling as a layer, so the saved ``.keras``
model and its TF Serving export take raw pixels, and a local ImageNet weights file (``weights=``)
sees exactly the preprocessing it was trained with.
"""

import os

import keras
from keras.applications import imagenet_utils

#: name -> (keras.applications constructor name, preprocess_input mode, minimum image side).
#: The mode is the one ``keras.applications.<family>.preprocess_input`` applies (``"caffe"``:
#: BGR, ImageNet mean subtracted; ``"tf"``: [-1, 1]; ``"torch"``: ImageNet mean/std on [0, 1];
#: ``"none"``: the architecture rescales inside, as EfficientNet does).
ARCHITECTURES = {
    "resnet50": ("ResNet50", "caffe", 32),
    "resnet101": ("ResNet101", "caffe", 32),
    "resnet50_v2": ("ResNet50V2", "tf", 32),
    "inception_v3": ("InceptionV3", "tf", 75),
    "densenet121": ("DenseNet121", "torch", 32),
    "mobilenet_v2": ("MobileNetV2", "tf", 32),
    "efficientnet_b0": ("EfficientNetB0", "none", 32),
}
#: ``image_backbone`` choices: the small CNN and the ``keras.applications`` architectures.
BACKBONES = ("small_cnn", *ARCHITECTURES)
_MODES = ("caffe", "tf", "torch", "none", "unit")


@keras.saving.register_keras_serializable(package="keras_margins")
class ImagePreprocessing(keras.layers.Layer):
    """Pixel values in [0, 255] to what a backbone expects, as a saveable layer.

    Args:
        mode: ``"unit"`` (divide by 255), ``"none"`` (pass through) or a
            ``keras.applications.imagenet_utils.preprocess_input`` mode: ``"caffe"``, ``"tf"``,
            ``"torch"``.
        **kwargs: ``keras.layers.Layer`` arguments (``name``, ``dtype``).

    Example:
        >>> import keras, numpy as np, keras_margins as km
        >>> layer = km.models.ImagePreprocessing("tf")    # [0, 255] -> [-1, 1]
        >>> float(keras.ops.max(layer(np.full((1, 2, 2, 3), 255.0, "float32"))))
        1.0
    """

    def __init__(self, mode="unit", **kwargs):
        super().__init__(**kwargs)
        if mode not in _MODES:
            raise ValueError(f"`mode` must be one of {_MODES}; got {mode!r}.")
        self.mode = mode

    def call(self, images):
        images = keras.ops.cast(images, self.compute_dtype)
        if self.mode == "unit":
            return images / 255.0
        if self.mode == "none":
            return images
        return imagenet_utils.preprocess_input(images, data_format="channels_last", mode=self.mode)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def _check_dims(input_shape, embedding_dim):
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else None
    if shape is None or len(shape) != 3 or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape
    ):
        raise ValueError(
            f"`input_shape` must be (height, width, channels) of positive ints; got {input_shape!r}."
        )
    if isinstance(embedding_dim, bool) or not isinstance(embedding_dim, int) or embedding_dim < 1:
        raise ValueError(f"`embedding_dim` must be a positive integer; got {embedding_dim!r}.")
    return shape


def small_cnn_backbone(input_shape, embedding_dim=128, widths=(64, 128, 256), name="embedding"):
    """A VGG-style CNN for small images (MNIST, CIFAR): per width two 3×3 convolutions with
    batch normalisation and ReLU, then 2×2 max-pooling; global average pooling; a linear
    projection to the embedding.

    Args:
        input_shape: ``(height, width, channels)`` of the images (pixel values in [0, 255]).
        embedding_dim: D, the embedding size. Default 128.
        widths: filters of the convolution blocks; one 2×2 pooling per block. Default
            ``(64, 128, 256)``.
        name: the model's name. Default ``"embedding"``.

    Returns:
        A ``keras.Sequential`` ``(N, H, W, C) -> (N, embedding_dim)``.

    Example:
        >>> import keras_margins as km
        >>> km.models.small_cnn_backbone((32, 32, 3), 64).output_shape
        (None, 64)
    """
    shape = _check_dims(input_shape, embedding_dim)
    widths = tuple(widths)
    if not widths or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths):
        raise ValueError(f"`widths` must be a non-empty sequence of positive ints; got {widths!r}.")
    if min(shape[:2]) < 2 ** len(widths):
        raise ValueError(
            f"`input_shape` {shape}: images must be at least {2 ** len(widths)} px for "
            f"{len(widths)} pooling blocks."
        )
    body = [keras.Input(shape), ImagePreprocessing("unit", name="scale")]
    for width in widths:
        for _ in range(2):
            body += [
                keras.layers.Conv2D(width, 3, padding="same", use_bias=False),
                keras.layers.BatchNormalization(),
                keras.layers.ReLU(),
            ]
        body.append(keras.layers.MaxPooling2D(2))
    body += [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(embedding_dim, name="projection")]
    return keras.Sequential(body, name=name)


def image_backbone(architecture, input_shape, embedding_dim=512, weights=None, name="embedding"):
    """A backbone for images in [0, 255]: ``"small_cnn"`` or a ``keras.applications``
    architecture without its classifier, global-average pooled and projected to the
    embedding (the deep-metric-learning papers' set-up: e.g. Circle loss uses ResNet-50 with a
    512-D embedding on CUB, Cars and SOP).

    Args:
        architecture: one of ``BACKBONES``: ``"small_cnn"``, ``"resnet50"``, ``"resnet101"``,
            ``"resnet50_v2"``, ``"inception_v3"``, ``"densenet121"``, ``"mobilenet_v2"``,
            ``"efficientnet_b0"``.
        input_shape: ``(height, width, channels)``; the ``keras.applications`` architectures
            need 3 channels and a minimum side (32 px, 75 for Inception-v3).
        embedding_dim: D, the embedding size. Default 512.
        weights: ``None`` (random initialisation, default) or the path of a local weights file
            of the architecture without its top (e.g. the ImageNet ``..._notop.h5`` file);
            nothing is downloaded.
        name: the model's name. Default ``"embedding"``.

    Returns:
        A ``keras.Sequential`` ``(N, H, W, C) -> (N, embedding_dim)``.

    Example:
        >>> import keras_margins as km
        >>> km.models.image_backbone("mobilenet_v2", (64, 64, 3), 128).output_shape
        (None, 128)

    Reference:
        - He et al., 2016. [Deep Residual Learning for Image Recognition](https://arxiv.org/abs/1512.03385).
        - Sun et al., 2020. [Circle Loss](https://arxiv.org/abs/2002.10857), §4.1 (ResNet-50,
          512-D embedding for fine-grained retrieval).
    """
    if architecture not in BACKBONES:
        raise ValueError(f"`architecture` must be one of {BACKBONES}; got {architecture!r}.")
    if architecture == "small_cnn":
        if weights is not None:
            raise ValueError("`weights`: the small CNN has no pretrained weights; pass None.")
        return small_cnn_backbone(input_shape, embedding_dim, name=name)
    shape = _check_dims(input_shape, embedding_dim)
    constructor, mode, min_side = ARCHITECTURES[architecture]
    if shape[2] != 3:
        raise ValueError(
            f"`input_shape` {shape}: {architecture} needs 3-channel images; use 'small_cnn' for "
            "grey-scale data."
        )
    if min(shape[:2]) < min_side:
        raise ValueError(f"`input_shape` {shape}: {architecture} needs images of at least {min_side} px.")
    if weights is not None and not (isinstance(weights, str) and os.path.isfile(weights)):
        raise ValueError(f"`weights` must be None or the path of a local weights file; got {weights!r}.")
    features = getattr(keras.applications, constructor)(
        include_top=False, weights=weights, input_shape=shape, pooling="avg"
    )
    return keras.Sequential(
        [
            keras.Input(shape),
            ImagePreprocessing(mode, name="preprocess"),
            features,
            keras.layers.Dense(embedding_dim, name="projection"),
        ],
        name=name,
    )
