"""Request bodies for a served export: TF Serving's REST (JSON row format) and gRPC
(``PredictRequest``) predict APIs, matching the signatures ``km.export`` writes."""

import numpy as np

from keras_margins.export.saved_model import SERVING_SIGNATURE
from keras_margins.models.embedding import INPUT_NAME


def _batch(x, name="x"):
    array = np.asarray(x, dtype="float32")
    if array.ndim < 1:
        raise ValueError(f"`{name}` must be a batch (N, ...) of examples; got a scalar.")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"`{name}` contains NaN or infinity, which JSON/TF Serving cannot carry.")
    return array


def rest_request(x, signature_name=SERVING_SIGNATURE, input_name=None):
    """The JSON body (a dict) for ``POST /v1/models/<name>:predict``, TF Serving's row format.

    ``{"signature_name": ..., "instances": [row, ...]}``, one row per example of the batch
    ``x`` (N, ...); with ``input_name`` each row is ``{input_name: row}`` instead. The reply is
    ``{"predictions": [...]}``: one embedding (or score row) per instance.

    Example:
        >>> body = km.export.rest_request(x[:2])
        >>> json.dumps(body)   # curl -d @body.json localhost:8501/v1/models/digits:predict
    """
    rows = _batch(x).tolist()
    if input_name is not None:
        rows = [{input_name: row} for row in rows]
    return {"signature_name": signature_name, "instances": rows}


def rest_url(model_name, host="localhost", port=8501, version=None):
    """``http://host:port/v1/models/<name>[/versions/<v>]:predict``."""
    if version is not None and (
        isinstance(version, bool) or int(version) != version or version < 1
    ):
        raise ValueError(f"`version` must be an integer >= 1 or None; got {version!r}.")
    path = f"v1/models/{model_name}" + ("" if version is None else f"/versions/{int(version)}")
    return f"http://{host}:{port}/{path}:predict"


def grpc_request(
    x, model_name, signature_name=SERVING_SIGNATURE, input_name=INPUT_NAME, version=None
):
    """A ``tensorflow_serving.apis.predict_pb2.PredictRequest`` for ``PredictionService``.

    ``x`` (N, ...) goes into ``inputs[input_name]`` as a float32 ``TensorProto`` of shape
    (N, ...), matching the exported signature. Needs ``tensorflow-serving-api``.

    Example:
        >>> request = km.export.grpc_request(x[:2], "digits")
        >>> stub.Predict(request, 10.0).outputs["embedding"]   # prediction_service_pb2_grpc
    """
    import tensorflow as tf

    try:
        from tensorflow_serving.apis import predict_pb2
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "grpc_request needs tensorflow-serving-api: pip install --no-deps "
            "tensorflow-serving-api grpcio"
        ) from err
    if not model_name:
        raise ValueError(f"`model_name` must be a non-empty string; got {model_name!r}.")
    array = _batch(x)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    request.inputs[input_name].CopyFrom(tf.make_tensor_proto(array, dtype=tf.float32))
    return request
