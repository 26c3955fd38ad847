#!/usr/bin/env bash
# The test command of the README: the lean default suite on the TensorFlow backend, then the
# same suite on the JAX backend (tests marked tf_only -- SavedModel export, tf.data/TFDS,
# MirroredStrategy -- are skipped there). Extra arguments go to both pytest runs, e.g.
# `bash scripts/test.sh -m slow` for the long accuracy checks.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2
echo "== TensorFlow backend"
KERAS_BACKEND=tensorflow python -m pytest -q -n 2 --dist loadfile "$@"
if python -c "import jax" 2>/dev/null; then
    echo "== JAX backend"
    KERAS_BACKEND=jax python -m pytest -q -n 2 --dist loadfile "$@"
else
    echo "== JAX backend skipped: jax is not installed (pip install -e '.[dev]')"
fi
