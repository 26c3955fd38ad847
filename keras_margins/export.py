"""Export the embedding part of a margin model to TF Serving's SavedModel layout.

A model trained with a margin head is served without its head: the artifact is the backbone
followed by L2 normalisation, written as a SavedModel to ``<base_dir>/<version>/`` (the
layout TF Serving polls), plus a ``models.config`` (TF Serving ``model_config_list``) beside
the model folders. The SavedModel needs neither ``keras`` nor ``keras_margins`` to load.

The serving contract (stable, documented):

* signature ``serving_default``: input ``inputs`` float32 ``(N, *input_shape)`` ->
  output ``embedding`` float32 ``(N, D)`` (unit rows when ``normalize=True``);
* optional signature ``scores`` (``include_scores=True``): input ``inputs`` -> output
  ``scores`` float32 ``(N, C)``, the head's class scores at inference (argmax = class).

Example:
    >>> path = km.export.export_embedding_model(model, "saved_models/digits")
    >>> body = km.export.rest_request(x[:2])            # POST to .../v1/models/digits:predict
    >>> req = km.export.grpc_request(x[:2], "digits")   # PredictionService.Predict
"""

import contextlib
import errno
import os
import re
import shutil
import tempfile
import uuid

import keras
import numpy as np

# split_head and embedding_model live in km.models; they stay importable from here.
from keras_margins.models.embedding import INPUT_NAME, embedding_model, split_head

__all__ = [
    "EMBEDDING_OUTPUT", "INPUT_NAME", "MODELS_CONFIG", "SCORES_OUTPUT", "SCORES_SIGNATURE",
    "SERVING_SIGNATURE", "check_export", "embedding_model", "export_embedding_model",
    "grpc_request", "outputs_without_keras_margins", "rest_request", "rest_url", "split_head",
    "update_models_config",
]
EMBEDDING_OUTPUT = "embedding"
SCORES_OUTPUT = "scores"
SERVING_SIGNATURE = "serving_default"
SCORES_SIGNATURE = "scores"
MODELS_CONFIG = "models.config"
_VERSION_RE = re.compile(r"^[0-9]+$")


# ----------------------------------------------------------------------------- versions / paths
def _versions(base_dir):
    if not os.path.isdir(base_dir):
        return []
    return sorted(int(n) for n in os.listdir(base_dir) if _VERSION_RE.match(n))


def _version_dir(base_dir, version):
    if not isinstance(base_dir, (str, os.PathLike)) or not str(base_dir).strip():
        raise ValueError(f"`base_dir` must be a non-empty path; got {base_dir!r}.")
    base_dir = os.path.abspath(os.fspath(base_dir))
    if os.path.exists(base_dir) and not os.path.isdir(base_dir):
        raise ValueError(f"`base_dir` {base_dir!r} exists and is not a directory.")
    if version is None:
        version = (_versions(base_dir) or [0])[-1] + 1
    elif isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"`version` must be an integer >= 1 or None; got {version!r}.")
    target = os.path.join(base_dir, str(version))
    if os.path.exists(target):
        raise ValueError(
            f"version {version} already exists at {target!r}; exports never overwrite."
        )
    try:
        os.makedirs(base_dir, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create `base_dir` {base_dir!r}: {err}") from err
    return base_dir, version, target


def _publish(staging, base_dir, version, explicit, attempts=1000):
    """Rename the finished ``staging`` folder to ``base_dir/<version>``; return that path.

    The rename is atomic, so TF Serving never sees a half-written version, and it fails when
    another process published the same number first (the target then exists and is not
    empty). An explicit version then raises ``ValueError``; otherwise the export takes the
    next free number and tries again.
    """
    for _ in range(attempts):
        target = os.path.join(base_dir, str(version))
        try:
            os.rename(staging, target)
            return target
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST) and not os.path.exists(target):
                raise
            if explicit:
                raise ValueError(
                    f"version {version} already exists at {target!r}; exports never overwrite."
                ) from err
        version = max((_versions(base_dir) or [0])[-1], version) + 1
    raise RuntimeError(f"no free version found in {base_dir!r} after {attempts} attempts.")


