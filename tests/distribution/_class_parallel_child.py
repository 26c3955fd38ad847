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
import partial_fc_reference as ref  # noqa: E402  (this folder: the NumPy sampling rules)

import keras_margins as km  # noqa: E402
from keras_margins.losses.partial_fc_sharded import (  # noqa: E402
    class_sharding,
    sharded_partial_cosines,
)

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
        variable = km.distribution.class_variable(head)
        slots = [v for v in model.optimizer.variables
                 if v.path.endswith(f"{head.name}_{variable.name}_momentum")]
        placement = {
            "path": variable.path,
            "class_axis": km.distribution.CLASS_VARIABLES[variable.name],
            "spec": spec_of(variable.value),
            "shards": sorted({tuple(s.data.shape) for s in variable.value.addressable_shards}),
            "devices": len(variable.value.sharding.device_set),
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
        head = km.layers.LargestMarginHead(6, kernel_layout="feature_major")
        head.build((None, D))
    kernel = km.distribution.class_variable(head)
    accepted = {
        "two_devices_shards": sorted({tuple(s.data.shape) for s in kernel.value.addressable_shards}),
        "two_devices_ids": sorted(d.id for d in kernel.value.sharding.device_set),
    }
    with cp(model_axis_size=2).scope():
        head = km.layers.LargestMarginHead(6, kernel_layout="feature_major")
        head.build((None, D))
    kernel = km.distribution.class_variable(head)
    accepted["c6_axis2_shards"] = sorted({tuple(s.data.shape) for s in kernel.value.addressable_shards})
    dist = cp(model_axis_size=4)
    data = dist.get_data_layout((N, F)).backend_layout
    accepted["data_spec"] = [list(a) if isinstance(a, tuple) else a for a in data.spec]
    accepted["data_mesh_size"] = int(data.mesh.size)
    accepted["is_model_parallel"] = isinstance(dist, keras.distribution.ModelParallel)
    accepted["num_model_replicas"] = dist.num_model_replicas
    # The public layout map: class variables by name, everything else replicated.
    layout_map = km.distribution.class_layout_map(dist.device_mesh)
    accepted["layout_map"] = {
        path: None if layout_map[path] is None else list(layout_map[path].axes)
        for path in ("model/my_head/class_kernel", "class_centers", "model/dense/kernel",
                     "model/my_head/class_kernel_extra")
    }
    # Inside a model: the optimizer slot is split like its variable; other weights replicated.
    with cp().scope():
        model = keras.Sequential([backbone(), km.layers.LargestMarginHead(C, name="my_head")])
        model.compile(keras.optimizers.Adam(), loss=km.losses.ArcFace())
        model.optimizer.build(model.trainable_variables)
    accepted["variable_specs"] = {v.path: spec_of(v.value) for v in model.weights}
    accepted["slot_specs"] = {v.path: spec_of(v.value) for v in model.optimizer.variables
                              if len(v.shape) == 2}
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
    """Partial FC sampled per shard (``partial_fc_sharded.sharded_partial_cosines`` with
    ``PartialFC.block_sampler``), against each device's sample recomputed in NumPy."""
    import jax

    n, d, c, shards = 16, 6, 512, 8
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, d)).astype("float32")
    y = rng.choice(c, size=n, replace=False).astype("int32")
    y[1] = y[0]  # a repeated class
    y[2] = 5  # classes in the first block...
    y[3] = c - 1  # ...and the last
    seed, step_value = 11, 7
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
            pfc = km.losses.PartialFC(km.losses.NormFace(), rate, seed=seed)

            def step(w, features, labels, step_counter):
                with keras.StatelessScope(state_mapping=[(variable, w)]):
                    cos, sampled = sharded_partial_cosines(
                        class_sharding(head), features, labels, pfc.block_sampler(step_counter))
                return pfc.loss(sampled, cos), (cos, sampled)

            with dist.scope():
                fn = jax.jit(jax.value_and_grad(step, has_aux=True))
                (value, (cos, sampled)), grad = fn(variable.value, xs, ys, step_value)
                hlo = fn.lower(variable.value, xs, ys, step_value).compile().as_text()
            gathered = [
                int(np.prod([int(v) for v in m.group(1).split(",") if v] or [1]))
                for m in ALL_GATHER.finditer(hlo)
            ]
            cos_spec = spec_of(cos)
            cos, sampled = np.asarray(cos), np.asarray(sampled)
            g = np.asarray(grad)
            g = g.T if layout == "class_major" else g  # (D, C)
            touched = np.flatnonzero(np.abs(g).sum(axis=0) > 0)
            block = c // shards
            # Each device's sample recomputed here from the documented rules.
            expected = ref.sharded_sample(y, c, shards, rate, seed, step_value)
            columns = sorted(set().union(*expected))
            position = {cls: i for i, cls in enumerate(columns)}
            numpy_loss = numpy_normface(full[:, columns], np.array([position[t] for t in y]))
            # Gradient reference for rate 1 (every column): the same loss on one device.
            if rate == 1.0:

                def single(w):
                    return pfc.loss(y, km.ops.cosine_similarity(x, w))

                ref_grad = np.asarray(jax.grad(single)(jax.device_put(kernel, jax.devices()[0])))
                grad_diff = float(np.max(np.abs(ref_grad - g)))
            else:
                grad_diff = None
            out[f"{layout}_{rate}"] = {
                "cos_shape": list(cos.shape),
                "cos_spec": cos_spec,
                "loss": float(value),
                "numpy_loss": float(numpy_loss),
                "target_cos_max_diff": float(
                    np.max(np.abs(cos[np.arange(n), sampled] - full[np.arange(n), y]))
                ),
                "sampled_min": int(sampled.min()),
                "touched_per_block": np.bincount(touched // block, minlength=shards).tolist(),
                "touched_by_device": [sorted(int(t) for t in touched if t // block == s)
                                      for s in range(shards)],
                "expected_by_device": [sorted(e) for e in expected],
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
    """km.losses.PartialFC in MarginModel.fit on a class-sharded head: two SGD steps; the rows
    each step changed are compared with each device's sample recomputed in NumPy."""
    out = {}
    features = 10
    seed, rate, shards = 3, 0.25, 8
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
                loss=km.losses.PartialFC(km.losses.NormFace(), sample_rate=rate, seed=seed),
                jit_compile=True,
            )
            embedding = np.asarray(model.backbone(inputs))
            kernels = [np.asarray(model.head.kernel)]
            losses = []
            for _ in range(2):
                losses.append(float(model.train_on_batch(inputs, y, return_dict=True)["loss"]))
                kernels.append(np.asarray(model.head.kernel))
            collectives = collective_sizes_of_train_step(model, inputs, y)
        block = c // shards
        touched = [np.flatnonzero(np.abs(b - a).sum(axis=0) > 0) for a, b in zip(kernels, kernels[1:])]
        expected = [ref.sharded_sample(y, c, shards, rate, seed, step) for step in range(2)]
        columns = sorted(set().union(*expected[0]))
        position = {cls: i for i, cls in enumerate(columns)}
        numpy_loss = numpy_normface(
            numpy_cosines(embedding, kernels[0])[:, columns], np.array([position[t] for t in y])
        )
        out[f"fit_{layout}"] = {
            "loss": losses[0],
            "numpy_loss": float(numpy_loss),
            "touched_by_device": [[sorted(int(t) for t in step if t // block == s)
                                   for s in range(shards)] for step in touched],
            "expected_by_device": [[sorted(e) for e in step] for step in expected],
            "touched_per_block": [np.bincount(t // block, minlength=shards).tolist() for t in touched],
            "labels_touched": [bool(np.all(np.isin(y, t))) for t in touched],
            "new_sample_each_step": bool(set(touched[0]) != set(touched[1])),
            "train_step_collective_sizes": collectives,
            "block_size": block * d,
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
        spec = spec_of(km.distribution.class_variable(loaded.head).value)
    single = keras.models.load_model(path, safe_mode=True)
    return {
        "sharded_max_diff": float(np.max(np.abs(sharded - before))),
        "single_max_diff": float(np.max(np.abs(np.asarray(single.predict(x, verbose=0)) - before))),
        "loaded_spec": spec,
        "single_devices": len(km.distribution.class_variable(single.head).value.sharding.device_set),
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
