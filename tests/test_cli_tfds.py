"""``keras-margins train/evaluate --dataset NAME --data-dir DIR`` on the papers' TFDS datasets,
offline: ``tfds.testing.mock_data`` serves generated examples in place of the prepared files.

The mock examples have few classes with several images each (TFDS's own random mock gives
each example a random label, so no class would have a second image to retrieve), in the
datasets' real label ranges: the retrieval sets get classes on both sides of their train/test
cut.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import keras_margins as km
from keras_margins import cli
from keras_margins.cli import datasets as cli_datasets

PER_CLASS = 6
SHAPES = {"mnist": (28, 28, 1), "cifar10": (32, 32, 3), "cifar100": (32, 32, 3)}


def _classes(name, split):
    first_test = km.data.TFDS_DATASETS[name][2]
    if first_test is None:
        return list(range(4))
    train, test = list(range(4)), list(range(first_test, first_test + 3))
    return {"train": train, "test": test}.get(split, train + test)


def _mock(name):
    """A mock_data context whose examples are PER_CLASS images of a few classes; each class
    has its own mean colour so that a trained embedding can separate them."""
    label_key = km.data.TFDS_DATASETS[name][0]

    def as_dataset(self, split, **kwargs):
        split = str(split)
        which = "train+test" if ("train" in split and "test" in split) else split
        classes = _classes(name, which)
        rng = np.random.default_rng(len(split))
        examples = []
        for c in classes:
            for i in range(PER_CLASS):
                shape = SHAPES.get(name, (40 + 4 * (i % 3), 48, 3))  # retrieval: varied sizes
                base = (37 * (c + 1)) % 200
                image = np.clip(rng.normal(base, 20, shape), 0, 255).astype("uint8")
                examples.append({"image": image, label_key: c})
        order = rng.permutation(len(examples))
        images = [examples[i]["image"] for i in order]
        labels = np.array([examples[i][label_key] for i in order], "int64")
        channels = images[0].shape[-1]
        return tf.data.Dataset.from_generator(
            lambda: ({"image": im, label_key: y} for im, y in zip(images, labels)),
            output_signature={"image": tf.TensorSpec((None, None, channels), tf.uint8),
                              label_key: tf.TensorSpec((), tf.int64)},
        )

    return tfds.testing.mock_data(as_dataset_fn=as_dataset)


def _train(tmp_path, *argv):
    out = tmp_path / "run"
    code = cli.main(["train", "--epochs", "1", "--verbose", "0", "--output-dir", str(out), *argv])
    assert code == 0
    with open(out / "results.json") as f:
        return json.load(f)["results"], out


def test_retrieval_set_trains_on_its_first_classes_and_retrieves_the_others(tmp_path, capsys):
    with _mock("cars196"):
        results, out = _train(tmp_path, "--dataset", "cars196", "--loss", "arcface",
                              "--backbone", "small_cnn", "--image-size", "32",
                              "--batch-size", "8", "--data-dir", str(tmp_path / "tfds"))
        model = keras.models.load_model(out / "model.keras")
        assert model.head.num_classes == 98  # a head over cars196's training classes 0-97
        # evaluate the saved model: the same retrieval figures on the unseen classes
        capsys.readouterr()
        assert cli.main(["evaluate", str(out / "model.keras"), "--dataset", "cars196"]) == 0
    printed = capsys.readouterr().out
    assert "accuracy" not in results  # unseen classes: retrieval only
    assert {"map_at_r", "precision_at_1", "recall_at_5", "class_margin"} <= set(results)
    assert f"{results['map_at_r']:.4f}" in printed


@pytest.mark.parametrize("loss", ["circle_pair", "ensemble"])
def test_pair_methods_train_on_pk_batches_and_export(tmp_path, loss, capsys):
    with _mock("caltech_birds2011"):
        results, out = _train(tmp_path, "--dataset", "caltech_birds2011", "--loss", loss,
                              "--image-size", "32", "--backbone", "small_cnn",
                              "--batch-size", "8", "--samples-per-class", "4",
                              "--embedding-dim", "16",
                              *(["--head-dim", "8"] if loss == "ensemble" else []),
                              "--export", str(tmp_path / "serving"))
    printed = capsys.readouterr().out
    assert set(results) >= {"map_at_r", "precision_at_1", "recall_at_5"}
    assert "accuracy" not in results and "class_margin" not in results
    assert "checked in a fresh process" in printed
    model = keras.models.load_model(out / "model.keras")
    x = np.zeros((2, 32, 32, 3), "float32")
    dim = 16 if loss == "circle_pair" else 4 * 8   # the ensemble concatenates 4 heads
    assert model.predict(x, verbose=0).shape == (2, dim)


def test_classification_set_reports_accuracy_with_native_images(tmp_path):
    with _mock("mnist"):
        results, out = _train(tmp_path, "--dataset", "mnist", "--loss", "lmsoftmax",
                              "--batch-size", "8", "--embedding-dim", "8")
    assert {"accuracy", "mean_sample_margin", "map_at_r", "class_margin"} <= set(results)
    model = keras.models.load_model(out / "model.keras")
    assert model.backbone.input_shape == (None, 28, 28, 1)   # small_cnn at MNIST's size


def test_keras_applications_backbone_with_steps_per_epoch(tmp_path):
    with _mock("cifar10"):
        results, out = _train(tmp_path, "--dataset", "cifar10", "--loss", "cosface",
                              "--backbone", "mobilenet_v2", "--batch-size", "8",
                              "--steps-per-epoch", "2", "--embedding-dim", "8")
    assert 0.0 <= results["accuracy"] <= 1.0
    model = keras.models.load_model(out / "model.keras")
    assert any("mobilenet" in layer.name for layer in model.backbone.layers)


@pytest.mark.parametrize("name, image_size, shape", [("cars196", 24, (24, 24, 3)),
                                                     ("mnist", "default", (28, 28, 1))])
def test_tfds_pk_batches_hold_p_classes_times_k(name, image_size, shape):
    with _mock(name):
        ds = km.data.tfds_pk_batches(name, p=3, k=2, image_size=image_size, seed=1)
        batches = list(ds.as_numpy_iterator())
        again = list(km.data.tfds_pk_batches(name, p=3, k=2, image_size=image_size, seed=1)
                     .as_numpy_iterator())
        plain = np.stack([x for x, _ in km.data.load_tfds(name, "train", image_size=image_size)
                          .as_numpy_iterator()])
    assert len(batches) == (4 * PER_CLASS) // 6   # the training classes 0-3 only
    for (x, y), (x2, y2) in zip(batches, again):
        assert x.shape == (6, *shape) and x.dtype == np.float32
        assert 0.0 <= x.min() and x.max() <= 255.0   # raw pixels by default
        assert len(set(y.tolist())) == 3 and all((y == c).sum() == 2 for c in set(y.tolist()))
        assert y.max() < 4
        np.testing.assert_array_equal(x, x2)   # a pure function of the seed
        np.testing.assert_array_equal(y, y2)
    if name == "mnist":  # stored as uint8 without loss: un-augmented pixels are crops of originals
        with _mock(name):  # the split is read when the stream is made
            unaugmented = km.data.tfds_pk_batches(name, 3, 2, augment=False, seed=1)
        x, _ = next(iter(unaugmented.as_numpy_iterator()))
        for image in x:
            assert np.any(np.all(np.isclose(plain, image), axis=(1, 2, 3)))


def test_augmentation_crops_from_the_8_7_resize_and_is_seeded(tmp_path):
    with _mock("cars196"):
        plain = km.data.load_tfds("cars196", "train", image_size=28, normalize=None)
        aug = km.data.load_tfds("cars196", "train", image_size=28, normalize=None,
                                augment=True, seed=3)
        aug2 = km.data.load_tfds("cars196", "train", image_size=28, normalize=None,
                                 augment=True, seed=3)
        a = np.stack([x for x, _ in aug.as_numpy_iterator()])
        b = np.stack([x for x, _ in aug2.as_numpy_iterator()])
        p = np.stack([x for x, _ in plain.as_numpy_iterator()])
    assert a.shape == p.shape == (4 * PER_CLASS, 28, 28, 3)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, p)


def test_missing_prepared_data_names_data_dir(tmp_path, capsys):
    code = cli.main(["train", "--dataset", "cars196", "--data-dir", str(tmp_path / "none"),
                     "--output-dir", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--data-dir" in err and "tfds build cars196" in err


@pytest.mark.parametrize(
    "argv, option",
    [
        (["--dataset", "mnist", "--backbone", "resnet50"], "input_shape"),   # grey-scale
        (["--dataset", "cifar10", "--backbone", "mlp"], "--backbone"),
        (["--dataset", "digits", "--backbone", "small_cnn"], "--backbone"),
        (["--dataset", "digits", "--image-size", "32"], "--image-size"),
        (["--dataset", "cifar10", "--loss", "circle_pair", "--head", "cosine"], "--head"),
        (["--dataset", "cifar10", "--loss", "ensemble", "--scale", "3"], "--scale"),
        (["--dataset", "cifar10", "--loss", "circle_pair", "--batch-size", "4"], "--batch-size"),
    ],
)
def test_bad_combinations_exit_with_a_message_naming_the_option(tmp_path, capsys, argv, option):
    with _mock("cifar10"), _mock("mnist"):
        code = cli.main(["train", "--epochs", "1", "--verbose", "0", "--output-dir",
                         str(tmp_path / "run"), *argv])
    assert code == 2
    assert option in capsys.readouterr().err


def test_dataset_defaults():
    with _mock("stanford_online_products"):
        sop = cli_datasets.open_dataset("stanford_online_products")
    assert (sop.num_classes, sop.input_shape, sop.backbone, sop.embedding_dim, sop.zero_shot) == (
        11318, (224, 224, 3), "resnet50", 512, True)
    with _mock("cifar100"):
        cifar = cli_datasets.open_dataset("cifar100", image_size=64)
    assert (cifar.num_classes, cifar.input_shape, cifar.backbone, cifar.zero_shot) == (
        100, (64, 64, 3), "small_cnn", False)
    digits = cli_datasets.open_dataset("digits")
    assert (digits.input_shape, digits.backbone, digits.embedding_dim) == ((64,), "mlp", 64)
