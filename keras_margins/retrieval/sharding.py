"""A gallery split over devices with ``keras.distribution`` (JAX backend).

``gallery_parallel()`` returns a ``keras.distribution.ModelParallel`` whose layout map
splits the rows of every ``EmbeddingIndex`` gallery (variables ``index_embeddings`` and
``index_ids``) over a ``"gallery"`` mesh axis. An index created under it stores S = (devices
on that axis) shards; its search scores each shard on the device that holds it, keeps each
shard's best ``k`` there and merges the S·k candidates of every query (a top-k of top-ks is
the top-k), so no device ever holds more than its shard of the gallery.
"""

import keras

#: Mesh axis of the gallery rows; the queries are replicated.
GALLERY_AXIS = "gallery"
BATCH_AXIS = "batch"
#: Layout-map patterns of the sharded variables.
EMBEDDINGS_PATTERN = r".*index_embeddings"
IDS_PATTERN = r".*index_ids"


def gallery_parallel(devices=None):
    """A ``keras.distribution.ModelParallel`` sharding index galleries by rows.

    Args:
        devices: devices to use (``keras.distribution.list_devices()`` names or JAX
            devices); default None: all of them.

    Returns:
        A ``ModelParallel`` on a mesh of shape (1, n) with axes ``("batch", "gallery")``.

    Example:
        >>> # XLA_FLAGS=--xla_force_host_platform_device_count=8 KERAS_BACKEND=jax python ...
        >>> with km.retrieval.gallery_parallel().scope():
        ...     index = km.retrieval.EmbeddingIndex(128, capacity=1_000_000)   # 8 shards
        ...     index.add(gallery, ids)
        ...     found, scores = index.search(queries, k=10)
    """
    # km.distribution loads on first access (tests/test_light_imports.py), not with km.retrieval.
    from keras_margins.distribution import mesh_device_names

    names = mesh_device_names(devices, "km.retrieval.gallery_parallel")
    mesh = keras.distribution.DeviceMesh((1, len(names)), (BATCH_AXIS, GALLERY_AXIS), devices=names)
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map[EMBEDDINGS_PATTERN] = (GALLERY_AXIS, None)
    layout_map[IDS_PATTERN] = (GALLERY_AXIS,)
    return keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name=BATCH_AXIS)


def gallery_mesh():
    """The device mesh of the active distribution when it has a ``"gallery"`` axis, else None."""
    distribution = keras.distribution.distribution()
    mesh = getattr(distribution, "device_mesh", None)
    if mesh is None or GALLERY_AXIS not in mesh.axis_names:
        return None
    return mesh


def active_shards():
    """Devices on the active distribution's ``"gallery"`` axis (1 without one)."""
    mesh = gallery_mesh()
    if mesh is None:
        return 1
    return int(mesh.shape[list(mesh.axis_names).index(GALLERY_AXIS)])


def shard_constraint(shards):
    """A function keeping (S, ...) intermediates split along S over the ``"gallery"`` axis
    (``keras.distribution.distribute_tensor``), or None when no matching mesh is active."""
    mesh = gallery_mesh()
    if mesh is None or shards == 1 or active_shards() != shards:
        return None

    def constrain(x):
        axes = [GALLERY_AXIS] + [None] * (len(x.shape) - 1)
        return keras.distribution.distribute_tensor(x, keras.distribution.TensorLayout(axes, mesh))

    return constrain
