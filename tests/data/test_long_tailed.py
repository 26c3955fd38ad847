"""km.data.long_tailed: the CIFAR-LT construction on arrays and on tf.data datasets."""

import importlib
import math

import numpy as np
import pytest

import keras_margins as km


def _reference_counts(class_counts, ratio):
    """Loop reference: class i keeps min(n_i, floor(n_max · ratio^(−i/(C−1))))."""
    n_max = max(class_counts)
    c = len(class_counts)
    out = []
    for i, available in enumerate(class_counts):
        quota = int(math.floor(n_max * ratio ** (-i / (c - 1)) + 1e-9))
        out.append(min(quota, available))
    return out


def test_cifar10_lt_profile():
    # the published CIFAR-10-LT per-class counts for ratio 100 and 10 (5 000 images per class)
    assert km.data.long_tailed_counts([5000] * 10, 100).tolist() == [
        5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert km.data.long_tailed_counts([5000] * 10, 10).tolist() == [
        5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]


@pytest.mark.parametrize("ratio", [1, 2.5, 10, 50, 200])
def test_counts_match_loop_reference_on_random_unbalanced_data(ratio):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 7, size=600)
    x = rng.normal(size=(600, 3)).astype("float32")
    x_lt, y_lt = km.data.long_tailed(x, y, ratio, seed=1)
    expected = _reference_counts(np.bincount(y, minlength=7).tolist(), ratio)
    assert np.bincount(y_lt, minlength=7).tolist() == expected
    # every kept row is an original (row, label) pair, in the original order, no duplicates
    index = {tuple(row): i for i, row in enumerate(x)}
    positions = [index[tuple(row)] for row in x_lt]
    assert positions == sorted(set(positions))
    assert np.array_equal(y[positions], y_lt)
    assert x_lt.dtype == x.dtype and y_lt.dtype == y.dtype


def test_seed_chooses_the_samples_and_labels_keep_their_shape():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 50)[:, None].astype("int32")
    x = {"a": np.arange(200.0), "b": (np.arange(200) * 2, np.arange(200) * 3)}
    xa, ya = km.data.long_tailed(x, y, 10, seed=0)
    xb, yb = km.data.long_tailed(x, y, 10, seed=0)
    xc, _ = km.data.long_tailed(x, y, 10, seed=1)
    assert ya.shape == (len(xa["a"]), 1)
    assert np.array_equal(xa["a"], xb["a"]) and not np.array_equal(xa["a"], xc["a"])
    assert np.array_equal(xa["b"][0], 2 * xa["a"]) and np.array_equal(xa["b"][1], 3 * xa["a"])
    assert np.bincount(ya[:, 0]).tolist() == [50, 23, 10, 5]
    del rng


@pytest.mark.tf_only
def test_dataset_in_dataset_out_same_elements_as_arrays():
    import tensorflow as tf

    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, size=300).astype("int64")
    x = rng.normal(size=(300, 4)).astype("float32")
    x_lt, y_lt = km.data.long_tailed(x, y, 20, seed=2)
    out = km.data.long_tailed(tf.data.Dataset.from_tensor_slices((x, y)), None, 20, seed=2)
    assert isinstance(out, tf.data.Dataset)
    xs, ys = zip(*out.as_numpy_iterator())
    assert np.array_equal(np.stack(xs), x_lt) and np.array_equal(np.array(ys), y_lt)
    # batched datasets are refused (the labels would be batches)
    with pytest.raises(ValueError, match="unbatched"):
        km.data.long_tailed(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), None, 20)
    with pytest.raises(ValueError, match="`y`"):
        km.data.long_tailed(tf.data.Dataset.from_tensor_slices((x, y)), y, 20)


def test_tensorflow_is_imported_only_for_datasets():
    module = importlib.import_module("keras_margins.data.long_tailed")
    assert not any(getattr(v, "__name__", "").startswith("tensorflow") for v in vars(module).values())


@pytest.mark.parametrize(
    "call, argument",
    [
        (lambda: km.data.long_tailed(np.zeros((4, 2)), [0, 0, 1, 1], 0.5), "imbalance_ratio"),
        (lambda: km.data.long_tailed(np.zeros((4, 2)), [0, 0, 1, 1], float("nan")), "imbalance_ratio"),
        (lambda: km.data.long_tailed(np.zeros((4, 2)), [0, 0, 1, 1], "10"), "imbalance_ratio"),
        (lambda: km.data.long_tailed(np.zeros((4, 2)), [0, 0, 1, 1], 10, seed=-1), "seed"),
        (lambda: km.data.long_tailed(np.zeros((4, 2)), [0, 0, 1, 1], 10, seed=1.5), "seed"),
        (lambda: km.data.long_tailed(np.zeros((4, 2)), [0, 0, 1], 10), "x"),
        (lambda: km.data.long_tailed(np.zeros((4, 2)), [0, 0.5, 1, 1], 10), "y"),
        (lambda: km.data.long_tailed(np.zeros((4, 2)), [0, -1, 1, 1], 10), "y"),
        (lambda: km.data.long_tailed(np.zeros((4, 2)), np.zeros((4, 2), "int32"), 10), "y"),
        (lambda: km.data.long_tailed(np.zeros((4, 2)), [1, 1, 1, 1], 10), "y"),
        (lambda: km.data.long_tailed(np.zeros((4, 2)), None, 10), "y"),
        (lambda: km.data.long_tailed_counts([5], 10), "class_counts"),
    ],
)
def test_bad_inputs(call, argument):
    with pytest.raises(ValueError, match=argument):
        call()
