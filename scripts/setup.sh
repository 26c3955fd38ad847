#!/usr/bin/env bash
# Install keras_margins and its dependencies into the active Python environment.
# TensorFlow: the CPU wheel by default; `KM_TF=gpu bash scripts/setup.sh` installs
# tensorflow[and-cuda] instead (the `gpu` extra).
set -euo pipefail
cd "$(dirname "$0")/.."
# CJK fonts for the km.data.glyphs tests and benchmark (those tests skip without fonts; the
# README's main job needs none). Only as root with apt-get; KM_FONTS=0 skips this step.
GLYPH_FONTS="fonts-arphic-uming fonts-wqy-microhei fonts-wqy-zenhei fonts-ipafont-mincho fonts-ipafont-gothic fonts-hanazono"
if [ "${KM_FONTS:-1}" != 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends $GLYPH_FONTS >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 \
             && apt-get install -y -qq --no-install-recommends $GLYPH_FONTS >/dev/null 2>&1; } \
        || echo "setup.sh: could not install the CJK fonts ($GLYPH_FONTS); the glyphs tests will skip" >&2
fi
python -m pip install -q --upgrade pip
python -m pip install -q -e ".[${KM_TF:-cpu},dev,serving]"
# tensorflow-serving-api declares a dependency on the full `tensorflow` wheel; its protos only
# need the `tensorflow` module, which tensorflow-cpu provides, so install it without deps.
python -m pip install -q --no-deps "tensorflow-serving-api>=2.16"
