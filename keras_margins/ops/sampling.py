"""Class sampling for Partial FC (An et al., ICCVW 2021): which class centres a step trains.

Partial FC keeps, in each training step, every class present in the batch (the positives) and
fills the rest of a fixed budget of K columns with other classes drawn at random. Both
samplers here first draw K *candidates* in a random order, then make room for the positives:

* ``"exact"``: the K classes with the largest per-step hashed scores (``top_k`` over C): a
  uniformly random ordered K-subset. Costs a selection over C per step, a large part of a
  Partial FC step at C = 1M (``benchmarks/scale_classes.py --parts``, figures in
  ``benchmarks/RESULTS.md``).
* ``"affine"``: a window of a random *affine permutation* of the classes, O(K) and nothing of
  size C. With ``a`` coprime with C (from a table of 1 024 such multipliers with their
  inverses mod C, made once per C on the host) and an offset ``b`` uniform in [0, C),
  ``perm(p) = (a·p + b) mod C`` is a bijection of [0, C) (position -> class) with inverse
  ``pos(c) = a⁻¹·(c − b) mod C``; the candidates are the classes at positions 0 … K−1.
  Every class lands at a uniformly random position (b is uniform), so every class has the
  same chance K/C to be a candidate; the set is not an exactly uniform K-subset (it is an
  arithmetic progression mod C with a random step), which matters little once C is large.

Making room for the positives (both samplers): a batch class among the candidates keeps its
slot; the m batch classes that are not take the places of the last m candidates that are not
batch classes, all among the last N slots (N ≥ the number of distinct batch classes), an
O(N²) computation on the labels. The sample is therefore the positives plus the first
K − |P| non-positive classes of the random order: with ``"exact"``, a uniformly random
(K − |P|)-subset of the other classes, as with insightface's forced-positive ``top_k``.

All arithmetic is int32 (no int64, so it runs on JAX without x64): the affine products are
formed bit by bit with reductions mod C, which requires C < 2^30.
"""

import math

import numpy as np
from keras import ops

from keras_margins.ops._validation import as_labels, static_shape

#: Multipliers kept per class count (each with its inverse mod C).
_TABLE_SIZE = 1024
#: Up to this many classes ``method="auto"`` samples exactly (top-k of hashed scores).
EXACT_MAX_CLASSES = 2**17
METHODS = ("auto", "exact", "affine")
#: Largest class count the int32 arithmetic supports (2·C must fit in int32).
MAX_CLASSES = 2**30


def _multiplier_table(num_classes):
    """(a, a⁻¹ mod C) pairs, ``a`` coprime with C, drawn once per C (deterministic)."""
    if num_classes <= 2:
        return np.ones((1,), "int32"), np.ones((1,), "int32")
    rng = np.random.default_rng(num_classes)
    pairs = []
    for candidate in rng.integers(1, num_classes, size=16 * _TABLE_SIZE):
        if math.gcd(int(candidate), num_classes) == 1:
            pairs.append((int(candidate), pow(int(candidate), -1, num_classes)))
            if len(pairs) == _TABLE_SIZE:
                break
    if not pairs:  # pragma: no cover - there is always a unit (1) for C >= 2
        pairs = [(1, 1)]
    a, a_inv = zip(*pairs)
    return np.asarray(a, "int32"), np.asarray(a_inv, "int32")


