"""Test-suite setup. The Keras backend comes from ``KERAS_BACKEND`` (TensorFlow by default):

    python -m pytest -q -n 2 --dist loadfile                      # TensorFlow
    KERAS_BACKEND=jax python -m pytest -q -n 2 --dist loadfile    # JAX

Tests of TensorFlow-only features (SavedModel export, tf.data / TFDS input pipelines,
MirroredStrategy, saved_model_cli) carry ``@pytest.mark.tf_only`` and are skipped on other
backends. Under JAX, float64 is switched on (``JAX_ENABLE_X64``) so that the float64 NumPy
reference checks compare float64 computations, as they do on TensorFlow.
"""

import os
import sys

# tests/references.py (the NumPy references shared by the test files) is importable as
# `references` from every test folder (pytest runs with --import-mode=importlib).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
if os.environ["KERAS_BACKEND"] == "jax":
    os.environ.setdefault("JAX_ENABLE_X64", "1")

import keras  # noqa: E402
import pytest  # noqa: E402

try:  # property-based tests (tests/test_properties.py): bounded cost by default
    from hypothesis import HealthCheck, settings  # noqa: E402

    # JAX runs eager ops one by one and compiles each op for each new shape: fewer examples.
    settings.register_profile(
        "ci", max_examples=10 if os.environ["KERAS_BACKEND"] == "jax" else 25,
        deadline=None, derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    settings.register_profile("thorough", max_examples=300, deadline=None)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # pragma: no cover - hypothesis is a declared test dependency
    pass

MARKERS = {
    "tf_only": "needs TensorFlow itself (SavedModel, tf.data, TFDS, tf.distribute); "
    "skipped when KERAS_BACKEND is not tensorflow",
    "float64": "computes in float64 and compares with float64 NumPy references (JAX: x64 "
    "is switched on for this test only)",
}


def pytest_configure(config):
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")


def pytest_collection_modifyitems(config, items):
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"TensorFlow-only feature; KERAS_BACKEND={backend}")
    for item in items:
        if "tf_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Each test starts from float32 policy and a fixed seed."""
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(0)
    yield
    keras.mixed_precision.set_global_policy("float32")
