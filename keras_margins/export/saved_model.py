"""Writing an export: the SavedModel of the embedding model, in its own version folder.

``export_embedding_model`` builds the serving functions from Keras ops only, so the same code
exports on the TensorFlow backend (the functions are traced by ``tf.function``) and on JAX
(Keras converts them with ``jax2tf``, which needs TensorFlow installed). Everything that can
be checked (backend, paths, version, the model) is checked and the serving functions are
traced before any folder is created; a failed write removes what it created.
"""

import contextlib
import errno
import importlib.util
import os
import re
import shutil
import uuid

import keras
from keras import ops

from keras_margins.layers import L2Normalize
from keras_margins.models.embedding import INPUT_NAME, embedding_model, split_head
from keras_margins.ops.angular import feature_norm

EMBEDDING_OUTPUT = "embedding"
SCORES_OUTPUT = "scores"
#: The output of ``serving_default`` with ``include_norm=True``: ‖f‖ before normalisation.
NORM_OUTPUT = "norm"
SERVING_SIGNATURE = "serving_default"
SCORES_SIGNATURE = "scores"
#: Backends whose functions Keras can write as a SavedModel.
EXPORT_BACKENDS = ("tensorflow", "jax")
_VERSION_RE = re.compile(r"^[0-9]+$")


# ----------------------------------------------------------------------------- versions / paths
def versions(base_dir):
    """The integer version folders of ``base_dir``, sorted (``[]`` when it does not exist)."""
    if not os.path.isdir(base_dir):
        return []
    return sorted(int(n) for n in os.listdir(base_dir) if _VERSION_RE.match(n))


def creatable_dir(path, name="base_dir"):
    """``(absolute path, its nearest existing ancestor)``; ``ValueError`` naming ``name`` when
    ``path`` is a file or an ancestor on the way to it is (the folder could not be created)."""
    absolute = os.path.abspath(os.fspath(path))
    if os.path.exists(absolute) and not os.path.isdir(absolute):
        raise ValueError(f"`{name}` {path!r} exists and is not a directory.")
    existing = absolute
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"cannot create `{name}` {path!r}: {existing!r} is a file, not a directory.")
    return absolute, existing


def _version_dir(base_dir, version):
    """``(absolute base_dir, version, target folder)`` for an export, checked; creates nothing.

    ``version=None`` takes the next free number. ``ValueError`` for a bad path or version, or
    a version that already exists (exports never overwrite).
    """
    if not isinstance(base_dir, (str, os.PathLike)) or not str(base_dir).strip():
        raise ValueError(f"`base_dir` must be a non-empty path; got {base_dir!r}.")
    base_dir, _ = creatable_dir(base_dir)
    if version is None:
        version = (versions(base_dir) or [0])[-1] + 1
    elif isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"`version` must be an integer >= 1 or None; got {version!r}.")
    target = os.path.join(base_dir, str(version))
    if os.path.exists(target):
        raise ValueError(
            f"version {version} already exists at {target!r}; exports never overwrite."
        )
    return base_dir, version, target


