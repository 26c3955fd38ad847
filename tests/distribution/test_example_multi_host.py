"""examples/multi_host.py --launch-local 2: two processes on localhost train one model."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

EXAMPLE = pathlib.Path(__file__).parents[2] / "examples" / "multi_host.py"


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["arcface", "partial_fc"])
def test_multi_host_example_two_local_processes(loss):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("XLA_FLAGS", None)
    env.pop("JAX_ENABLE_X64", None)
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--launch-local", "2", "--epochs", "2", "--loss", loss,
         "--timeout", "500"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "2 processes, 2 devices" in out
    # 10 classes over 2 devices (one per process): 5 columns each.
    assert re.search(r"on each device: \[\((64, 5|5, 64)\)\]", out), out
    accuracy = float(re.search(r"test accuracy ([0-9.]+)", out).group(1))
    assert accuracy > 0.5, out  # two epochs on digits; well above the 0.1 of chance
