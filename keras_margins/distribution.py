"""Class-sharded heads and multi-host training with Keras' own ``keras.distribution`` API.

Face recognition and re-identification train heads with 10⁵–10⁷ classes: the (D, C) kernel
(and its optimizer slots) no longer fits one device, and the (N, C) cosines are the largest
tensor of the step. ``class_parallel()`` returns a ``keras.distribution.ModelParallel`` that
gives every device C / n columns of every library head's kernel, as Partial FC does (An et
al., "Partial FC: Training 10 Million Identities on a Single Machine", ICCVW 2021, Sec. 3.1:
model parallelism of the classification layer, data parallelism of the backbone). Nothing
else changes: build, compile and fit the model as on one device.

Keras' distribution API runs on the JAX backend (TensorFlow users keep
``tf.distribute.MirroredStrategy``, see the README). This module imports neither JAX nor
TensorFlow when it is imported, so ``km.distribution`` exists on every backend.
"""

import math

import keras

__all__ = [
    "class_parallel",
    "class_variable",
    "is_class_sharded",
    "sharded_partial_cosines",
    "uniform_block_sampler",
]

#: Mesh axis names: the batch is split over both axes, the class axis over ``"model"``.
BATCH_AXIS = "batch"
MODEL_AXIS = "model"


def _current_layer():
    """The layer whose ``add_weight`` is creating a variable right now, or None.

    ``keras.layers.Layer.add_weight`` creates its variables inside
    ``backend.name_scope(layer.name, caller=layer)``; the innermost scope's caller is the
    layer, whatever its name or its parent's. Keras keeps that stack in a private module, so
    a Keras release that moves it only turns class sharding off; the tests catch that.
    """
    from keras_margins._compat import global_state

    if global_state is None:  # pragma: no cover - Keras internals moved
        return None
    stack = global_state.get_global_attribute("name_scope_stack")
    if not stack:
        return None
    return getattr(stack[-1], "caller", None)


#: Names of the heads' class-indexed weights: (D, C) ``kernel`` or class-major (C, D) ``centers``.
CLASS_WEIGHT_NAMES = ("kernel", "centers")


def class_variable(head):
    """The variable that stores ``head``'s class prototypes, or None (head not built).

    Args:
        head: a ``keras_margins`` head.

    Returns:
        Its (D, C) ``kernel`` variable, or the (C, D) ``centers`` variable of a class-major
        ``LargestMarginHead`` (``kernel_layout="class_major"``); the one ``class_parallel``
        splits and whose ``.value.addressable_shards`` show each device's share.

    Example:
        >>> head = km.layers.LargestMarginHead(10); head.build((None, 4))
        >>> km.distribution.class_variable(head).shape
        (4, 10)
    """
    for variable in getattr(head, "weights", ()):
        if variable.name in CLASS_WEIGHT_NAMES and len(variable.shape) == 2:
            return variable
    return None


def class_axis(head, shape=None):
    """The axis of ``head``'s prototype variable (of ``shape`` if given) that indexes classes.

    A head may state it with a ``class_axis`` attribute; a class-major head
    (``class_major=True``, (C, D) storage) has it first; otherwise it is the axis of size
    ``num_classes``, the last one when D = C (the default (D, C) kernel).
    """
    if shape is None:
        variable = class_variable(head)
        if variable is None:
            return None
        shape = tuple(variable.shape)
    rank = len(shape)
    axis = getattr(head, "class_axis", None)
    if axis is None and getattr(head, "class_major", False):
        axis = 0
    if axis is not None:
        return int(axis) % rank
    matches = [i for i, size in enumerate(shape) if size == getattr(head, "num_classes", None)]
    return matches[-1] if matches else None


class _BatchOverMesh(keras.distribution.TensorLayout):
    """A layout whose first axis is split over several mesh axes at once (JAX allows it)."""

    def _validate_axes(self):
        if self._device_mesh:
            names = set(self._device_mesh.axis_names)
            used = set()
            for entry in self._axes:
                if entry is not None:
                    used.update(entry if isinstance(entry, tuple) else (entry,))
            if used - names:
                raise ValueError(f"Invalid axis names {used - names}; the mesh has {names}.")


