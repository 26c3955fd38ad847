"""Feature norm against image quality: MagFace and AdaFace on digits, ArcFace as control
(Meng et al., CVPR 2021; Kim, Jain & Liu, CVPR 2022).

Each method trains the same backbone (64 -> 256 ReLU -> 64 -> BatchNorm -> ×3, so that the
norms of the untrained embeddings, about 24, fall inside MagFace's default range
[l_a, u_a] = [10, 110]) on the clean training split of scikit-learn's digits with Adam under
XLA. The test images are then degraded at five severities 0–4:

* blur: a Gaussian blur of σ = 0, 0.5, 1, 1.5, 2 pixels (the images are 8 × 8);
* occlusion: a square of 0, 2, 3, 4, 5 pixels set to 0 at a random place.

For every test image and severity the quality score is the norm ‖x‖ of the backbone's
embedding (``km.ops.feature_norm``: for MagFace the paper's quality score; AdaFace reads the
same norm as its quality proxy). Printed per method and degradation (mean ± sample std,
ddof = 1, over 3 seeds): Spearman's rank correlation between the norm and the severity over
all (image, severity) pairs (−1: the norm falls whenever quality falls), the share of test
images whose norm at severity 4 is below their clean norm, and the clean test accuracy.

    python examples/quality_norms.py            # 3 seeds, ~2 min on 2 CPU cores
    python examples/quality_norms.py --smoke    # tiny run (tests)
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_margins as km  # noqa: E402

METHODS = {
    "ArcFace (control)": lambda: km.losses.ArcFace(30.0, 0.5),
    "MagFace": lambda: km.losses.MagFace(),
    "AdaFace": lambda: km.losses.AdaFace(30.0),
}
BLUR_SIGMAS = (0.0, 0.5, 1.0, 1.5, 2.0)
OCCLUSION_SIDES = (0, 2, 3, 4, 5)


def backbone():
    return keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dense(64),
        keras.layers.BatchNormalization(),
        keras.layers.Rescaling(3.0),
    ], name="embedding")


def blur(images, sigma):
    """Separable Gaussian blur of (N, 64) 8 × 8 images (edges repeated)."""
    if sigma == 0:
        return images
    radius = 3
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    grid = images.reshape(-1, 8, 8)
    padded = np.pad(grid, ((0, 0), (radius, radius), (0, 0)), mode="edge")
    grid = sum(t * padded[:, i:i + 8, :] for i, t in enumerate(taps))
    padded = np.pad(grid, ((0, 0), (0, 0), (radius, radius)), mode="edge")
    grid = sum(t * padded[:, :, i:i + 8] for i, t in enumerate(taps))
    return grid.reshape(-1, 64).astype("float32")


def occlude(images, side, rng):
    """(N, 64) images with a side × side square set to 0 at a random place in each."""
    if side == 0:
        return images
    grid = images.reshape(-1, 8, 8).copy()
    rows = rng.integers(0, 8 - side + 1, size=len(grid))
    cols = rng.integers(0, 8 - side + 1, size=len(grid))
    for k, (r, c) in enumerate(zip(rows, cols)):
        grid[k, r:r + side, c:c + side] = 0.0
    return grid.reshape(-1, 64)


def ranks(values):
    """Ranks 1..n with ties averaged."""
    order = np.argsort(values, kind="mergesort")
    out = np.empty(len(values))
    sorted_values = values[order]
    start = 0
    while start < len(values):
        stop = start
        while stop + 1 < len(values) and sorted_values[stop + 1] == sorted_values[start]:
            stop += 1
        out[order[start:stop + 1]] = 0.5 * (start + stop) + 1
        start = stop + 1
    return out


def spearman(a, b):
    ra, rb = ranks(np.asarray(a, "float64")), ranks(np.asarray(b, "float64"))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / np.sqrt((ra**2).sum() * (rb**2).sum()))


def run(method, seed, epochs):
    (x, y), (xt, yt) = km.data.digits_classification(seed=seed)
    keras.utils.set_random_seed(seed)
    model = km.models.MarginModel(backbone(), km.layers.LargestMarginHead(10))
    model.compile(keras.optimizers.Adam(3e-3), loss=METHODS[method](), jit_compile=True)
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    accuracy = float(np.mean(np.argmax(model.predict(xt, verbose=0), axis=1) == yt))
    rng = np.random.default_rng(seed)
    out = {"clean acc %": 100.0 * accuracy}
    for name, degrade in (("blur", lambda s: blur(xt, BLUR_SIGMAS[s])),
                          ("occlusion", lambda s: occlude(xt, OCCLUSION_SIDES[s], rng))):
        norms = [np.asarray(km.ops.feature_norm(model.backbone.predict(degrade(s), verbose=0)))
                 for s in range(5)]
        severity = np.repeat(np.arange(5), len(xt))
        out[f"{name} ρ"] = spearman(np.concatenate(norms), severity)
        out[f"{name} drop %"] = 100.0 * float(np.mean(norms[4] < norms[0]))
    return out


def mean_std(values):
    values = np.asarray(values, "float64")
    std = values.std(ddof=1) if len(values) > 1 else float("nan")
    return f"{values.mean():+.3f} ± {std:.3f}" if np.abs(values).max() <= 1.0 else \
        f"{values.mean():.1f} ± {std:.1f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--smoke", action="store_true", help="1 seed, 2 epochs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.epochs = 1, 2
    start = time.time()
    table = {}
    columns = ("blur ρ", "blur drop %", "occlusion ρ", "occlusion drop %", "clean acc %")
    print(f"{'method':20s}" + "".join(f"{c:>20s}" for c in columns))
    for method in METHODS:
        runs = [run(method, seed, args.epochs) for seed in range(args.seeds)]
        table[method] = runs
        print(f"{method:20s}" + "".join(f"{mean_std([r[c] for r in runs]):>20s}" for c in columns))
    print(f"\n{args.seeds} seeds, {args.epochs} epochs, {time.time() - start:.0f} s")
    return table


if __name__ == "__main__":
    main()
