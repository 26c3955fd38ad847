"""One process of the two-process test (test_multi_host.py): JAX backend, 2 CPU devices per
process, gloo collectives over localhost.

    python _multi_host_child.py PORT PROCESS_ID [CASE ...]

Every process holds the whole global batch but feeds only its half to ``train_on_batch``
(``auto_shard_dataset = False``). For each case it records the loss of one training step on
the global batch (SGD, learning rate 1) and, computed locally without any distribution, the
reference: the same model from the same seed, the same loss on the whole batch. Prints one
line ``RESULT <json>``.
"""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import partial_fc_reference as ref  # noqa: E402  (this folder: the NumPy sampling rules)

N, F, D, C = 16, 12, 8, 32
PROCESSES = 2


def backbone():
    return keras.Sequential([keras.Input((F,)), keras.layers.Dense(D)])


def cases(km):
    head = km.layers.LargestMarginHead

    def sequential():
        return keras.Sequential([backbone(), head(C)])

    def margin_model():
        return km.models.MarginModel(backbone(), head(C))

    out = {
        # name: (distribution kind, model and loss factory)
        "arcface_data_parallel": ("data", lambda: (sequential(), km.losses.ArcFace())),
        "arcface_class_parallel": ("class", lambda: (sequential(), km.losses.ArcFace())),
        "margin_model_lmsoftmax": ("class", lambda: (margin_model(), km.losses.LMSoftmax())),
        "pair_circle": (
            "data",
            lambda: (km.models.MarginModel(backbone()), km.losses.PairCircleLoss()),
        ),
    }
    # 4 shards of 32 classes; each keeps max(ceil(0.25 * 32), N = 16) = 16 of its 32.
    out["partial_fc_class_parallel"] = (
        "class",
        lambda: (
            km.models.MarginModel(backbone(), head(PFC_C, kernel_layout="class_major")),
            # NormFace (s = 16): with ArcFace's s = 64 the softmax weight of far columns
            # underflows to 0, so their gradient would not show that they were sampled.
            km.losses.PartialFC(km.losses.NormFace(), sample_rate=0.25, seed=3),
        ),
    )
    return out


PFC_C = 128


def partial_fc_reference(km, make, x, y, kernel_after):
    """NormFace of the whole batch on the columns the two-process step trained (the sampled
    set, read off the updated kernel), on one device from the same initial weights."""
    keras.utils.set_random_seed(1)
    model, _ = make()
    model.build((None, F))
    embedding = model.backbone(x)
    kernel = np.asarray(model.head.kernel)  # (D, C) view
    touched = np.flatnonzero(np.abs(kernel_after - kernel).sum(axis=0) > 0)
    position = {cls: i for i, cls in enumerate(touched)}
    labels = np.array([position.get(t, -1) for t in y])
    cos = km.ops.cosine_similarity(embedding, kernel[:, touched])
    value = float(km.losses.NormFace()(np.maximum(labels, 0), cos))
    block = PFC_C // 4
    per_block = np.bincount(touched // block, minlength=4).tolist()
    by_device = [sorted(int(t) for t in touched if t // block == s) for s in range(4)]
    return value, per_block, bool(np.all(labels >= 0)), by_device


def reference_loss(km, make, x, y):
    """The loss of the whole batch on one device, no distribution, same initial weights."""
    keras.utils.set_random_seed(1)
    model, loss = make()
    model.build((None, F))
    model.compile(keras.optimizers.SGD(1.0), loss=loss, jit_compile=True)
    return float(model.evaluate(x, y, batch_size=N, verbose=0))


def main(port, process_id, names):
    keras.distribution.initialize(
        job_addresses=f"localhost:{port}", num_processes=PROCESSES, process_id=process_id
    )
    import keras_margins as km

    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, F)).astype("float32")
    y = (np.repeat(np.arange(N // 2), 2) * 5 % C).astype("int32")  # pairs for PairCircle
    rows = slice(process_id * N // PROCESSES, (process_id + 1) * N // PROCESSES)
    results = {
        "devices": len(jax.devices()),
        "local_devices": len(jax.local_devices()),
        "process_count": jax.process_count(),
    }
    all_cases = cases(km)
    for name in names or list(all_cases):
        kind, make = all_cases[name]
        reference = None if name.startswith("partial_fc") else reference_loss(km, make, x, y)
        if kind == "data":
            dist = keras.distribution.DataParallel(auto_shard_dataset=False)
        else:
            dist = km.distribution.class_parallel()
            dist.auto_shard_dataset = False
        with dist.scope():
            keras.utils.set_random_seed(1)
            model, loss = make()
            model.build((None, F))
            model.compile(keras.optimizers.SGD(1.0), loss=loss, jit_compile=True)
            logs = model.train_on_batch(x[rows], y[rows], return_dict=True)
            head = model.head if isinstance(model, km.models.MarginModel) else model.layers[-1]
            sharded = km.distribution.is_class_sharded(head)
        results[name] = {"loss": float(logs["loss"]), "reference": reference, "sharded": sharded}
        if name.startswith("partial_fc"):
            from jax.experimental import multihost_utils

            after = np.asarray(multihost_utils.process_allgather(head.centers.value, tiled=True)).T
            value, per_block, labels_kept, by_device = partial_fc_reference(km, make, x, y, after)
            # Each device's sample of step 0 recomputed in NumPy (its block, its seed).
            expected = ref.sharded_sample(y, PFC_C, 4, 0.25, seed=3, step=0)
            results[name].update(
                reference=value, touched_per_block=per_block, labels_kept=labels_kept,
                touched_by_device=by_device, expected_by_device=[sorted(e) for e in expected],
            )
    print("RESULT " + json.dumps(results), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:])
