"""Callback adding retrieval scores (MAP@R, P@1, ...) of a validation set to the epoch logs."""

import keras
import numpy as np

from keras_margins._arguments import reject_unknown
from keras_margins.metrics.retrieval import retrieval_scores


def _collect(validation_data):
    """(x, y) NumPy arrays from a tuple of arrays or a dataset yielding (x, y) batches."""
    if isinstance(validation_data, (tuple, list)):
        if len(validation_data) != 2:
            raise ValueError(
                "`validation_data` must be (x, y) or a dataset of (x, y) batches; got a "
                f"sequence of length {len(validation_data)}."
            )
        return validation_data[0], np.asarray(validation_data[1])
    if hasattr(validation_data, "as_numpy_iterator"):
        xs, ys = [], []
        for batch in validation_data.as_numpy_iterator():
            if not isinstance(batch, tuple) or len(batch) < 2:
                raise ValueError("`validation_data` must yield (x, y) batches.")
            xs.append(batch[0])
            ys.append(np.asarray(batch[1]))
        if not xs:
            raise ValueError("`validation_data` is an empty dataset.")
        return np.concatenate(xs), np.concatenate(ys)
    raise ValueError(
        "`validation_data` must be a tuple (x, y) of arrays or a tf.data.Dataset of (x, y); "
        f"got {type(validation_data).__name__}."
    )


class RetrievalEvaluation(keras.callbacks.Callback):
    """Leave-one-out retrieval on a validation set at the end of epochs (Musgrave et al. 2020).

    Embeds ``validation_data`` with ``embedding_model`` (default: the model being trained,
    whose output must then be the embedding) and writes ``{prefix}map_at_r``,
    ``{prefix}precision_at_1``, ``{prefix}r_precision`` and ``{prefix}recall_at_{k}`` into the
    epoch logs, where History, TensorBoard, EarlyStopping, ModelCheckpoint and KerasTuner see
    them. List it *before* callbacks that read those logs.

    Args:
        validation_data: ``(x, y)`` arrays, or a ``tf.data.Dataset`` of ``(x, y)`` batches.
        embedding_model: model mapping x to (N, D) embeddings (e.g. the backbone of a
            ``Sequential([backbone, head])``); it shares weights with the trained model
            (default None: the trained model itself).
        k: the K of Recall@K (default (1,)).
        batch_size: batch size of the embedding pass (default 256).
        chunk_size: query block size of ``km.metrics.retrieval_scores`` (default 256).
        metric: ``"cosine"`` (default) or ``"euclidean"``.
        prefix: prepended to the log names (default ``"val_"``).
        frequency: evaluate every ``frequency`` epochs; the logs of the epochs in between do
            not carry the keys (default 1).
        **kwargs: none accepted; an unknown keyword is a ``TypeError`` naming the closest
            valid argument.

    Example:
        >>> cb = km.callbacks.RetrievalEvaluation((xt, yt), embedding_model=backbone)
        >>> stop = keras.callbacks.EarlyStopping("val_map_at_r", mode="max", patience=5)
        >>> model.fit(x, y, epochs=50, callbacks=[cb, stop])

    Reference:
        - Musgrave, Belongie & Lim, 2020. [A Metric Learning Reality Check](https://arxiv.org/abs/2003.08505),
          ECCV 2020 (MAP@R, R-Precision).
    """

    def __init__(
        self,
        validation_data,
        embedding_model=None,
        k=(1,),
        batch_size=256,
        chunk_size=256,
        metric="cosine",
        prefix="val_",
        frequency=1,
        **kwargs,
    ):
        reject_unknown(type(self), kwargs, accepted=())
        super().__init__()
        self.x, self.y = _collect(validation_data)
        if self.y.ndim == 2 and self.y.shape[1] == 1:
            self.y = self.y[:, 0]
        if self.y.ndim != 1 or len(self.y) != len(self.x):
            raise ValueError(
                f"`validation_data` labels must have shape ({len(self.x)},); got {self.y.shape}."
            )
        if embedding_model is not None and not callable(embedding_model):
            raise ValueError("`embedding_model` must be a Keras model (or None).")
        if int(frequency) != frequency or frequency < 1:
            raise ValueError(f"`frequency` must be a positive integer; got {frequency!r}.")
        self.embedding_model = embedding_model
        self.k = k
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.metric = metric
        self.prefix = prefix
        self.frequency = int(frequency)

    def evaluate(self):
        """Current scores as a dict (without the prefix)."""
        model = self.embedding_model if self.embedding_model is not None else self.model
        # Direct calls in inference mode: no per-epoch predict-function / data-adapter setup.
        parts = []
        for start in range(0, len(self.x), self.batch_size):
            out = model(self.x[start : start + self.batch_size], training=False)
            if isinstance(out, (list, tuple, dict)) or len(out.shape) != 2:
                raise ValueError(
                    "The embedding model must output one (N, D) tensor; pass "
                    "`embedding_model=` when the trained model outputs something else."
                )
            parts.append(keras.ops.convert_to_numpy(out))
        embeddings = np.concatenate(parts)
        return retrieval_scores(
            embeddings, self.y, k=self.k, chunk_size=self.chunk_size, metric=self.metric
        )

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or (epoch + 1) % self.frequency:
            return
        for name, value in self.evaluate().items():
            logs[self.prefix + name] = value
