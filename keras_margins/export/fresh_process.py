"""Checking an export from outside: the SavedModel run in a fresh Python process in which
``import keras_margins`` fails, compared with the model in this process."""

import numpy as np

from keras_margins.check_child import run_without_keras_margins
from keras_margins.models.embedding import embedding_model

# The child's own lines (keras_margins is unimportable there, so the export is proven to stand
# on TensorFlow alone, as it will in TF Serving).
_CHECK_CHILD = """
out["embedding"] = loaded.signatures["serving_default"](inputs=x)["embedding"].numpy()
if "scores" in loaded.signatures:
    out["scores"] = loaded.signatures["scores"](inputs=x)["scores"].numpy()
"""


def outputs_without_keras_margins(export_dir, x):
    """Run the SavedModel at ``export_dir`` on ``x`` in a fresh Python process in which
    ``import keras_margins`` fails; return ``{"embedding": ..., "scores": ...}`` (scores only
    when the export has that signature)."""
    return run_without_keras_margins(export_dir, x, _CHECK_CHILD)


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
