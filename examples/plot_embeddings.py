"""Learned features on the circle (2-D) and the sphere (3-D), per loss, like the papers' figures.

Trains one small MLP per loss and embedding size on scikit-learn's handwritten digits (no
download) — softmax, ArcFace, LM-Softmax with learned prototypes, LM-Softmax on fixed
evenly spread centres (``km.layers.PEDCCHead``), Virtual Softmax and PEDCC+POD — and writes

    <out>/features_2d.png   test features on the unit circle, class prototypes as stars
    <out>/features_3d.png   the same on the unit sphere
    <out>/margins.png       histogram of test sample margins (3-D models)

and then trains LM-Softmax alone at D = 3, 9 and 64 to print where it reaches the paper's
claim: its class margin is the regular-simplex bound arccos(−1/(C−1)) = 96.4° only where
C ≤ D + 1 (here D ≥ 9).

What the 2-D panel shows (measured over 3 seeds in ``docs/lm_softmax_study.md``): 10
classes on a circle is outside LM-Softmax's theory (C ≤ D + 1). There its objective itself
prefers uneven prototypes: minimised directly with features and prototypes free
(``examples/lm_softmax_minima.py``), merged prototypes give a lower loss than evenly spaced
ones from s ≈ 4.7 on (s = 5: −0.2011 against −0.1791), because its weights on the other
classes always sum to one, so a class's loss keeps falling as its neighbours move away and
a few widely spaced classes pay for crowding the rest. Softmax-type losses saturate once a
class is separated and end evenly spaced in the same computation. So the learned
prototypes end unevenly spread (class margin about 16° against NormFace's and ArcFace's 34°
at s = 5, a pair of classes nearly sharing a direction) and accuracy drops on the mean. On
fixed, evenly spread centres (``km.layers.PEDCCHead``, the "LM-Softmax, fixed centres"
panel) it keeps the full 36° and 2-D accuracy level with the best. PEDCC+POD's low 2-D
accuracy is not its fixed centres (LM-Softmax on the same centres does well) but POD's
attraction term (1 − cos θ)², nearly flat 18° from a centre, where the 2-D class boundaries
lie. From D = 3 LM-Softmax gives the largest class margin of the losses with learned
prototypes, and from D = 9 (C ≤ D + 1) the simplex, 96.4°.

Takes a few minutes on 2 CPU cores (fifteen small trainings).

    python examples/plot_embeddings.py --out docs/figures
"""

import argparse
import os
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_margins as km  # noqa: E402


def _softmax():
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return keras.layers.Dense(10, use_bias=False, name="head"), loss, []


def _arcface():
    loss = km.losses.ArcFace(scale=16.0, margin=0.2)
    return km.layers.LargestMarginHead(10, name="head"), loss, []


def _lm_softmax():
    return km.layers.LargestMarginHead(10, name="head"), km.losses.LMSoftmax(scale=5.0), []


def _lm_softmax_fixed():
    return km.layers.PEDCCHead(10, name="head"), km.losses.LMSoftmax(scale=5.0), []


def _virtual_softmax():
    return km.layers.VirtualSoftmaxHead(10, name="head"), km.losses.VirtualSoftmax(), []


def _pedcc_pod():
    return km.layers.PEDCCHead(10, name="head"), km.losses.POD(), [km.callbacks.PODDelta()]


EXPLANATION_2D = (
    "LM-Softmax: 10 classes on a circle is outside its theory (C <= D+1); there its objective "
    "is lower with merged than with evenly spaced prototypes from s ~ 4.7 on (its weights on the "
    "other classes sum to one, so widely spaced classes keep gaining while crowded ones cost a "
    "bounded amount: examples/lm_softmax_minima.py), so learned prototypes end uneven (small "
    "class margin, lower accuracy); softmax-type losses saturate and end evenly spaced. On "
    "fixed, evenly spread centres (PEDCCHead) it keeps 36 deg. PEDCC+POD: POD's pull "
    "(1 - cos)^2 is nearly flat 18 deg from a centre, where 2-D boundaries lie. From D = 9 "
    "LM-Softmax reaches the simplex (96.4 deg): docs/lm_softmax_study.md."
)


