"""Where LM-Softmax reaches the largest margins, and each paper's central claim, measured.

One command writes every table of ``docs/lm_softmax_study.md`` and of the README's
"Papers' claims, measured" section, and the two figures:

    python examples/margin_study.py                 # everything (~25 min on 2 busy cores, JAX)
    python examples/margin_study.py --part claims   # only the README claims table
    python examples/margin_study.py --smoke         # one seed, few epochs: checks it runs

Parts (``--part``):

* ``dims``: digits (C = 10), class margin and test accuracy against the embedding
  dimension D = 2, 3, 4, 8, 9, 16, 64 for LM-Softmax (s=5), NormFace (s=10), ArcFace
  (s=16, m=0.2) and the remedy (``LMSoftmax`` after a NormFace warm-up), 3 seeds. The
  regular-simplex bound arccos(−1/(C−1)) is printed where C ≤ D + 1.
* ``remedies``: for D = 2 and 3, LM-Softmax on fixed PEDCC centres
  (``km.layers.PEDCCHead``), in the head's class order and with the classes assigned to
  the centres by a matching after a NormFace warm-up.
* ``classes``: a synthetic many-class task (C = 1 000 Gaussian classes in 64-D input),
  D = 8 … 128: accuracy, class margin and the mean angle from each prototype to its
  nearest neighbour.
* ``mechanism``: digits at D = 2 and D = 64, per epoch: class margin, the total weight the
  loss puts on the negatives (1 − p_y for NormFace, exactly 1 for LM-Softmax) and the
  norm of the loss's push on each unit prototype from the other classes' features.
* ``claims``: the papers' central claims on digits at D = 64 (3 seeds, mean ± sample std).
* ``pedcc2d``: PEDCC + POD at D = 2 against softmax and NormFace, and with the classes
  assigned to the fixed centres by a matching after a short NormFace warm-up.

Every model: MLP backbone 64 → Dense 256 ReLU → Dense 256 ReLU → D, Adam 3e-3, batch 64,
``jit_compile=True``; heads and losses from ``keras_margins``' public API. The tables in the
docs were made with ``KERAS_BACKEND=jax`` (faster to compile); TensorFlow gives the same
picture (``tests/test_paper_claims.py`` asserts the claims on TensorFlow).
"""

import argparse
import math
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_margins as km  # noqa: E402

DIGITS_DIMS = (2, 3, 4, 8, 9, 16, 64)
MANY_DIMS = (8, 16, 32, 64, 128)


# ----------------------------------------------------------------------------- data

def digits():
    return km.data.digits_classification()


