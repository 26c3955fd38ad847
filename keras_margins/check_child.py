"""Running an exported SavedModel in a fresh Python process that cannot import keras_margins
(as in TF Serving), shared by the exporters' checks (``km.export.check_export``,
``km.retrieval.check_search_export``)."""

import os
import subprocess
import sys
import tempfile

import numpy as np

#: First lines of a check child: keras_margins made unimportable before anything is loaded.
BLOCK_KERAS_MARGINS = """
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
"""

# What every check child does around its own lines: load the SavedModel and the inputs, and
# save the dict ``out`` it fills.
_LOAD = """
import numpy as np, tensorflow as tf
export_dir, x_path, out_path = sys.argv[1:4]
extra = sys.argv[4:]
loaded = tf.saved_model.load(export_dir)
x = tf.constant(np.load(x_path))
out = {}
"""
_SAVE = "\nnp.savez(out_path, **out)\n"


def run_without_keras_margins(export_dir, x, body, extra=()):
    """Run ``body`` on the SavedModel at ``export_dir`` in a fresh Python process in which
    ``import keras_margins`` fails, and return the NumPy arrays it puts in ``out``.

    ``body`` is Python source; it finds ``loaded`` (``tf.saved_model.load(export_dir)``), ``x``
    (``x`` as a float32 ``tf.constant``), ``extra`` (``extra`` as strings), ``np``, ``tf`` and
    an empty dict ``out``. ``ValueError`` when ``export_dir`` holds no ``saved_model.pb``;
    ``RuntimeError`` with the child's stderr when it fails.
    """
    export_dir = os.fspath(export_dir)
    if not os.path.isfile(os.path.join(export_dir, "saved_model.pb")):
        raise ValueError(f"`export_dir` {export_dir!r} holds no saved_model.pb.")
    script = BLOCK_KERAS_MARGINS + _LOAD + body + _SAVE
    with tempfile.TemporaryDirectory() as tmp:
        x_path, out_path = os.path.join(tmp, "x.npy"), os.path.join(tmp, "out.npz")
        np.save(x_path, np.asarray(x, dtype="float32"))
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        proc = subprocess.run(
            [sys.executable, "-c", script, export_dir, x_path, out_path, *map(str, extra)],
            capture_output=True, text=True, env=env,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"running {export_dir} in a fresh process failed:\n{proc.stderr[-3000:]}"
            )
        with np.load(out_path) as out:
            return {key: out[key] for key in out.files}
