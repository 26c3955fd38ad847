"""The search model for TF Serving: embedding, gallery search and the match decision in one
SavedModel, stock TensorFlow ops only.

``export_search_model(model, index, base_dir)`` writes ``base_dir/<version>/`` (the layout TF
Serving polls, versions numbered as ``km.export.export_embedding_model`` numbers them, never
overwritten, safe with concurrent exports) and updates ``models.config`` beside it. A new
gallery is a new version of the same model folder: export again with the new index, the
model's weights unchanged.

The serving contract (stable, documented):

* ``embed`` (also ``serving_default``): ``inputs`` float32 (N, ...) -> ``embedding``
  float32 (N, D), L2-normalised;
* ``search``: ``inputs`` (N, ...) and ``k`` int32 scalar (1 <= k <= gallery size) ->
  ``ids`` int32 (N, k) and ``scores`` float32 (N, k), best first;
* ``match``: ``inputs`` -> ``id`` int32 (N,) (-1 when no gallery item scores at least the
  threshold), ``score`` float32 (N,) (the best score) and ``matched`` bool (N,); the
  threshold is fixed in the export (``index.calibrate`` or ``threshold=``).

Bad requests fail with TensorFlow's ``InvalidArgumentError`` (HTTP 400 in TF Serving): ``k``
out of range, NaN/inf in the inputs or the embeddings.

Example:
    >>> index.calibrate(probe_embeddings, probe_labels, target_far=1e-3)
    >>> path = km.retrieval.export_search_model(model, index, "saved_models/faces")
    >>> km.retrieval.check_search_export(path, model, index, x[:8], k=5)
"""

import os
import shutil
import uuid

import keras
import numpy as np
from keras import ops

from keras_margins.check_child import run_without_keras_margins
from keras_margins.models.embedding import INPUT_NAME, embedding_model
from keras_margins.retrieval.gallery import GalleryIndex

EMBED_SIGNATURE = "embed"
SEARCH_SIGNATURE = "search"
MATCH_SIGNATURE = "match"
DEFAULT_SIGNATURE = "serving_default"
K_INPUT = "k"
EMBEDDING_OUTPUT = "embedding"
IDS_OUTPUT, SCORES_OUTPUT = "ids", "scores"
ID_OUTPUT, SCORE_OUTPUT, MATCHED_OUTPUT = "id", "score", "matched"


def _check_index(index, embed):
    if not isinstance(index, GalleryIndex):
        raise ValueError(
            f"`index` must be a km.retrieval index (EmbeddingIndex, IVFIndex); got "
            f"{type(index).__name__}."
        )
    if index.size < 1:
        raise ValueError("`index` is empty: add a gallery before exporting.")
    dim = embed.outputs[0].shape[-1]
    if dim != index.dim:
        raise ValueError(
            f"`index` holds D={index.dim} embeddings but the model's embedding has D={dim}."
        )


