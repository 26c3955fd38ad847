"""P×K class-balanced batches (the sampler of the deep-metric-learning papers).

Each batch holds P distinct classes × K samples of each, so that every anchor of a pair loss
(``PairCircleLoss``, miners) has K − 1 positives and (P − 1)·K negatives. Classes are drawn
uniformly without replacement; samples of a class without replacement when it has at least
K of them, otherwise all of them plus draws with replacement. The index arithmetic runs
inside tf.data with stateless random ops, so the stream is a pure function of ``seed``.
"""

import numpy as np
import tensorflow as tf


def _as_arrays(data):
    """(x, y) NumPy structures from (x, y) arrays or a tf.data dataset of (x, y) elements."""
    if isinstance(data, tf.data.Dataset):
        spec_y = data.element_spec[1]
        if spec_y.shape.rank and spec_y.shape[0] != 1:  # batched: (None,) or (B,) labels
            data = data.unbatch()
        xs, ys = [], []
        for x, y in data.as_numpy_iterator():
            xs.append(x)
            ys.append(y)
        if not ys:
            raise ValueError("`data` is an empty dataset.")
        x = tf.nest.map_structure(lambda *parts: np.stack(parts), *xs)
        return x, np.asarray(ys)
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError("`data` must be a tuple (x, y) of arrays or a tf.data.Dataset of (x, y).")
    x, y = data
    return tf.nest.map_structure(np.asarray, x), np.asarray(y)


def _check(x, y, p, k):
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise ValueError(f"`data` labels must be integers of shape (N,); got {y.dtype} {y.shape}.")
    for leaf in tf.nest.flatten(x):
        if leaf.shape[0] != y.shape[0]:
            raise ValueError(
                f"`data` x has {leaf.shape[0]} rows but y has {y.shape[0]} labels."
            )
    if int(p) != p or p < 1:
        raise ValueError(f"`p` (classes per batch) must be a positive integer; got {p}.")
    if int(k) != k or k < 1:
        raise ValueError(f"`k` (samples per class) must be a positive integer; got {k}.")
    num_classes = len(np.unique(y))
    if p > num_classes:
        raise ValueError(f"`p`={p} exceeds the {num_classes} classes present in `data`.")
    return y


def _class_table(y):
    """(C, max_count) table of sample indices per class (padded with 0) and counts (C,)."""
    _, inverse = np.unique(y, return_inverse=True)
    counts = np.bincount(inverse)
    table = np.zeros((len(counts), counts.max()), dtype="int64")
    for c in range(len(counts)):
        members = np.flatnonzero(inverse == c)
        table[c, : len(members)] = members
    return table, counts.astype("int32")


def pk_batches(data, p, k, seed=0, steps_per_epoch=None, infinite=False):
    """A ``tf.data.Dataset`` of class-balanced batches ``(x, y)`` of P classes × K samples.

    Args:
        data: ``(x, y)`` arrays (``x`` may be a dict/tuple of arrays) or a ``tf.data.Dataset``
            of ``(x, y)`` elements (batched datasets are unbatched); it is read into memory once.
        p: classes per batch (distinct). Batch size = p·k, labels grouped.
        k: samples per class.
        seed: integer; the stream is a deterministic function of ``seed`` (each new
            iteration, e.g. each Keras epoch, draws fresh batches, reproducibly; default 0).
        steps_per_epoch: batches per iteration (default None: ``len(y) // (p·k)``, at least 1).
        infinite: repeat forever, then pass ``steps_per_epoch`` to ``fit`` (default False).

    Returns:
        A ``tf.data.Dataset`` of ``(x, y)`` batches.

    Example:
        >>> (x, y), _ = km.data.digits_zero_shot()
        >>> ds = km.data.pk_batches((x, y), p=5, k=8, seed=0)
        >>> model.fit(ds, epochs=10)   # every batch: 5 distinct digits × 8 images

    Reference:
        - Hermans, Beyer & Leibe, 2017. [In Defense of the Triplet Loss for Person
          Re-Identification](https://arxiv.org/abs/1703.07737) (P×K batches).
    """
    steps = steps_per_epoch
    if steps is not None and (int(steps) != steps or steps < 1):
        raise ValueError(f"`steps_per_epoch` must be a positive integer or None; got {steps!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"`seed` must be an integer; got {seed!r}.")
    x, y = _as_arrays(data)
    y = _check(x, y, p, k)
    p, k = int(p), int(k)
    table, counts = _class_table(y)
    num_classes, max_count = table.shape
    table_t, counts_t = tf.constant(table), tf.constant(counts)
    x_t = tf.nest.map_structure(tf.constant, x)
    y_t = tf.constant(y)
    take = min(k, max_count)

    def make_batch(draw):
        seeds = tf.random.experimental.stateless_split(
            tf.stack([tf.constant(seed, tf.int64), draw]), num=3
        )
        chosen = tf.random.experimental.stateless_shuffle(
            tf.range(num_classes), seed=seeds[0]
        )[:p]
        count = tf.gather(counts_t, chosen)[:, None]  # (p, 1)
        keys = tf.random.stateless_uniform((p, max_count), seed=seeds[1])
        keys = tf.where(tf.range(max_count)[None, :] < count, keys, 2.0)
        without = tf.pad(tf.argsort(keys, axis=1)[:, :take], [[0, 0], [0, k - take]])
        with_repl = tf.cast(
            tf.random.stateless_uniform((p, k), seed=seeds[2]) * tf.cast(count, tf.float32),
            tf.int32,
        )
        slot = tf.where(tf.range(k)[None, :] < count, without, tf.minimum(with_repl, count - 1))
        rows = tf.gather(table_t, chosen)
        index = tf.reshape(tf.gather(rows, slot, batch_dims=1), [-1])
        return tf.nest.map_structure(lambda a: tf.gather(a, index), x_t), tf.gather(y_t, index)

    ds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    if not infinite:
        steps = steps_per_epoch or max(1, len(y) // (p * k))
        ds = ds.take(int(steps))
    return ds.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(2)
