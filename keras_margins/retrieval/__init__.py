"""Search and match: galleries of embeddings as Keras layers, calibrated match decisions, and
both exported inside the served model.

* ``EmbeddingIndex``: exact cosine / inner-product top-k, compiled with XLA (TensorFlow,
  JAX), chunked over the gallery, shardable over devices (``gallery_parallel``);
* ``IVFIndex``: an inverted-file index (k-means coarse centroids, static-shape padded lists,
  ``nprobe`` lists probed) in ``keras.ops``, same API;
* ``index.calibrate(embeddings, labels, target_far=...)`` -> ``Calibration``;
  ``index.match(queries)`` -> (id or -1, score);
* ``export_search_model``: a TF Serving SavedModel with signatures ``embed``, ``search``
  (``k`` is an input) and ``match``, stock TensorFlow ops only.

Nothing here imports TensorFlow at module level (the exporter imports it when called).
"""

from keras_margins.retrieval.exact import EmbeddingIndex
from keras_margins.retrieval.gallery import Calibration, GalleryIndex
from keras_margins.retrieval.ivf import IVFIndex
from keras_margins.retrieval.serving import (
    check_search_export,
    export_search_model,
    search_outputs_without_keras_margins,
)
from keras_margins.retrieval.sharding import gallery_parallel

__all__ = [
    "Calibration", "EmbeddingIndex", "GalleryIndex", "IVFIndex", "check_search_export",
    "export_search_model", "gallery_parallel", "search_outputs_without_keras_margins",
]
