#!/usr/bin/env bash
# The test command of the README (lean default run; `-m slow` runs the long accuracy checks).
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2
python -m pytest -q -n 2 --dist loadfile "$@"
