#!/usr/bin/env bash
# The test command of the README: the lean default suite on the TensorFlow backend, then the
# same suite on the JAX backend (tests marked tf_only -- SavedModel export, tf.data/TFDS,
# MirroredStrategy -- are skipped there). Extra arguments go to both pytest runs, e.g.
# `bash scripts/test.sh -m slow` for the long accuracy checks.
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
)
echo "== TensorFlow backend"
KERAS_BACKEND=tensorflow python -m pytest -q -n 2 --dist loadfile "$@"
echo "== TensorFlow backend: docstring examples"
KERAS_BACKEND=tensorflow python -m pytest -q --doctest-modules "${DOCTEST_PATHS[@]}"
if python -c "import jax" 2>/dev/null; then
    echo "== JAX backend"
    KERAS_BACKEND=jax python -m pytest -q -n 2 --dist loadfile "$@"
    echo "== JAX backend: docstring examples"
    KERAS_BACKEND=jax python -m pytest -q --doctest-modules "${DOCTEST_PATHS[@]}"
else
    echo "== JAX backend skipped: jax is not installed (pip install -e '.[dev]')"
fi