def gaussian_classes(num_classes=1000, input_dim=64, train_per_class=20, test_per_class=10,
                     noise=1.0, seed=1234):
    """C Gaussian classes in ``input_dim`` dimensions: centres drawn N(0, I), isotropic noise
    of standard deviation ``noise`` per coordinate. Returns (x, y), (xt, yt)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_classes, input_dim)).astype("float32")

    def draw(per_class):
        y = np.repeat(np.arange(num_classes), per_class)
        x = centres[y] + noise * rng.standard_normal((len(y), input_dim)).astype("float32")
        order = rng.permutation(len(y))
        return x[order], y[order].astype("int32")

    return draw(train_per_class), draw(test_per_class)


# ----------------------------------------------------------------------------- models

def backbone(input_dim, dim):
    return keras.Sequential(
        [keras.Input((input_dim,)), keras.layers.Dense(256, activation="relu"),
         keras.layers.Dense(256, activation="relu"), keras.layers.Dense(dim)],
        name="embedding",
    )


def simplex_bound(num_classes, dim):
    """arccos(−1/(C−1)) in degrees where C ≤ D + 1, else None."""
    if num_classes <= dim + 1:
        return math.degrees(math.acos(-1.0 / (num_classes - 1)))
    return None


def _np(t):
    return np.asarray(keras.ops.convert_to_numpy(t))


def method(name, num_classes):
    """(head, loss, callbacks, uses_margin_model) of a method of the tables."""
    c = num_classes
    table = {
        "LM-Softmax": lambda: (km.layers.LargestMarginHead(c), km.losses.LMSoftmax(5.0)),
        "LM-Softmax, s=16": lambda: (km.layers.LargestMarginHead(c), km.losses.LMSoftmax(16.0)),
        "LM-Softmax + R_sm": lambda: (km.layers.LargestMarginHead(c),
                                      km.losses.LMSoftmax(5.0, sample_margin_weight=1.0)),
        "NormFace": lambda: (km.layers.LargestMarginHead(c), km.losses.NormFace(10.0)),
        "NormFace + R_sm": lambda: (km.layers.LargestMarginHead(c),
                                    km.losses.NormFace(10.0, sample_margin_weight=1.0)),
        "CosFace": lambda: (km.layers.LargestMarginHead(c), km.losses.CosFace(16.0, 0.2)),
        "ArcFace": lambda: (km.layers.LargestMarginHead(c), km.losses.ArcFace(16.0, 0.2)),
        "softmax": lambda: (keras.layers.Dense(c, use_bias=False),
                            keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
        "Virtual Softmax": lambda: (km.layers.VirtualSoftmaxHead(c), km.losses.VirtualSoftmax()),
        "PEDCC + POD": lambda: (km.layers.PEDCCHead(c), km.losses.POD()),
        "PEDCC + POD without decorrelation": lambda: (
            km.layers.PEDCCHead(c), km.losses.POD(decorrelation_weight=0.0)),
        "PEDCC + NormFace": lambda: (km.layers.PEDCCHead(c), km.losses.NormFace(10.0)),
    }
    if name.startswith("LM-Softmax, NormFace warm-up"):
        return km.layers.LargestMarginHead(c), km.losses.NormFace(10.0)
    if name.startswith("LM-Softmax, s=") and name not in table:  # any scale: "LM-Softmax, s=3"
        return km.layers.LargestMarginHead(c), km.losses.LMSoftmax(float(name.split("=")[1]))
    return table[name]()


WARMUP_FRACTION = 0.25   # remedy: first quarter of the epochs with NormFace, then LM-Softmax


def train(name, data, dim, epochs, seed, batch_size=64, callbacks=()):
    """Train one model; return a dict of test accuracy, class margin (deg), mean test sample
    margin, mean nearest-prototype angle (deg) and the trained (backbone, head)."""
    (x, y), (xt, yt) = data
    num_classes = int(y.max()) + 1
    keras.utils.set_random_seed(seed)
    bb = backbone(x.shape[1], dim)
    head, loss = method(name, num_classes)
    cbs = list(callbacks)
    if name.startswith("PEDCC + POD"):
        model = km.models.MarginModel(bb, head)
        cbs.append(km.callbacks.PODDelta())
    else:
        model = keras.Sequential([bb, head])
    model.compile(keras.optimizers.Adam(3e-3), loss=loss, jit_compile=True)
    if name.startswith("LM-Softmax, NormFace warm-up"):
        warm = max(1, int(round(WARMUP_FRACTION * epochs)))
        model.fit(x, y, batch_size=batch_size, epochs=warm, verbose=0, callbacks=cbs)
        model.compile(keras.optimizers.Adam(3e-3), loss=km.losses.LMSoftmax(5.0),
                      jit_compile=True)
        model.fit(x, y, batch_size=batch_size, epochs=epochs, initial_epoch=warm, verbose=0,
                  callbacks=cbs)
    else:
        model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=cbs)
    emb = _np(bb.predict(xt, verbose=0, batch_size=1024))
    kernel = _np(head.kernel)
    cos = _np(km.ops.cosine_similarity(emb, kernel))
    w = kernel / np.linalg.norm(kernel, axis=0, keepdims=True)
    gram = np.clip(w.T @ w, -1.0, 1.0)
    np.fill_diagonal(gram, -1.0)
    return {
        "accuracy": float(np.mean(cos.argmax(1) == yt)),
        "class_margin": math.degrees(float(_np(km.ops.class_margin(kernel)))),
        "sample_margin": float(np.mean(_np(km.ops.sample_margin(yt, cos)))),
        "nearest_angle": float(np.degrees(np.mean(np.arccos(gram.max(axis=0))))),
        "backbone": bb,
        "head": head,
    }


def summarise(runs, key, scale=1.0):
    """Mean and sample standard deviation (ddof = 1) over the runs (seeds); 0 for one run,
    which ``fmt`` prints without a ±."""
    values = np.array([r[key] for r in runs]) * scale
    return values.mean(), (values.std(ddof=1) if len(values) > 1 else 0.0)


def fmt(runs, key, scale=1.0, digits=1, unit=""):
    mean, std = summarise(runs, key, scale)
    if len(runs) == 1:
        return f"{mean:.{digits}f}{unit}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}{unit}"


# ----------------------------------------------------------------------------- parts

def part_dims(args, results):
    data = digits()
    names = ["LM-Softmax", "LM-Softmax, NormFace warm-up", "NormFace", "ArcFace"]
    print(f"\nDigits, C = 10: test accuracy (%) / class margin (deg), mean ± std (ddof = 1) over seeds "
          f"{list(args.seeds)}, {args.epochs} epochs")
    print("| D | simplex bound | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for dim in args.dims:
        row = []
        for name in names:
            runs = [train(name, data, dim, args.epochs, seed) for seed in args.seeds]
            results.setdefault("dims", {})[(name, dim)] = runs
            row.append(f"{fmt(runs, 'accuracy', 100)} % / {fmt(runs, 'class_margin')}°")
        bound = simplex_bound(10, dim)
        bound = f"{bound:.1f}°" if bound else "–"
        print(f"| {dim} | {bound} | " + " | ".join(row) + " |", flush=True)


def part_classes(args, results):
    data = gaussian_classes(num_classes=args.classes)
    results["classes_labels"] = np.unique(data[0][1])
    names = args.many_methods
    print(f"\nSynthetic, C = {args.classes} Gaussian classes: test accuracy (%) / class margin "
          f"(deg) / mean nearest-prototype angle (deg), seeds {list(args.seeds)}, "
          f"{args.many_epochs} epochs, batch 256")
    print("| D | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for dim in args.many_dims:
        row = []
        for name in names:
            runs = [train(name, data, dim, args.many_epochs, seed, batch_size=256)
                    for seed in args.seeds]
            results.setdefault("classes", {})[(name, dim)] = runs
            row.append(f"{fmt(runs, 'accuracy', 100)} % / {fmt(runs, 'class_margin')}° / "
                       f"{fmt(runs, 'nearest_angle')}°")
        print(f"| {dim} | " + " | ".join(row) + " |", flush=True)


def loss_gradient(loss_name, cos, labels, scale):
    """dL_i/dcos θ_ij (N, C) in NumPy: LM-Softmax: −s on the target, s·q_j on the others with
    q = softmax over the negatives only (sums to one); NormFace: s·(p − onehot)."""
    cos = np.asarray(cos, dtype="float64")
    onehot = np.eye(cos.shape[1])[np.asarray(labels)]
    z = scale * cos
    if loss_name == "LM-Softmax":
        zn = np.where(onehot > 0, -np.inf, z)
        q = np.exp(zn - zn.max(1, keepdims=True))
        q /= q.sum(1, keepdims=True)
        return scale * (q - onehot)
    if loss_name == "NormFace":
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        return scale * (p - onehot)
    raise ValueError(f"`loss_name` must be 'LM-Softmax' or 'NormFace'; got {loss_name!r}.")


def tangent_forces(grad, xn, w):
    """(C, D): Σ_i g_ij (x̂_i − cos θ_ij ŵ_j), the gradient of Σ_i L_i on the unit prototype
    ŵ_j projected on the sphere's tangent plane at ŵ_j, for dL_i/dcos θ_ij = ``grad`` (N, C),
    unit features ``xn`` (N, D) and unit prototypes ``w`` (D, C)."""
    cos = xn @ w
    return grad.T @ xn - np.sum(grad * cos, axis=0)[:, None] * w.T


class ForceTrace(keras.callbacks.Callback):
    """Per epoch, on the training set: class margin, mean total weight on the negatives,
    and the mean norm of the push (negatives) and pull (target) on the unit prototypes."""

    def __init__(self, loss_name, backbone, head, x, y, scale):
        super().__init__()
        self.loss_name, self.bb, self.head = loss_name, backbone, head
        self.x, self.y, self.s = x, y, scale
        self.rows = []

    def on_epoch_end(self, epoch, logs=None):
        emb = _np(self.bb(self.x))
        xn = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        kernel = _np(self.head.kernel)
        w = kernel / np.linalg.norm(kernel, axis=0, keepdims=True)
        cos = xn @ w
        n, c = cos.shape
        onehot = np.eye(c)[self.y]
        grad = loss_gradient(self.loss_name, cos, self.y, self.s)
        negative_weight = np.sum(np.where(onehot > 0, 0.0, grad), axis=1) / self.s
        push = tangent_forces(np.where(onehot > 0, 0.0, grad), xn, w)
        pull = tangent_forces(np.where(onehot > 0, grad, 0.0), xn, w)
        self.rows.append({
            "epoch": epoch + 1,
            "class_margin": math.degrees(float(_np(km.ops.class_margin(kernel)))),
            "negative_weight": float(np.mean(negative_weight)),
            "push": float(np.mean(np.linalg.norm(push / n, axis=1))),
            "pull": float(np.mean(np.linalg.norm(pull / n, axis=1))),
            "net": float(np.mean(np.linalg.norm((push + pull) / n, axis=1))),
        })


def part_mechanism(args, results):
    data = digits()
    (x, y), _ = data
    print(f"\nMechanism on digits (seed {args.seeds[0]}), per epoch on the training set: "
          "class margin, mean total weight on negatives, mean |push| / |pull| / |net| "
          "on a unit prototype")
    traces = {}
    for dim in (2, 64):
        for name, scale in (("LM-Softmax", 5.0), ("NormFace", 10.0)):
            keras.utils.set_random_seed(args.seeds[0])
            bb = backbone(64, dim)
            head, loss = method(name, 10)
            model = keras.Sequential([bb, head])
            trace = ForceTrace(name, bb, head, x, y, scale)
            model.compile(keras.optimizers.Adam(3e-3), loss=loss, jit_compile=True)
            model.fit(x, y, batch_size=64, epochs=args.epochs, verbose=0, callbacks=[trace])
            traces[(name, dim)] = trace.rows
            print(f"{name:<11} D={dim:<3}" + "".join(
                f" | ep {r['epoch']:>2}: {r['class_margin']:5.1f}° w_neg {r['negative_weight']:.3f}"
                f" push {r['push']:.3f} pull {r['pull']:.3f} net {r['net']:.3f}"
                for r in trace.rows if r["epoch"] in (1, args.epochs // 4, args.epochs)),
                flush=True)
    results["mechanism"] = traces


def part_claims(args, results):
    data = digits()
    dim = 64
    names = ["LM-Softmax", "LM-Softmax + R_sm", "NormFace", "NormFace + R_sm", "CosFace",
             "ArcFace", "softmax", "Virtual Softmax", "PEDCC + POD"]
    print(f"\nDigits, D = {dim}, C = 10 (simplex bound {simplex_bound(10, dim):.1f}°), "
          f"mean ± std (ddof = 1) over seeds {list(args.seeds)}, {args.epochs} epochs")
    print("| method | test accuracy | class margin | mean test sample margin |")
    print("|---|---|---|---|")
    claims = {}
    for name in names:
        runs = [train(name, data, dim, args.epochs, seed) for seed in args.seeds]
        claims[(name, dim)] = runs
        print(f"| {name} | {fmt(runs, 'accuracy', 100, 2)} % | {fmt(runs, 'class_margin')}° | "
              f"{fmt(runs, 'sample_margin', 1, 3)} |", flush=True)
    results["claims"] = claims


def train_pedcc_matched(data, dim, epochs, seed, batch_size=64, loss="POD", matched=True):
    """PEDCC centres (fixed) with the POD loss or LM-Softmax, the classes assigned to the
    centres by a matching (``matched=True``) or in the head's own order (``matched=False``,
    no warm-up).

    A NormFace warm-up (the first quarter of the epochs, learned prototypes) shows which
    classes the backbone places next to each other; each class then gets the PEDCC centre
    closest to its learned prototype (Hungarian matching maximising the summed cosines,
    ``scipy.optimize.linear_sum_assignment``), the centres are permuted accordingly
    (``head.kernel.assign``: still fixed, still the PEDCC set) and POD trains the rest.
    """
    from scipy.optimize import linear_sum_assignment

    (x, y), (xt, yt) = data
    num_classes = int(y.max()) + 1
    keras.utils.set_random_seed(seed)
    bb = backbone(x.shape[1], dim)
    warm = 0
    if matched:
        learned_head = km.layers.LargestMarginHead(num_classes)
        warm_model = keras.Sequential([bb, learned_head])
        warm_model.compile(keras.optimizers.Adam(3e-3), loss=km.losses.NormFace(10.0),
                           jit_compile=True)
        warm = max(1, int(round(WARMUP_FRACTION * epochs)))
        warm_model.fit(x, y, batch_size=batch_size, epochs=warm, verbose=0)
    head = km.layers.PEDCCHead(num_classes)
    if loss == "POD":
        model = km.models.MarginModel(bb, head)
        loss_fn, callbacks = km.losses.POD(), [km.callbacks.PODDelta()]
    else:   # LM-Softmax on the fixed centres' cosines
        model = keras.Sequential([bb, head])
        loss_fn, callbacks = km.losses.LMSoftmax(5.0), []
    model(x[:1])
    if matched:
        learned = _np(learned_head.kernel)
        learned = learned / np.linalg.norm(learned, axis=0, keepdims=True)
        centres = _np(head.kernel)
        _, centre_of_class = linear_sum_assignment(-(learned.T @ centres))
        head.kernel.assign(centres[:, centre_of_class])
    model.compile(keras.optimizers.Adam(3e-3), loss=loss_fn, jit_compile=True)
    model.fit(x, y, batch_size=batch_size, epochs=epochs, initial_epoch=warm, verbose=0,
              callbacks=callbacks)
    cos = _np(km.ops.cosine_similarity(_np(bb.predict(xt, verbose=0)), _np(head.kernel)))
    return {
        "accuracy": float(np.mean(cos.argmax(1) == yt)),
        "class_margin": math.degrees(float(_np(km.ops.class_margin(head.kernel)))),
        "sample_margin": float(np.mean(_np(km.ops.sample_margin(yt, cos)))),
    }


def part_pedcc2d(args, results):
    data = digits()
    print("\nDigits, D = 2: PEDCC's fixed centres against learned ones, seeds "
          f"{list(args.seeds)}, {args.epochs} epochs")
    print("| method | test accuracy | class margin |")
    print("|---|---|---|")
    table = {}
    for name in args.pedcc_methods:
        if name == "PEDCC + POD, matched":
            runs = [train_pedcc_matched(data, 2, args.epochs, seed) for seed in args.seeds]
        else:
            runs = [train(name, data, 2, args.epochs, seed) for seed in args.seeds]
        table[name] = runs
        print(f"| {name} | {fmt(runs, 'accuracy', 100, 2)} % | {fmt(runs, 'class_margin')}° |",
              flush=True)
    results["pedcc2d"] = table


def part_scale2d(args, results):
    """LM-Softmax with learned prototypes at D = 2 against its scale s: the objective's
    minimum on the circle (C = 10, ``examples/lm_softmax_minima.py``) is even spacing below
    s ≈ 4.67 and merged prototypes above."""
    data = digits()
    print("\nDigits, D = 2, LM-Softmax with learned prototypes against the scale s: test accuracy "
          f"(%) / class margin (deg) / mean nearest-prototype angle (deg), seeds {list(args.seeds)}, "
          f"{args.epochs} epochs")
    print("| s | LM-Softmax |")
    print("|---|---|")
    table = {}
    for scale in args.scales_2d:
        runs = [train(f"LM-Softmax, s={scale:g}", data, 2, args.epochs, seed) for seed in args.seeds]
        table[scale] = runs
        print(f"| {scale:g} | {fmt(runs, 'accuracy', 100)} % / {fmt(runs, 'class_margin')}° / "
              f"{fmt(runs, 'nearest_angle')}° |", flush=True)
    results["scale2d"] = table


def part_remedies(args, results):
    data = digits()
    names = ("LM-Softmax on fixed PEDCC centres", "LM-Softmax on PEDCC centres, matched")
    print("\nDigits, C = 10, remedies for C > D + 1: test accuracy (%) / class margin (deg), "
          f"seeds {list(args.seeds)}, {args.epochs} epochs")
    print("| D | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for dim in [d for d in args.dims if d <= 3]:   # learned prototypes do well from D = 3
        row = []
        for name in names:
            runs = [train_pedcc_matched(data, dim, args.epochs, seed, loss="LM",
                                        matched=name.endswith("matched"))
                    for seed in args.seeds]
            results.setdefault("dims", {})[(name, dim)] = runs
            row.append(f"{fmt(runs, 'accuracy', 100)} % / {fmt(runs, 'class_margin')}°")
        print(f"| {dim} | " + " | ".join(row) + " |", flush=True)


# ----------------------------------------------------------------------------- figures

def figures(results, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"LM-Softmax": "C3", "LM-Softmax, NormFace warm-up": "C1", "NormFace": "C0",
               "ArcFace": "C2", "LM-Softmax on fixed PEDCC centres": "C4",
               "LM-Softmax, s=16": "C5"}
    written = []
    if "dims" in results:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
        dims = sorted({d for _, d in results["dims"]})
        for name in colours:
            have = [d for d in dims if (name, d) in results["dims"]]
            if not have:
                continue
            cm = [summarise(results["dims"][(name, d)], "class_margin") for d in have]
            ac = [summarise(results["dims"][(name, d)], "accuracy", 100) for d in have]
            axes[0].errorbar(have, [m for m, _ in cm], [s for _, s in cm], label=name,
                             color=colours[name], marker="o", capsize=3)
            axes[1].errorbar(have, [m for m, _ in ac], [s for _, s in ac], label=name,
                             color=colours[name], marker="o", capsize=3)
        bound_dims = [d for d in dims if simplex_bound(10, d)]
        axes[0].plot(bound_dims, [simplex_bound(10, d) for d in bound_dims], "k--",
                     label="simplex bound (C ≤ D+1)")
        axes[0].axvline(9, color="grey", lw=0.8, ls=":")
        for ax, title in ((axes[0], "digits (C = 10): class margin (deg)"),
                          (axes[1], "digits (C = 10): test accuracy (%)")):
            ax.set_xscale("log", base=2)
            ax.set_xticks(dims, [str(d) for d in dims])
            ax.set_xlabel("embedding dimension D")
            ax.set_title(title)
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(out, "lm_softmax_dims.png")
        fig.savefig(path, dpi=110)
        written.append(path)
    if "classes" in results:
        fig, ax = plt.subplots(1, 1, figsize=(6.5, 4.8))
        dims = sorted({d for _, d in results["classes"]})
        for name in ("LM-Softmax", "LM-Softmax, s=16", "NormFace", "ArcFace"):
            if (name, dims[0]) not in results["classes"]:
                continue
            na = [summarise(results["classes"][(name, d)], "nearest_angle") for d in dims]
            ac = [summarise(results["classes"][(name, d)], "accuracy", 100) for d in dims]
            ax.errorbar(dims, [m for m, _ in ac], [s for _, s in ac], color=colours[name],
                        marker="o", capsize=3, label=f"{name}: accuracy (%)")
            ax.plot(dims, [m for m, _ in na], color=colours[name], ls="--", marker="x",
                    label=f"{name}: nearest-prototype angle (deg)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(dims, [str(d) for d in dims])
        ax.set_xlabel("embedding dimension D")
        ax.set_title(f"{len(results['classes_labels'])} Gaussian classes (C ≫ D)")
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        path = os.path.join(out, "lm_softmax_classes.png")
        fig.savefig(path, dpi=110)
        written.append(path)
    if "mechanism" in results:
        traces = results["mechanism"]
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        for (name, dim), rows in traces.items():
            ep = [r["epoch"] for r in rows]
            style = "-" if dim == 2 else ":"
            label = f"{name}, D = {dim}"
            axes[0].plot(ep, [r["class_margin"] for r in rows], style, color=colours[name],
                         label=label)
            axes[1].plot(ep, [r["negative_weight"] for r in rows], style, color=colours[name],
                         label=label)
            axes[2].plot(ep, [r["push"] for r in rows], style, color=colours[name],
                         label=label)
        axes[0].set_title("class margin (deg)")
        axes[1].set_title("mean total weight on the negatives\n(1 − p_y; LM-Softmax: always 1)")
        axes[2].set_title("mean |push| on a unit prototype\nfrom the other classes' features")
        axes[2].set_yscale("log")
        for ax in axes:
            ax.set_xlabel("epoch")
            ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(out, "lm_softmax_mechanism.png")
        fig.savefig(path, dpi=110)
        written.append(path)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "dims", "classes", "mechanism", "claims",
                                           "pedcc2d", "remedies", "scale2d"),
                        default="all")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--many-epochs", type=int, default=10)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--dims", type=int, nargs="+", default=list(DIGITS_DIMS))
    parser.add_argument("--many-dims", type=int, nargs="+", default=list(MANY_DIMS))
    parser.add_argument("--many-methods", nargs="+",
                        default=["LM-Softmax", "LM-Softmax, s=16", "NormFace", "ArcFace"])
    parser.add_argument("--pedcc-methods", nargs="+", default=[
        "softmax", "NormFace", "PEDCC + POD", "PEDCC + POD, matched",
        "PEDCC + POD without decorrelation", "PEDCC + NormFace"])
    parser.add_argument("--scales-2d", type=float, nargs="+", default=[2.0, 3.0, 4.0, 5.0, 10.0],
                        help="LM-Softmax scales of --part scale2d")
    parser.add_argument("--out", default="docs/figures")
    parser.add_argument("--smoke", action="store_true",
                        help="one seed, 2 epochs, two dimensions, 50 classes: a run check")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.epochs, args.many_epochs = args.seeds[:1], 2, 1
        args.dims, args.many_dims, args.classes = [2, 9], [8], 50
        args.scales_2d = args.scales_2d[:2]
    start = time.time()
    results = {}
    parts = (("claims", "pedcc2d", "mechanism", "dims", "remedies", "scale2d", "classes")
             if args.part == "all"
             else (args.part,))
    os.makedirs(args.out, exist_ok=True)
    for part in parts:
        {"dims": part_dims, "classes": part_classes, "mechanism": part_mechanism,
         "claims": part_claims, "pedcc2d": part_pedcc2d,
         "remedies": part_remedies, "scale2d": part_scale2d}[part](args, results)
        for path in figures(results, args.out):   # after each part: partial runs keep figures
            print("wrote", path)
    print(f"total {time.time() - start:.0f} s ({keras.backend.backend()} backend)")
    return results


if __name__ == "__main__":
    main()
