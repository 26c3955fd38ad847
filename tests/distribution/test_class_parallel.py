"""km.distribution.class_parallel on 8 simulated CPU devices (JAX backend).

The device count and the backend are fixed when JAX starts, and this test process has
already started its backend, so the checks run in one child process
(``_class_parallel_child.py``: ``XLA_FLAGS=--xla_force_host_platform_device_count=8``,
``KERAS_BACKEND=jax``), whichever backend the suite itself runs on. Each case trains one
SGD step (learning rate 1: the weight change is the gradient) from the same weights and
batch on one device and under ``class_parallel()``, and compares.
"""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

CHILD = pathlib.Path(__file__).with_name("_class_parallel_child.py")
CASES = [
    "arcface",
    "cosface",
    "lmsoftmax",
    "circle",
    "virtual_softmax",
    "pod",
    "ensemble",
    "pair_circle",
    "arcface_mesh_2x4",
]
D, C = 8, 32


def child_env():
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_ENABLE_X64="0", TF_CPP_MIN_LOG_LEVEL="3")
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    env["PYTHONPATH"] = os.pathsep.join([str(CHILD.parents[2]), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture(scope="module")
def results():
    proc = subprocess.run(
        [sys.executable, str(CHILD), *CASES],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    line = [row for row in proc.stdout.splitlines() if row.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


@pytest.mark.parametrize("case", CASES)
def test_sharded_step_equals_single_device(results, case):
    r = results["cases"][case]
    # Same loss as one device, to float32 rounding of a reduction split over devices.
    assert abs(r["loss"] - r["ref_loss"]) <= 1e-5 * max(1.0, abs(r["ref_loss"])), r
    # Same gradient (every trainable variable) to 1e-5 relative to its scale.
    assert r["grad_nonzero"], r
    assert r["grad_max_abs_diff"] <= 1e-5 * max(1.0, r["grad_max_abs"]), r


@pytest.mark.parametrize("case", CASES)
def test_head_class_variable_is_split_by_class(results, case):
    r = results["cases"][case]
    shards = r["model_axis_size"]
    axis = r["class_axis"]  # 1 for a (D, C) class_kernel, 0 for a (C, D) class_centers
    assert axis == (1 if case == "pod" else 0), r  # PEDCC: (D, C); the others class-major
    assert r["mesh"] == [8 // shards, shards]
    expected_spec, expected_shard = [None, None], [D, D]
    expected_spec[axis], expected_shard[axis] = "model", C // shards
    assert r["spec"] == expected_spec, r  # the class axis over "model", D replicated
    assert r["devices"] == 8
    assert r["shards"] == [expected_shard], r  # each device holds C / shards classes
    assert r["sharded"] is True
    if case != "pod":  # PEDCC centroids are fixed: no optimizer slot
        assert r["slot_shards"] == [expected_shard], r  # momentum split the same way


def test_custom_head_name_is_found(results):
    # Matched by the variable's name at the end of its path: a head named by the user is
    # sharded too.
    assert results["cases"]["arcface"]["path"].endswith("/my_head/class_centers")


@pytest.mark.parametrize(
    "call, names",
    [
        ("model_axis_size=3", ["`model_axis_size`", "(8)"]),
        ("model_axis_size=0", ["`model_axis_size`"]),
        ("model_axis_size=16", ["`model_axis_size`"]),
        ("model_axis_size=2.0", ["`model_axis_size`"]),
        ("model_axis_size=True", ["`model_axis_size`"]),
        ("devices=[]", ["`devices`"]),
        ("devices='cpu:0'", ["`devices`"]),
        ("devices=twice", ["`devices`", "twice"]),
        ("devices=unknown", ["`devices`", "cpu:99"]),
        ("devices=3,model_axis_size=2", ["`model_axis_size`", "(3)"]),
        ("num_classes=30", ["num_classes=30", "`model_axis_size`=8"]),
        ("num_classes=30,model_axis_size=4", ["num_classes=30", "`model_axis_size`=4"]),
    ],
)
def test_bad_arguments_raise_value_error(results, call, names):
    message = results["errors"][call]
    assert message is not None, f"{call} raised no ValueError"
    for name in names:
        assert name in message, message


def test_sharded_model_saves_and_reloads(results):
    r = results["save_load"]
    assert r["loaded_spec"] == ["model", None]  # reloaded under the distribution: split again
    assert r["sharded_max_diff"] < 1e-6, r
    assert r["single_devices"] == 1 and r["single_max_diff"] < 1e-6, r  # or on one device


def test_accepted_arguments(results):
    a = results["accepted"]
    assert a["is_model_parallel"] is True
    assert a["two_devices_ids"] == [2, 5] and a["two_devices_shards"] == [[D, 3]]
    assert a["c6_axis2_shards"] == [[D, 3]]  # C need only be a multiple of the model axis
    # The batch is split over all 8 devices (one axis): the backbone runs data-parallel.
    assert a["data_spec"] == ["batch", None] and a["data_mesh_size"] == 8
    assert a["num_model_replicas"] == 8
    # The public LayoutMap matches class variables by the end of their path only.
    assert a["layout_map"] == {
        "model/my_head/class_kernel": [None, "model"],
        "class_centers": ["model", None],
        "model/dense/kernel": None,
        "model/my_head/class_kernel_extra": None,
    }
    specs = a["variable_specs"]
    split = [(path, spec) for path, spec in specs.items() if any(spec)]
    assert len(split) == 1 and split[0][0].endswith("/my_head/class_centers"), specs
    assert split[0][1] == ["model", None], specs
    assert len(specs) == 3  # Dense kernel and bias replicated
    slots = a["slot_specs"]
    assert len(slots) == 4, slots  # Adam's two slots of the Dense kernel and of the centers
    for path, spec in slots.items():
        assert spec == (["model", None] if "class_centers" in path else [None, None]), slots


def test_in_process_backend_check():
    """On the suite's own backend: JAX gives a one-device mesh, others a clear error."""
    import keras_margins as km

    if keras.backend.backend() != "jax":
        with pytest.raises(RuntimeError, match="JAX backend"):
            km.distribution.class_parallel()
        return
    dist = km.distribution.class_parallel()
    assert isinstance(dist, keras.distribution.ModelParallel)
    assert dist.device_mesh.axis_names == ("batch", "model")
    with pytest.raises(ValueError, match="`model_axis_size`"):
        km.distribution.class_parallel(model_axis_size=2)


PFC_N, PFC_D, PFC_C, PFC_SHARDS = 16, 6, 512, 8


@pytest.mark.parametrize("layout", ["feature_major", "class_major"])
@pytest.mark.parametrize("rate", [0.25, 1.0])
def test_partial_fc_samples_per_shard(results, layout, rate):
    """Each device samples its own block (partial_fc_sharded.sharded_partial_cosines with
    PartialFC's block sampler), exactly the classes recomputed in NumPy for that device
    (tests/distribution/partial_fc_reference.py: its block, its seed)."""
    r = results["partial_fc"][f"{layout}_{rate}"]
    block = PFC_C // PFC_SHARDS
    per_shard = min(block, max(int(np.ceil(rate * block)), PFC_N))  # 16 at 0.25, 64 at 1.0
    # (N, shards * K_b) cosines, split by columns over the same devices as the head.
    assert r["cos_shape"] == [PFC_N, PFC_SHARDS * per_shard]
    assert r["cos_spec"] == [None, "model"]
    assert r["grad_spec"] == r["kernel_spec"]
    # The classes each device trained are the ones its own seed draws from its own block.
    assert r["touched_by_device"] == r["expected_by_device"], r
    assert r["touched_per_block"] == [per_shard] * PFC_SHARDS, r
    assert r["labels_touched"] is True
    # Each label maps to the column holding its class.
    assert r["sampled_min"] >= 0
    assert r["target_cos_max_diff"] < 1e-6
    # The loss is the wrapped loss (NormFace) on the NumPy sample's columns: loop reference.
    assert abs(r["loss"] - r["numpy_loss"]) <= 1e-5 * max(1.0, abs(r["numpy_loss"])), r
    # Only the (N, D) features and (N,) labels are all-gathered, never the head.
    assert r["all_gather_sizes"], "expected the features to be gathered"
    assert max(r["all_gather_sizes"]) <= PFC_N * PFC_D, r["all_gather_sizes"]
    assert r["kernel_size"] == PFC_C * PFC_D
    if rate == 1.0:  # every column kept: the gradient of the full head on one device
        assert r["grad_diff"] <= 1e-5 * max(1.0, r["grad_max"]), r


def test_partial_fc_devices_draw_different_samples(results):
    """The per-device seeds differ: the devices' samples are not the same positions of their
    blocks (what one seed for every device would give)."""
    r = results["partial_fc"]["class_major_0.25"]
    block = PFC_C // PFC_SHARDS
    positions = {tuple(c - s * block for c in cols) for s, cols in enumerate(r["touched_by_device"])}
    assert len(positions) == PFC_SHARDS


@pytest.mark.parametrize("layout", ["feature_major", "class_major"])
def test_partial_fc_fit_on_sharded_head_samples_per_shard(results, layout):
    """km.losses.PartialFC in MarginModel.fit under class_parallel(): in each of two steps
    every device trained exactly the 16 of its 64 classes that its own seed draws (NumPy
    reference), every batch class among them, and the loss is the wrapped loss on the
    sampled columns (NumPy reference)."""
    r = results["partial_fc"][f"fit_{layout}"]
    assert r["touched_by_device"] == r["expected_by_device"], r
    assert r["touched_per_block"] == [[16] * PFC_SHARDS] * 2, r
    assert r["labels_touched"] == [True, True]
    assert r["new_sample_each_step"] is True
    # No collective of the whole compiled train step moves as much as one device's block of
    # the head: only the (N, D) embedding, its gradient, the labels, per-row softmax terms
    # and the backbone's gradient travel; the class vectors (and their sampled rows) stay
    # where they live. (Sampling over the whole head instead moves the (K, D) sampled rows.)
    assert r["train_step_collective_sizes"], "expected the embedding to be gathered"
    assert max(r["train_step_collective_sizes"]) < r["block_size"], r
    assert abs(r["loss"] - r["numpy_loss"]) <= 1e-5 * max(1.0, abs(r["numpy_loss"])), r
