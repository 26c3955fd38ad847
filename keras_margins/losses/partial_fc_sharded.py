"""Partial FC on a head whose classes are split over devices (JAX): every device samples
and scores its own block of classes (An et al., ICCVW 2021, Sec. 3).

Where the classes live is read from the active ``keras.distribution`` (its public
``get_variable_layout``), whatever made the split (``km.distribution.class_parallel`` or a
user's own ``LayoutMap``); how many classes each block keeps and the seed of its sample are
``PartialFC``'s rules, passed in as ``sample_block``.
"""

import collections

import keras
from keras import ops

from keras_margins.ops.cosine import cosine_similarity

#: A head's class variable split over a mesh axis: the variable, the axis of it that indexes
#: the classes, the mesh axis name, the number of shards, the ``keras.distribution``
#: ``TensorLayout`` it has.
ClassSharding = collections.namedtuple(
    "ClassSharding", ["variable", "class_axis", "mesh_axis", "shards", "layout"]
)


def class_sharding(head):
    """How ``head``'s class vectors are split over devices, or None.

    Args:
        head: a head with ``num_classes`` and its weights.

    Returns:
        A ``ClassSharding`` when the backend is JAX, a ``keras.distribution`` is active and
        lays out one 2-D weight of the head along exactly one axis, of size ``num_classes``,
        over more than one device (the class vectors, one per row or column); None otherwise
        (the head is then sampled as a whole).
    """
    if keras.backend.backend() != "jax":
        return None
    distribution = keras.distribution.distribution()
    if distribution is None:
        return None
    for variable in head.weights:
        if len(variable.shape) != 2:
            continue
        layout = distribution.get_variable_layout(variable)
        mesh = getattr(layout, "device_mesh", None)
        if mesh is None:
            continue
        split = [i for i, name in enumerate(layout.axes) if name is not None]
        if len(split) != 1 or variable.shape[split[0]] != head.num_classes:
            continue
        name = layout.axes[split[0]]
        if not isinstance(name, str):
            continue
        shards = mesh.shape[list(mesh.axis_names).index(name)]
        if shards > 1:
            return ClassSharding(variable, split[0], name, shards, layout)
    return None


def _varying(x, axis_name):
    """``x`` (equal on every shard) typed as varying over ``axis_name`` inside shard_map, so
    that its cotangent may differ per shard (and is summed over shards)."""
    import jax

    if hasattr(jax.lax, "pcast"):
        return jax.lax.pcast(x, axis_name, to="varying")
    if hasattr(jax.lax, "pvary"):  # pragma: no cover - older JAX
        return jax.lax.pvary(x, axis_name)
    return x  # pragma: no cover - JAX without varying-axis types


def sharded_partial_cosines(sharding, embedding, labels, sample_block):
    """Partial FC's sampled cosines on a class-split head, sampled shard by shard.

    Each device samples classes from its own block of B = C / shards classes only, with
    ``sample_block``, and computes the cosines of the whole batch with its K_b sampled class
    vectors: the class vectors never leave their devices (the compiled step gathers the
    (N, D) features and the labels, never the head). The (N, shards·K_b) result is split by
    columns over the same devices, so the wrapped loss's softmax is reduced across them by
    XLA, and only the sampled classes get a gradient.

    Args:
        sharding: ``class_sharding(head)``.
        embedding: (N, D) features, N static (JAX).
        labels: (N,) int class ids in [0, C) (others get column −1).
        sample_block: ``sample_block(block_labels, block_size, shard) -> (class_ids,
            sampled_labels)``, called on every shard with the labels shifted to the block
            (``labels − shard·B``: ids outside [0, B) are other shards' classes), B and the
            shard index (an int32 scalar tensor); it returns K_b distinct ids in [0, B) (K_b
            static, the same on every shard) and each label's position among them or −1,
            as ``km.ops.sample_classes`` does, every id of the block that occurs in
            ``block_labels`` among them.

    Returns:
        ``(cosines (N, shards·K_b), sampled_labels (N,))``: ``sampled_labels[i]`` is the
        column of class ``labels[i]`` (−1 for a label outside [0, C)); shard s's columns are
        s·K_b … (s + 1)·K_b − 1.
    """
    import jax
    from jax.sharding import PartitionSpec

    variable, axis, mesh_axis, shards = sharding[:4]
    layout = sharding.layout
    num_classes = variable.shape[axis]
    block = num_classes // shards
    if embedding.shape[0] is None:
        raise ValueError("Partial FC on a class-split head needs a static batch size N.")
    weights = ops.convert_to_tensor(variable)
    labels = ops.cast(labels, "int32")

    def per_shard(weights, features, labels):
        shard = jax.lax.axis_index(mesh_axis).astype("int32")
        ids, local = sample_block(labels - shard * block, block, shard)
        keep = ids.shape[0]
        rows = ops.take(weights, ids, axis=axis)  # this shard's sampled class vectors
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
