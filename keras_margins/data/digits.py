"""The embedded real dataset: scikit-learn's bundled ``load_digits`` (no download).

1 797 8×8 grey-scale handwritten digits (UCI optdigits test set), 10 classes. Pixels are
scaled to [0, 1] and flattened to 64 features (float32).
"""

import numpy as np


def _load():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.data / 16.0).astype("float32")
    y = bunch.target.astype("int32")
    return x, y


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer; got {seed!r}.")


def digits_classification(test_fraction=0.25, seed=0):
    """Stratified train/test split of the bundled digits: ``((x_train, y_train), (x_test, y_test))``.

    Args:
        test_fraction: share of each class in the test split, in (0, 1) (default 0.25).
        seed: integer seed of the split (default 0).

    Returns:
        Two ``(x, y)`` pairs: float32 (N, 64) pixels in [0, 1] and int32 (N,) labels 0–9.

    Example:
        >>> (x, y), (xt, yt) = km.data.digits_classification()
        >>> x.shape, xt.shape   # ((1347, 64), (450, 64))
    """
    if (isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float, np.number))
            or not 0.0 < test_fraction < 1.0):
        raise ValueError(f"`test_fraction` must be a number in (0, 1); got {test_fraction!r}.")
    _check_seed(seed)
    x, y = _load()
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(test_fraction * len(idx)))
        if not 0 < n_test < len(idx):
            raise ValueError(
                f"`test_fraction` = {test_fraction} leaves digit {c} ({len(idx)} images) with "
                f"{n_test} test images: every class needs at least one in each split."
            )
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    train_idx = rng.permutation(np.concatenate(train_idx))
    test_idx = rng.permutation(np.concatenate(test_idx))
    return (x[train_idx], y[train_idx]), (x[test_idx], y[test_idx])


def digits_zero_shot(train_classes=(0, 1, 2, 3, 4), seed=0):
    """Class-disjoint split of the metric-learning papers: train on ``train_classes``, retrieve
    among the others.

    Args:
        train_classes: the digits of the training split, a non-empty proper subset of 0–9
            (default (0, 1, 2, 3, 4)).
        seed: integer seed of the shuffling (default 0).

    Returns:
        ``((x_train, y_train), (x_test, y_test))``; labels keep their digit values.

    Example:
        >>> (x, y), (xt, yt) = km.data.digits_zero_shot()
        >>> sorted(set(yt))   # [5, 6, 7, 8, 9]
    """
    classes = np.asarray(train_classes)
    if (classes.ndim != 1 or not np.issubdtype(classes.dtype, np.integer)
            or len(set(classes.tolist())) != classes.size or np.any((classes < 0) | (classes > 9))
            or not 0 < classes.size < 10):
        raise ValueError(
            "`train_classes` must be distinct integer digits 0–9 forming a non-empty proper "
            f"subset of 0..9; got {train_classes!r}."
        )
    _check_seed(seed)
    x, y = _load()
    is_train = np.isin(y, classes)
    rng = np.random.default_rng(seed)
    tr = rng.permutation(np.flatnonzero(is_train))
    te = rng.permutation(np.flatnonzero(~is_train))
    return (x[tr], y[tr]), (x[te], y[te])