def _archive(embed, index, threshold):
    """The ``keras.export.ExportArchive`` with the four endpoints, traced (no disk I/O)."""
    import tensorflow as tf

    in_dtype = embed.inputs[0].dtype
    spec = tf.TensorSpec((None, *embed.inputs[0].shape[1:]), tf.float32, name=INPUT_NAME)
    k_spec = tf.TensorSpec((), tf.int32, name=K_INPUT)
    cosine = index.metric == "cosine"

    def embedding(inputs):
        inputs = tf.debugging.check_numerics(inputs, "`inputs` holds NaN or inf")
        out = ops.cast(embed(ops.cast(inputs, in_dtype), training=False), "float32")
        return tf.debugging.check_numerics(out, "the embedding of `inputs` holds NaN or inf")

    def queries(inputs):
        out = embedding(inputs)
        if cosine:
            out = out / ops.maximum(ops.sqrt(ops.sum(out * out, axis=1, keepdims=True)), 1e-12)
        return out

    def serve_embed(inputs):
        return {EMBEDDING_OUTPUT: embedding(inputs)}

    def serve_search(inputs, k):
        size = ops.cast(index.index_size.value, "int32")
        checks = [
            tf.debugging.assert_greater_equal(k, 1, message="`k` must be >= 1"),
            tf.debugging.assert_less_equal(k, size, message="`k` must be <= the gallery size"),
        ]
        with tf.control_dependencies(checks):
            k = tf.identity(k)
        found, scores = index.serving_search(queries(inputs), k)
        return {IDS_OUTPUT: found, SCORES_OUTPUT: scores}

    def serve_match(inputs):
        found, scores = index.serving_search(queries(inputs), 1)
        best, score = found[:, 0], scores[:, 0]
        matched = score >= tf.constant(threshold, tf.float32)
        return {ID_OUTPUT: ops.where(matched, best, -1), SCORE_OUTPUT: score,
                MATCHED_OUTPUT: matched}

    archive = keras.export.ExportArchive()
    archive.track(embed)
    archive.track(index)
    archive.add_endpoint(EMBED_SIGNATURE, serve_embed, input_signature=[spec])
    archive.add_endpoint(DEFAULT_SIGNATURE, serve_embed, input_signature=[spec])
    archive.add_endpoint(SEARCH_SIGNATURE, serve_search, input_signature=[spec, k_spec])
    archive.add_endpoint(MATCH_SIGNATURE, serve_match, input_signature=[spec])
    return archive


def _target(base_dir, version):
    """``(absolute base_dir, version, explicit)`` checked; creates nothing."""
    from keras_margins.export.saved_model import versions

    if not isinstance(base_dir, (str, os.PathLike)) or not str(base_dir).strip():
        raise ValueError(f"`base_dir` must be a non-empty path; got {base_dir!r}.")
    base_dir = os.path.abspath(os.fspath(base_dir))
    if os.path.exists(base_dir) and not os.path.isdir(base_dir):
        raise ValueError(f"`base_dir` {base_dir!r} exists and is not a directory.")
    explicit = version is not None
    if explicit and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
        raise ValueError(f"`version` must be an integer >= 1 or None; got {version!r}.")
    if explicit and os.path.exists(os.path.join(base_dir, str(version))):
        raise ValueError(f"version {version} already exists in {base_dir!r}; exports never overwrite.")
    if not explicit:
        version = (versions(base_dir) or [0])[-1] + 1
    return base_dir, version, explicit


def _write(archive, base_dir, version, explicit, attempts=1000):
    """Write the archive to a staging folder and rename it to ``base_dir/<version>``
    (atomic: TF Serving never sees half a version). A rename that loses the race for a
    number takes the next free one, unless the version was explicit (``ValueError``)."""
    from keras_margins.export.saved_model import publish_version

    os.makedirs(base_dir, exist_ok=True)
    staging = os.path.join(base_dir, f".staging-{version}-{uuid.uuid4().hex}")
    try:
        archive.write_out(staging, verbose=False)
        return publish_version(staging, base_dir, version, explicit, attempts)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def export_search_model(model, index, base_dir, version=None, threshold=None, normalize=True,
                        input_shape=None, models_config=None, serving_root="/models"):
    """Write ``model``'s embedding, ``index``'s search and its match decision as one TF
    Serving SavedModel; return the version folder.

    Args:
        model: a model with a ``km.layers`` head, a ``km.models.MarginModel`` or a plain
            embedding model (the embedding part is exported, as by
            ``km.export.export_embedding_model``).
        index: a ``km.retrieval.EmbeddingIndex`` or ``IVFIndex`` over that model's
            embeddings (its gallery is copied into the SavedModel).
        base_dir: the model folder (its name is the TF Serving model name).
        version: integer >= 1, or None for the next free one; never overwritten.
        threshold: the match threshold (default: the index's calibrated one; ``ValueError``
            naming ``threshold`` when there is none).
        normalize: L2-normalise the embedding (default True).
        input_shape: per-example input shape, for models not built on a ``keras.Input``.
        models_config: path of the ``models.config`` to update (default: in the parent of
            ``base_dir``); ``False`` skips it.
        serving_root: the parent folder as the server sees it (default ``/models``).

    Signatures: ``embed``/``serving_default``, ``search`` (``k`` is an input), ``match`` —
    see the module docstring. TensorFlow backend only (``k`` is a graph input, which XLA
    through ``jax2tf`` cannot take): ``ValueError`` otherwise, before anything is written.

    Example:
        >>> index = km.retrieval.EmbeddingIndex(64)
        >>> index.add(embedder.predict(x_gallery), ids)
        >>> index.calibrate(embedder.predict(x_probe), probe_ids, target_far=1e-3)
        >>> km.retrieval.export_search_model(model, index, "saved_models/digits_search")
    """
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "export_search_model needs the TensorFlow backend (`k` is an input of the served "
            f"graph); KERAS_BACKEND={keras.backend.backend()}. Load the .keras files with "
            "KERAS_BACKEND=tensorflow and export there."
        )
    base_dir, version, explicit = _target(base_dir, version)
    embed = embedding_model(model, normalize=normalize, input_shape=input_shape)
    _check_index(index, embed)
    threshold = index.resolve_threshold(threshold)
    archive = _archive(embed, index, threshold)
    target = _write(archive, base_dir, version, explicit)
    if models_config is not False:
        from keras_margins.export.models_config import update_models_config

        update_models_config(os.path.dirname(base_dir), config_path=models_config,
                             serving_root=serving_root)
    return target


