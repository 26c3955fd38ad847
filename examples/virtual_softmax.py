"""Virtual Softmax vs plain softmax on real handwritten digits (Chen et al., NeurIPS 2018).

Same split, same MLP backbone, same optimiser and epochs; both trained under XLA
(jit_compile=True). Prints test accuracy, class margin (smallest angle between two class
weight vectors) and mean test sample margin (cos θ_y − max_{j≠y} cos θ_j) for each, then
saves the Virtual Softmax model as .keras, reloads it (safe_mode=True) and checks the
predictions are identical. About half a minute on 2 CPU cores.

    python examples/virtual_softmax.py [--epochs 30]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_margins as km  # noqa: E402


def make_backbone(dim=32, seed=0):
    """The MLP embedding shared by the examples: 64 pixels -> 256 ReLU -> dim."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(256, activation="relu"), keras.layers.Dense(dim)],
        name="embedding",
    )


def margins(backbone, kernel, x, y):
    """(class margin in degrees, mean sample margin) of class vectors ``kernel`` (D, C)."""
    cos = km.ops.cosine_similarity(backbone.predict(x, verbose=0), kernel)
    class_margin = np.degrees(float(keras.ops.convert_to_numpy(km.ops.class_margin(kernel))))
    sample_margin = float(np.mean(keras.ops.convert_to_numpy(km.ops.sample_margin(y, cos))))
    return class_margin, sample_margin


def fit_and_report(name, model, backbone, kernel_of, data, epochs, callbacks=(), **compile_args):
    """Compile under XLA, fit, and return {accuracy, class_margin, sample_margin, seconds}."""
    (x, y), (xt, yt) = data
    model.compile(keras.optimizers.Adam(3e-3), metrics=["accuracy"], jit_compile=True, **compile_args)
    start = time.time()
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=list(callbacks))
    seconds = time.time() - start
    accuracy = float(np.mean(np.argmax(model.predict(xt, verbose=0), axis=1) == yt))
    class_margin, sample_margin = margins(backbone, kernel_of(model), xt, yt)
    print(f"{name:<22} test accuracy {accuracy:.4f} | class margin {class_margin:6.2f} deg | "
          f"mean sample margin {sample_margin:.4f} | {seconds:.1f}s")
    return {"accuracy": accuracy, "class_margin": class_margin, "sample_margin": sample_margin,
            "seconds": seconds}


def softmax_baseline(data, epochs, seed=0):
    """Plain softmax: bias-free linear head + sparse categorical cross-entropy."""
    backbone = make_backbone(seed=seed)
    head = keras.layers.Dense(10, use_bias=False, name="softmax_head")
    model = keras.Sequential([backbone, head])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return fit_and_report("softmax", model, backbone, lambda m: head.kernel, data, epochs, loss=loss)


def check_round_trip(model, x, path):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    same = np.array_equal(model.predict(x, verbose=0), reloaded.predict(x, verbose=0))
    print(f"saved {path}; reloaded predictions identical: {same}")
    if not same:
        raise SystemExit("reloaded model disagrees with the trained one")


def compare_with_softmax(description, name, train_method, default_out, argv=None):
    """Parse --epochs/--out, train the softmax baseline and ``train_method(data, epochs)``
    (returning its results dict and model) on the same split, then check the .keras round trip."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", default=default_out)
    args = parser.parse_args(argv)
    data = km.data.digits_classification()
    results = {"softmax": softmax_baseline(data, args.epochs)}
    results[name], model = train_method(data, args.epochs)
    check_round_trip(model, data[1][0], args.out)
    return results


def train_virtual_softmax(data, epochs):
    backbone = make_backbone()
    head = km.layers.VirtualSoftmaxHead(10, name="virtual_softmax_head")
    model = keras.Sequential([backbone, head])
    results = fit_and_report(
        "virtual softmax", model, backbone, lambda m: head.kernel, data, epochs,
        loss=km.losses.VirtualSoftmax(),
    )
    return results, model


def main(argv=None):
    return compare_with_softmax(
        __doc__.splitlines()[0], "virtual_softmax", train_virtual_softmax,
        "saved_models/virtual_softmax.keras", argv,
    )


if __name__ == "__main__":
    main()
