"""``export_embedding_model(include_norm=True)``: the feature norm ‖f‖ before the L2
normalisation (MagFace's and AdaFace's quality score) as the ``norm`` output of
``serving_default``, checked against NumPy in this process and in a fresh one that cannot
import keras_margins (as in TF Serving); without the option the export is unchanged."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_margins as km
from keras_margins.check_child import BLOCK_KERAS_MARGINS

tf = pytest.importorskip("tensorflow")

F, D, C, N = 5, 4, 6, 7

# Runs every output of serving_default in a process where keras_margins cannot be imported.
_CHILD = BLOCK_KERAS_MARGINS + """import json, numpy as np, tensorflow as tf
export_dir, x_path, out_path = sys.argv[1:]
fn = tf.saved_model.load(export_dir).signatures["serving_default"]
out = {k: v.numpy() for k, v in fn(inputs=tf.constant(np.load(x_path))).items()}
np.savez(out_path, **out)
print(json.dumps({k: [s.dtype.name, s.shape.as_list()] for k, s in fn.structured_outputs.items()}))
"""


def magface_model():
    backbone = keras.Sequential([keras.Input((F,)), keras.layers.Dense(D)])
    model = km.models.MarginModel(backbone, km.layers.LargestMarginHead(C))
    model.compile("sgd", loss=km.losses.MagFace(16.0))
    return model, backbone


def inputs():
    x = np.random.default_rng(1).normal(size=(N, F)).astype("float32") * 3.0
    x[0] = 0.0  # zero input, zero embedding (the Dense bias starts at 0)
    return x


def reference_norm(raw):
    return np.maximum(np.linalg.norm(raw.astype("float64"), axis=1), 1e-12)


def test_norm_output_and_unchanged_default(tmp_path):
    model, backbone = magface_model()
    x = inputs()
    raw = keras.ops.convert_to_numpy(backbone(x)).astype("float64")
    plain = km.export.export_embedding_model(model, tmp_path / "m", models_config=False)
    fn = tf.saved_model.load(plain).signatures["serving_default"]
    assert sorted(fn.structured_outputs) == ["embedding"]
    with_norm = km.export.export_embedding_model(model, tmp_path / "m", include_norm=True,
                                                 models_config=False)
    fn = tf.saved_model.load(with_norm).signatures["serving_default"]
    assert sorted(fn.structured_outputs) == ["embedding", "norm"]
    served = fn(inputs=tf.constant(x))
    assert served["norm"].dtype == tf.float32 and served["norm"].shape == (N,)
    np.testing.assert_allclose(served["norm"].numpy(), reference_norm(raw), rtol=1e-6)
    unit = raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)
    np.testing.assert_allclose(served["embedding"].numpy(), unit, atol=1e-6)
    # the embedding is the same as without the option
    before = tf.saved_model.load(plain).signatures["serving_default"](inputs=tf.constant(x))
    np.testing.assert_array_equal(before["embedding"].numpy(), served["embedding"].numpy())
    # normalize=False: the raw embedding next to its norm
    raw_export = km.export.export_embedding_model(model, tmp_path / "m", include_norm=True,
                                                  normalize=False, models_config=False)
    served = tf.saved_model.load(raw_export).signatures["serving_default"](inputs=tf.constant(x))
    np.testing.assert_allclose(served["embedding"].numpy(), raw, atol=1e-6)
    np.testing.assert_allclose(served["norm"].numpy(), reference_norm(raw), rtol=1e-6)


def test_bad_include_norm_names_the_argument(tmp_path):
    model, _ = magface_model()
    with pytest.raises(ValueError, match="include_norm"):
        km.export.export_embedding_model(model, tmp_path / "m", include_norm="yes")
    assert not os.path.exists(tmp_path / "m")


def test_norm_served_in_a_process_without_keras_margins(tmp_path):
    model, backbone = magface_model()
    x = inputs()
    path = km.export.export_embedding_model(model, tmp_path / "m", include_norm=True,
                                            include_scores=True, models_config=False)
    x_path, out_path = tmp_path / "x.npy", tmp_path / "out.npz"
    np.save(x_path, x)
    proc = subprocess.run([sys.executable, "-c", _CHILD, path, str(x_path), str(out_path)],
                          capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    signature = json.loads(proc.stdout.strip().splitlines()[-1])
    assert signature == {"embedding": ["float32", [None, D]], "norm": ["float32", [None]]}
    with np.load(out_path) as out:
        raw = keras.ops.convert_to_numpy(backbone(x))
        np.testing.assert_allclose(out["norm"], reference_norm(raw), rtol=1e-6)
        np.testing.assert_allclose(
            out["embedding"], km.models.embedding_model(model).predict(x, verbose=0), atol=1e-6)