# ----------------------------------------------------------------------------- checking
# The child's own lines (keras_margins cannot be imported there, as in TF Serving).
_CHILD = """
k = tf.constant(int(extra[0]), tf.int32)
out["embedding"] = loaded.signatures["embed"](inputs=x)["embedding"].numpy()
found = loaded.signatures["search"](inputs=x, k=k)
out["ids"], out["scores"] = found["ids"].numpy(), found["scores"].numpy()
match = loaded.signatures["match"](inputs=x)
out["match_id"], out["match_score"] = match["id"].numpy(), match["score"].numpy()
out["matched"] = match["matched"].numpy()
"""


def search_outputs_without_keras_margins(export_dir, x, k):
    """Run the ``embed``, ``search`` (with ``k``) and ``match`` signatures of the search
    model at ``export_dir`` on ``x`` in a fresh Python process that cannot import
    ``keras_margins``; return their outputs as NumPy arrays (``embedding``, ``ids``,
    ``scores``, ``match_id``, ``match_score``, ``matched``)."""
    return run_without_keras_margins(export_dir, x, _CHILD, extra=(int(k),))


def check_search_export(export_dir, model, index, x, k, threshold=None, atol=1e-5):
    """Compare the served search model with ``model`` and ``index`` in this process.

    Runs :func:`search_outputs_without_keras_margins` and checks: embeddings within
    ``atol``; search scores within ``atol`` and the same ids wherever the in-process scores
    are not tied (within ``atol``) with a neighbour; the same match decisions except for
    scores within ``atol`` of the threshold. Returns the largest differences; raises
    ``ValueError`` naming what disagrees.
    """
    served = search_outputs_without_keras_margins(export_dir, x, k)
    embeddings = embedding_model(model).predict(np.asarray(x, "float32"), verbose=0)
    found, scores = index.search(embeddings, k)
    threshold = index.resolve_threshold(threshold)
    match_id, match_score = index.match(embeddings, threshold)
    errors = {
        "embedding": float(np.max(np.abs(served["embedding"] - embeddings))),
        "scores": float(np.max(np.abs(served["scores"] - scores))),
        "match_score": float(np.max(np.abs(served["match_score"] - match_score))),
    }
    gaps = np.abs(np.diff(scores, axis=1))
    tied = np.zeros(scores.shape, bool)
    tied[:, 1:] |= gaps <= atol
    tied[:, :-1] |= gaps <= atol
    errors["ids"] = int(np.sum((served["ids"] != found) & ~tied))
    near = np.abs(match_score - threshold) <= atol
    errors["match_id"] = int(np.sum((served["match_id"] != match_id) & ~near))
    bad = {name: value for name, value in errors.items()
           if (value > atol if isinstance(value, float) else value > 0)}
    if bad:
        raise ValueError(f"search export {export_dir} disagrees with the index: {bad}")
    return errors
