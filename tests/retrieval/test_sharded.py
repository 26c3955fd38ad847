"""A gallery sharded over 8 simulated CPU devices with keras.distribution (JAX backend):
each device holds 1/8 of the rows, the search equals a NumPy brute force, and the compiled
search moves only per-shard top-k candidates between devices, never gallery rows.

The device count is fixed when JAX starts, so the checks run in a child process
(``_sharded_child.py``), whichever backend the suite itself runs on.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

CHILD = pathlib.Path(__file__).with_name("_sharded_child.py")


@pytest.fixture(scope="module")
def result():
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_ENABLE_X64="0", TF_CPP_MIN_LOG_LEVEL="3",
               XLA_FLAGS="--xla_force_host_platform_device_count=8")
    env["PYTHONPATH"] = os.pathsep.join([str(CHILD.parents[2]), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(CHILD)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    line = [row for row in proc.stdout.splitlines() if row.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def test_each_device_holds_one_shard(result):
    assert result["devices"] == 8 and result["shards"] == 8
    per = result["capacity"] // 8
    assert result["embedding_shards"] == [[per, 16]] * 8
    assert result["id_shards"] == [[per]] * 8
    assert len(set(result["shard_devices"])) == 8


def test_sharded_search_equals_brute_force(result):
    assert result["ids_equal"] == 1.0 and result["score_err"] < 1e-5
    assert result["after_ids_equal"] == 1.0 and result["after_score_err"] < 1e-5


def test_only_top_k_candidates_cross_devices(result):
    # 16 queries x 8 shards x k=12 candidates at most; a shard alone has capacity/8 x 16 values.
    assert result["largest_collective"] <= 16 * 8 * 12
    assert result["largest_collective"] < result["capacity"] // 8 * 16
