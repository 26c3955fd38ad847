"""Class-sharded heads and multi-host training with Keras' own ``keras.distribution`` API.

Face recognition and re-identification train heads with 10⁵–10⁷ classes: the class vectors
(and their optimizer slots) no longer fit one device, and the (N, C) cosines are the largest
tensor of the step. ``class_parallel()`` returns a ``keras.distribution.ModelParallel`` whose
``keras.distribution.LayoutMap`` gives every device C / n classes of every head's class
variable, as Partial FC does (An et al., "Partial FC: Training 10 Million Identities on a
Single Machine", ICCVW 2021, Sec. 3.1: model parallelism of the classification layer, data
parallelism of the backbone). Nothing else changes: build, compile and fit the model as on
one device.

The heads name their class variable after its storage (``CLASS_VARIABLES``): ``class_kernel``
for a (D, C) variable (one column per class), ``class_centers`` for a (C, D) one (one row
per class). The layout map matches those names at the end of ``variable.path``, as keras-hub's
``get_layout_map()`` matches its models' variable paths; a user's head that names its class
variable the same way is split the same way.

Keras' distribution API runs on the JAX backend (TensorFlow users keep
``tf.distribute.MirroredStrategy``, see the README). This module imports neither JAX nor
TensorFlow when it is imported, so ``km.distribution`` exists on every backend.
"""

import keras

__all__ = [
    "BATCH_AXIS",
    "CLASS_VARIABLES",
    "MODEL_AXIS",
    "class_layout_map",
    "class_parallel",
    "class_variable",
    "is_class_sharded",
]

#: Mesh axis names of ``class_parallel``: the class axis is split over ``"model"``.
BATCH_AXIS = "batch"
MODEL_AXIS = "model"

#: Names of the heads' class variables and, for each, the axis that indexes the classes:
#: ``class_kernel`` (D, C) and ``class_centers`` (C, D).
CLASS_VARIABLES = {"class_kernel": 1, "class_centers": 0}


def class_layout_map(device_mesh, model_axis=MODEL_AXIS):
    """A ``keras.distribution.LayoutMap`` splitting every head's class variable by class.

    Args:
        device_mesh: a ``keras.distribution.DeviceMesh`` with an axis named ``model_axis``.
        model_axis: the mesh axis the classes are split over (default ``"model"``).

    Returns:
        The layout map: a variable whose path ends in ``class_kernel`` is laid out
        ``(None, model_axis)``, one ending in ``class_centers`` ``(model_axis, None)``; every
        other variable is replicated. Optimizer slots take their variable's layout.

    Example:
        >>> mesh = keras.distribution.DeviceMesh((1, 8), ("batch", "model"))
        >>> km.distribution.class_layout_map(mesh)["model/head/class_centers"].axes
        ('model', None)
    """
    if model_axis not in device_mesh.axis_names:
        raise ValueError(
            f"`model_axis`: {model_axis!r} is not an axis of the mesh {device_mesh.axis_names}."
        )
    layout_map = keras.distribution.LayoutMap(device_mesh)
    for name, axis in CLASS_VARIABLES.items():
        axes = [None, None]
        axes[axis] = model_axis
        layout_map[f"(.*/)?{name}"] = tuple(axes)
    return layout_map


class ClassParallel(keras.distribution.ModelParallel):
    """``keras.distribution.ModelParallel`` over a ("batch", "model") mesh whose layout map
    (``class_layout_map``) splits the heads' class variables over "model"; the batch is split
    over every device (a one-axis mesh of the same devices), so the backbone runs data-parallel.
    Made by ``class_parallel()``."""

    def __init__(self, layout_map, data_mesh, **kwargs):
        self.data_mesh = data_mesh  # read by num_model_replicas during ModelParallel's checks
        super().__init__(layout_map=layout_map, batch_dim_name=BATCH_AXIS, **kwargs)
        self.model_axis_size = self.device_mesh.shape[
            list(self.device_mesh.axis_names).index(MODEL_AXIS)
        ]

    @property
    def num_model_replicas(self):
        # The batch is split over every device of the mesh (one data shard per device), which
        # is what Keras' dataset auto-sharding needs to know.
        return int(self.data_mesh.devices.size)

    def get_data_layout(self, data_shape):
        axes = [None] * len(data_shape)
        axes[0] = BATCH_AXIS
        return keras.distribution.TensorLayout(axes, self.data_mesh)

    def get_variable_layout(self, variable):
        layout = super().get_variable_layout(variable)
        shape = tuple(variable.shape)
        if MODEL_AXIS in layout.axes and len(shape) == len(layout.axes):
            classes = shape[list(layout.axes).index(MODEL_AXIS)]
            if classes % self.model_axis_size:
                raise ValueError(
                    f"{variable.path!r} has num_classes={classes}, which `model_axis_size`="
                    f"{self.model_axis_size} does not divide: each device must hold the same "
                    f"number of classes. Use a multiple of {self.model_axis_size} classes (extra "
                    "classes that never occur as labels are harmless) or another "
                    "`model_axis_size`."
                )
        return layout


