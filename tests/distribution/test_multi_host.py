"""Two processes on localhost train one step together (JAX, gloo CPU collectives).

Each process runs ``_multi_host_child.py``: ``keras.distribution.initialize`` with a free
local port, 2 CPU devices per process (4 in all), then ``DataParallel`` or
``km.distribution.class_parallel()`` over all four devices, each process feeding half of the
global batch (``auto_shard_dataset = False``). The loss reported by ``train_on_batch`` must be
the loss of the whole batch computed in one process without any distribution.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest

CHILD = pathlib.Path(__file__).with_name("_multi_host_child.py")
CASES = [
    "arcface_data_parallel",
    "arcface_class_parallel",
    "margin_model_lmsoftmax",
    "pair_circle",
    "partial_fc_class_parallel",
]
TIMEOUT_S = 600


def free_port():
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def results():
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_ENABLE_X64="0", TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("XLA_FLAGS", None)
    env["PYTHONPATH"] = os.pathsep.join([str(CHILD.parents[2]), env.get("PYTHONPATH", "")])
    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(CHILD), str(port), str(rank), *CASES],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for rank in range(2)
    ]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=TIMEOUT_S))
    finally:
        for proc in procs:  # a process whose peer died would wait for it forever
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    parsed = []
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, out[-2000:] + err[-4000:]
        line = [row for row in out.splitlines() if row.startswith("RESULT ")][-1]
        parsed.append(json.loads(line[len("RESULT ") :]))
    return parsed


def test_two_processes_see_all_devices(results):
    for r in results:
        assert r["process_count"] == 2
        assert r["devices"] == 4 and r["local_devices"] == 2


@pytest.mark.parametrize("case", CASES)
def test_two_process_loss_equals_one_process(results, case):
    first, second = (r[case] for r in results)
    # One global computation: both processes report the same number...
    assert first["loss"] == second["loss"]
    # ...which is the loss of the whole batch in one process (float32 reductions split
    # over devices differ in the last bits). For Partial FC: the wrapped NormFace on the
    # columns the step trained (the union of the four devices' samples).
    ref = first["reference"]
    assert abs(first["loss"] - ref) <= 1e-5 * max(1.0, abs(ref)), first


@pytest.mark.parametrize("case", CASES)
def test_head_split_across_processes(results, case):
    expected = "class_parallel" in case or case == "margin_model_lmsoftmax"
    assert results[0][case]["sharded"] is expected


def test_partial_fc_samples_per_device_across_processes(results):
    """PartialFC on a head split over the 4 devices of 2 processes: each device trained 16
    of its 32 columns, every class of the global batch among them."""
    r = results[0]["partial_fc_class_parallel"]
    assert r["touched_per_block"] == [16, 16, 16, 16], r
    assert r["labels_kept"] is True
    # Exactly the classes each device's own seed draws from its own block (NumPy reference).
    assert r["touched_by_device"] == r["expected_by_device"], r