def methods():
    """{name: factory} of the losses to plot."""
    return {
        "softmax": _softmax,
        "ArcFace": _arcface,
        "LM-Softmax": _lm_softmax,
        "LM-Softmax, fixed centres": _lm_softmax_fixed,
        "Virtual Softmax": _virtual_softmax,
        "PEDCC+POD": _pedcc_pod,
    }


def train(factory, dim, x, y, epochs, seed=0):
    keras.utils.set_random_seed(seed)
    backbone = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(256, activation="relu"),
         keras.layers.Dense(256, activation="relu"), keras.layers.Dense(dim)],
        name="embedding",
    )
    head, loss, callbacks = factory()
    if getattr(loss, "needs", "scores") == "scores":
        model = keras.Sequential([backbone, head])
    else:
        model = km.models.MarginModel(backbone, head)
    model.compile(keras.optimizers.Adam(3e-3), loss=loss, metrics=["accuracy"], jit_compile=True)
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=callbacks)
    return model, backbone, head


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/figures")
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    (x, y), (xt, yt) = km.data.digits_classification()
    table = methods()
    margins = {}
    print(f"{'loss':<16}{'dim':>4}{'test acc':>10}{'MAP@R':>8}{'class margin':>14}")
    for dim in (2, 3):
        panels = {}
        for name, factory in table.items():
            model, backbone, head = train(factory, dim, x, y, args.epochs)
            emb = backbone.predict(xt, verbose=0)
            acc = float(np.mean(np.argmax(model.predict(xt, verbose=0), axis=1) == yt))
            kernel = keras.ops.convert_to_numpy(head.kernel)
            cls_margin = float(keras.ops.convert_to_numpy(km.ops.class_margin(kernel)))
            map_r = km.metrics.retrieval_scores(emb, yt)["map_at_r"]
            print(f"{name:<16}{dim:>4}{acc:>10.4f}{map_r:>8.4f}{np.degrees(cls_margin):>12.1f}°")
            panels[f"{name} (acc {acc:.2f})"] = (emb, yt, kernel)
            if dim == 3:
                cos = km.ops.cosine_similarity(emb, kernel)
                margins[name] = keras.ops.convert_to_numpy(km.ops.sample_margin(yt, cos))
        title = f"Digits test features, {dim}-D, L2-normalised (stars: class prototypes)"
        if dim == 2:
            title += "\n" + textwrap.fill(EXPLANATION_2D, 130)
        fig = km.plots.embedding_grid(panels, ncols=3, title=title)
        fig.savefig(os.path.join(args.out, f"features_{dim}d.png"))
    fig = km.plots.plot_margin_histogram(
        margins, title="Sample margins of the 3-D models on the digits test split"
    )
    fig.savefig(os.path.join(args.out, "margins.png"))
    bound = np.degrees(np.arccos(-1.0 / 9.0))
    print(f"\nLM-Softmax (s=5) against the embedding dimension; simplex bound {bound:.1f}° "
          "for C = 10 <= D + 1")
    for dim in (3, 9, 64):
        model, backbone, head = train(_lm_softmax, dim, x, y, args.epochs)
        acc = float(np.mean(np.argmax(model.predict(xt, verbose=0), axis=1) == yt))
        cls_margin = np.degrees(float(keras.ops.convert_to_numpy(km.ops.class_margin(head.kernel))))
        claim = "within 3 % of the bound" if cls_margin >= 0.97 * bound else (
            "below the bound" if dim >= 9 else "C > D + 1: no simplex, outside the paper's theory")
        print(f"D = {dim:>2}: test acc {acc:.4f}, class margin {cls_margin:5.1f}° ({claim})")
    print("wrote", ", ".join(os.path.join(args.out, f) for f in
                             ("features_2d.png", "features_3d.png", "margins.png")))


if __name__ == "__main__":
    main()
