"""TF Serving's ``models.config``: the ``model_config_list`` of every model exported under a
folder, updated safely by concurrent exports (a file lock around read-merge-write, an atomic
replace of the file)."""

import contextlib
import os
import tempfile

from keras_margins.export.saved_model import versions

MODELS_CONFIG = "models.config"


def _exported_models(root):
    """Names of the folders of ``root`` holding at least one ``<int>/saved_model.pb``."""
    names = []
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        if any(os.path.isfile(os.path.join(folder, str(v), "saved_model.pb")) for v in versions(folder)):
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
