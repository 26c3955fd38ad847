#!/usr/bin/env bash
# The test command of the README and of CI (.ci/run): the whole suite on the TensorFlow
# backend, slow accuracy/training checks included (-m "slow or not slow"), then the default
# suite (no slow tests) on the JAX backend (tests marked tf_only -- SavedModel export,
# tf.data/TFDS, MirroredStrategy -- are skipped there).
# With arguments, they replace that selection and go to both pytest runs, e.g.
# `bash scripts/test.sh tests/losses` or `bash scripts/test.sh -m slow`.
# Each backend also runs the docstring examples of the modules whose examples are
# self-contained (DOCTEST_PATHS) as doctests; extra arguments do not apply to that run.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2
DOCTEST_PATHS=(
    keras_margins/ops
    keras_margins/miners
    keras_margins/regularizers
    keras_margins/metrics/margin_metrics.py
    keras_margins/metrics/retrieval.py
    keras_margins/metrics/verification.py
    keras_margins/layers/l2_normalize.py
    keras_margins/models/backbones.py
)
if [ "$#" -eq 0 ]; then
    TF_ARGS=(-m "slow or not slow")
    JAX_ARGS=()
else
    TF_ARGS=("$@")
    JAX_ARGS=("$@")
fi
echo "== TensorFlow backend"
KERAS_BACKEND=tensorflow python -m pytest -q -n 2 --dist loadfile "${TF_ARGS[@]}"
echo "== TensorFlow backend: docstring examples"
KERAS_BACKEND=tensorflow python -m pytest -q --doctest-modules "${DOCTEST_PATHS[@]}"
if python -c "import jax" 2>/dev/null; then
    echo "== JAX backend"
    KERAS_BACKEND=jax python -m pytest -q -n 2 --dist loadfile "${JAX_ARGS[@]}"
    echo "== JAX backend: docstring examples"
    KERAS_BACKEND=jax python -m pytest -q --doctest-modules "${DOCTEST_PATHS[@]}"
else
    echo "== JAX backend skipped: jax is not installed (pip install -e '.[dev]')"
fi
