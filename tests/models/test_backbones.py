"""Image backbones: the pixel preprocessing against NumPy references, shapes, .keras round
trips, local weights files, and bad arguments."""

import keras
import numpy as np
import pytest
from references import pixel_scaling as _reference

import keras_margins as km


@pytest.mark.parametrize("mode", ["unit", "raw", "symmetric", "imagenet", "caffe"])
def test_image_preprocessing_matches_numpy(mode):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 3, 4, 3)).astype("float32")
    images[0, 0, 0] = [255.0, 0.0, 0.0]   # hand-made pixel: pure red
    got = keras.ops.convert_to_numpy(km.models.ImagePreprocessing(mode)(images))
    np.testing.assert_allclose(got, _reference(images, mode), rtol=1e-5, atol=1e-4)
    if mode == "caffe":  # red lands in the last (R of BGR) channel
        np.testing.assert_allclose(got[0, 0, 0], [-103.939, -116.779, 255.0 - 123.68], atol=1e-3)
    # the same function on plain NumPy arrays (what the tf.data loaders run)
    np.testing.assert_allclose(km.models.backbones.scale_pixels(images, mode),
                               _reference(images, mode), rtol=1e-5, atol=1e-4)


def test_the_vocabulary_is_keras_applications_preprocessing():
    """Each scaling is what ``keras.applications``' own ``preprocess_input`` does (modes
    ``"tf"``, ``"torch"``, ``"caffe"``), so a local ImageNet weights file sees its inputs."""
    from keras.applications import imagenet_utils

    images = np.random.default_rng(3).integers(0, 256, (2, 3, 3, 3)).astype("float32")
    for ours, theirs in (("symmetric", "tf"), ("imagenet", "torch"), ("caffe", "caffe")):
        want = imagenet_utils.preprocess_input(images.copy(), data_format="channels_last",
                                               mode=theirs)
        got = keras.ops.convert_to_numpy(km.models.ImagePreprocessing(ours)(images))
        np.testing.assert_allclose(got, np.asarray(want), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("former, now", [("tf", "symmetric"), ("torch", "imagenet"),
                                         ("none", "raw"), ("caffe", "caffe")])
def test_files_saved_with_the_former_mode_names_load(former, now):
    layer = km.models.ImagePreprocessing.from_config({"name": "preprocess", "mode": former})
    assert layer.mode == now
    with pytest.raises(ValueError, match="mode"):
        km.models.ImagePreprocessing(former if former != "caffe" else "bgr")


def test_small_cnn_shapes_and_round_trip(tmp_path):
    model = km.models.small_cnn_backbone((28, 28, 1), 16, widths=(8, 16))
    x = np.random.default_rng(1).integers(0, 256, (3, 28, 28, 1)).astype("float32")
    y = model.predict(x, verbose=0)
    assert y.shape == (3, 16)
    path = tmp_path / "cnn.keras"
    model.save(path)
    again = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(again.predict(x, verbose=0), y, rtol=1e-5, atol=1e-5)
    # the input scaling lives in the model: pixels x and x / 255 are different inputs
    assert not np.allclose(model.predict(x / 255.0, verbose=0), y)


@pytest.mark.parametrize("architecture", ["mobilenet_v2", "resnet50_v2"])
def test_applications_backbone_round_trips_and_reads_a_local_weights_file(tmp_path, architecture):
    shape = (32, 32, 3)
    model = km.models.image_backbone(architecture, shape, 8)
    assert model.output_shape == (None, 8)
    x = np.random.default_rng(2).integers(0, 256, (2, *shape)).astype("float32")
    y = model.predict(x, verbose=0)
    path = tmp_path / "backbone.keras"
    model.save(path)
    np.testing.assert_allclose(keras.models.load_model(path).predict(x, verbose=0), y,
                               rtol=1e-4, atol=1e-4)
    # A weights file of the architecture without its top (what ImageNet *_notop.h5 is):
    features = model.layers[1]
    weights = tmp_path / "notop.weights.h5"
    features.save_weights(weights)
    again = km.models.image_backbone(architecture, shape, 8, weights=str(weights))
    for a, b in zip(again.layers[1].get_weights(), features.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_every_architecture_is_a_keras_application():
    for name, (constructor, mode, side) in km.models.backbones.ARCHITECTURES.items():
        assert callable(getattr(keras.applications, constructor)), name
        assert mode in km.models.backbones.PIXEL_SCALINGS and side >= 32
    assert km.models.BACKBONES[0] == "small_cnn"


@pytest.mark.parametrize(
    "call, argument",
    [
        (lambda: km.models.image_backbone("vgg99", (32, 32, 3)), "architecture"),
        (lambda: km.models.image_backbone("resnet50", (32, 32, 1)), "input_shape"),
        (lambda: km.models.image_backbone("resnet50", (16, 16, 3)), "input_shape"),
        (lambda: km.models.image_backbone("inception_v3", (64, 64, 3)), "input_shape"),
        (lambda: km.models.image_backbone("resnet50", (32, 32)), "input_shape"),
        (lambda: km.models.image_backbone("resnet50", (32, 32, 3), 0), "embedding_dim"),
        (lambda: km.models.image_backbone("resnet50", (32, 32, 3), weights="/no/such.h5"), "weights"),
        (lambda: km.models.image_backbone("small_cnn", (32, 32, 3), weights="x.h5"), "weights"),
        (lambda: km.models.small_cnn_backbone((4, 4, 1), 8), "input_shape"),
        (lambda: km.models.small_cnn_backbone((32, 32, 1), 8, widths=()), "widths"),
        (lambda: km.models.ImagePreprocessing("torch"), "mode"),
    ],
)
def test_bad_arguments_name_the_argument(call, argument):
    with pytest.raises(ValueError, match=argument):
        call()


def test_small_cnn_trains_a_margin_head_under_xla():
    """The backbone the CLI uses for MNIST/CIFAR trains with ArcFace under jit_compile on
    either backend: the loss falls on images whose class sets their brightness."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 16)
    x = np.clip(rng.normal(60.0 + 70.0 * y[:, None, None, None], 25.0, (48, 16, 16, 3)), 0, 255)
    model = keras.Sequential([km.models.small_cnn_backbone((16, 16, 3), 8, widths=(8, 16)),
                              km.layers.LargestMarginHead(3)])
    model.compile(keras.optimizers.Adam(3e-3), loss=km.losses.ArcFace(scale=16.0, margin=0.2),
                  jit_compile=True)
    history = model.fit(x.astype("float32"), y, epochs=8, batch_size=16, verbose=0).history["loss"]
    assert np.all(np.isfinite(history)) and history[-1] < 0.7 * history[0]
