"""Test-suite setup. The Keras backend comes from ``KERAS_BACKEND`` (TensorFlow by default):

    python -m pytest -q -n 2 --dist loadfile                      # TensorFlow
    KERAS_BACKEND=jax python -m pytest -q -n 2 --dist loadfile    # JAX

Tests of TensorFlow-only features (SavedModel export, tf.data / TFDS input pipelines,
MirroredStrategy, saved_model_cli) carry ``@pytest.mark.tf_only`` and are skipped on other
backends.

Precision on JAX: tests that compute in float64 and compare with float64 NumPy references
carry ``@pytest.mark.float64``; JAX's x64 mode is switched on for those tests only
(``jax.enable_x64``), so the rest runs at JAX's default precision, as users run it, when
``KM_TEST_JAX_X64=0``. The default (``KM_TEST_JAX_X64=1``) still switches x64 on for the
whole JAX run (``JAX_ENABLE_X64``) until every float64 test of the suite carries the marker.
"""

import os
import sys

# tests/references.py (the NumPy references shared by the test files) is importable as
# `references` from every test folder (pytest runs with --import-mode=importlib).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
#: Whether the whole JAX run uses x64 (see the module docstring).
JAX_X64_EVERYWHERE = os.environ.get("KM_TEST_JAX_X64", "1") != "0"
if os.environ["KERAS_BACKEND"] == "jax" and JAX_X64_EVERYWHERE:
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
def _float64_on_jax(request):
    """JAX: x64 on for the duration of a test marked ``float64`` (a no-op elsewhere)."""
    if keras.backend.backend() != "jax" or request.node.get_closest_marker("float64") is None:
        yield
        return
    import jax

    with jax.enable_x64(True):
        yield


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Each test starts from float32 policy and a fixed seed."""
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(0)
    yield
    keras.mixed_precision.set_global_policy("float32")
