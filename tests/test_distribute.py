"""Training under tf.distribute.MirroredStrategy with two logical CPUs: one step equals one
device's step on the same global batch (loss and gradients), and training converges.

Runs in a child process because logical devices must be configured before TensorFlow
initialises (the test process has already initialised it). XLA is off here: TensorFlow 2.21
cannot jit-compile Keras' multi-replica step when the replicas are logical CPU devices
("Trying to access resource ... located in device CPU:1 from device CPU:0"), and a plain
Dense + sparse-CE classifier fails the same way, so this is not specific to our losses.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.tf_only  # tf.distribute

#: First lines of every child: TensorFlow with two logical CPUs, then Keras and the library.
TWO_CPUS = textwrap.dedent(
    """
    import os, json
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    import keras_margins as km
    """
)


def run_child(script):
    """Run ``TWO_CPUS + script`` in a fresh TensorFlow process; return the JSON it printed after
    ``RESULT`` on its last such line (and its stdout)."""
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    proc = subprocess.run(
        [sys.executable, "-c", TWO_CPUS + script], capture_output=True, text=True, env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):]), proc.stdout


CHILD = textwrap.dedent(
    """

    (x, y), (xt, yt) = km.data.digits_classification()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    results = {"replicas": strategy.num_replicas_in_sync}
    losses = {
        "arcface": km.losses.ArcFace,
        "lm_softmax": km.losses.LMSoftmax,
        "cosface": km.losses.CosFace,
    }
    for name, make_loss in losses.items():
        keras.utils.set_random_seed(0)
        with strategy.scope():
            backbone = keras.Sequential(
                [keras.Input((64,)), keras.layers.Dense(128, activation="relu"), keras.layers.Dense(32)]
            )
            model = keras.Sequential([backbone, km.layers.LargestMarginHead(10)])
            model.compile(
                keras.optimizers.Adam(3e-3), loss=make_loss(), metrics=["accuracy"], jit_compile=False
            )
        hist = model.fit(x, y, batch_size=64, epochs=3, verbose=0)
        results[name] = {
            "loss": hist.history["loss"],
            "acc": model.evaluate(xt, yt, verbose=0, return_dict=True)["accuracy"],
        }
    print("RESULT" + json.dumps(results))
    """
)


def test_mirrored_strategy_two_logical_cpus():
    results, _ = run_child(CHILD)
    assert results["replicas"] == 2
    for name in ("arcface", "lm_softmax", "cosface"):
        losses = results[name]["loss"]
        assert all(map(lambda v: v == v and abs(v) < 1e6, losses)), (name, losses)
        assert losses[-1] < losses[0], (name, losses)
        assert results[name]["acc"] > 0.8, (name, results[name])


STEP_CHILD = textwrap.dedent(
    """

    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 12)).astype("float32")
    y = rng.permutation(np.arange(16) % 5).astype("int32")
    weights = rng.uniform(0.0, 2.0, 16).astype("float32")
    weights[3] = 0.0
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

    def sequential(loss):
        backbone = keras.Sequential([keras.Input((12,)), keras.layers.Dense(8)])
        return keras.Sequential([backbone, km.layers.LargestMarginHead(5)]), loss

    def margin_model(loss):
        backbone = keras.Sequential([keras.Input((12,)), keras.layers.Dense(8)])
        return km.models.MarginModel(backbone, km.layers.LargestMarginHead(5)), loss

    def build(make, initial=None):
        keras.utils.set_random_seed(0)
        model, loss = make()
        model.compile(keras.optimizers.SGD(1.0), loss=loss, jit_compile=False)
        model.build((None, 12))
        if initial is not None:
            model.set_weights(initial)
        return model

    def one_step(model, sample_weight):
        # fit splits the global batch over the replicas (train_on_batch would give each
        # replica the whole batch); one epoch of one batch of 16 is one step
        before = [np.array(v.numpy()) for v in model.trainable_variables]
        history = model.fit(x, y, sample_weight=sample_weight, batch_size=16, epochs=1,
                            shuffle=False, verbose=0).history
        # plain SGD with learning rate 1: the update is minus the gradient
        grads = [b - np.array(v.numpy()) for b, v in zip(before, model.trainable_variables)]
        return float(history["loss"][-1]), grads

    rows_seen = []

    class RowsProbe(km.losses.ArcFace):  # records how many rows each loss call sees

        def call(self, y_true, y_pred):
            def record(rows):
                rows_seen.append(int(rows))
                return np.int32(0)

            done = tf.py_function(record, [tf.shape(y_pred)[0]], tf.int32)
            with tf.control_dependencies([done]):
                return super().call(y_true, tf.identity(y_pred))

    CASES = {
        "arcface": lambda: sequential(RowsProbe(16.0, 0.3)),
        "cosface_sample_weights": lambda: sequential(km.losses.CosFace(16.0, 0.2)),
        "lm_softmax": lambda: sequential(km.losses.LMSoftmax(5.0, sample_margin_weight=0.5)),
        "margin_model_arcface": lambda: margin_model(km.losses.ArcFace(16.0, 0.3)),
        "margin_model_sample_margin": lambda: margin_model(
            km.losses.SampleMarginRegularizer(km.losses.CircleLoss(0.25, 32.0), 1.0)),
    }

    results = {"replicas": strategy.num_replicas_in_sync}
    for name, make in CASES.items():
        sample_weight = weights if "sample" in name else None
        single = build(make)
        initial = single.get_weights()
        loss_1, grads_1 = one_step(single, sample_weight)
        with strategy.scope():
            mirrored = build(make, initial)
        loss_2, grads_2 = one_step(mirrored, sample_weight)
        results[name] = {
            "loss": [loss_1, loss_2],
            "grad_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(grads_1, grads_2)),
            "grad_size": max(float(np.max(np.abs(a))) for a in grads_1),
            "shapes": [list(g.shape) for g in grads_1] == [list(g.shape) for g in grads_2],
        }
    results["rows_seen"] = rows_seen
    print("RESULT" + json.dumps(results))
    """
)


def test_one_mirrored_step_equals_one_device_step():
    """The same global batch of 16, split 8 + 8 over two replicas: the logged loss and every
    weight's gradient (plain SGD, learning rate 1) equal those of one device's step, for
    losses in a keras.Sequential and in a MarginModel, with and without sample weights."""
    results, stdout = run_child(STEP_CHILD)
    assert results.pop("replicas") == 2
    # the single device's loss call saw the 16 rows, each replica's call its 8
    assert sorted(results.pop("rows_seen")) == [8, 8, 16], stdout[-2000:]
    assert len(results) == 5
    for name, result in results.items():
        single, mirrored = result["loss"]
        assert np.isfinite(single) and mirrored == pytest.approx(single, rel=1e-5), (name, result)
        assert result["shapes"], name
        assert result["grad_size"] > 1e-3, (name, result)  # the step moved the weights
        assert result["grad_diff"] <= 1e-5 * max(1.0, result["grad_size"]), (name, result)
