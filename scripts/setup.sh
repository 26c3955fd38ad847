#!/usr/bin/env bash
# Install keras_margins and its dependencies into the active Python environment.
# CPU wheel of TensorFlow by default; for a GPU: pip install "tensorflow[and-cuda]" first and
# set KM_TF=tensorflow.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --upgrade pip
python -m pip install -q -e ".[dev,serving]"
# tensorflow-serving-api declares a dependency on the full `tensorflow` wheel; its protos only
# need the `tensorflow` module, which tensorflow-cpu provides, so install it without deps.
python -m pip install -q --no-deps "tensorflow-serving-api>=2.16"
