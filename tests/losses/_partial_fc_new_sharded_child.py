"""Child process of test_partial_fc_new_sharded.py: 8 simulated CPU devices, JAX.

Prints one line ``RESULT <json>``. For each new margin loss wrapped in ``km.losses.PartialFC``
on a head split by class over the 8 devices (``km.distribution.class_parallel()``) it takes one
SGD step and records: the loss, the NumPy reference of the wrapped loss on the classes each
device should have sampled (recomputed from the documented sampling rules,
``tests/distribution/partial_fc_reference.py``), the loss state after the step and its
reference (not UniFace's bias, which the step trains), and which classes the step changed.
"""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), os.path.join(os.path.dirname(HERE), "distribution")]

import keras  # noqa: E402
import numpy as np  # noqa: E402
import partial_fc_reference as sampling  # noqa: E402
import references as ref  # noqa: E402

import keras_margins as km  # noqa: E402

# B = C / 8 = 32 classes per device, K_b = max(⌈0.25·32⌉, N) = 8 of them sampled
N, F, D, C, SHARDS, RATE, SEED, S = 8, 6, 8, 256, 8, 0.25, 3, 16.0

CASES = {
    # name: (loss factory, sub-centres)
    "subcenter": (lambda: km.losses.SubCenterArcFace(S), 3),
    "curricular": (lambda: km.losses.CurricularFace(S), 1),
    "magface": (lambda: km.losses.MagFace(S), 1),
    "adaface": (lambda: km.losses.AdaFace(S), 1),
    "elastic_cos_plus": (lambda: km.losses.ElasticFace(S, kind="cos", plus=True, seed=5), 1),
    "uniface": (lambda: km.losses.UniFace(S), 1),
}
STATE = ("curricular_t", "adaface_norm_mean", "adaface_norm_std", "elasticface_step",
         "uniface_bias", "partial_fc_step")


def unit_rows(a):
    a = np.asarray(a, "float64")
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def sampled_columns(name, y):
    """The class ids the step should train, in any order (every loss here is invariant to the
    order of the columns): each device's own sample of its block, or on a sub-centre head
    (whose class variable holds C·K rows) one sample of the whole head."""
    if CASES[name][1] > 1:
        k = sampling.num_sampled(C, N, RATE)
        return sorted(sampling.exact_sample(y, C, k, sampling.step_seed(SEED, 0, 0)))
    return sorted(set().union(*sampling.sharded_sample(y, C, SHARDS, RATE, SEED, 0)))


def reference(name, loss, cos, labels, norms):
    """(value, state after the step) of the wrapped loss on the sampled cosines."""
    if name == "subcenter":
        return ref.arcface(labels, cos, S, 0.5).mean(), {}
    if name == "curricular":
        t = ref.curricular_t(0.0, cos[np.arange(N), labels])
        return ref.curricular(labels, cos, t, S, 0.5).mean(), {"curricular_t": t}
    if name == "magface":
        return ref.magface(labels, cos, norms, s=S).mean(), {}
    if name == "adaface":
        mean, std = ref.adaface_stats(norms, 20.0, 100.0)
        return (ref.adaface(labels, cos, norms, mean, std, s=S).mean(),
                {"adaface_norm_mean": mean, "adaface_norm_std": std})
    if name == "elastic_cos_plus":  # the draws are the library's, seeded by seed and step
        margins = np.asarray(loss.margins(keras.ops.convert_to_tensor(cos, "float32"), labels, 0))
        return ref.elastic(labels, cos, margins, s=S, kind="cos").mean(), {"elasticface_step": 1}
    bias = float(np.log(10 * C))  # the value the step used; the step then trains it
    return ref.uniface(labels, cos, bias, s=S).mean(), {}


def run(name, x, y):
    make, sub_centers = CASES[name]
    with km.distribution.class_parallel().scope():
        keras.utils.set_random_seed(1)
        backbone = keras.Sequential([keras.Input((F,)), keras.layers.Dense(D)])
        head = km.layers.LargestMarginHead(C, sub_centers=sub_centers)
        model = km.models.MarginModel(backbone, head)
        model.build((None, F))
        model.compile(keras.optimizers.SGD(1.0),
                      loss=km.losses.PartialFC(make(), sample_rate=RATE, seed=SEED),
                      jit_compile=True)
        embedding = np.asarray(backbone(x), "float64")
        sub_before = np.asarray(head.subcenters, "float64")  # (C, K, D)
        loss = float(model.train_on_batch(x, y, return_dict=True)["loss"])
        sub_after = np.asarray(head.subcenters, "float64")
        state = {v.name: float(np.asarray(v.value)) for v in model.weights if v.name in STATE}
        variable = km.distribution.class_variable(head)
        shards = sorted({tuple(s.data.shape) for s in variable.value.addressable_shards})
    columns = sampled_columns(name, y)
    position = {c: i for i, c in enumerate(columns)}
    k = sub_before.shape[1]
    cos = np.clip(unit_rows(embedding) @ unit_rows(sub_before.reshape(C * k, D)).T, -1, 1)
    cos = ref.subcenter_max(cos, k)[:, columns]
    labels = np.array([position[int(t)] for t in y])
    value, ref_state = reference(name, model.loss.loss, cos, labels, np.linalg.norm(embedding, axis=1))
    touched = np.flatnonzero(np.abs(sub_after - sub_before).sum(axis=(1, 2)) > 0)
    return {
        "loss": loss,
        "ref_loss": float(value),
        "state": state,
        "ref_state": {**ref_state, "partial_fc_step": 1.0},
        "touched": [int(t) for t in touched],
        "sampled": [int(c) for c in columns],
        "shards": [list(s) for s in shards],
    }


def main(names):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(N, F)) * rng.uniform(1.0, 20.0, size=(N, 1))).astype("float32")
    y = np.array([5, 40, 40, 127, 9, 200, 255, 70], "int32")  # a repeated class
    results = {name: run(name, x, y) for name in names}
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:] or list(CASES))