class _ClassParallel(keras.distribution.ModelParallel):
    """``ModelParallel`` over a ("batch", "model") mesh that shards the class axis of every
    ``keras_margins`` head's kernel over "model" and the batch over the whole mesh."""

    def __init__(self, layout_map, **kwargs):
        super().__init__(layout_map=layout_map, batch_dim_name=BATCH_AXIS, **kwargs)
        self._model_axis_size = self.device_mesh.shape[1]

    @property
    def model_axis_size(self):
        """How many devices share each head's columns (C / model_axis_size each)."""
        return self._model_axis_size

    @property
    def num_model_replicas(self):
        # The batch is split over every device of the mesh (one data shard per device), which
        # is what Keras' dataset auto-sharding needs to know.
        return self.device_mesh.devices.size

    def get_data_layout(self, data_shape):
        axes = [None] * len(data_shape)
        axes[0] = (BATCH_AXIS, MODEL_AXIS)
        return _BatchOverMesh(axes, self.device_mesh)

    def get_variable_layout(self, variable):
        if getattr(variable, "_layout", None) is not None:
            return variable._layout
        layout = self._head_kernel_layout(variable)
        if layout is not None:
            return layout
        return super().get_variable_layout(variable)

    def _head_kernel_layout(self, variable):
        from keras_margins.layers._base import ClassHead

        head = _current_layer()
        if not isinstance(head, ClassHead) or variable.name not in CLASS_WEIGHT_NAMES:
            return None
        shape = tuple(variable.shape)
        axis = class_axis(head, shape)
        if axis is None:
            return None
        if shape[axis] % self._model_axis_size:
            raise ValueError(
                f"{type(head).__name__} {head.name!r} has num_classes={shape[axis]}, which "
                f"`model_axis_size`={self._model_axis_size} does not divide: each device must "
                f"hold the same number of columns. Use a multiple of {self._model_axis_size} "
                "classes (extra classes that never occur as labels are harmless) or another "
                "`model_axis_size`."
            )
        axes = [None] * len(shape)
        axes[axis] = MODEL_AXIS
        return keras.distribution.TensorLayout(axes, self.device_mesh)


