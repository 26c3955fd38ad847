"""Long-tailed digits: softmax vs LM-Softmax vs LM-Softmax + zero-centroid (Zhou et al. 2022).

The training split of scikit-learn's digits is made long-tailed with the CIFAR-LT
construction (``km.data.long_tailed``: class i keeps floor(n_max·ρ^(−i/9)) images, ρ = 10
and 50); the test split stays balanced. Every method trains the same MLP backbone
(64 -> 256 ReLU -> 32) with Adam 3e-3 for the same number of steps under XLA, over 3 seeds
(seed = which images are kept, the initial weights and the batch order):

* softmax: bias-free ``Dense`` head + cross-entropy;
* LM-Softmax (s = 5): ``LargestMarginHead`` + ``km.losses.LMSoftmax``;
* LM-Softmax + ZeroCentroid: the same with ``kernel_regularizer=km.regularizers.ZeroCentroid(5)``
  (the authors' λ = 5), the paper's remedy for imbalanced data (Sec. 4.3).

Printed per ratio (mean ± sample std, ddof = 1, over the seeds): overall and few-shot test accuracy
(``km.metrics.group_accuracy``; digits has ~135 training images per class, so the groups
are > 60 / 20–60 / < 20 training images: ``--many``/``--few``), the class margin (smallest
angle between two class vectors), ‖Σ_k ŵ_k‖² (the prototypes' centroid; 0 is the balanced
optimum), and the smallest margin of a tail class (the smallest angle between a few-shot
class vector and any other class vector). The class directions of the first seed at the
largest ratio are drawn to ``docs/figures/imbalanced_class_directions.png``.

    python examples/imbalanced.py            # ~2-3 min on 2 CPU cores
    python examples/imbalanced.py --smoke    # tiny run (tests)
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_margins as km  # noqa: E402

METHODS = ("softmax", "LM-Softmax", "LM-Softmax + ZeroCentroid")
COLUMNS = ("overall acc %", "few-shot acc %", "class margin", "|sum w|^2", "min tail margin")


def make_backbone(dim=32, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(256, activation="relu"), keras.layers.Dense(dim)],
        name="embedding",
    )


def make_model(method, seed, zero_centroid_weight=5.0):
    """(model, head, loss) of one method, built from ``seed``."""
    backbone = make_backbone(seed=seed)
    if method == "softmax":
        head = keras.layers.Dense(10, use_bias=False, name="softmax_head")
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        regularizer = None
        if method.endswith("ZeroCentroid"):
            regularizer = km.regularizers.ZeroCentroid(zero_centroid_weight)
        head = km.layers.LargestMarginHead(10, kernel_regularizer=regularizer, name="cosine_head")
        loss = km.losses.LMSoftmax(scale=5.0)
    return keras.Sequential([backbone, head]), head, loss


def unit_columns(kernel):
    w = np.asarray(keras.ops.convert_to_numpy(kernel), dtype="float64")
    return w / np.linalg.norm(w, axis=0, keepdims=True)


def angles_deg(kernel):
    """(C, C) angles in degrees between the class vectors (diagonal: inf)."""
    w = unit_columns(kernel)
    angles = np.degrees(np.arccos(np.clip(w.T @ w, -1.0, 1.0)))
    np.fill_diagonal(angles, np.inf)
    return angles


def evaluate(head, model, x_test, y_test, counts, many, few):
    scores = model.predict(x_test, verbose=0)
    groups = km.metrics.group_accuracy(y_test, scores, counts, many_threshold=many, few_threshold=few)
    angles = angles_deg(head.kernel)
    tail = np.flatnonzero(counts < few)
    return {
        "overall acc %": 100.0 * groups["overall"],
        "few-shot acc %": 100.0 * groups["few_shot"],
        "class margin": float(angles.min()),
        "|sum w|^2": float(keras.ops.convert_to_numpy(km.ops.zero_centroid(head.kernel))),
        "min tail margin": float(angles[tail].min()) if tail.size else float("nan"),
    }


def run_one(method, ratio, seed, data, args):
    (x, y), (x_test, y_test) = data
    x_lt, y_lt = km.data.long_tailed(x, y, ratio, seed=seed)
    counts = np.bincount(y_lt, minlength=10)
    model, head, loss = make_model(method, seed)
    model.compile(keras.optimizers.Adam(3e-3), loss=loss, jit_compile=True)
    steps_per_epoch = int(np.ceil(len(y_lt) / args.batch_size))
    epochs = max(1, int(np.ceil(args.steps / steps_per_epoch)))
    model.fit(x_lt, y_lt, batch_size=args.batch_size, epochs=epochs, verbose=0, shuffle=True)
    return evaluate(head, model, x_test, y_test, counts, args.many, args.few), head, counts


def plot_directions(heads, counts, ratio, path):
    """Unit class vectors of each method projected on their two leading (uncentred) principal
    axes, so the centroid Σ_k ŵ_k/C (black arrow) is drawn to scale in that plane."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(heads), figsize=(4.2 * len(heads), 4.4))
    cmap = plt.get_cmap("viridis")
    for ax, (method, head) in zip(np.atleast_1d(axes), heads.items()):
        w = unit_columns(head.kernel).T  # (C, D)
        _, _, vt = np.linalg.svd(w, full_matrices=False)
        proj = w @ vt[:2].T
        centroid = w.mean(axis=0) @ vt[:2].T
        for k, (u, v) in enumerate(proj):
            colour = cmap(k / (len(proj) - 1))
            ax.annotate("", xy=(u, v), xytext=(0, 0),
                        arrowprops={"arrowstyle": "->", "color": colour, "lw": 2})
            ax.text(1.1 * u, 1.1 * v, f"{k} ({counts[k]})", color=colour, ha="center", va="center",
                    fontsize=8)
        ax.annotate("", xy=tuple(centroid), xytext=(0, 0),
                    arrowprops={"arrowstyle": "->", "color": "black", "lw": 2.5})
        ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, ls=":", color="grey"))
        norm = float(np.sum(w.sum(axis=0) ** 2))
        ax.set_title(f"{method}\n|sum w|^2 = {norm:.2f}", fontsize=10)
        ax.set_xlim(-1.35, 1.35)
        ax.set_ylim(-1.35, 1.35)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"class directions, long-tailed digits (ratio {ratio:g}); label: class (training "
                 "images); black: mean direction", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(ratio, results, seeds, counts):
    print(f"\nimbalance ratio {ratio:g}: training images per class {counts.tolist()}; "
          f"mean ± std (ddof = 1) over {len(seeds)} seed(s); angles in degrees")
    header = f"{'method':<27}" + "".join(f"{c:>17}" for c in COLUMNS)
    print(header)
    print("-" * len(header))
    for method in METHODS:
        cells = []
        for column in COLUMNS:
            values = np.array([r[column] for r in results[method]])
            spread = values.std(ddof=1) if len(values) > 1 else 0.0  # sample std over seeds
            cells.append(f"{values.mean():.1f} ± {spread:.1f}")
        print(f"{method:<27}" + "".join(f"{c:>17}" for c in cells))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[10.0, 50.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=600, help="training steps per run")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--many", type=int, default=60, help="many-shot: > this many images")
    parser.add_argument("--few", type=int, default=20, help="few-shot: < this many images")
    parser.add_argument("--figure", default="docs/figures/imbalanced_class_directions.png")
    parser.add_argument("--smoke", action="store_true", help="one seed, ratio 10, 5 steps")
    args = parser.parse_args(argv)
    if args.smoke:
        args.ratios, args.seeds, args.steps = [10.0], [0], 5
    data = km.data.digits_classification()
    start = time.time()
    tables = {}
    for ratio in args.ratios:
        results = {method: [] for method in METHODS}
        heads = {}
        for seed in args.seeds:
            for method in METHODS:
                result, head, counts = run_one(method, ratio, seed, data, args)
                results[method].append(result)
                if seed == args.seeds[0]:
                    heads[method] = head
        print_table(ratio, results, args.seeds, counts)
        tables[ratio] = results
        if args.figure and ratio == max(args.ratios):
            plot_directions(heads, counts, ratio, args.figure)
            print(f"class directions (seed {args.seeds[0]}) -> {args.figure}")
    print(f"\ntotal time {time.time() - start:.0f} s")
    return tables


if __name__ == "__main__":
    main()
