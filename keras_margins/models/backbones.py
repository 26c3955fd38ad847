"""Image backbones for the papers' datasets: a small CNN for 28–32 px images and the
``keras.applications`` architectures (no weights downloaded) for the 224 px retrieval sets,
and the one pixel vocabulary of the library.

Every backbone here takes raw pixels in [0, 255] (what ``km.data.load_tfds`` and
``km.data.tfds_pk_batches`` give by default) and carries its own input scaling as a layer, so
the saved ``.keras`` model and its TF Serving export take raw pixels, and a local ImageNet
weights file (``weights=``) sees exactly the preprocessing it was trained with.

Pixel scalings (``PIXEL_SCALINGS``), shared by ``ImagePreprocessing`` and the loaders'
``normalize=`` argument, all from [0, 255]:

=============== ============================================ ==============================
name            result                                       ``keras.applications`` mode
=============== ============================================ ==============================
``"raw"``       unchanged, [0, 255]                          (EfficientNet rescales inside)
``"unit"``      x / 255, [0, 1]
``"symmetric"`` x / 127.5 − 1, [−1, 1]                       ``"tf"``
``"imagenet"``  (x / 255 − ImageNet mean) / ImageNet std     ``"torch"``
``"caffe"``     RGB → BGR, ImageNet mean (BGR) subtracted    ``"caffe"``
=============== ============================================ ==============================
"""

import os

import keras
import numpy as np

from keras_margins._arguments import LAYER_ARGUMENTS, reject_unknown
from keras_margins.registry import IMAGE_ARCHITECTURES as ARCHITECTURES
from keras_margins.registry import IMAGE_BACKBONES as BACKBONES

__all__ = ["ARCHITECTURES", "BACKBONES", "PIXEL_SCALINGS", "ImagePreprocessing", "image_backbone",
           "scale_pixels", "small_cnn_backbone"]

#: The pixel scalings (see the module docstring), each a function of pixels in [0, 255].
PIXEL_SCALINGS = ("raw", "unit", "symmetric", "imagenet", "caffe")
#: Scalings that need RGB images.
RGB_SCALINGS = ("imagenet", "caffe")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# Names ImagePreprocessing took before the vocabulary was shared (kept for saved files).
_FORMER_NAMES = {"none": "raw", "tf": "symmetric", "torch": "imagenet"}


def _float32(values):
    return np.asarray(values, dtype="float32")


def scale_pixels(images, scaling, constant=_float32):
    """Pixels in [0, 255] (..., channels) scaled as ``scaling`` (one of ``PIXEL_SCALINGS``).

    Arithmetic only, so it runs on NumPy arrays, TensorFlow tensors (inside ``tf.data``) and
    backend tensors alike; ``constant`` turns the per-channel constants into arrays of the
    images' kind and dtype (default: float32 NumPy arrays).

    Example:
        >>> import numpy as np, keras_margins as km
        >>> km.models.backbones.scale_pixels(np.array([[0.0, 127.5, 255.0]], "float32"), "symmetric")
        array([[-1.,  0.,  1.]], dtype=float32)
    """
    if scaling == "raw":
        return images
    if scaling == "unit":
        return images / 255.0
    if scaling == "symmetric":
        return images / 127.5 - 1.0
    if scaling == "imagenet":
        return (images / 255.0 - constant(IMAGENET_MEAN)) / constant(IMAGENET_STD)
    if scaling == "caffe":
        return images[..., ::-1] - constant(CAFFE_MEAN_BGR)
    raise ValueError(f"the pixel scaling must be one of {PIXEL_SCALINGS}; got {scaling!r}.")


@keras.saving.register_keras_serializable(package="keras_margins")
class ImagePreprocessing(keras.layers.Layer):
    """Pixel values in [0, 255] to what a backbone expects, as a saveable layer.

    Args:
        mode: one of ``PIXEL_SCALINGS``: ``"raw"`` (pass through), ``"unit"`` ([0, 1]),
            ``"symmetric"`` ([−1, 1]), ``"imagenet"`` (ImageNet mean/std), ``"caffe"`` (BGR,
            ImageNet mean subtracted). Default ``"unit"``.
        **kwargs: ``keras.layers.Layer`` arguments (``name``, ``dtype``, ...); any other keyword
            is a ``TypeError`` naming the closest valid argument.

    Example:
        >>> import keras, numpy as np, keras_margins as km
        >>> layer = km.models.ImagePreprocessing("symmetric")    # [0, 255] -> [-1, 1]
        >>> float(keras.ops.max(layer(np.full((1, 2, 2, 3), 255.0, "float32"))))
        1.0
    """

    def __init__(self, mode="unit", **kwargs):
        reject_unknown(type(self), kwargs, accepted=LAYER_ARGUMENTS)
        super().__init__(**kwargs)
        if mode not in PIXEL_SCALINGS:
            raise ValueError(f"`mode` must be one of {PIXEL_SCALINGS}; got {mode!r}.")
        self.mode = mode

    def call(self, images):
        images = keras.ops.cast(images, self.compute_dtype)
        return scale_pixels(
            images, self.mode,
            constant=lambda v: keras.ops.convert_to_tensor(v, dtype=self.compute_dtype),
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        mode = config.get("mode")
        config["mode"] = _FORMER_NAMES.get(mode, mode)
        return cls(**config)


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
