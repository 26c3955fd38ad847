"""Export the embedding part of a margin model to TF Serving's SavedModel layout.

A model trained with a margin head is served without its head: the artifact is the backbone
followed by L2 normalisation, written as a SavedModel to ``<base_dir>/<version>/`` (the
layout TF Serving polls), plus a ``models.config`` (TF Serving ``model_config_list``) beside
the model folders. The SavedModel needs neither ``keras`` nor ``keras_margins`` to load.

One module per job:

* ``keras_margins.export.saved_model``: writing a version (``export_embedding_model``) and
  choosing its number;
* ``keras_margins.export.models_config``: ``update_models_config``, under a file lock;
* ``keras_margins.export.serving_requests``: REST and gRPC request bodies
  (``rest_request``, ``rest_url``, ``grpc_request``);
* ``keras_margins.export.fresh_process``: checking an export in a Python process that cannot
  import ``keras_margins`` (``check_export``, ``outputs_without_keras_margins``).

Every name stays importable from ``km.export`` (``embedding_model`` and ``split_head`` are
``km.models``' own, re-exported here).

The serving contract (stable, documented):

* signature ``serving_default``: input ``inputs`` float32 ``(N, *input_shape)`` ->
  output ``embedding`` float32 ``(N, D)`` (unit rows when ``normalize=True``);
* optional signature ``scores`` (``include_scores=True``): input ``inputs`` -> output
  ``scores`` float32 ``(N, C)``, the head's class scores at inference (argmax = class).

Backends: TensorFlow, and JAX with TensorFlow installed (Keras converts the JAX functions
with ``jax2tf``); any other case is refused with a ``ValueError`` before anything is written.

Example:
    >>> path = km.export.export_embedding_model(model, "saved_models/digits")
    >>> body = km.export.rest_request(x[:2])            # POST to .../v1/models/digits:predict
    >>> req = km.export.grpc_request(x[:2], "digits")   # PredictionService.Predict
"""

from keras_margins.export.fresh_process import check_export, outputs_without_keras_margins
from keras_margins.export.models_config import MODELS_CONFIG, update_models_config
from keras_margins.export.saved_model import (
    EMBEDDING_OUTPUT,
    SCORES_OUTPUT,
    SCORES_SIGNATURE,
    SERVING_SIGNATURE,
    export_embedding_model,
)
from keras_margins.export.serving_requests import grpc_request, rest_request, rest_url
from keras_margins.models.embedding import INPUT_NAME, embedding_model, split_head

# Last: the search exporter builds on the modules above.
from keras_margins.retrieval.serving import export_search_model  # noqa: E402

__all__ = [
    "EMBEDDING_OUTPUT", "INPUT_NAME", "MODELS_CONFIG", "SCORES_OUTPUT", "SCORES_SIGNATURE",
    "SERVING_SIGNATURE", "check_export", "embedding_model", "export_embedding_model",
    "grpc_request", "outputs_without_keras_margins", "rest_request", "rest_url", "split_head",
    "export_search_model", "update_models_config",
]
