"""TFDS loaders, offline: tfds.testing.mock_data generates random examples from the dataset's
feature spec (no download, no prepared files). tf.data pipelines, whatever the Keras backend."""

import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds
from references import pixel_scaling as _numpy_scaling

import keras_margins as km

RETRIEVAL = ("cars196", "caltech_birds2011", "stanford_online_products")
N_MOCK = 30  # examples per TFDS split under mock_data


def _labels(ds):
    return np.array([int(y) for _, y in ds.as_numpy_iterator()])


@pytest.mark.parametrize("name", RETRIEVAL)
def test_retrieval_sets_are_class_disjoint_and_cover_both_tfds_splits(name):
    with tfds.testing.mock_data(num_examples=N_MOCK):
        train = km.data.load_tfds(name, "train", image_size=24)
        test = km.data.load_tfds(name, "test", image_size=24)
        y_train, y_test = _labels(train), _labels(test)
        image, label = next(iter(train))
        pooled = tfds.load(name, split="train+test")
        all_labels = sorted(int(ex[km.data.TFDS_DATASETS[name][0]]) for ex in pooled)
    first_test = {"cars196": 98, "caltech_birds2011": 100, "stanford_online_products": 11318}
    assert y_train.max() < first_test[name] <= y_test.min()
    # TFDS train + test pooled, then cut by class: every example lands on exactly one side.
    assert sorted(np.r_[y_train, y_test].tolist()) == all_labels and len(y_test) > 0
    assert image.shape == (24, 24, 3) and image.dtype == "float32" and label.dtype == "int32"
    assert 0.0 <= float(np.min(image)) and 1.0 < float(np.max(image)) <= 255.0  # raw pixels
    assert km.data.split_classes(name, "test") == range(first_test[name], km.data.TFDS_DATASETS[name][1])


@pytest.mark.parametrize(
    "loader, shape", [(km.data.mnist, (28, 28, 1)), (km.data.cifar10, (32, 32, 3)),
                      (km.data.cifar100, (32, 32, 3))]
)
def test_classification_sets_keep_tfds_splits_and_native_size(loader, shape):
    with tfds.testing.mock_data(num_examples=N_MOCK):
        batches = list(loader("test", batch_size=8).as_numpy_iterator())
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    assert x.shape == (N_MOCK,) + shape and batches[0][0].shape[0] == 8
    assert y.max() < km.data.TFDS_DATASETS[loader.__name__][1]


def test_named_loaders_default_to_224_and_batch():
    with tfds.testing.mock_data(num_examples=6):
        images, labels = next(iter(km.data.cars196("train", batch_size=2)))
    assert images.shape == (2, 224, 224, 3) and labels.shape == (2,)


@pytest.mark.parametrize("normalize", [None, *km.models.backbones.PIXEL_SCALINGS])
def test_pixel_scalings_are_the_backbones_vocabulary(normalize):
    """``normalize=`` takes the names of ``ImagePreprocessing``'s modes and gives the same
    values: one vocabulary, one implementation (NumPy reference per pixel)."""
    with tfds.testing.mock_data(num_examples=3):
        raw = np.stack([x for x, _ in km.data.cifar10("train", normalize="raw").as_numpy_iterator()])
        got = np.stack(
            [x for x, _ in km.data.cifar10("train", normalize=normalize).as_numpy_iterator()]
        )
    scaling = "raw" if normalize is None else normalize
    np.testing.assert_allclose(got, _numpy_scaling(raw, scaling), rtol=1e-5, atol=1e-4)
    layer = km.models.ImagePreprocessing(scaling)
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(layer(raw)), rtol=1e-5, atol=1e-4)


def test_loaders_default_to_raw_pixels_the_backbones_scale():
    """The default pipeline gives [0, 255] floats, what km.models' backbones take (their
    scaling is a layer of the model): no pixel is divided by 255 twice."""
    with tfds.testing.mock_data(num_examples=4):
        default = np.stack([x for x, _ in km.data.cifar10("train").as_numpy_iterator()])
        pk_batch, _ = next(iter(km.data.tfds_pk_batches("cifar10", 2, 2, augment=False)))
        raw = np.stack([x for x, _ in km.data.cifar10("train", normalize="raw").as_numpy_iterator()])
    np.testing.assert_array_equal(default, raw)
    assert default.max() > 1.0 and default.min() >= 0.0
    assert float(np.max(pk_batch)) > 1.0
    backbone = km.models.small_cnn_backbone((32, 32, 3), 4, widths=(4,))
    assert backbone.layers[0].mode == "unit"   # the model scales the raw pixels itself


def test_data_dir_and_shuffle_are_passed_to_tfds(monkeypatch, tmp_path):
    seen = {}
    original = tfds.load

    def spy(name, **kwargs):
        if not seen:
            seen.update(kwargs, name=name)
        return original(name, **kwargs)

    monkeypatch.setattr(tfds, "load", spy)
    with tfds.testing.mock_data(num_examples=10):
        ds = km.data.mnist("train", data_dir=str(tmp_path), shuffle=True, seed=3)
        y1, y2 = _labels(ds), _labels(km.data.mnist("train"))
    assert seen["data_dir"] == str(tmp_path) and seen["name"] == "mnist"
    assert seen["download"] is False and seen["shuffle_files"] is True
    assert sorted(y1) == sorted(y2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="imagenet2012"), "`name`"),
        (dict(split="validation"), "`split`"),
        (dict(normalize="zscore"), "`normalize`"),
        (dict(name="mnist", normalize="imagenet"), "grey"),
        (dict(name="mnist", normalize="caffe"), "grey"),
        (dict(normalize="tf"), "`normalize`"),
        (dict(image_size=0), "image_size"),
        (dict(image_size=(3, 4, 5)), "image_size"),
        (dict(image_size=None, batch_size=4), "batch_size"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = dict(name="cars196", split="train")
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        km.data.load_tfds(**args)
