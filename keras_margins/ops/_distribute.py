"""Cross-replica gathering for pair losses under ``tf.distribute`` (private).

The only TensorFlow-specific code of the functional core. Inside a replica context of a
strategy with more than one replica (``MirroredStrategy``, ``TPUStrategy``...), it all-gathers
the batch of every replica; anywhere else (no strategy, one replica, cross-replica context,
another Keras backend) it returns ``None`` and the caller keeps its in-replica computation.
"""

import keras
from keras import ops


def _replica_context():
    """The active multi-replica ``tf.distribute.ReplicaContext``, or None."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync <= 1:
        return None
    return context


def gather_across_replicas(embeddings, labels):
    """The global batch as references for this replica's anchors, or None (see module doc).

    Returns ``(ref_embeddings (M, D), ref_labels (M,), offset)``: every replica's rows in
    replica order, and ``offset``, the index of this replica's first row among them (so local
    row i is global row offset + i). Gathered rows carry no gradient except this replica's
    own, which are the live local tensors: each replica's optimizer gradient flows through
    its anchors and through its rows as references of its own anchors. Static shapes only
    (a gather and a comparison), so the result compiles under XLA.
    """
    context = _replica_context()
    if context is None:
        return None
    import tensorflow as tf

    embeddings = tf.convert_to_tensor(embeddings)
    local_rows = tf.shape(embeddings)[:1]
    gathered = context.all_gather(tf.stop_gradient(embeddings), axis=0)
    ref_labels = context.all_gather(tf.convert_to_tensor(labels), axis=0)
    sizes = context.all_gather(local_rows, axis=0)  # rows per replica, in replica order
    replica = tf.cast(context.replica_id_in_sync_group, sizes.dtype)
    offset = tf.reduce_sum(tf.where(tf.range(tf.size(sizes)) < replica, sizes, 0))
    # Put the live local rows back in place of their gathered (stopped) copies.
    index = tf.range(tf.shape(gathered)[0]) - offset
    is_local = tf.logical_and(index >= 0, index < local_rows[0])
    live = tf.gather(embeddings, tf.clip_by_value(index, 0, tf.maximum(local_rows[0] - 1, 0)))
    ref_embeddings = tf.where(is_local[:, None], live, gathered)
    return ref_embeddings, ref_labels, ops.cast(offset, "int32")
