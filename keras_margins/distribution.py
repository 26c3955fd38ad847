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

import keras

__all__ = ["class_parallel"]

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
    try:
        from keras.src.backend.common import global_state
    except ImportError:  # pragma: no cover - Keras internals moved
        return None
    stack = global_state.get_global_attribute("name_scope_stack")
    if not stack:
        return None
    return getattr(stack[-1], "caller", None)


def class_axis(head, shape=None):
    """The axis of ``head.kernel`` (or of a kernel of ``shape``) that indexes the classes.

    A head may state it with a ``class_axis`` attribute; otherwise it is the axis of size
    ``num_classes`` (the last one when D = C: the heads' kernels are (D, C)).
    """
    if shape is None:
        shape = tuple(head.kernel.shape)
    rank = len(shape)
    axis = getattr(head, "class_axis", None)
    if axis is not None:
        return int(axis) % rank
    matches = [i for i, size in enumerate(shape) if size == head.num_classes]
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
        if not isinstance(head, ClassHead) or variable.name != "kernel":
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
    the devices are then those of every process, and each process feeds its own
    ``global_batch / num_processes`` rows (pass ``auto_shard_dataset=False`` to Keras'
    ``DataParallel``-style sharding of a ``tf.data`` pipeline that is already per process;
    NumPy arrays given to ``fit`` are always per process). JAX backend only.

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
        An, Zhu, Xiao, Wu, Fu, Hou, Zhang, Xu & Qin, "Partial FC: Training 10 Million
        Identities on a Single Machine", ICCVW 2021 (model-parallel classification layer).
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


def is_class_sharded(head):
    """Whether ``head.kernel`` is split along its class axis over several devices (JAX)."""
    kernel = getattr(head, "kernel", None)
    layout = getattr(kernel, "_layout", None)
    if layout is None or not isinstance(layout, keras.distribution.TensorLayout):
        return False
    axis = class_axis(head)
    mesh = layout.device_mesh
    if axis is None or mesh is None or layout.axes[axis] is None:
        return False
    return mesh.shape[list(mesh.axis_names).index(layout.axes[axis])] > 1

