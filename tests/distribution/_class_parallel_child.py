"""Child process of test_class_parallel.py: 8 simulated CPU devices, JAX backend.

Prints one line ``RESULT <json>``. For every (model, head, loss) case it trains one SGD step
(learning rate 1, so the weight change is the gradient) from the same weights and batch,
once on one device and once under ``km.distribution.class_parallel()``, and records the
losses, the gradients' largest difference and the kernel's placement.
"""

import json
import os
import re
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_margins as km  # noqa: E402

N, F, D, C = 16, 12, 8, 32


def backbone():
    return keras.Sequential([keras.Input((F,)), keras.layers.Dense(D)])


def seq(head, loss):
    """A factory of (Sequential([backbone, head]), loss), built fresh on every call."""
    return lambda: (keras.Sequential([backbone(), head()]), loss())


def margin_model(head, loss):
    """A factory of (MarginModel(backbone, head), loss), built fresh on every call."""
    return lambda: (km.models.MarginModel(backbone(), head()), loss())


def lm_head(**kwargs):
    return lambda: km.layers.LargestMarginHead(C, **kwargs)


CASES = {
    # name: (model and loss factory, model_axis_size)
    "arcface": (seq(lm_head(name="my_head"), km.losses.ArcFace), None),
    "cosface": (seq(lm_head(), km.losses.CosFace), None),
    "lmsoftmax": (seq(lm_head(), lambda: km.losses.LMSoftmax(sample_margin_weight=0.5)), None),
    "circle": (seq(lm_head(), km.losses.CircleLoss), None),
    "virtual_softmax": (
        seq(lambda: km.layers.VirtualSoftmaxHead(C), km.losses.VirtualSoftmax), None
    ),
    "pod": (margin_model(lambda: km.layers.PEDCCHead(C), km.losses.POD), None),
    "ensemble": (
        margin_model(
            lm_head(),
            lambda: km.losses.LossEnsemble([km.losses.ArcFace(), km.losses.PairCircleLoss()]),
        ),
        None,
    ),
    "pair_circle": (margin_model(lm_head(), km.losses.PairCircleLoss), None),
    "arcface_mesh_2x4": (margin_model(lm_head(), km.losses.ArcFace), 4),
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
            "spec": spec_of(head.kernel.value),
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
    accepted["data_spec"] = [
        list(a) if isinstance(a, tuple) else a for a in dist.get_data_layout((N, F)).backend_layout.spec
    ]
    accepted["is_model_parallel"] = isinstance(dist, keras.distribution.ModelParallel)
    accepted["num_model_replicas"] = dist.num_model_replicas
    return errors, accepted


def spec_of(array):
    """The PartitionSpec of a JAX array as a JSON-able list (empty when not named)."""
    spec = getattr(array.sharding, "spec", ())
    return [a if a is None or isinstance(a, str) else list(a) for a in spec]


def numpy_normface(cos, labels, scale=16.0):
    """Mean −log softmax(s·cos)[y] over the rows (loop reference)."""
    total = 0.0
    for row, label in zip(cos.astype("float64"), labels):
        logits = scale * row
        top = logits.max()
        total += -(logits[label] - top - np.log(np.sum(np.exp(logits - top))))
    return total / len(labels)


def numpy_cosines(x, kernel):
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    wn = kernel / np.linalg.norm(kernel, axis=0, keepdims=True)
    return xn @ wn


ALL_GATHER = re.compile(r"= [a-z0-9]+\[([0-9,]*)\][^ ]* all-gather\(")
#: Every cross-device collective of an HLO module (result shape of each).
COLLECTIVE = re.compile(
    r"= [a-z0-9]+\[([0-9,]*)\][^ ]* "
    r"(?:all-gather|all-reduce|all-to-all|reduce-scatter|collective-permute)(?:-start)?\("
)


def partial_fc_checks():
    """Partial FC sampled per shard (``km.distribution.sharded_partial_cosines``)."""
    import jax

    n, d, c, shards = 16, 6, 512, 8
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, d)).astype("float32")
    y = rng.choice(c, size=n, replace=False).astype("int32")
    y[1] = y[0]  # a repeated class
    y[2] = 5  # classes in the first block...
    y[3] = c - 1  # ...and the last
    loss = km.losses.NormFace()
    out = {}
    for layout in ("feature_major", "class_major"):
        dist = km.distribution.class_parallel()
        with dist.scope():
            keras.utils.set_random_seed(2)
            head = km.layers.LargestMarginHead(c, kernel_layout=layout)
            head.build((None, d))
        variable = km.distribution.class_variable(head)
        xs = jax.device_put(x, dist.get_data_layout(x.shape).backend_layout)
        ys = jax.device_put(y, dist.get_data_layout(y.shape).backend_layout)
        kernel = np.asarray(head.kernel)  # (D, C) view, fetched for the NumPy reference
        full = numpy_cosines(x, kernel)
        for rate in (0.25, 1.0):

            def step(w, features, labels, seed):
                sampler = km.distribution.uniform_block_sampler(rate, seed)
                with keras.StatelessScope(state_mapping=[(variable, w)]):
                    cos, sampled = km.distribution.sharded_partial_cosines(
                        head, features, labels, sampler
                    )
                return loss(sampled, cos), (cos, sampled)

            fn = jax.jit(jax.value_and_grad(step, has_aux=True))
            (value, (cos, sampled)), grad = fn(variable.value, xs, ys, 7)
            hlo = fn.lower(variable.value, xs, ys, 7).compile().as_text()
            gathered = [
                int(np.prod([int(v) for v in m.group(1).split(",") if v] or [1]))
                for m in ALL_GATHER.finditer(hlo)
            ]
            cos_spec = spec_of(cos)
            cos, sampled = np.asarray(cos), np.asarray(sampled)
            g = np.asarray(grad)
            g = g.T if layout == "class_major" else g  # (D, C)
            touched = np.flatnonzero(np.abs(g).sum(axis=0) > 0)
            # The wrapped loss on the sampled columns is order-free: NormFace over the
            # touched columns (the sampled set), labels remapped to their position.
            position = {cls: i for i, cls in enumerate(touched)}
            ref = numpy_normface(full[:, touched], np.array([position.get(t, -1) for t in y]))
            # Gradient reference for rate 1 (every column): the same loss on one device.
            if rate == 1.0:

                def single(w):
                    return loss(y, km.ops.cosine_similarity(x, w))

                ref_grad = np.asarray(jax.grad(single)(jax.device_put(kernel, jax.devices()[0])))
                grad_diff = float(np.max(np.abs(ref_grad - g)))
            else:
                grad_diff = None
            out[f"{layout}_{rate}"] = {
                "cos_shape": list(cos.shape),
                "cos_spec": cos_spec,
                "loss": float(value),
                "numpy_loss": float(ref),
                "target_cos_max_diff": float(
                    np.max(np.abs(cos[np.arange(n), sampled] - full[np.arange(n), y]))
                ),
                "sampled_min": int(sampled.min()),
                "touched": int(touched.size),
                "touched_per_block": np.bincount(touched // (c // shards), minlength=shards).tolist(),
                "labels_touched": bool(np.all(np.isin(y, touched))),
                "all_gather_sizes": gathered,
                "kernel_size": int(np.prod(variable.shape)),
                "grad_spec": spec_of(grad),
                "kernel_spec": spec_of(variable.value),
                "grad_diff": grad_diff,
                "grad_max": float(np.max(np.abs(g))),
            }
    out.update(partial_fc_fit_checks(n, d, c, x, y))
    return out


def collective_sizes_of_train_step(model, x, y):
    """Element counts of every collective in the compiled Keras train step (JAX), with the
    model's current state and a batch placed as fit places it."""
    import jax

    dist = keras.distribution.distribution()
    put = lambda a: jax.device_put(a, dist.get_data_layout(a.shape).backend_layout)  # noqa: E731
    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in model.optimizer.variables],
        [v.value for v in model.metrics_variables],
    )
    hlo = jax.jit(model.train_step).lower(state, (put(x), put(y), None)).compile().as_text()
    return [
        int(np.prod([int(v) for v in m.group(1).split(",") if v] or [1]))
        for m in COLLECTIVE.finditer(hlo)
    ]


