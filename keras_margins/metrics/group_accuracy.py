"""Accuracy by frequency group for long-tailed classification (host-side, NumPy).

The many-shot / medium-shot / few-shot split of Liu et al. (CVPR 2019, "Large-Scale
Long-Tailed Recognition in an Open World"), used by the long-tailed literature since: classes
with more than 100 training images, 20 to 100, fewer than 20. Each group's accuracy is the
mean of its classes' test accuracies (equal to the pooled accuracy on a balanced test set).
"""

import math

import numpy as np

from keras_margins.ops._validation import integer_label_array


def _number(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"`{name}` must be a number >= 0; got {value!r}.")
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"`{name}` must be a finite number >= 0; got {value}.")
    return value


def _labels(y, name, num_classes, n=None):
    y = integer_label_array(y, name)
    if n is not None and y.shape[0] != n:
        raise ValueError(f"`{name}` has {y.shape[0]} rows but `y_true` has {n}.")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"`{name}` must hold class ids in [0, {num_classes}); got values in "
            f"[{int(y.min())}, {int(y.max())}]."
        )
    return y


def group_accuracy(y_true, y_pred, train_counts, many_threshold=100, few_threshold=20):
    """Overall, many-shot, medium-shot, few-shot and per-class accuracy.

    A class is *many-shot* if it had more than ``many_threshold`` training samples,
    *few-shot* if it had fewer than ``few_threshold``, *medium-shot* otherwise (the usual
    > 100 / 20–100 / < 20 images of Liu et al. 2019; lower both thresholds for small data sets:
    digits has ~135 training images per class). A group's accuracy is the mean of the test
    accuracies of its classes that occur in ``y_true``; it is NaN when no such class exists.
    ``overall`` is the plain accuracy over all test samples.

    Args:
        y_true: integer test labels (N,) or (N, 1).
        y_pred: class scores (N, C) (their argmax is the prediction; ties go to the lowest
            index) or predicted labels (N,).
        train_counts: (C,) number of training samples of each class, e.g.
            ``np.bincount(y_train, minlength=C)``.
        many_threshold: a class with more than this many training samples is many-shot.
            Defaults to 100.
        few_threshold: a class with fewer than this many training samples is few-shot.
            Defaults to 20. Must be <= ``many_threshold``.

    Returns:
        A dict: ``overall``, ``many_shot``, ``medium_shot``, ``few_shot`` (floats in [0, 1]
        or NaN) and ``per_class`` (float64 array (C,), NaN for classes absent from
        ``y_true``).

    Example:
        >>> scores = model.predict(x_test)                                  # (N, 10)
        >>> counts = np.bincount(y_train_lt, minlength=10)
        >>> km.metrics.group_accuracy(y_test, scores, counts, 60, 20)["few_shot"]

    Reference:
        Z. Liu, Z. Miao, X. Zhan, J. Wang, B. Gong, S. X. Yu, "Large-Scale Long-Tailed
        Recognition in an Open World", CVPR 2019 (many/medium/few-shot evaluation).
    """
    many_threshold = _number(many_threshold, "many_threshold")
    few_threshold = _number(few_threshold, "few_threshold")
    if few_threshold > many_threshold:
        raise ValueError(
            f"`few_threshold` ({few_threshold}) must be <= `many_threshold` ({many_threshold})."
        )
    counts = np.asarray(train_counts)
    if counts.ndim != 1 or counts.shape[0] < 2:
        raise ValueError(f"`train_counts` must be a (C,) array with C >= 2; got shape {counts.shape}.")
    if counts.dtype.kind not in "iuf" or not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError("`train_counts` must hold non-negative counts.")
    num_classes = counts.shape[0]
    labels = _labels(y_true, "y_true", num_classes)
    if labels.shape[0] == 0:
        raise ValueError("`y_true` is empty.")
    scores = np.asarray(y_pred)
    if scores.ndim == 2 and scores.shape[1] != 1:
        if scores.shape[1] != num_classes:
            raise ValueError(
                f"`y_pred` has {scores.shape[1]} class columns but `train_counts` has "
                f"{num_classes} classes."
            )
        if scores.shape[0] != labels.shape[0]:
            raise ValueError(f"`y_pred` has {scores.shape[0]} rows but `y_true` has {labels.shape[0]}.")
        if scores.dtype.kind not in "iuf" or not np.all(np.isfinite(scores)):
            raise ValueError("`y_pred` scores must be finite numbers.")
        predicted = np.argmax(scores, axis=1)
    else:
        predicted = _labels(scores, "y_pred", num_classes, labels.shape[0])

    correct = predicted == labels
    per_class = np.full(num_classes, np.nan)
    for c in range(num_classes):
        rows = labels == c
        if rows.any():
            per_class[c] = correct[rows].mean()
    present = ~np.isnan(per_class)
    groups = {
        "many_shot": counts > many_threshold,
        "medium_shot": (counts >= few_threshold) & (counts <= many_threshold),
        "few_shot": counts < few_threshold,
    }
    result = {"overall": float(correct.mean())}
    for name, members in groups.items():
        chosen = members & present
        result[name] = float(per_class[chosen].mean()) if chosen.any() else float("nan")
    result["per_class"] = per_class
    return result