def _make_dirs(base_dir):
    """Create ``base_dir``; return the folders created (outermost first), for clean-up."""
    created, folder = [], base_dir
    while not os.path.exists(folder):
        created.append(folder)
        folder = os.path.dirname(folder)
    try:
        os.makedirs(base_dir, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create `base_dir` {base_dir!r}: {err}") from err
    return created[::-1]


def _remove_if_empty(folders):
    for folder in reversed(folders):  # innermost first
        with contextlib.suppress(OSError):
            os.rmdir(folder)  # fails (and is kept) when something else is in it


def publish_version(staging, base_dir, version, explicit, attempts=1000):
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
        version = max((versions(base_dir) or [0])[-1], version) + 1
    raise RuntimeError(f"no free version found in {base_dir!r} after {attempts} attempts.")


def check_backend():
    """``ValueError`` unless the running Keras backend can write a SavedModel here: the
    TensorFlow backend, or JAX with TensorFlow installed (Keras converts through ``jax2tf``).
    """
    backend = keras.backend.backend()
    if backend not in EXPORT_BACKENDS:
        raise ValueError(
            f"exporting a SavedModel needs the TensorFlow or JAX backend; "
            f"KERAS_BACKEND={backend}. Load the .keras file with KERAS_BACKEND=tensorflow "
            "and export it there."
        )
    if importlib.util.find_spec("tensorflow") is None:
        raise ValueError(
            f"exporting a SavedModel needs TensorFlow installed (KERAS_BACKEND={backend} "
            "converts through jax2tf): pip install tensorflow."
        )
    return backend


# ----------------------------------------------------------------------------- export
def _archive(embed, scorer, include_scores, normalizer=None):
    """The ``keras.export.ExportArchive`` with the serving functions, traced (no disk I/O).

    ``normalizer``: None (``embed`` gives the served embedding), or the L2 normalisation
    layer (or False: none) applied after ``embed``, whose output is the un-normalised
    embedding; ``serving_default`` then also returns its norm."""
    import tensorflow as tf

    in_dtype = embed.inputs[0].dtype
    spec = tf.TensorSpec((None, *embed.inputs[0].shape[1:]), tf.float32, name=INPUT_NAME)

    def serve_embedding(inputs):
        out = embed(ops.cast(inputs, in_dtype), training=False)
        if normalizer is None:
            return {EMBEDDING_OUTPUT: ops.cast(out, "float32")}
        norm = feature_norm(ops.cast(out, "float32"))
        if normalizer:
            out = normalizer(out)
        return {EMBEDDING_OUTPUT: ops.cast(out, "float32"), NORM_OUTPUT: norm}

    def serve_scores(inputs):
        out = scorer(ops.cast(inputs, in_dtype), training=False)
        if isinstance(out, dict):  # a MarginModel left in its evaluate-time dict mode
            out = out[SCORES_OUTPUT]
        return {SCORES_OUTPUT: ops.cast(out, "float32")}

    archive = keras.export.ExportArchive()
    # Everything is tracked before the first endpoint: on JAX an endpoint binds the archive's
    # variable list as it is when the function is traced.
    archive.track(embed)
    if include_scores:
        archive.track(scorer)
    archive.add_endpoint(SERVING_SIGNATURE, serve_embedding, input_signature=[spec])
    if include_scores:
        archive.add_endpoint(SCORES_SIGNATURE, serve_scores, input_signature=[spec])
    return archive


def export_embedding_model(
    model,
    base_dir,
    version=None,
    normalize=True,
    include_scores=False,
    input_shape=None,
    models_config=None,
    serving_root="/models",
    include_norm=False,
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
        include_norm: also return ``norm`` from ``serving_default``: ‖f‖ of the embedding
            before the L2 normalisation, float32 (N,) (``km.ops.feature_norm``), the quality
            score of a model trained with ``km.losses.MagFace`` or ``AdaFace`` (Meng et al.
            2021; Kim et al. 2022). Meaningless for a backbone that normalises its output
            itself (always 1). Default False.

    Signatures: ``serving_default``: ``inputs`` float32 -> ``embedding`` float32 (N, D)
    (and ``norm`` float32 (N,) with ``include_norm``); ``scores``: ``inputs`` -> ``scores``
    float32 (N, C).

    Backends: TensorFlow, or JAX with TensorFlow installed (through ``jax2tf``); otherwise a
    ``ValueError`` before anything is written. Nothing is created on disk until the serving
    functions are traced, and a failed export leaves no folder behind.

    Example:
        >>> model = keras.Sequential([backbone, km.layers.LargestMarginHead(10)])
        >>> model.compile("adam", loss=km.losses.ArcFace()); model.fit(x, y)
        >>> km.export.export_embedding_model(model, "saved_models/digits")  # .../digits/1
        >>> # MagFace / AdaFace: the feature norm served as a quality score
        >>> km.export.export_embedding_model(model, "saved_models/faces", include_norm=True)
    """
    from keras_margins.export.models_config import update_models_config

    check_backend()
    explicit_version = version is not None
    base_dir, version, _ = _version_dir(base_dir, version)
    if not isinstance(include_norm, bool):
        raise ValueError(f"`include_norm` must be True or False; got {include_norm!r}.")
    normalizer = None
    if include_norm:  # the un-normalised embedding, normalised in the serving function
        embed = embedding_model(model, normalize=False, input_shape=input_shape)
        normalizer = L2Normalize(name="l2_normalize", dtype="float32") if normalize else False
    else:
        embed = embedding_model(model, normalize=normalize, input_shape=input_shape)
    _, _, scorer = split_head(model)
    if include_scores and scorer is None:
        raise ValueError("`include_scores=True` needs a model with a class head; `model` has none.")
    archive = _archive(embed, scorer, include_scores, normalizer)
    created = _make_dirs(base_dir)
    staging = os.path.join(base_dir, f".staging-{version}-{uuid.uuid4().hex}")
    try:
        archive.write_out(staging, verbose=False)
        target = publish_version(staging, base_dir, version, explicit=explicit_version)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_if_empty(created)
        raise
    if models_config is not False:
        root = os.path.dirname(base_dir)
        update_models_config(root, config_path=models_config, serving_root=serving_root)
    return target
