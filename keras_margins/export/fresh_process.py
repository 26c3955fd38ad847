"""Checking an export from outside: the SavedModel run in a fresh Python process in which
``import keras_margins`` fails, compared with the model in this process."""

import os
import subprocess
import sys
import tempfile

import numpy as np

from keras_margins.check_child import BLOCK_KERAS_MARGINS
from keras_margins.models.embedding import embedding_model

# Runs in a child interpreter: keras_margins is made unimportable before anything is loaded,
# so the export is proven to stand on TensorFlow alone (as it will in TF Serving).
_CHECK_CHILD = BLOCK_KERAS_MARGINS + """import numpy as np, tensorflow as tf
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
    export_dir = os.fspath(export_dir)
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
