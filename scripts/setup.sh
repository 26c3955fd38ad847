#!/usr/bin/env bash
# Install keras_margins and its dependencies into the active Python environment.
# TensorFlow: the CPU wheel by default; `KM_TF=gpu bash scripts/setup.sh` installs
# tensorflow[and-cuda] instead (the `gpu` extra).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --upgrade pip
python -m pip install -q -e ".[${KM_TF:-cpu},dev,serving]"
# tensorflow-serving-api declares a dependency on the full `tensorflow` wheel; its protos only
# need the `tensorflow` module, which tensorflow-cpu provides, so install it without deps.
python -m pip install -q --no-deps "tensorflow-serving-api>=2.16"
