"""km.data.digits_classification / digits_zero_shot: sizes, stratification, class-disjointness,
determinism and bad arguments, checked against scikit-learn's load_digits directly."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

import keras_margins as km


@pytest.fixture(scope="module")
def raw():
    bunch = load_digits()
    return (bunch.data / 16.0).astype("float32"), bunch.target


def _sorted_rows(*arrays):
    rows = np.concatenate(arrays)
    return rows[np.lexsort(rows.T[::-1])]


def _same_multiset(split_x, split_y, x, y):
    """The split's (image, label) rows are exactly the dataset's: nothing lost or duplicated."""
    got = _sorted_rows(np.column_stack([split_x, split_y]))
    want = _sorted_rows(np.column_stack([x, y]))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("fraction", [0.25, 0.1, 0.5])
def test_classification_split_is_stratified_and_complete(raw, fraction):
    x, y = raw
    (xa, ya), (xb, yb) = km.data.digits_classification(test_fraction=fraction)
    assert xa.dtype == xb.dtype == np.float32 and ya.dtype == yb.dtype == np.int32
    assert xa.shape[1] == xb.shape[1] == 64 and 0.0 <= xa.min() and xa.max() <= 1.0
    assert len(xa) == len(ya) and len(xb) == len(yb)
    for c in range(10):
        n = int(np.sum(y == c))
        assert np.sum(yb == c) == int(round(fraction * n)), c  # each class split alike
        assert np.sum(ya == c) + np.sum(yb == c) == n
    assert len(ya) + len(yb) == len(y) == 1797
    _same_multiset(np.concatenate([xa, xb]), np.concatenate([ya, yb]), x, y)
    # every image row is paired with its own label
    lookup = {row.tobytes(): label for row, label in zip(x, y)}
    assert all(lookup[row.tobytes()] == label for row, label in zip(xb, yb))


def test_classification_default_sizes_and_determinism():
    (xa, ya), (xb, yb) = km.data.digits_classification()
    assert (len(xa), len(xb)) == (1347, 450)
    (xa2, ya2), (xb2, yb2) = km.data.digits_classification(seed=0)
    np.testing.assert_array_equal(xb, xb2)
    np.testing.assert_array_equal(ya, ya2)
    (_, _), (xb3, yb3) = km.data.digits_classification(seed=1)
    assert not np.array_equal(xb, xb3)  # another seed, another split (same class counts)
    np.testing.assert_array_equal(np.bincount(yb3), np.bincount(yb))


@pytest.mark.parametrize("train_classes", [(0, 1, 2, 3, 4), (1, 3, 5), (9,), tuple(range(9))])
def test_zero_shot_split_is_class_disjoint_and_complete(raw, train_classes):
    x, y = raw
    (xa, ya), (xb, yb) = km.data.digits_zero_shot(train_classes=train_classes)
    assert set(ya.tolist()) == set(train_classes)
    assert set(yb.tolist()) == set(range(10)) - set(train_classes)
    assert not set(ya.tolist()) & set(yb.tolist())
    assert len(ya) == int(np.isin(y, train_classes).sum()) and len(ya) + len(yb) == len(y)
    _same_multiset(np.concatenate([xa, xb]), np.concatenate([ya, yb]), x, y)
    assert xa.dtype == np.float32 and ya.dtype == np.int32


def test_zero_shot_seed_shuffles_only():
    (xa, ya), (xb, yb) = km.data.digits_zero_shot(seed=0)
    (xa1, ya1), (xb1, yb1) = km.data.digits_zero_shot(seed=1)
    assert not np.array_equal(ya, ya1)  # another order ...
    np.testing.assert_array_equal(_sorted_rows(xa), _sorted_rows(xa1))  # ... same images
    np.testing.assert_array_equal(np.bincount(yb, minlength=10), np.bincount(yb1, minlength=10))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"test_fraction": 0.0}, "test_fraction"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"test_fraction": -0.2}, "test_fraction"),
        ({"test_fraction": float("nan")}, "test_fraction"),
        ({"test_fraction": "0.25"}, "test_fraction"),
        ({"test_fraction": True}, "test_fraction"),
        ({"test_fraction": 0.001}, "test_fraction"),  # a class would get no test image
        ({"test_fraction": 0.999}, "test_fraction"),  # ... or no training image
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"seed": "0"}, "seed"),
    ],
)
def test_classification_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        km.data.digits_classification(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"train_classes": ()}, "train_classes"),
        ({"train_classes": tuple(range(10))}, "train_classes"),  # nothing left to retrieve
        ({"train_classes": (0, 10)}, "train_classes"),  # not a digit
        ({"train_classes": (-1, 2)}, "train_classes"),
        ({"train_classes": (1, 1, 2)}, "train_classes"),
        ({"train_classes": (0.5, 2)}, "train_classes"),
        ({"train_classes": [[0, 1], [2, 3]]}, "train_classes"),
        ({"train_classes": "01234"}, "train_classes"),
        ({"seed": -3}, "seed"),
        ({"seed": None}, "seed"),
    ],
)
def test_zero_shot_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        km.data.digits_zero_shot(**kwargs)
