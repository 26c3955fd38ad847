"""Contract 6: a training step under tf.distribute.MirroredStrategy with two logical CPUs.

Runs in a child process because logical devices must be configured before TensorFlow
initialises (the test process has already initialised it). XLA is off here: TensorFlow 2.21
cannot jit-compile Keras' multi-replica step when the replicas are logical CPU devices
("Trying to access resource ... located in device CPU:1 from device CPU:0"), and a plain
Dense + sparse-CE classifier fails the same way, so this is not specific to our losses.
"""

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.tf_only  # tf.distribute

CHILD = textwrap.dedent(
    """
    import os, json
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    import keras_margins as km

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
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
    results = json.loads(line[len("RESULT"):])
    assert results["replicas"] == 2
    for name in ("arcface", "lm_softmax", "cosface"):
        losses = results[name]["loss"]
        assert all(map(lambda v: v == v and abs(v) < 1e6, losses)), (name, losses)
        assert losses[-1] < losses[0], (name, losses)
        assert results[name]["acc"] > 0.8, (name, results[name])