def mesh_device_names(devices, owner):
    """The names of ``devices`` for a ``keras.distribution.DeviceMesh`` (``"cpu:0"``, ...),
    checked: the backend is JAX (``RuntimeError`` naming ``owner``: Keras' distribution API
    shards variables only there), and ``devices`` (``keras.distribution.list_devices()``
    strings or JAX devices; None: all of them) is a non-empty list of distinct available
    devices (``ValueError`` naming ``devices``)."""
    if keras.backend.backend() != "jax":
        raise RuntimeError(
            f"{owner} needs the JAX backend (KERAS_BACKEND=jax): Keras' distribution API "
            f"shards variables only there; the backend is {keras.backend.backend()!r}."
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
    return names


def class_parallel(devices=None, model_axis_size=None):
    """A ``keras.distribution.ModelParallel`` that shards every head's classes over devices.

    The devices form a mesh of shape (n / model_axis_size, model_axis_size) with axes
    ``("batch", "model")``. Its ``keras.distribution.LayoutMap`` (``class_layout_map``)
    splits the class variable of every head (``LargestMarginHead``, ``VirtualSoftmaxHead``,
    ``PEDCCHead``, or a user's head whose class variable is named ``class_kernel`` (D, C) or
    ``class_centers`` (C, D); custom layer names and nesting in ``Sequential`` or
    ``MarginModel`` do not matter) along its class axis over ``"model"``: each device holds
    C / model_axis_size classes, and the same share of the optimizer slots. Every other
    variable is replicated. The batch is split over all n devices, so the backbone runs
    data-parallel and the head sees the gathered (N, D) features (Partial FC's layout, An et
    al. 2021); the softmax over the sharded class axis is reduced across devices by XLA.
    With the default ``model_axis_size`` (all devices) no device ever holds the whole head; a
    smaller one replicates each class on n / model_axis_size devices (less communication,
    more memory).

    Set it before the model is built (variables take their layout when they are created):
    ``keras.distribution.set_distribution(km.distribution.class_parallel())`` or
    ``with km.distribution.class_parallel().scope(): ...``. Then build, compile and ``fit``
    as usual, with any head and loss of the library; the loss and gradients are those of
    one device (``km.losses.PartialFC`` samples each device's classes on that device). In
    several processes, call ``keras.distribution.initialize(...)`` first: the devices are
    then those of every process. Either give ``fit`` a ``tf.data`` pipeline of the global
    batch (Keras splits it between processes), or set ``distribution.auto_shard_dataset =
    False`` and let each process feed its own ``global_batch / num_processes`` rows (NumPy
    arrays need this). JAX backend only.

    Args:
        devices: list of devices (``keras.distribution.list_devices()`` strings such as
            ``"gpu:0"``, or JAX devices). Defaults to ``None``: every device of every process.
        model_axis_size: how many devices share one copy of the head; must divide the
            number of devices. Defaults to ``None``: all of them. Each head's num_classes
            must be a multiple of it (checked when the head is built).

    Returns:
        A ``keras.distribution.ModelParallel`` (mesh axes ``("batch", "model")``, layout map
        ``class_layout_map(mesh)``).

    Example:
        >>> # XLA_FLAGS=--xla_force_host_platform_device_count=8 KERAS_BACKEND=jax python ...
        >>> keras.distribution.set_distribution(km.distribution.class_parallel())
        >>> model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32),
        ...                           km.layers.LargestMarginHead(1024)])
        >>> model.compile("sgd", loss=km.losses.ArcFace())
        >>> head = model.layers[-1]
        >>> [s.data.shape for s in km.distribution.class_variable(head).value.addressable_shards][0]
        (128, 32)

    Reference:
        An et al., "Partial FC: Training 10 Million Identities on a Single Machine",
        ICCV Workshops 2021 (model-parallel classification layer, Sec. 3).
    """
    names = mesh_device_names(devices, "km.distribution.class_parallel")
    count = len(names)
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
    # The same devices in the same order on one axis: the batch is split over all of them.
    data_mesh = keras.distribution.DeviceMesh((count,), (BATCH_AXIS,), devices=names)
    return ClassParallel(class_layout_map(mesh), data_mesh)


def class_variable(head):
    """The variable that stores ``head``'s class vectors, or None (not built, or a head that
    names no class variable).

    Args:
        head: a head layer.

    Returns:
        Its ``class_kernel`` (D, C) or ``class_centers`` (C, D) variable (``CLASS_VARIABLES``):
        the one ``class_parallel`` splits and whose ``.value.addressable_shards`` show each
        device's share.

    Example:
        >>> head = km.layers.LargestMarginHead(10); head.build((None, 4))
        >>> km.distribution.class_variable(head).shape       # class-major storage
        (10, 4)
    """
    for variable in getattr(head, "weights", ()):
        if variable.name in CLASS_VARIABLES and len(variable.shape) == 2:
            return variable
    return None


def is_class_sharded(head):
    """Whether ``head``'s class vectors are split along the class axis over several devices.

    Args:
        head: a head layer (any layer is accepted: False for others).

    Returns:
        True when the head's class variable (``class_variable``) is placed by class over a
        mesh axis of more than one device (a head built under ``class_parallel()``, JAX).

    Example:
        >>> with km.distribution.class_parallel().scope():   # JAX, 8 devices
        ...     head = km.layers.LargestMarginHead(64); head.build((None, 16))
        >>> km.distribution.is_class_sharded(head)
        True
    """
    variable = class_variable(head)
    if variable is None or keras.backend.backend() != "jax":
        return False
    import jax

    sharding = getattr(variable.value, "sharding", None)
    if not isinstance(sharding, jax.sharding.NamedSharding):
        return False
    spec = tuple(sharding.spec) + (None,) * (2 - len(sharding.spec))
    names = spec[CLASS_VARIABLES[variable.name]]
    if names is None:
        return False
    names = names if isinstance(names, tuple) else (names,)
    shards = 1
    for name in names:
        shards *= sharding.mesh.shape[name]
    return shards > 1
