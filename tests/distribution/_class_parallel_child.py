"""Child process of test_class_parallel.py: 8 simulated CPU devices, JAX backend.

Prints one line ``RESULT <json>``. For every (model, head, loss) case it trains one SGD step
(learning rate 1, so the weight change is the gradient) from the same weights and batch,
once on one device and once under ``km.distribution.class_parallel()``, and records the
losses, the gradients' largest difference and the kernel's placement.
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


def backbone():
    return keras.Sequential([keras.Input((F,)), keras.layers.Dense(D)])


CASES = {
    # name: (model and loss factory, model_axis_size)
    "arcface": (lambda: (keras.Sequential([backbone(), km.layers.LargestMarginHead(C, name="my_head")]), km.losses.ArcFace()), None),
    "cosface": (lambda: (keras.Sequential([backbone(), km.layers.LargestMarginHead(C)]), km.losses.CosFace()), None),
    "lmsoftmax": (lambda: (keras.Sequential([backbone(), km.layers.LargestMarginHead(C)]), km.losses.LMSoftmax(sample_margin_weight=0.5)), None),
    "circle": (lambda: (keras.Sequential([backbone(), km.layers.LargestMarginHead(C)]), km.losses.CircleLoss()), None),
    "virtual_softmax": (lambda: (keras.Sequential([backbone(), km.layers.VirtualSoftmaxHead(C)]), km.losses.VirtualSoftmax()), None),
    "pod": (lambda: (km.models.MarginModel(backbone(), km.layers.PEDCCHead(C)), km.losses.POD()), None),
    "ensemble": (lambda: (km.models.MarginModel(backbone(), km.layers.LargestMarginHead(C)), km.losses.LossEnsemble([km.losses.ArcFace(), km.losses.PairCircleLoss()])), None),
    "pair_circle": (lambda: (km.models.MarginModel(backbone(), km.layers.LargestMarginHead(C)), km.losses.PairCircleLoss()), None),
    "arcface_mesh_2x4": (lambda: (km.models.MarginModel(backbone(), km.layers.LargestMarginHead(C)), km.losses.ArcFace()), 4),
}


def head_of(model):
    return model.head if isinstance(model, km.models.MarginModel) else model.layers[-1]


def one_step(make, distribution, x, y):
    keras.distribution.set_distribution(distribution)
    try:
        keras.utils.set_random_seed(1)
        model, loss = make()
        model.build((None, F))
        model.compile(keras.optimizers.SGD(1.0, momentum=0.5), loss=loss, jit_compile=True)
        before = [np.asarray(v.value) for v in model.trainable_variables]
        logs = model.train_on_batch(x, y, return_dict=True)
        after = [np.asarray(v.value) for v in model.trainable_variables]
        # First step of momentum SGD: m = -lr·g, w += m, so w0 - w1 is the gradient.
        grads = [b - a for b, a in zip(before, after)]
        head = head_of(model)
        slots = [v for v in model.optimizer.variables if "kernel" in v.path and head.name in v.path]
        placement = {
            "path": head.kernel.path,
            "spec": [
                a if a is None or isinstance(a, str) else list(a)
                for a in getattr(head.kernel.value.sharding, "spec", ())
            ],
            "shards": sorted({tuple(s.data.shape) for s in head.kernel.value.addressable_shards}),
            "devices": len(head.kernel.value.sharding.device_set),
            "slot_shards": sorted({tuple(s.data.shape) for v in slots for s in v.value.addressable_shards}),
            "sharded": km.distribution.is_class_sharded(head),
        }
        return float(logs["loss"]), grads, placement
    finally:
        keras.distribution.set_distribution(None)


def error_of(call):
    try:
        call()
    except ValueError as error:
        return str(error)
    return None


def argument_checks():
    """Messages of the ValueErrors for bad arguments (None where nothing was raised)."""
    cp = km.distribution.class_parallel

    def build_head(num_classes, model_axis_size=None):
        with cp(model_axis_size=model_axis_size).scope():
            km.layers.LargestMarginHead(num_classes).build((None, D))

    checks = {
        "model_axis_size=3": lambda: cp(model_axis_size=3),
        "model_axis_size=0": lambda: cp(model_axis_size=0),
        "model_axis_size=16": lambda: cp(model_axis_size=16),
        "model_axis_size=2.0": lambda: cp(model_axis_size=2.0),
        "model_axis_size=True": lambda: cp(model_axis_size=True),
        "devices=[]": lambda: cp(devices=[]),
        "devices='cpu:0'": lambda: cp(devices="cpu:0"),
        "devices=twice": lambda: cp(devices=["cpu:0", "cpu:0"]),
        "devices=unknown": lambda: cp(devices=["cpu:0", "cpu:99"]),
        "devices=3,model_axis_size=2": lambda: cp(devices=["cpu:0", "cpu:1", "cpu:2"], model_axis_size=2),
        "num_classes=30": lambda: build_head(30),
        "num_classes=30,model_axis_size=4": lambda: build_head(30, 4),
    }
    errors = {name: error_of(call) for name, call in checks.items()}
    # Accepted: a subset of the devices, and C divisible by the model axis only.
    with cp(devices=["cpu:2", "cpu:5"]).scope():
        head = km.layers.LargestMarginHead(6)
        head.build((None, D))
    accepted = {
        "two_devices_shards": sorted({tuple(s.data.shape) for s in head.kernel.value.addressable_shards}),
        "two_devices_ids": sorted(d.id for d in head.kernel.value.sharding.device_set),
    }
    with cp(model_axis_size=2).scope():
        head = km.layers.LargestMarginHead(6)
        head.build((None, D))
    accepted["c6_axis2_shards"] = sorted({tuple(s.data.shape) for s in head.kernel.value.addressable_shards})
    dist = cp(model_axis_size=4)
    accepted["data_spec"] = [list(a) if isinstance(a, tuple) else a for a in dist.get_data_layout((N, F)).backend_layout.spec]
    accepted["is_model_parallel"] = isinstance(dist, keras.distribution.ModelParallel)
    accepted["num_model_replicas"] = dist.num_model_replicas
    return errors, accepted


def main(names):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, F)).astype("float32")
    y = np.repeat(np.arange(N // 2), 2) * 3 % C  # two samples per class: pairs for PairCircle
    results = {}
    for name in names:
        make, model_axis_size = CASES[name]
        ref_loss, ref_grads, _ = one_step(make, None, x, y)
        dist = km.distribution.class_parallel(model_axis_size=model_axis_size)
        loss, grads, placement = one_step(make, dist, x, y)
        results[name] = {
            "ref_loss": ref_loss,
            "loss": loss,
            "grad_max_abs_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(grads, ref_grads)),
            "grad_max_abs": max(float(np.max(np.abs(a))) for a in ref_grads),
            "grad_nonzero": all(float(np.max(np.abs(a))) > 0 for a in ref_grads[:2]),
            "model_axis_size": dist.model_axis_size,
            "mesh": list(dist.device_mesh.shape),
            **placement,
        }
    errors, accepted = argument_checks()
    print("RESULT " + json.dumps({"cases": results, "errors": errors, "accepted": accepted}))


if __name__ == "__main__":
    main(sys.argv[1:] or list(CASES))
