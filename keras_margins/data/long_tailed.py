"""Long-tailed training sets (the CIFAR-10-LT / CIFAR-100-LT construction).

Cui et al. (CVPR 2019, "Class-Balanced Loss Based on Effective Number of Samples") and Cao
et al. (NeurIPS 2019, LDAM) build a long-tailed training set from a balanced one by keeping
n_i = n_max · ρ^(−i/(C−1)) images of class i (an exponential profile from n_max down to
n_max/ρ, ρ the imbalance ratio), and evaluate on the untouched balanced test set. The
zero-centroid regulariser of Zhou et al. (ICLR 2022, Sec. 4.3) is aimed at this setting.

NumPy only; TensorFlow is imported only when a ``tf.data.Dataset`` is passed.
"""

import math

import numpy as np

from keras_margins.ops._validation import integer_label_array


def _check_ratio(imbalance_ratio):
    if isinstance(imbalance_ratio, bool) or not isinstance(imbalance_ratio, (int, float, np.number)):
        raise ValueError(f"`imbalance_ratio` must be a number >= 1; got {imbalance_ratio!r}.")
    if not (imbalance_ratio >= 1 and math.isfinite(imbalance_ratio)):
        raise ValueError(f"`imbalance_ratio` must be a finite number >= 1; got {imbalance_ratio}.")
    return float(imbalance_ratio)


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer; got {seed!r}.")
    return int(seed)


def _label_vector(y, name="y"):
    y = integer_label_array(y, name)
    if y.shape[0] == 0:
        raise ValueError(f"`{name}` is empty.")
    if np.any(y < 0):
        raise ValueError(f"`{name}` must hold class ids >= 0; got {int(y.min())}.")
    return y


def long_tailed_counts(class_counts, imbalance_ratio):
    """Per-class sample counts of the long-tailed subset: min(n_c, floor(n_max·ρ^(−i/(C−1)))).

    ``class_counts`` (C,) are the available samples of classes 0..C−1 (class i is the i-th
    smallest label); n_max is their maximum.

    Example:
        >>> km.data.long_tailed_counts([500] * 10, 10)
        array([500, 387, 299, 232, 179, 139, 107,  83,  64,  50])
    """
    ratio = _check_ratio(imbalance_ratio)
    counts = np.asarray(class_counts, dtype="int64")
    if counts.ndim != 1 or counts.shape[0] < 2 or np.any(counts < 0):
        raise ValueError(f"`class_counts` must hold >= 2 non-negative counts; got {class_counts!r}.")
    n_max = int(counts.max())
    num_classes = counts.shape[0]
    wanted = np.array(
        [math.floor(n_max * ratio ** (-i / (num_classes - 1)) + 1e-9) for i in range(num_classes)],
        dtype="int64",
    )
    return np.minimum(wanted, counts)


def _kept_indices(y, imbalance_ratio, seed):
    """Sorted indices of the samples kept (a random subset of each class, by ``seed``)."""
    classes, counts = np.unique(y, return_counts=True)
    if classes.shape[0] < 2:
        raise ValueError(f"`y` must hold at least 2 classes; got {classes.tolist()}.")
    keep = long_tailed_counts(counts, imbalance_ratio)
    rng = np.random.default_rng(seed)
    kept = [rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, keep)]
    return np.sort(np.concatenate(kept))