def class_parallel(devices=None, model_axis_size=None):
    """A ``keras.distribution.ModelParallel`` that shards every head's classes over devices.

    The devices form a mesh of shape (n / model_axis_size, model_axis_size) with axes
    ``("batch", "model")``. The kernel of every ``keras_margins`` head
    (``LargestMarginHead``, ``VirtualSoftmaxHead``, ``PEDCCHead``; found by layer type, so
    custom layer names and nesting in ``Sequential`` or ``MarginModel`` do not matter) is
    split along its class axis over ``"model"``: each device holds C / model_axis_size
    columns, and the same share of the optimizer slots. Every other variable is replicated.
    The batch is split over all n devices, so the backbone runs data-parallel and the head
    sees the gathered (N, D) features (Partial FC's layout, An et al. 2021); the
    softmax over the sharded class axis is reduced across devices by XLA. With the default
    ``model_axis_size`` (all devices) no device ever holds the whole kernel; a smaller one
    replicates each column on n / model_axis_size devices (less communication, more memory).

    Set it before the model is built (variables take their layout when they are created):
    ``keras.distribution.set_distribution(km.distribution.class_parallel())`` or
    ``with km.distribution.class_parallel().scope(): ...``. Then build, compile and ``fit``
    as usual, with any head and loss of the library; the loss and gradients are those of
    one device. In several processes, call ``keras.distribution.initialize(...)`` first:
    the devices are then those of every process. Either give ``fit`` a ``tf.data`` pipeline
    of the global batch (Keras splits it between processes), or set
    ``distribution.auto_shard_dataset = False`` and let each process feed its own
    ``global_batch / num_processes`` rows (NumPy arrays need this). JAX backend only.

    Args:
        devices: list of devices (``keras.distribution.list_devices()`` strings such as
            ``"gpu:0"``, or JAX devices). Defaults to ``None``: every device of every process.
        model_axis_size: how many devices share one copy of the kernel; must divide the
            number of devices. Defaults to ``None``: all of them. Each head's num_classes
            must be a multiple of it (checked when the head is built).

    Returns:
        A ``keras.distribution.ModelParallel`` (mesh axes ``("batch", "model")``).

    Example:
        >>> # XLA_FLAGS=--xla_force_host_platform_device_count=8 KERAS_BACKEND=jax python ...
        >>> keras.distribution.set_distribution(km.distribution.class_parallel())
        >>> model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32),
        ...                           km.layers.LargestMarginHead(1024)])
        >>> model.compile("sgd", loss=km.losses.ArcFace())
        >>> [s.data.shape for s in model.layers[-1].kernel.value.addressable_shards][0]
        (32, 128)

    Reference:
        An et al., "Partial FC: Training 10 Million Identities on a Single Machine",
        ICCV Workshops 2021 (model-parallel classification layer, Sec. 3).
    """
    if keras.backend.backend() != "jax":
        raise RuntimeError(
            "km.distribution.class_parallel needs the JAX backend (KERAS_BACKEND=jax): Keras' "
            f"distribution API shards variables only there; the backend is "
            f"{keras.backend.backend()!r}."
        )
    available = keras.distribution.list_devices()
    if devices is None:
        devices = available
    if isinstance(devices, (str, bytes)) or not hasattr(devices, "__len__"):
        raise ValueError(f"`devices` must be a list of devices or None; got {devices!r}.")
    devices = list(devices)
    if not devices:
        raise ValueError("`devices` must not be empty.")
    names = [str(d) if isinstance(d, str) else f"{d.platform}:{d.id}" for d in devices]
    if len(set(names)) != len(names):
        raise ValueError(f"`devices` lists a device twice: {names}.")
    unknown = [name for name in names if name not in available]
    if unknown:
        raise ValueError(f"`devices`: {unknown} are not among the available devices {available}.")
    count = len(devices)
    if model_axis_size is None:
        model_axis_size = count
    if (
        not isinstance(model_axis_size, int)
        or isinstance(model_axis_size, bool)
        or model_axis_size < 1
        or count % model_axis_size
    ):
        raise ValueError(
            f"`model_axis_size` must be a positive integer dividing the number of devices "
            f"({count}); got {model_axis_size!r}."
        )
    mesh = keras.distribution.DeviceMesh(
        (count // model_axis_size, model_axis_size), (BATCH_AXIS, MODEL_AXIS), devices=names
    )
    return _ClassParallel(keras.distribution.LayoutMap(mesh))


def _class_sharding(head):
    """(TensorLayout, class axis, mesh axis name, shard count) of a class-split head, or None."""
    variable = class_variable(head)
    layout = getattr(variable, "_layout", None)
    if not isinstance(layout, keras.distribution.TensorLayout) or layout.device_mesh is None:
        return None
    axis = class_axis(head, tuple(variable.shape))
    if axis is None or layout.axes[axis] is None:
        return None
    mesh = layout.device_mesh
    name = layout.axes[axis]
    shards = mesh.shape[list(mesh.axis_names).index(name)]
    return (layout, axis, name, shards) if shards > 1 else None


def is_class_sharded(head):
    """Whether ``head``'s prototypes are split along the class axis over several devices.

    Args:
        head: a ``keras_margins`` head (any layer is accepted: False for others).

    Returns:
        True when the head was built under ``class_parallel()`` with a model axis of more
        than one device.

    Example:
        >>> with km.distribution.class_parallel().scope():   # JAX, 8 devices
        ...     head = km.layers.LargestMarginHead(64); head.build((None, 16))
        >>> km.distribution.is_class_sharded(head)
        True
    """
    return _class_sharding(head) is not None


def _varying(x, axis_name):
    """``x`` (equal on every shard) typed as varying over ``axis_name`` inside shard_map, so
    that a custom-gradient op may return a per-shard cotangent (summed over shards)."""
    import jax

    if hasattr(jax.lax, "pcast"):
        return jax.lax.pcast(x, axis_name, to="varying")
    if hasattr(jax.lax, "pvary"):  # pragma: no cover - older JAX
        return jax.lax.pvary(x, axis_name)
    return x  # pragma: no cover - JAX without varying-axis types


#: Added to the sampler's seed per shard (times the shard index) so shards draw independently.
SHARD_SEED_STRIDE = 0x3C6EF372


def uniform_block_sampler(sample_rate, seed=0):
    """A per-block class sampler for ``sharded_partial_cosines``: Partial FC's uniform one.

    Each shard keeps max(⌈sample_rate·B⌉, N) of its B = C / shards columns (at most B), drawn
    by ``km.ops.sample_classes`` with seed ``seed + shard · SHARD_SEED_STRIDE`` (a different
    sample on every shard; change ``seed`` every step for a new sample).

    Args:
        sample_rate: fraction of each block kept, in (0, 1].
        seed: int or int32 scalar tensor (default 0).

    Returns:
        ``sample_block(block_labels, block_size, shard) -> (class_ids, sampled_labels)``.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)) or not (
        0.0 < sample_rate <= 1.0
    ):
        raise ValueError(f"`sample_rate` must be a number in (0, 1]; got {sample_rate!r}.")

    def sample_block(block_labels, block_size, shard):
        from keras import ops

        from keras_margins.ops.sampling import sample_classes

        batch = block_labels.shape[0]
        keep = min(block_size, max(int(math.ceil(sample_rate * block_size - 1e-9)), batch))
        block_seed = ops.cast(seed, "int32") + shard * SHARD_SEED_STRIDE
        return sample_classes(block_labels, block_size, keep, block_seed)

    return sample_block


def sharded_partial_cosines(head, embedding, labels, sample_block):
    """Partial FC's sampled cosines on a class-split head, sampled shard by shard.

    Each device samples classes from its own block of B = C / shards columns only, with
    ``sample_block`` (e.g. ``uniform_block_sampler(rate, seed)``, or ``PartialFC``'s own
    sampler), and computes the cosines of the whole batch with its K_b sampled columns: the
    kernel never leaves its devices (the compiled step all-gathers the (N, D) features and
    the labels, never the kernel), as in the model-parallel Partial FC of An et al. 2021. The
    (N, shards·K_b) result is split by columns over the same devices, so the wrapped loss's
    softmax is reduced across them by XLA, and only the sampled columns get a gradient.

    Args:
        head: a class head (``LargestMarginHead``, any ``kernel_layout``) built under
            ``class_parallel()``.
        embedding: (N, D) features, N static.
        labels: (N,) int class ids in [0, C) (others get column −1).
        sample_block: ``sample_block(block_labels, block_size, shard) -> (class_ids,
            sampled_labels)``, called on every shard with the labels shifted to the block
            (``labels − shard·B``: ids outside [0, B) are other shards' classes), B and the
            shard index (an int32 scalar tensor); it returns K_b distinct ids in [0, B)
            (K_b static, the same on every shard) and each label's position among them or
            −1, as ``km.ops.sample_classes`` does. It must keep every id of the block that
            occurs in ``block_labels``.

    Returns:
        None when ``head`` is not class-sharded or the backend is not JAX (sample over the
        whole head then). Otherwise ``(cosines (N, shards·K_b), sampled_labels (N,))``:
        ``sampled_labels[i]`` is the column of class ``labels[i]`` (−1 for a label outside
        [0, C)).

    Example:
        >>> keras.distribution.set_distribution(km.distribution.class_parallel())  # 8 devices
        >>> head = km.layers.LargestMarginHead(512); head.build((None, 16))
        >>> cos, columns = km.distribution.sharded_partial_cosines(
        ...     head, x, y, km.distribution.uniform_block_sampler(0.25, seed=step))
        >>> cos.shape   # 8 shards x max(16, N) columns for N <= 64
        (N, 128)

    Reference:
        An et al., "Partial FC: Training 10 Million Identities on a Single Machine", ICCVW
        2021 (each GPU samples from its own class centres, Sec. 3).
    """
    sharding = _class_sharding(head)
    if sharding is None or keras.backend.backend() != "jax":
        return None
    import jax
    from jax.sharding import PartitionSpec
    from keras import ops

    from keras_margins.ops.cosine import cosine_similarity

    layout, axis, mesh_axis, shards = sharding
    block = head.num_classes // shards
    if embedding.shape[0] is None:
        raise ValueError("Partial FC on a class-sharded head needs a static batch size N.")
    weights = ops.convert_to_tensor(class_variable(head))
    labels = ops.cast(labels, "int32")

    def per_shard(weights, features, labels):
        shard = jax.lax.axis_index(mesh_axis).astype("int32")
        ids, local = sample_block(labels - shard * block, block, shard)
        keep = ids.shape[0]
        rows = ops.take(weights, ids, axis=axis)  # this shard's sampled prototypes
        kernel = ops.transpose(rows) if axis == 0 else rows  # (D, K_b)
        # The features are the same on every shard; their gradient is the sum over shards.
        cosines = cosine_similarity(_varying(features, mesh_axis), kernel)
        column = ops.where(local >= 0, local + shard * keep, -1)
        return cosines, jax.lax.pmax(column, mesh_axis)

    spec = PartitionSpec
    mapped = jax.shard_map(
        per_shard,
        mesh=layout.device_mesh.backend_mesh,
        in_specs=(spec(*layout.axes), spec(), spec()),
        out_specs=(spec(None, mesh_axis), spec()),
    )
    return mapped(weights, embedding, labels)
