#!/usr/bin/env bash
# The test command of the README and of CI (.ci/run).
#
# Without arguments (`bash scripts/test.sh`), four pytest runs:
#   1. TensorFlow backend: the whole suite, slow accuracy/training checks included
#      (-m "slow or not slow"), on 2 workers (-n 2 --dist loadfile);
#   2. TensorFlow backend: the docstring examples of the modules whose examples are
#      self-contained (DOCTEST_PATHS below), as doctests;
#   3. JAX backend: the default suite (no slow tests; tests marked tf_only -- tf.distribute,
#      benchmarks that time TensorFlow graphs, ... -- are skipped there), on 2 workers;
#   4. JAX backend: the same doctests.
# The JAX runs are skipped when jax is not installed.
#
# With arguments (`bash scripts/test.sh ARGS`), one pytest run per backend with exactly
# those arguments and nothing else (no doctest run, no -n, no -m), e.g.
#   bash scripts/test.sh tests/losses          # that folder, TensorFlow then JAX
#   bash scripts/test.sh -m slow -n 2          # the slow tests on 2 workers, both backends
# i.e. `KERAS_BACKEND=tensorflow python -m pytest ARGS` then `KERAS_BACKEND=jax python -m
# pytest ARGS` (pytest adds pyproject.toml's addopts first, so slow tests stay out unless ARGS
# give their own -m).
#
# Every run reports its 25 slowest tests (--durations=25).
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
REPORT=(--durations=25)
if python -c "import jax" 2>/dev/null; then HAVE_JAX=1; else HAVE_JAX=0; fi

if [ "$#" -gt 0 ]; then
    echo "== TensorFlow backend: pytest $*"
    KERAS_BACKEND=tensorflow python -m pytest "${REPORT[@]}" "$@"
    if [ "$HAVE_JAX" -eq 1 ]; then
        echo "== JAX backend: pytest $*"
        KERAS_BACKEND=jax python -m pytest "${REPORT[@]}" "$@"
    else
        echo "== JAX backend skipped: jax is not installed (pip install -e '.[dev]')"
    fi
    exit 0
fi

echo "== TensorFlow backend"
KERAS_BACKEND=tensorflow python -m pytest -q -n 2 --dist loadfile "${REPORT[@]}" -m "slow or not slow"
echo "== TensorFlow backend: docstring examples"
KERAS_BACKEND=tensorflow python -m pytest -q --doctest-modules "${REPORT[@]}" "${DOCTEST_PATHS[@]}"
if [ "$HAVE_JAX" -eq 1 ]; then
    echo "== JAX backend"
    KERAS_BACKEND=jax python -m pytest -q -n 2 --dist loadfile "${REPORT[@]}"
    echo "== JAX backend: docstring examples"
    KERAS_BACKEND=jax python -m pytest -q --doctest-modules "${REPORT[@]}" "${DOCTEST_PATHS[@]}"
else
    echo "== JAX backend skipped: jax is not installed (pip install -e '.[dev]')"
fi