def long_tailed(x, y, imbalance_ratio, seed=0):
    """A long-tailed subset of a training set: class i keeps floor(n_max · ρ^(−i/(C−1))).

    The CIFAR-10-LT / CIFAR-100-LT construction (Cui et al. 2019; Cao et al. 2019): the C
    classes (sorted by label) keep an exponentially decreasing number of samples, from n_max
    (the largest class count) for the first class to floor(n_max/ρ) for the last, where ρ is
    ``imbalance_ratio``. A class with fewer samples than its quota keeps all of them. Which
    samples of a class are kept is random (``seed``); the kept samples stay in their original
    order.

    Apply it to the **training split only**: the test set stays balanced, as in the papers,
    so per-group accuracies (``km.metrics.group_accuracy``) are comparable across classes.

    Args:
        x: features: an array (or a dict/tuple of arrays) with N rows, or an *unbatched*
            ``tf.data.Dataset`` of ``(x, y)`` elements (then pass ``y=None``). The dataset is
            read once to count the labels and must yield its elements in the same order each
            time (shuffle after this function, not before).
        y: integer labels (N,) or (N, 1) for array input; None for a dataset.
        imbalance_ratio: ρ >= 1, the ratio n_max / n_min (1 keeps n_max of every class).
        seed: non-negative integer choosing which samples of each class are kept. Defaults
            to 0.

    Returns:
        ``(x_lt, y_lt)`` arrays (same structure and dtypes as the input) for array input, or
        a ``tf.data.Dataset`` of the kept ``(x, y)`` elements for a dataset.

    Example:
        >>> (x, y), (x_test, y_test) = km.data.digits_classification()
        >>> x_lt, y_lt = km.data.long_tailed(x, y, imbalance_ratio=10)
        >>> np.bincount(y_lt)   # [134 106 82 63 49 38 29 22 17 13]: n_max = 137, floor(137/10)

    Reference:
        Y. Cui, M. Jia, T.-Y. Lin, Y. Song, S. Belongie, "Class-Balanced Loss Based on
        Effective Number of Samples", CVPR 2019 (Sec. 5.1, long-tailed CIFAR);
        K. Cao, C. Wei, A. Gaidon, N. Arechiga, T. Ma, "Learning Imbalanced Datasets with
        Label-Distribution-Aware Margin Loss", NeurIPS 2019.
    """
    ratio = _check_ratio(imbalance_ratio)
    seed = _check_seed(seed)
    if _is_dataset(x):
        if y is not None:
            raise ValueError("`y` must be None when `x` is a tf.data.Dataset of (x, y) elements.")
        return _long_tailed_dataset(x, ratio, seed)
    if y is None:
        raise ValueError("`y` is required when `x` is an array (pass labels of shape (N,)).")
    labels = _label_vector(y)
    leaves = _flatten(x)
    if not leaves:
        raise ValueError("`x` holds no arrays.")
    for leaf in leaves:
        if np.ndim(leaf) == 0 or np.shape(leaf)[0] != labels.shape[0]:
            raise ValueError(
                f"`x` must have one row per label: {labels.shape[0]} labels but x has shape "
                f"{np.shape(leaf)}."
            )
    kept = _kept_indices(labels, ratio, seed)
    return _map(lambda a: np.asarray(a)[kept], x), np.asarray(y)[kept]


# ----------------------------------------------------------------------------- structures
def _flatten(x):
    if isinstance(x, dict):
        return [leaf for key in sorted(x) for leaf in _flatten(x[key])]
    if isinstance(x, (list, tuple)):
        return [leaf for item in x for leaf in _flatten(item)]
    return [x]


def _map(fn, x):
    if isinstance(x, dict):
        return {key: _map(fn, value) for key, value in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_map(fn, item) for item in x)
    return fn(x)


# ---------------------------------------------------------------------------- tf.data path
def _is_dataset(x):
    module = type(x).__module__ or ""
    if not module.startswith("tensorflow"):
        return False
    import tensorflow as tf

    return isinstance(x, tf.data.Dataset)


def _long_tailed_dataset(dataset, ratio, seed):
    import tensorflow as tf

    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2:
        raise ValueError("`x` must be a tf.data.Dataset of (x, y) elements.")
    label_spec = spec[1]
    if label_spec.shape.rank is None or label_spec.shape.rank > 1 or (
        label_spec.shape.rank == 1 and label_spec.shape[0] != 1
    ):
        raise ValueError(
            "`x` must be an unbatched tf.data.Dataset of (x, y) elements with scalar labels; "
            f"got labels of shape {label_spec.shape} (batch after long_tailed)."
        )
    labels = np.array(
        [np.reshape(v, ()) for v in dataset.map(lambda _, label: label).as_numpy_iterator()]
    )
    if labels.size == 0:
        raise ValueError("`x` is an empty dataset.")
    kept = np.zeros(labels.shape[0], dtype=bool)
    kept[_kept_indices(_label_vector(labels), ratio, seed)] = True
    keep = tf.constant(kept)
    return (
        dataset.enumerate()
        .filter(lambda index, element: tf.gather(keep, index))
        .map(lambda index, element: element)
    )