# ----------------------------------------------------------------------------- export
def export_embedding_model(
    model,
    base_dir,
    version=None,
    normalize=True,
    include_scores=False,
    input_shape=None,
    models_config=None,
    serving_root="/models",
):
    """Write the embedding part of ``model`` as a TF Serving SavedModel; return its path.

    Args:
        model: a ``Sequential``/functional model ending in a ``km.layers`` head, a
            ``km.models.MarginModel``, or a plain embedding model (N, ...) -> (N, D).
        base_dir: the model's folder, e.g. ``"saved_models/digits"``; its name is the TF
            Serving model name. The SavedModel goes to ``base_dir/<version>/``.
        version: integer >= 1; ``None`` takes the next free one (1, 2, ...). An existing
            version is never overwritten (``ValueError``). Several processes may export to
            the same ``base_dir`` at once: without an explicit ``version``, one that loses
            the race for a number takes the next free one, so each export gets its own.
        normalize: append L2 normalisation (unit embeddings, cosine = dot product).
        include_scores: also export signature ``scores`` (the head's class scores).
        input_shape: per-example input shape, only for models not built on a ``keras.Input``.
        models_config: where to write/update the ``models.config`` listing every model
            under the parent of ``base_dir`` (default ``<parent>/models.config``); ``False``
            skips it.
        serving_root: the parent folder as the server sees it (``/models`` in the docker
            image); ``None`` writes absolute local paths.

    Signatures: ``serving_default``: ``inputs`` float32 -> ``embedding`` float32 (N, D);
    ``scores``: ``inputs`` -> ``scores`` float32 (N, C).

    Example:
        >>> model = keras.Sequential([backbone, km.layers.LargestMarginHead(10)])
        >>> model.compile("adam", loss=km.losses.ArcFace()); model.fit(x, y)
        >>> km.export.export_embedding_model(model, "saved_models/digits")  # .../digits/1
    """
    import tensorflow as tf

    embed = embedding_model(model, normalize=normalize, input_shape=input_shape)
    _, head, scorer = split_head(model)
    if include_scores and scorer is None:
        raise ValueError("`include_scores=True` needs a model with a class head; `model` has none.")
    explicit_version = version is not None
    base_dir, version, target = _version_dir(base_dir, version)
    in_dtype = embed.inputs[0].dtype
    spec = tf.TensorSpec((None, *embed.inputs[0].shape[1:]), tf.float32, name=INPUT_NAME)

    def serve_embedding(inputs):
        out = embed(tf.cast(inputs, in_dtype), training=False)
        return {EMBEDDING_OUTPUT: tf.cast(out, tf.float32)}

    def serve_scores(inputs):
        out = scorer(tf.cast(inputs, in_dtype), training=False)
        if isinstance(out, dict):  # a MarginModel left in its evaluate-time dict mode
            out = out[SCORES_OUTPUT]
        return {SCORES_OUTPUT: tf.cast(out, tf.float32)}

    archive = keras.export.ExportArchive()
    archive.track(embed)
    archive.add_endpoint(SERVING_SIGNATURE, serve_embedding, input_signature=[spec])
    if include_scores:
        archive.track(scorer)
        archive.add_endpoint(SCORES_SIGNATURE, serve_scores, input_signature=[spec])
    staging = os.path.join(base_dir, f".staging-{version}-{uuid.uuid4().hex}")
    try:
        archive.write_out(staging, verbose=False)
        target = _publish(staging, base_dir, version, explicit=explicit_version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if models_config is not False:
        root = os.path.dirname(base_dir)
        update_models_config(root, config_path=models_config, serving_root=serving_root)
    return target


# ----------------------------------------------------------------------------- models.config
def _exported_models(root):
    names = []
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        versions = _versions(folder)
        if any(os.path.isfile(os.path.join(folder, str(v), "saved_model.pb")) for v in versions):
            names.append(name)
    return names


def update_models_config(root, config_path=None, serving_root="/models"):
    """Write or update TF Serving's ``model_config_list`` for every model under ``root``.

    A model is a folder of ``root`` with at least one ``<int>/saved_model.pb``. Entries already
    in the file are kept (their other fields too); the base path of each model found on disk
    is set to ``<serving_root>/<name>`` (or the absolute local path when ``serving_root`` is
    None). Returns the config path.

    Safe with concurrent writers (several exports at once): the file is re-read and the
    models listed under an exclusive lock on ``<config_path>.lock`` (``fcntl.flock``, where
    the platform has it), and the new text is written to a temporary file that replaces the
    config atomically, so no update is lost and a reader never sees a half-written file.

    Example:
        >>> km.export.update_models_config("saved_models")      # saved_models/models.config
        >>> # docker run -v $PWD/saved_models:/models tensorflow/serving \\
        >>> #     --model_config_file=/models/models.config
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2 as pb

    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise ValueError(f"`root` {root!r} is not a directory.")
    config_path = os.fspath(config_path) if config_path else os.path.join(root, MODELS_CONFIG)
    with _locked(config_path + ".lock"):
        return _update_models_config(root, config_path, serving_root, pb, text_format)


@contextlib.contextmanager
def _locked(lock_path):
    """Exclusive advisory lock on ``lock_path`` for the ``with`` block (POSIX ``flock``)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no flock; the atomic replace remains
        yield
        return
    with open(lock_path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _update_models_config(root, config_path, serving_root, pb, text_format):
    """The read-merge-write of :func:`update_models_config` (called under its lock)."""
    config = pb.ModelServerConfig()
    if os.path.exists(config_path):
        with open(config_path) as f:
            try:
                text_format.Parse(f.read(), config)
            except text_format.ParseError as err:
                raise ValueError(
                    f"`config_path` {config_path!r} is not a models.config: {err}"
                ) from err
    entries = {entry.name: entry for entry in config.model_config_list.config}
    for name in _exported_models(root):
        entry = entries.get(name) or config.model_config_list.config.add(name=name)
        if serving_root is None:
            entry.base_path = os.path.join(root, name)
        else:
            entry.base_path = f"{serving_root.rstrip('/')}/{name}"
        entry.model_platform = "tensorflow"
    folder = os.path.dirname(os.path.abspath(config_path))
    handle, temporary = tempfile.mkstemp(prefix=".models.config-", dir=folder)
    try:
        with os.fdopen(handle, "w") as f:
            f.write(text_format.MessageToString(config))
        os.chmod(temporary, 0o644)
        os.replace(temporary, config_path)  # atomic: readers see the old or the new file
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return config_path


# ----------------------------------------------------------------------------- requests
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


# ----------------------------------------------------------------------------- checking
# Runs in a child interpreter: keras_margins is made unimportable before anything is loaded,
# so the export is proven to stand on TensorFlow alone (as it will in TF Serving).
_CHECK_CHILD = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "keras_margins":
            raise ImportError("keras_margins is blocked in this process")
sys.meta_path.insert(0, _Block())
try:
    import keras_margins
    raise SystemExit("keras_margins must not be importable in the check process")
except ImportError:
    pass
import numpy as np, tensorflow as tf
export_dir, x_path, out_path = sys.argv[1:]
loaded = tf.saved_model.load(export_dir)
x = tf.constant(np.load(x_path))
out = {"embedding": loaded.signatures["serving_default"](inputs=x)["embedding"].numpy()}
if "scores" in loaded.signatures:
    out["scores"] = loaded.signatures["scores"](inputs=x)["scores"].numpy()
np.savez(out_path, **out)
"""


def outputs_without_keras_margins(export_dir, x):
    """Run the SavedModel at ``export_dir`` on ``x`` in a fresh Python process in which
    ``import keras_margins`` fails; return ``{"embedding": ..., "scores": ...}`` (scores only
    when the export has that signature)."""
    import subprocess
    import sys
    import tempfile

    if not os.path.isfile(os.path.join(export_dir, "saved_model.pb")):
        raise ValueError(f"`export_dir` {export_dir!r} holds no saved_model.pb.")
    with tempfile.TemporaryDirectory() as tmp:
        x_path, out_path = os.path.join(tmp, "x.npy"), os.path.join(tmp, "out.npz")
        np.save(x_path, np.asarray(x, dtype="float32"))
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        proc = subprocess.run(
            [sys.executable, "-c", _CHECK_CHILD, export_dir, x_path, out_path],
            capture_output=True, text=True, env=env,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"loading {export_dir} in a fresh process failed:\n{proc.stderr[-2000:]}")
        with np.load(out_path) as out:
            return {key: out[key] for key in out.files}


def check_export(export_dir, model, x, atol=1e-5):
    """Check an export against the in-process ``model`` in a process without keras_margins.

    Compares the served ``embedding`` with ``embedding_model(model).predict(x)`` and, when
    exported, ``scores`` with ``model.predict(x)``. Returns the max absolute differences;
    raises ``ValueError`` when one exceeds ``atol``.

    Example:
        >>> path = km.export.export_embedding_model(model, "saved_models/digits")
        >>> km.export.check_export(path, model, x_test)   # {'embedding': 0.0}
    """
    served = outputs_without_keras_margins(export_dir, x)
    errors = {
        "embedding": float(np.max(np.abs(served["embedding"] - embedding_model(model).predict(x, verbose=0))))
    }
    if "scores" in served:
        errors["scores"] = float(np.max(np.abs(served["scores"] - model.predict(x, verbose=0))))
    bad = {k: v for k, v in errors.items() if not v <= atol}
    if bad:
        raise ValueError(f"export {export_dir} disagrees with the model: max |diff| {bad} > {atol}")
    return errors