def _hash32(x):
    """An int32 mixing function (xor-shift / multiply rounds, wrapping arithmetic)."""
    if isinstance(x, (int, np.integer)):
        x = ((int(x) & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000  # wrap to int32
    x = ops.cast(x, "int32")
    for multiplier in (0x045D9F3B, 0x045D9F3B):
        x = ops.bitwise_xor(x, ops.bitwise_and(ops.right_shift(x, 16), 0xFFFF))
        x = x * multiplier
    x = ops.bitwise_xor(x, ops.bitwise_and(ops.right_shift(x, 16), 0xFFFF))
    return ops.bitwise_and(x, 0x7FFFFFFF)  # non-negative


def _mod_reduce(x, num_classes):
    """x mod C for 0 <= x < 2C (a select instead of a division)."""
    return ops.where(x >= num_classes, x - num_classes, x)


def _mulmod(x, a, num_classes):
    """(x·a) mod C for int32 tensors 0 <= x, a < C, bit by bit so nothing exceeds 2C."""
    acc = ops.zeros_like(x)
    for bit in reversed(range(max(int(num_classes - 1).bit_length(), 1))):
        acc = _mod_reduce(acc * 2, num_classes)
        take = ops.bitwise_and(ops.right_shift(a, bit), 1)
        acc = _mod_reduce(acc + x * take, num_classes)
    return acc


def _affine_range(a, b, num_classes, count):
    """perm(p) = (a·p + b) mod C for p = 0 … count−1, as a (count,) int32 tensor.

    p = q·B + r: (a·q·B + b) mod C for the Q block starts and (a·r) mod C for the B offsets,
    then one add and reduction on a (Q, B) grid (O(count) work, O(√count) multiplications).
    """
    block = max(int(math.isqrt(count)), 1)
    blocks = -(-count // block)
    offsets = _mulmod(ops.arange(block, dtype="int32"), a, num_classes)
    starts = (np.arange(blocks, dtype=np.int64) * block) % num_classes
    starts = _mod_reduce(_mulmod(ops.convert_to_tensor(starts.astype("int32")), a, num_classes) + b,
                         num_classes)
    grid = _mod_reduce(ops.expand_dims(starts, 1) + ops.expand_dims(offsets, 0), num_classes)
    return ops.reshape(grid, (-1,))[:count]


def _exact_candidates(h, num_classes, num_sampled):
    """The first K classes of a uniformly random order: top-k of per-class hashed scores."""
    classes = ops.arange(num_classes, dtype="int32")
    scores = _hash32(classes * -1640531535 + h)  # 0x9E3779B1 as int32; wraps around
    return ops.cast(ops.top_k(scores, num_sampled, sorted=True)[1], "int32")


def sample_classes(labels, num_classes, num_sampled, seed=0, class_offset=0, method="auto"):
    """Partial FC's class sample: every class of the batch plus random others, K in all.

    Draws ``num_sampled`` (K) distinct class ids from a block of ``num_classes`` (C) classes,
    ``class_offset … class_offset + C − 1``: every class of ``labels`` that lies in the block
    (the positives), the rest chosen at random (each class outside the batch has the same
    chance; see the module notes for the affine-permutation sampler and why it avoids a
    ``top_k`` over C). Static shapes throughout, so it compiles under XLA; O(K + N²) work,
    nothing of size C. With K = C it returns every class in order (no sampling).

    ``labels`` whose length N is known only when the graph runs (TensorFlow's ``fit`` on a
    sample count that is not a multiple of the batch size, or on a ``tf.data`` pipeline
    batched without ``drop_remainder``) are accepted with a static K; K >= N is then checked
    only through the result: a class of the batch that finds no slot (N > K) gets sampled
    label −1.

    For a class-sharded head call it once per shard with that shard's ``class_offset`` and
    size: labels of other shards are simply not positives there (their sampled label is −1).

    Args:
        labels: (N,) or (N, 1) integer class ids (global ids; any integer is accepted, ids
            outside the block get sampled label −1).
        num_classes: C, the number of classes of the block (Python int, 1 <= C < 2^30).
        num_sampled: K, the number of sampled classes (Python int), with
            min(N, C) <= K <= C so that every positive fits.
        seed: int or int32 scalar tensor (default 0); the same seed gives the same sample.
            Change it every step (e.g. seed + step counter) to draw a new sample.
        class_offset: first class id of the block (default 0).
        method: ``"exact"`` (a uniformly random K-subset: top-k of hashed per-class scores,
            O(C log K) per step), ``"affine"`` (a window of a random affine permutation:
            every class equally likely, O(K + N²), nothing of size C) or ``"auto"``
            (default: exact up to C = 131 072 classes, affine above).

    Returns:
        ``(class_ids, sampled_labels)``: ``class_ids`` (K,) int32 distinct ids *within the
        block* (add ``class_offset`` for global ids), every positive among them;
        ``sampled_labels`` (N,) int32 with ``class_ids[sampled_labels[i]] + class_offset ==
        labels[i]`` for labels in the block, −1 for labels outside it.

    Example:
        >>> import numpy as np, keras_margins as km
        >>> ids, local = km.ops.sample_classes(np.array([3, 7, 3]), num_classes=100,
        ...                                    num_sampled=10, seed=1)
        >>> ids, local = np.asarray(ids), np.asarray(local)
        >>> ids.shape, local.shape
        ((10,), (3,))
        >>> ids[local].tolist()          # every batch class is kept, labels map onto it
        [3, 7, 3]

    Reference:
        An et al., "Partial FC: Training 10 Million Identities on a Single Machine",
        ICCVW 2021 (positive classes kept, negatives sampled uniformly, Sec. 3).
    """
    for value, name in ((num_classes, "num_classes"), (num_sampled, "num_sampled"),
                        (class_offset, "class_offset")):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise ValueError(f"`{name}` must be a Python integer; got {value!r}.")
    num_classes, num_sampled, class_offset = int(num_classes), int(num_sampled), int(class_offset)
    if not 1 <= num_classes < MAX_CLASSES:
        raise ValueError(f"`num_classes` must be in [1, 2^30); got {num_classes}.")
    labels = as_labels(labels)
    batch = static_shape(labels)[0]
    if not num_sampled <= num_classes or num_sampled < 1:
        raise ValueError(
            f"`num_sampled` must be in [min(N, C), C] = [.., {num_classes}]; got {num_sampled}."
        )
    if not isinstance(seed, (int, np.integer)) and len(static_shape(seed)) != 0:
        raise ValueError(f"`seed` must be an int or a scalar integer tensor; got shape "
                         f"{static_shape(seed)}.")
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}; got {method!r}.")
    exact = method == "exact" or (method == "auto" and num_classes <= EXACT_MAX_CLASSES)
    local = labels - class_offset
    in_block = ops.logical_and(local >= 0, local < num_classes)
    if num_sampled == num_classes:
        return ops.arange(num_classes, dtype="int32"), ops.where(in_block, local, -1)
    if batch is None:
        # N known when the graph runs: positives enter the last min(N, K) slots (valid shapes
        # for any N; with N > K some positives find no slot and get −1).
        batch = ops.shape(labels)[0]
        tail_size = ops.minimum(batch, num_sampled)
    elif num_sampled < batch:
        raise ValueError(
            f"`num_sampled` must be >= min(N, C) = {batch} so that every class of the batch "
            f"fits; got {num_sampled}."
        )
    else:
        tail_size = batch

    h = _hash32(seed)
    safe = ops.where(in_block, local, 0)
    if exact:
        candidates = _exact_candidates(h, num_classes, num_sampled)
        slots = ops.scatter(ops.expand_dims(candidates, 1),
                            ops.arange(1, num_sampled + 1, dtype="int32"), (num_classes,))
        position = ops.take(slots, safe) - 1  # −1: not a candidate
        in_window = ops.logical_and(in_block, position >= 0)
    else:
        # The step's permutation: perm(p) = (a·p + b) mod C, pos(c) = a⁻¹·(c − b) mod C.
        table_a, table_inv = _multiplier_table(num_classes)
        b = ops.mod(h, num_classes)
        pick = ops.mod(_hash32(ops.bitwise_xor(h, 0x2545F491)), len(table_a))
        a = ops.take(ops.convert_to_tensor(table_a), pick)
        a_inv = ops.take(ops.convert_to_tensor(table_inv), pick)
        position = _mulmod(_mod_reduce(safe - b + num_classes, num_classes), a_inv, num_classes)
        in_window = ops.logical_and(in_block, position < num_sampled)
        candidates = _affine_range(a, b, num_classes, num_sampled)

    # First occurrence of each class in the batch, and the batch classes outside the window.
    same = ops.logical_and(ops.expand_dims(local, 1) == ops.expand_dims(local, 0),
                           ops.expand_dims(in_block, 0))
    index = ops.arange(batch, dtype="int32")
    earlier = ops.expand_dims(index, 0) < ops.expand_dims(index, 1)  # [i, j]: j < i
    first = ops.logical_and(in_block, ops.logical_not(ops.any(ops.logical_and(same, earlier), 1)))
    outside = ops.logical_and(first, ops.logical_not(in_window))
    outside_int = ops.cast(outside, "int32")
    missing = ops.sum(outside_int)
    outside_rank = ops.cumsum(outside_int) - 1  # rank among the outside classes

    # The last N positions of the window: which hold a batch class, which can be replaced.
    tail_pos = ops.arange(num_sampled - tail_size, num_sampled, dtype="int32")
    holds = ops.any(ops.logical_and(ops.expand_dims(tail_pos, 1) == ops.expand_dims(position, 0),
                                    ops.expand_dims(in_window, 0)), axis=1)
    free = ops.cast(ops.logical_not(holds), "int32")
    from_end = ops.flip(ops.cumsum(ops.flip(free, 0)), 0)  # free slots at positions >= t
    replace = ops.logical_and(free > 0, from_end <= missing)
    # match[t, i]: tail slot t receives outside class i.
    match = ops.logical_and(
        ops.logical_and(ops.expand_dims(replace, 1), ops.expand_dims(outside, 0)),
        ops.expand_dims(from_end - 1, 1) == ops.expand_dims(outside_rank, 0),
    )
    incoming = ops.sum(ops.where(match, ops.expand_dims(safe, 0), 0), axis=1)

    tail = ops.where(replace, incoming, candidates[num_sampled - tail_size:])
    class_ids = ops.concatenate([candidates[: num_sampled - tail_size], tail], axis=0)
    class_ids = ops.reshape(class_ids, (num_sampled,))  # static K even for a dynamic N

    slot_of_first = ops.where(ops.any(match, axis=0),
                              ops.sum(ops.where(match, ops.expand_dims(tail_pos, 1), 0), axis=0), -1)
    first_index = ops.cast(ops.argmax(ops.cast(same, "int32"), axis=1), "int32")
    sampled = ops.where(in_window, position, ops.take(slot_of_first, first_index))
    return class_ids, ops.where(in_block, sampled, -1)
