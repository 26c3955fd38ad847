"""Argument checks of the functional core (private): static shapes, plus concrete label values when a
tensor is eager. They never add graph ops that could break ``jit_compile=True``; label values that
cannot be read inside a compiled graph are handled by ``_numerics.poison_invalid_labels``.
"""

import keras
import numpy as np
from keras import ops


def concrete_value(x):
    """NumPy value of ``x`` when it holds values now (NumPy, eager tensor), else ``None``.

    Backend-agnostic: symbolic tensors (a ``tf.function`` graph, a JAX tracer under ``jit`` or
    ``grad``, a ``KerasTensor``) refuse conversion to NumPy, and that refusal is the test.
    """
    try:
        if isinstance(x, (np.ndarray, np.generic, int, float, list, tuple)):
            return np.asarray(x)
        return np.asarray(ops.convert_to_numpy(x))
    # JAX: TracerArrayConversionError (a TypeError); TF graph: NotImplementedError; KerasTensor: ValueError
    except (TypeError, ValueError, RuntimeError):
        return None


def is_concrete(x):
    """True when ``x`` holds values we may read now (eager tensor, NumPy array)."""
    return concrete_value(x) is not None


def static_shape(x):
    """Static shape as a tuple of ints / None."""
    return tuple(ops.convert_to_tensor(x).shape if not hasattr(x, "shape") else x.shape)


def check_rank(x, rank, name, what):
    shape = static_shape(x)
    if len(shape) != rank:
        raise ValueError(
            f"`{name}` must be a rank-{rank} tensor {what}; got shape {shape}."
        )
    return shape


def check_not_empty(x, name, what):
    """Raise if a static dimension of ``x`` is 0 (an empty batch would average to NaN)."""
    shape = static_shape(x)
    if any(dim == 0 for dim in shape):
        raise ValueError(
            f"`{name}` is empty: expected {what} with every dimension >= 1; got shape {shape}."
        )


def check_not_nan(x, name):
    """Raise if an eager tensor holds NaN/inf (skipped while tracing)."""
    arr = concrete_value(x)
    if arr is not None:
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise ValueError(f"`{name}` contains NaN or inf values.")


def as_labels(labels, num_classes=None, batch_size=None, name="labels"):
    """Integer labels of shape (N,) from (N,) or (N, 1); validated where possible.

    Shapes are checked statically. Values (integral; 0 <= label < num_classes when
    ``num_classes`` is given, any integer otherwise) are checked
    when the tensor is concrete (eager mode); inside ``jit_compile`` graphs they cannot be
    read, and the class-level ops poison invalid rows with NaN instead (:func:`take_target`).
    """
    shape = static_shape(labels)
    if len(shape) == 2 and shape[1] == 1:
        labels = ops.reshape(labels, (-1,))
        shape = (shape[0],)
    if len(shape) != 1:
        raise ValueError(
            f"`{name}` must be integer class ids of shape (N,) or (N, 1); got shape {shape}."
        )
    if batch_size is not None and shape[0] is not None and shape[0] != batch_size:
        raise ValueError(
            f"`{name}` has {shape[0]} entries but the scores/features have {batch_size} rows."
        )
    arr = concrete_value(labels)
    if arr is not None:
        if arr.size:
            if arr.dtype.kind == "f" and (
                not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr))
            ):
                raise ValueError(f"`{name}` must hold integer class ids; got {arr[:5]}...")
            lo, hi = arr.min(), arr.max()
            # Without ``num_classes`` (pair-wise losses, miners) labels are only compared for
            # equality: any integer is a valid class id.
            if num_classes is not None and (lo < 0 or hi >= num_classes):
                bound = f"[0, {num_classes - 1}]"
                raise ValueError(
                    f"`{name}` must lie in {bound}; got values in [{int(lo)}, {int(hi)}]."
                )
    return ops.cast(labels, "int32")


def integer_label_array(y, name):
    """NumPy labels (N,) from (N,) or (N, 1) integer class ids (integral floats accepted), for
    the NumPy-side functions (data subsets, metrics). ``ValueError`` naming ``name`` for another
    rank, non-integer values or dtypes. Range checks are left to the caller."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"`{name}` must be integer labels of shape (N,) or (N, 1); got {y.shape}.")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise ValueError(f"`{name}` must hold integer class ids; got non-integer values.")
    elif y.dtype.kind not in "iu":
        raise ValueError(f"`{name}` must hold integer class ids; got dtype {y.dtype}.")
    return y.astype("int64")


def as_float(x, name, rank=2, what="(N, D)"):
    """float32 (or float64) tensor of the given rank; half precision is promoted."""
    if hasattr(x, "assign"):  # a variable: read it (keras.ops gathers need a tensor)
        x = x * 1
    x = ops.convert_to_tensor(x)
    check_rank(x, rank, name, what)
    check_not_empty(x, name, what)
    dtype = "float64" if keras.backend.standardize_dtype(x.dtype) == "float64" else "float32"
    x = ops.cast(x, dtype)
    check_not_nan(x, name)
    return x


def check_scores(cos, name="cos"):
    """Class-score matrix (N, C) with C >= 2; returns (tensor, C)."""
    cos = as_float(cos, name, 2, "(N, C) of class scores")
    num_classes = static_shape(cos)[1]
    if num_classes is not None and num_classes < 2:
        raise ValueError(f"`{name}` must have at least 2 classes (columns); got {num_classes}.")
    return cos, num_classes


def check_positive(value, name):
    if not value > 0:
        raise ValueError(f"`{name}` must be > 0; got {value}.")


def check_non_negative(value, name):
    """Python-number hyper-parameters that must be >= 0 (NaN fails too)."""
    if not value >= 0:
        raise ValueError(f"`{name}` must be >= 0; got {value}.")


def features_and_kernel(features, kernel, kernel_what="(D, C) with one column per class"):
    """Validated float (N, D) features and (D, C) kernel with matching D, in one dtype."""
    features = as_float(features, "features", 2, "(N, D)")
    kernel = ops.cast(as_float(kernel, "kernel", 2, kernel_what), features.dtype)
    d_x, (d_w, num_classes) = static_shape(features)[1], static_shape(kernel)
    if d_x is not None and d_w is not None and d_x != d_w:
        raise ValueError(f"`features` has D={d_x} but `kernel` has D={d_w} rows; expected (D, C).")
    if num_classes is not None and num_classes < 2:
        raise ValueError(f"`kernel` must have at least 2 class columns; got {num_classes}.")
    return features, kernel
