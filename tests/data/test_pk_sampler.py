"""km.data.pk_batches: P distinct classes × K samples per batch, deterministic per seed."""

import numpy as np
import pytest
import tensorflow as tf

import keras_margins as km

pytestmark = pytest.mark.tf_only  # a tf.data pipeline, independent of the Keras backend


def _data(n_per_class=(9, 7, 12, 5, 8), dim=3):
    y = np.concatenate([np.full(n, c * 10) for c, n in enumerate(n_per_class)]).astype("int32")
    x = np.arange(len(y) * dim, dtype="float32").reshape(len(y), dim)  # row r starts at r*dim
    return x, y


def _check_batch(bx, by, x, y, p, k):
    bx, by = bx.numpy(), by.numpy()
    assert bx.shape == (p * k, x.shape[1]) and by.shape == (p * k,)
    classes, counts = np.unique(by, return_counts=True)
    assert len(classes) == p and np.all(counts == k)
    rows = (bx[:, 0] / x.shape[1]).astype(int)
    np.testing.assert_array_equal(y[rows], by)  # x and y stay paired
    return rows


@pytest.mark.parametrize("p,k", [(3, 4), (5, 2), (2, 5)])
def test_exactly_p_distinct_classes_times_k(p, k):
    x, y = _data()
    ds = km.data.pk_batches((x, y), p=p, k=k, seed=3)
    batches = list(ds)
    assert len(batches) == len(y) // (p * k)
    for bx, by in batches:
        rows = _check_batch(bx, by, x, y, p, k)
        for c in np.unique(by):
            class_rows = rows[by.numpy() == c]
            if np.sum(y == c) >= k:  # without replacement when the class is big enough
                assert len(set(class_rows)) == k


def test_small_class_sampled_with_replacement():
    x, y = _data(n_per_class=(2, 2))
    for bx, by in km.data.pk_batches((x, y), p=2, k=5, seed=0, steps_per_epoch=3):
        rows = _check_batch(bx, by, x, y, 2, 5)
        for c in (0, 10):
            assert set(rows[by.numpy() == c]) == set(np.flatnonzero(y == c))  # all used


def test_deterministic_per_seed_and_fresh_each_epoch():
    x, y = _data()

    def epochs(seed, n=2):
        ds = km.data.pk_batches((x, y), p=3, k=3, seed=seed)
        return [np.concatenate([b.numpy() for _, b in ds]) for _ in range(n)]

    a, b = epochs(7), epochs(7)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], a[1])  # a new epoch draws new batches
    assert not np.array_equal(a[0], epochs(8, 1)[0])


def test_infinite_stream_and_tf_data_input():
    x, y = _data()
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    stream = km.data.pk_batches(ds.batch(4), p=2, k=3, seed=0, infinite=True)
    for bx, by in stream.take(40):  # more than one "epoch" of 41 // 6 batches
        _check_batch(bx, by, x, y, 2, 3)
    first = [b.numpy() for _, b in km.data.pk_batches(ds, p=2, k=3, seed=0).take(2)]
    second = [b.numpy() for _, b in km.data.pk_batches((x, y), p=2, k=3, seed=0).take(2)]
    np.testing.assert_array_equal(np.stack(first), np.stack(second))


def test_dict_features():
    x, y = _data()
    ds = km.data.pk_batches(({"a": x, "b": x[:, :1]}, y), p=2, k=2, seed=0)
    bx, by = next(iter(ds))
    assert bx["a"].shape == (4, 3) and bx["b"].shape == (4, 1)
    np.testing.assert_array_equal(bx["a"].numpy()[:, :1], bx["b"].numpy())


def test_bad_arguments():
    x, y = _data()
    with pytest.raises(ValueError, match="`p`"):
        km.data.pk_batches((x, y), p=6, k=2, seed=0)
    with pytest.raises(ValueError, match="`k`"):
        km.data.pk_batches((x, y), p=2, k=0, seed=0)
    with pytest.raises(ValueError, match="`data`"):
        km.data.pk_batches((x, y[:5]), p=2, k=2, seed=0)
    with pytest.raises(ValueError, match="`data`"):
        km.data.pk_batches((x, y.astype("float32") + 0.5), p=2, k=2, seed=0)
    with pytest.raises(ValueError, match="`data`"):
        km.data.pk_batches(x, p=2, k=2, seed=0)
