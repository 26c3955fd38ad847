"""Numerical building blocks of the functional core (private), in ``keras.ops``: floors, masks,
target gathers and the NaN poisoning of invalid labels under XLA.
"""

from keras import ops

from keras_margins.ops._validation import static_shape

#: Normalisation floor. ``x / max(||x||, EPS)`` turns a zero vector into a zero vector
#: (cosine 0 with everything) instead of NaN.
EPS = 1e-12


#: Finite stand-in for -inf in masked reductions (all loss maths runs in float32).
NEG_LARGE = -1e30


def target_mask(labels, num_classes):
    """(N, C) boolean mask of the target column, built by comparison (fuses under XLA)."""
    classes = ops.arange(num_classes, dtype="int32")
    return ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(classes, 0))


def label_poison(labels, num_classes, dtype="float32"):
    """(N,) factor: 1 where ``0 <= labels[i] < num_classes``, NaN elsewhere.

    Eager calls reject bad label values in :func:`as_labels`; inside ``jit_compile`` graphs
    (``tf.function(jit_compile=True)``, ``jax.jit``) values cannot be read, and XLA's gather
    clamps (TF) or wraps/fills (JAX) an out-of-range index, so a wrong class would be used
    silently. Multiplying a per-sample value by this factor makes the value *and its
    gradient* NaN for an invalid label (as TF's compiled sparse cross-entropy does), so the
    batch loss is NaN and the step can never pass for a finite one. Valid rows are multiplied
    by exactly 1.0 (bit-identical). Costs two comparisons and a select over N.
    """
    labels = ops.cast(labels, "int32")
    if num_classes is None:
        raise ValueError("label_poison: `num_classes` must be known (the number of classes).")
    valid = ops.logical_and(labels >= 0, labels < num_classes)
    return ops.cast(ops.where(valid, 1.0, float("nan")), dtype)


def poison_invalid_labels(values, labels, num_classes, anchor=None):
    """``values`` (N,) with the rows whose label is outside [0, num_classes) set to NaN.

    The one place the library checks label *values* under XLA (see :func:`label_poison`).
    Every class-level loss and metric reaches it through :func:`take_target`; call it
    directly on a per-sample value that does not gather the target column.

    ``anchor`` (optional, (N,)) is a per-row quantity of the scores, e.g. ``cos[:, 0]``, to
    pass when ``values`` reaches the scores only through a path that drops a NaN cotangent
    (a ``where`` whose other branch was taken, a gather of an out-of-range index): the
    result gains ``(factor - 1) * anchor``, exactly 0 for a valid row (value and gradient
    bit-identical) and NaN for an invalid one, so the scores' gradient is NaN there too.
    """
    factor = label_poison(labels, num_classes, values.dtype)
    poisoned = values * factor
    if anchor is not None:
        poisoned = poisoned + (factor - 1.0) * ops.cast(anchor, values.dtype)
    return poisoned


def take_target(values, labels, num_classes=None):
    """values[i, labels[i]] as (N,), a gather (no one-hot); NaN where a label is invalid.

    ``num_classes`` (default: the number of columns of ``values``) is the range labels must
    lie in; rows with a label outside [0, num_classes) come back NaN (value and gradient),
    which is how invalid labels surface under ``jit_compile`` (eager calls raise earlier, in
    :func:`as_labels`). The gather reads a clipped index, so its backward pass keeps the NaN
    cotangent of an invalid row (an out-of-range index's would be dropped, leaving the
    scores' gradient finite); valid labels are unchanged by the clip.
    """
    columns = static_shape(values)[1]
    if columns is None:
        columns = ops.shape(values)[1]
    if num_classes is None:
        num_classes = columns
    safe = ops.clip(labels, 0, columns - 1)
    target = ops.squeeze(ops.take_along_axis(values, ops.expand_dims(safe, 1), axis=1), 1)
    return poison_invalid_labels(target, labels, num_classes)


def masked_logsumexp(x, mask, axis=-1):
    """log Σ_{mask} exp(x) along ``axis``, and whether the row had any entry.

    Rows without any selected entry return 0 (not -inf) together with ``valid=False`` so the
    caller can zero them; gradients stay finite everywhere.

    One pass over ``x`` for the max and one for the sum (what XLA fuses best): whether a row
    has a selected entry is read off its masked max (any selected logit is far above
    ``NEG_LARGE / 2``; loss logits are finite and tiny next to 1e30) instead of a separate
    ``any(mask)`` reduction, and unselected entries need no second ``where`` because
    ``exp(NEG_LARGE - max)`` is exactly 0.
    """
    x_masked = ops.where(mask, x, NEG_LARGE)
    row_max = ops.stop_gradient(ops.max(x_masked, axis=axis, keepdims=True))
    has_entry = row_max > 0.5 * NEG_LARGE
    row_max = ops.where(has_entry, row_max, 0.0)
    summed = ops.sum(ops.exp(x_masked - row_max), axis=axis)
    valid = ops.squeeze(has_entry, axis)
    out = ops.log(ops.where(valid, summed, 1.0)) + ops.squeeze(row_max, axis)
    return ops.where(valid, out, 0.0), valid


def safe_norm(x, axis):
    """||x|| with a floor inside the square root: finite gradient at x = 0."""
    return ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=axis), EPS * EPS))
