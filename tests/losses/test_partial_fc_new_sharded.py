"""Partial FC wrapping each new margin loss on a head split by class over 8 simulated devices
(JAX, ``km.distribution.class_parallel``): one SGD step's loss and loss state equal the NumPy
references of the wrapped loss on the classes each device samples (recomputed from the
sampling rules), and the step changes exactly those classes. A sub-centre head (C·K rows) is
sampled as a whole. Runs in a child process (``_partial_fc_new_sharded_child.py``)."""

import json
import os
import subprocess
import sys

import pytest

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_partial_fc_new_sharded_child.py")


@pytest.mark.slow
def test_partial_fc_on_a_class_sharded_head_matches_the_references():
    pytest.importorskip("jax")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_ENABLE_X64="0", TF_CPP_MIN_LOG_LEVEL="3",
               XLA_FLAGS="--xla_force_host_platform_device_count=8")
    root = os.path.dirname(os.path.dirname(os.path.dirname(CHILD)))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, CHILD], capture_output=True, text=True, env=env,
                          timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    line = [row for row in proc.stdout.splitlines() if row.startswith("RESULT ")][-1]
    results = json.loads(line[len("RESULT "):])
    assert set(results) == {"subcenter", "curricular", "magface", "adaface", "elastic_cos_plus",
                            "uniface"}
    for name, r in results.items():
        assert r["loss"] == pytest.approx(r["ref_loss"], rel=1e-5), name
        state = {k: r["state"][k] for k in r["ref_state"]}
        assert state == pytest.approx(r["ref_state"], rel=1e-5), name
        if name == "uniface":  # b̃ is trained: the step moved it from log(10·C)
            assert abs(r["state"]["uniface_bias"] - 7.8477625) > 1e-3
        # the step trains the sampled classes (64 of 256) and no other
        assert r["touched"] == r["sampled"] and len(r["sampled"]) == 64, name
        # the class variable is split by class over the 8 devices (sub-centres: K rows each)
        assert r["shards"] == [[32 * (3 if name == "subcenter" else 1), 8]], name