def partial_fc_fit_checks(n, d, c, x, y):
    """km.losses.PartialFC in MarginModel.fit on a class-sharded head: two SGD steps."""
    out = {}
    features = 10
    inputs = np.random.default_rng(4).normal(size=(n, features)).astype("float32")
    for layout in ("feature_major", "class_major"):
        with km.distribution.class_parallel().scope():
            keras.utils.set_random_seed(1)
            model = km.models.MarginModel(
                keras.Sequential([keras.Input((features,)), keras.layers.Dense(d)]),
                km.layers.LargestMarginHead(c, kernel_layout=layout),
            )
            model.build((None, features))
            model.compile(
                keras.optimizers.SGD(1.0),
                loss=km.losses.PartialFC(km.losses.NormFace(), sample_rate=0.25, seed=3),
                jit_compile=True,
            )
            embedding = np.asarray(model.backbone(inputs))
            kernels = [np.asarray(model.head.kernel)]
            losses = []
            for _ in range(2):
                losses.append(float(model.train_on_batch(inputs, y, return_dict=True)["loss"]))
                kernels.append(np.asarray(model.head.kernel))
            collectives = collective_sizes_of_train_step(model, inputs, y)
        touched = [np.flatnonzero(np.abs(b - a).sum(axis=0) > 0) for a, b in zip(kernels, kernels[1:])]
        first = touched[0]
        position = {cls: i for i, cls in enumerate(first)}
        ref = numpy_normface(
            numpy_cosines(embedding, kernels[0])[:, first], np.array([position.get(t, -1) for t in y])
        )
        out[f"fit_{layout}"] = {
            "loss": losses[0],
            "numpy_loss": float(ref),
            "touched_per_block": [np.bincount(t // (c // 8), minlength=8).tolist() for t in touched],
            "labels_touched": [bool(np.all(np.isin(y, t))) for t in touched],
            "new_sample_each_step": bool(set(touched[0]) != set(touched[1])),
            "train_step_collective_sizes": collectives,
            "block_size": (c // 8) * d,
        }
    return out


def save_load_check():
    """A model trained under class_parallel() saves to .keras and reloads sharded (under the
    distribution) or on one device (without it), with the same predictions."""
    import tempfile

    rng = np.random.default_rng(5)
    x = rng.normal(size=(N, F)).astype("float32")
    y = rng.integers(0, C, size=N)
    path = os.path.join(tempfile.mkdtemp(), "sharded.keras")
    with km.distribution.class_parallel().scope():
        keras.utils.set_random_seed(1)
        model = km.models.MarginModel(backbone(), km.layers.LargestMarginHead(C))
        model.compile(keras.optimizers.SGD(0.1), loss=km.losses.ArcFace(), jit_compile=True)
        model.fit(x, y, batch_size=N, epochs=2, verbose=0)
        before = np.asarray(model.predict(x, batch_size=N, verbose=0))
        model.save(path)
        loaded = keras.models.load_model(path, safe_mode=True)
        sharded = np.asarray(loaded.predict(x, batch_size=N, verbose=0))
        spec = spec_of(loaded.head.kernel.value)
    single = keras.models.load_model(path, safe_mode=True)
    return {
        "sharded_max_diff": float(np.max(np.abs(sharded - before))),
        "single_max_diff": float(np.max(np.abs(np.asarray(single.predict(x, verbose=0)) - before))),
        "loaded_spec": spec,
        "single_devices": len(single.head.kernel.value.sharding.device_set),
    }


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
    partial_fc = partial_fc_checks()
    saved = save_load_check()
    print("RESULT " + json.dumps(
        {"cases": results, "errors": errors, "accepted": accepted, "partial_fc": partial_fc,
         "save_load": saved}
    ))


if __name__ == "__main__":
    main(sys.argv[1:] or list(CASES))
