"""Child process of test_new_margins.py's class-sharded check: 8 simulated CPU devices, JAX.

Prints one line ``RESULT <json>``. For every new margin loss it trains one SGD step (learning
rate 1, momentum 0.5: the first step's weight change is the gradient) from the same weights
and batch, on one device and under ``km.distribution.class_parallel()``, and records both
losses, the gradients' largest difference, the loss state after the step and how the head's
class variable was split.
"""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_margins as km  # noqa: E402

N, F, D, C = 16, 12, 8, 32

CASES = {
    # name: (loss factory, sub-centres)
    "subcenter": (lambda: km.losses.SubCenterArcFace(), 3),
    "curricular": (lambda: km.losses.CurricularFace(), 1),
    "magface": (lambda: km.losses.MagFace(), 1),
    "adaface": (lambda: km.losses.AdaFace(), 1),
    "elastic_arc_plus": (lambda: km.losses.ElasticFace(plus=True, seed=5), 1),
    "elastic_cos": (lambda: km.losses.ElasticFace(kind="cos", seed=5), 1),
    "uniface": (lambda: km.losses.UniFace(), 1),
}
STATE = ("curricular_t", "adaface_norm_mean", "adaface_norm_std", "elasticface_step", "uniface_bias")


def one_step(name, distribution, x, y):
    make, sub_centers = CASES[name]
    keras.distribution.set_distribution(distribution)
    try:
        keras.utils.set_random_seed(1)
        backbone = keras.Sequential([keras.Input((F,)), keras.layers.Dense(D)])
        model = km.models.MarginModel(backbone, km.layers.LargestMarginHead(C, sub_centers=sub_centers))
        model.compile(keras.optimizers.SGD(1.0, momentum=0.5), loss=make(), jit_compile=True)
        before = [np.asarray(v.value) for v in model.trainable_variables]
        logs = model.train_on_batch(x, y, return_dict=True)
        after = [np.asarray(v.value) for v in model.trainable_variables]
        grads = [b - a for b, a in zip(before, after)]
        state = {v.name: float(np.asarray(v.value)) for v in model.weights if v.name in STATE}
        variable = km.distribution.class_variable(model.head)
        shards = sorted({tuple(s.data.shape) for s in variable.value.addressable_shards})
        return float(logs["loss"]), grads, state, shards
    finally:
        keras.distribution.set_distribution(None)


def main(names):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, F)).astype("float32") * rng.uniform(0.5, 20.0, size=(N, 1)).astype("float32")
    y = (np.arange(N) * 5) % C
    results = {}
    for name in names:
        ref_loss, ref_grads, ref_state, _ = one_step(name, None, x, y)
        loss, grads, state, shards = one_step(name, km.distribution.class_parallel(), x, y)
        results[name] = {
            "ref_loss": ref_loss,
            "loss": loss,
            "grad_max_abs_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(grads, ref_grads)),
            "grad_max_abs": max(float(np.max(np.abs(a))) for a in ref_grads),
            "ref_state": ref_state,
            "state": state,
            "shards": shards,
        }
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:] or list(CASES))
