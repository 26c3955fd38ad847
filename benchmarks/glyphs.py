"""Many-class benchmark on characters rendered from installed fonts (``km.data.glyphs``).

One training run per (method, C, seed) serves both protocols of ``km.data.glyphs(protocol=
"unseen")``: the first C characters are trained on in the training fonts, the next C are
never seen.

* closed set: accuracy on the first C characters in the held-out fonts (nearest class
  centroid, cosine, of the training images' embeddings: the same rule for every method,
  raw pixels included; heads' own argmax for the Partial FC part);
* unseen classes: R@1 of each probe (an unseen character in a font other than the gallery
  font) among the gallery (each unseen character once, in the gallery font); MAP@R
  (Musgrave et al. 2020) leave-one-out among every font of at most 1 000 unseen characters;
  TAR at FAR = 1e-3 on 20 000 verification pairs of unseen characters
  (``km.data.glyph_pairs``: half same character in two fonts, half different characters).

Every method gets the same backbone (``glyph_backbone``: three 3×3 conv / BN / ReLU / 2×2
max-pool blocks, flattened, a linear 128-D projection), the same stream of P×K batches
(``km.data.pk_batches``, P = 32 characters × K = 4 fonts, ``km.data.augment_glyphs`` on
every batch), Adam (lr 1e-3) and the same number of steps; only the loss (and its head)
differs. Hyper-parameters are the papers' (stated in METHODS). The raw-pixel baseline embeds
the flattened pixels.

Parts (``--parts``): ``small`` (C = 1 000), ``large`` (the largest C the fonts allow: half
the characters every font shares), ``partial_fc`` (Partial FC 0.1 / 0.3 against the full
head at the largest C, accuracy and step time side by side), ``figure``
(docs/figures/glyphs_retrieval.png from the small part's logged answers). Every finished run
is appended to ``--log`` (JSON lines), so a long run can be stopped and its table printed
from the log (``--table-only``).

    python benchmarks/glyphs.py --quick                      # a few minutes: a smoke test
    python benchmarks/glyphs.py --parts small                # C = 1 000, 400 steps per run
    python benchmarks/glyphs.py --parts partial_fc           # C = 10 466 (17 fonts), 800 steps
    python benchmarks/glyphs.py --table-only --results benchmarks/RESULTS.md
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_margins as km  # noqa: E402
from keras_margins.models.ensemble_model import PAPER_PRIOR, paper_members  # noqa: E402

#: The fonts of the benchmark: every CJK font that covers (almost) all 20 992 ideographs of
#: U+4E00–U+9FFF (fonts-noto-cjk(-extra), fonts-wqy-zenhei/-microhei, fonts-hanazono).
FONTS = (
    "noto_sans_thin", "noto_sans_light", "noto_sans_demilight", "noto_sans_regular",
    "noto_sans_medium", "noto_sans_bold", "noto_sans_black",
    "noto_serif_extralight", "noto_serif_light", "noto_serif_regular", "noto_serif_medium",
    "noto_serif_semibold", "noto_serif_bold", "noto_serif_black",
    "wqy_zenhei", "wqy_microhei", "hanazono",
)
TEST_FONTS = ("noto_sans_light", "noto_sans_bold", "noto_serif_regular", "noto_serif_black",
              "wqy_microhei")
GALLERY_FONT = "noto_sans_regular"
#: ``--quick``: fonts-arphic-uming, fonts-wqy-microhei/-zenhei, fonts-ipafont-mincho/-gothic,
#: fonts-hanazono
QUICK_FONTS = ("arphic_uming", "wqy_microhei", "wqy_zenhei", "ipa_mincho", "ipa_gothic", "hanazono")

#: method -> description (the paper settings) of the table
METHODS = {
    "raw_pixels": "flattened pixels, cosine (no training)",
    "softmax": "Dense(C) + cross-entropy",
    "normface": "NormFace s = 16",
    "cosface": "CosFace s = 64, m = 0.35",
    "arcface": "ArcFace s = 64, m = 0.5",
    "lm_softmax": "LM-Softmax s = 5 (authors' default)",
    "lm_softmax_sm": "LM-Softmax s = 5 + sample-margin regulariser λ = 1",
    "virtual_softmax": "Virtual Softmax",
    "pedcc_pod": "PEDCC centres (fixed) + POD, PODDelta",
    "circle": "class-level Circle m = 0.25, γ = 256",
    "pair_circle": "pair-wise Circle m = 0.4, γ = 80 on P×K",
    "ensemble": "LossEnsemble(ArcFace s = 16 m = 0.3, pair Circle), one embedding",
    "multi_ensemble": "EnsembleModel (WEDL: softmax, triplet, binomial, ProxyNCA; 4 × 64-D)",
}
#: methods whose O(C²·D) set-up does not fit the time budget at the largest C
SMALL_ONLY = {"pedcc_pod": "PEDCC's repulsion construction costs O(C²·D) per iteration"}
HEADLINE = ("raw_pixels", "softmax", "normface", "cosface", "arcface", "pair_circle")
PFC_LOSS = "normface"
COLUMNS = (("closed acc", "closed_accuracy"), ("unseen R@1", "r_at_1"),
           ("MAP@R", "map_at_r"), ("TAR@1e-3", "tar"))


def glyph_backbone(image_size, dim=128, widths=(16, 32, 64), seed=0):
    """(S, S, 1) pixels in [0, 255] -> dim-D: per width a 3×3 convolution, batch norm, ReLU
    and 2×2 max-pooling; flattened (characters are made of strokes in fixed places: no global
    pooling); a linear projection."""
    keras.utils.set_random_seed(seed)
    body = [keras.Input((image_size, image_size, 1)), km.models.ImagePreprocessing("unit")]
    for width in widths:
        body += [keras.layers.Conv2D(width, 3, padding="same", use_bias=False),
                 keras.layers.BatchNormalization(), keras.layers.ReLU(),
                 keras.layers.MaxPooling2D(2)]
    body += [keras.layers.Flatten(), keras.layers.Dense(dim, name="projection")]
    return keras.Sequential(body, name="embedding")


def build(method, num_classes, args, seed, partial=None, class_major=False):
    """(model to fit, function images -> embeddings, callbacks).

    ``partial``: Partial FC's sample rate (None: the full head); ``class_major``: store the
    cosine head's prototypes class-major (the layout Partial FC needs to save time)."""
    backbone = glyph_backbone(args.image_size, args.dim, tuple(args.widths), seed)
    callbacks = []
    head, loss = None, None
    if method == "softmax":
        head = keras.layers.Dense(num_classes)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    elif method in ("normface", "cosface", "arcface", "lm_softmax", "lm_softmax_sm", "circle"):
        layout = "class_major" if class_major else "feature_major"
        head = km.layers.LargestMarginHead(num_classes, kernel_layout=layout)
        loss = {
            "normface": lambda: km.losses.NormFace(scale=16.0),
            "cosface": lambda: km.losses.CosFace(scale=64.0, margin=0.35),
            "arcface": lambda: km.losses.ArcFace(scale=64.0, margin=0.5),
            "lm_softmax": lambda: km.losses.LMSoftmax(scale=5.0),
            "lm_softmax_sm": lambda: km.losses.LMSoftmax(scale=5.0, sample_margin_weight=1.0),
            "circle": lambda: km.losses.CircleLoss(margin=0.25, gamma=256.0),
        }[method]()
        if partial is not None:
            loss = km.losses.PartialFC(loss, sample_rate=partial, seed=seed)
    elif method == "virtual_softmax":
        head, loss = km.layers.VirtualSoftmaxHead(num_classes), km.losses.VirtualSoftmax()
    elif method == "pedcc_pod":
        head, loss = km.layers.PEDCCHead(num_classes, seed=seed), km.losses.POD()
        callbacks.append(km.callbacks.PODDelta())
    elif method == "pair_circle":
        model = backbone
        model.compile(keras.optimizers.Adam(args.lr),
                      loss=km.losses.PairCircleLoss(margin=0.4, gamma=80.0), jit_compile=True)
        return model, backbone, callbacks
    elif method == "ensemble":
        head = km.layers.LargestMarginHead(num_classes)
        loss = km.losses.LossEnsemble([km.losses.ArcFace(scale=16.0, margin=0.3),
                                       km.losses.PairCircleLoss()])
    elif method == "multi_ensemble":
        model = km.models.EnsembleModel(backbone, paper_members(num_classes), embedding_dim=64,
                                        prior=PAPER_PRIOR)
        model.compile(keras.optimizers.Adam(args.lr), jit_compile=True)
        return model, model, callbacks
    else:
        raise ValueError(f"`method`: unknown method {method!r}; choose from {sorted(METHODS)}.")
    model = km.models.MarginModel(backbone, head)
    model.compile(keras.optimizers.Adam(args.lr), loss=loss, jit_compile=True)
    return model, backbone, callbacks


class Progress(keras.callbacks.Callback):
    """One line per chunk of steps: loss and images per second."""

    def __init__(self, label, total_chunks, chunk):
        super().__init__()
        self.label, self.total, self.chunk = label, total_chunks, chunk
        self.start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        elapsed = time.time() - self.start
        loss = (logs or {}).get("loss", float("nan"))
        print(f"    {self.label}: step {(epoch + 1) * self.chunk}/{self.total * self.chunk} "
              f"loss {loss:.4f} ({elapsed:.0f} s)", flush=True)


class StepTimer(keras.callbacks.Callback):
    """Wall time of each training batch (the first chunk, compilation, left out)."""

    def __init__(self):
        super().__init__()
        self.times, self._t = [], None

    def on_train_batch_begin(self, batch, logs=None):
        self._t = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._t)


def load(num_classes, args):
    """{split: (x, y, font)} and the characters, for the unseen protocol with C classes."""
    out = {}
    for split in ("train", "test", "gallery", "probe"):
        (x, y), info = km.data.glyphs(split, protocol="unseen", num_classes=num_classes,
                                      fonts=args.fonts, test_fonts=args.test_fonts,
                                      gallery_font=args.gallery_font, image_size=args.image_size,
                                      return_info=True, verbose=args.verbose and split == "train")
        out[split] = (x, y, info["font"])
    return out, info


def embed(fn, x, batch_size=1024):
    if fn is None:  # raw pixels
        return x.reshape(len(x), -1).astype("float32")
    return np.asarray(fn.predict(x, batch_size=batch_size, verbose=0), dtype="float32")


def _unit(e):
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def _classes_subset(split, classes):
    x, y, f = split
    keep = np.isin(y, classes)
    return x[keep], y[keep], f[keep]


def evaluate(fn, data, args, figure_probes=None, closed=True, unseen_limit=None):
    """Scores of one embedding function on the splits; optional top-5 answers of some probes.

    ``closed=False`` skips the closed-set accuracy; ``unseen_limit`` scores the unseen
    protocol on that many unseen characters (evenly spread) instead of all."""
    xtr, ytr, _ = data["train"]
    xte, yte, _ = data["test"]
    xg, yg, fg = data["gallery"]
    xp, yp, fp = data["probe"]
    if unseen_limit is not None and unseen_limit < len(yg):
        subset = np.sort(yg)[np.round(np.linspace(0, len(yg) - 1, unseen_limit)).astype(int)]
        xg, yg, fg = _classes_subset(data["gallery"], subset)
        xp, yp, fp = _classes_subset(data["probe"], subset)
    out = {}
    if closed and len(yte):
        etr, ete = _unit(embed(fn, xtr)), _unit(embed(fn, xte))
        classes = np.unique(ytr)
        centroids = np.zeros((len(classes), etr.shape[1]), "float32")
        np.add.at(centroids, np.searchsorted(classes, ytr), etr)
        centroids = _unit(centroids)
        pred = np.concatenate([classes[np.argmax(ete[i:i + 4096] @ centroids.T, axis=1)]
                               for i in range(0, len(ete), 4096)])
        out["closed_accuracy"] = float(np.mean(pred == yte))
    eg, ep = _unit(embed(fn, xg)), _unit(embed(fn, xp))
    out["r_at_1"] = km.metrics.retrieval_scores(eg, yg, query_embeddings=ep, query_labels=yp,
                                                k=(1,), chunk_size=1024)["recall_at_1"]
    # MAP@R leave-one-out among every font of at most 1 000 unseen characters
    unseen = np.unique(yg)
    keep_classes = unseen[np.round(np.linspace(0, len(unseen) - 1, min(1000, len(unseen))))
                          .astype(int)]
    e_all = np.concatenate([eg, ep])
    y_all = np.concatenate([yg, yp])
    f_all = np.concatenate([fg, fp])
    keep = np.isin(y_all, keep_classes)
    out["map_at_r"] = km.metrics.retrieval_scores(e_all[keep], y_all[keep], k=(1,),
                                                  chunk_size=1024)["map_at_r"]
    i, j, same = km.data.glyph_pairs(y_all, f_all, num_pairs=20000, seed=0)
    out["tar"] = km.metrics.verification_scores(e_all[i], e_all[j], same,
                                                fars=(1e-3,))["tar_at_far_0.001"]
    if figure_probes is not None:
        sims = ep[figure_probes] @ eg.T
        out["top5"] = [yg[np.argsort(-s, kind="stable")[:5]].tolist() for s in sims]
    return out


def train(method, data, num_classes, args, seed, partial=None, class_major=False):
    """Fit ``method``; returns (embedding function, model, seconds, step times, steps)."""
    x, y, _ = data["train"]
    model, fn, callbacks = build(method, num_classes, args, seed, partial, class_major)
    large = num_classes > args.small_c
    steps = args.steps or (args.large_steps if large else args.small_steps)
    chunk = max(1, min(args.chunk, steps))
    chunks = max(1, steps // chunk)
    batches = km.data.pk_batches((x, y), p=args.p, k=args.k, seed=seed, infinite=True)
    if args.augment:
        batches = batches.enumerate().map(
            lambda i, xy: (km.data.augment_glyphs(
                xy[0], tf.stack([tf.constant(seed, tf.int64), i])), xy[1]))
    else:
        batches = batches.map(lambda a, b: (tf.cast(a, tf.float32), b))
    timer = StepTimer()
    label = f"{method}{'' if partial is None else f' PFC {partial}'} C={num_classes} seed={seed}"
    start = time.time()
    model.fit(batches, epochs=chunks, steps_per_epoch=chunk, verbose=0,
              callbacks=[*callbacks, timer, Progress(label, chunks, chunk)])
    skip = chunk if chunks > 1 else min(5, len(timer.times) - 1)  # compilation steps
    return fn, model, time.time() - start, timer.times[skip:], chunks * chunk


def log_run(args, record):
    with open(args.log, "a") as f:
        f.write(json.dumps(record) + "\n")


def figure_probe_indices(data, count=6):
    """Probes of the figure: ``count`` unseen characters, each in one held-out font."""
    _, yp, fp = data["probe"]
    classes = np.unique(yp)
    chosen = classes[np.round(np.linspace(0, len(classes) - 1, count)).astype(int)]
    fonts = np.unique(fp)
    return [int(np.flatnonzero((yp == c) & (fp == fonts[k % len(fonts)]))[0])
            for k, c in enumerate(chosen)]


def run_part(part, num_classes, args):
    start = time.time()
    print(f"== part {part}: C = {num_classes} training classes", flush=True)
    data, info = load(num_classes, args)
    print(f"   {len(data['train'][1])} training images ({len(info['train_fonts'])} fonts), "
          f"{len(data['test'][1])} held-out-font images, {len(data['gallery'][1])} gallery, "
          f"{len(data['probe'][1])} probes", flush=True)
    probes = figure_probe_indices(data) if part == "small" else None
    for method in args.methods:
        if part == "large" and method in SMALL_ONLY:
            print(f"   {method}: skipped at C = {num_classes} ({SMALL_ONLY[method]})")
    methods = [m for m in args.methods if part != "large" or m in args.large_methods]
    runs = [(seed, method) for s_i, seed in enumerate(args.seeds) for method in methods
            if not (part == "large" and method in SMALL_ONLY)
            and (method in args.headline or s_i < args.other_seeds)
            and not (method == "raw_pixels" and s_i > 0)]  # raw pixels: deterministic
    for seed, method in runs:
        t0 = time.time()
        try:
            if method == "raw_pixels":
                fn, seconds, steps = None, 0.0, 0
            else:
                fn, _, seconds, _, steps = train(method, data, num_classes, args, seed)
            scores = evaluate(fn, data, args, probes)
        except Exception as err:  # noqa: BLE001 - a failed method must not end a long run
            print(f"   {method:<16} seed {seed}: FAILED {type(err).__name__}: {err}", flush=True)
            continue
        if True:
            record = {"part": part, "C": num_classes, "method": method, "seed": seed,
                      "steps": steps, "train_s": seconds, "total_s": time.time() - t0,
                      "quick": args.quick, **scores}
            if probes is not None:
                record["figure_probes"] = probes
            log_run(args, record)
            print(f"   {method:<16} seed {seed}: " + "  ".join(
                f"{name} {scores[key]:.4f}" for name, key in COLUMNS if key in scores)
                + f"  ({record['total_s']:.0f} s)", flush=True)
    print(f"   part {part} took {time.time() - start:.0f} s", flush=True)


def run_partial_fc(num_classes, args):
    start = time.time()
    print(f"== part partial_fc: {args.pfc_loss} at C = {num_classes}, full head vs Partial FC",
          flush=True)
    data, _ = load(num_classes, args)
    xte, yte, _ = data["test"]
    for seed in args.seeds[: args.pfc_seeds]:
        for rate in (None, 0.1, 0.3):
            fn, model, seconds, times, steps = train(args.pfc_loss, data, num_classes, args, seed,
                                                     partial=rate, class_major=True)
            logits = model.predict(xte, batch_size=1024, verbose=0)
            head_acc = float(np.mean(np.argmax(logits, axis=1) == yte))
            scores = evaluate(fn, data, args, closed=False, unseen_limit=1000)
            record = {"part": "partial_fc", "C": num_classes, "method": args.pfc_loss,
                      "sample_rate": rate or 1.0, "seed": seed, "steps": steps, "train_s": seconds,
                      "step_ms": 1e3 * float(np.median(times)) if times else None,
                      "head_accuracy": head_acc, "quick": args.quick, **scores}
            log_run(args, record)
            print(f"   sample rate {rate or 1.0}: head accuracy {head_acc:.4f}, unseen R@1 "
                  f"(1 000 characters) {scores['r_at_1']:.4f}, median step "
                  f"{record['step_ms']:.1f} ms ({seconds:.0f} s training)", flush=True)
    print(f"   part partial_fc took {time.time() - start:.0f} s", flush=True)


def _read_log(path, quick):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [r for r in map(json.loads, f) if r.get("quick", False) == quick]


def _mean_std(values):
    values = np.asarray(values, dtype="float64")
    std = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
    return float(np.mean(values)), std


def summarize(records):
    """{(part, C, method): {key: (mean, sample std, n)}} over seeds (the latest run of each seed)."""
    latest = {}
    for r in records:
        if r["part"] in ("small", "large"):
            latest[(r["part"], r["C"], r["method"], r["seed"])] = r
    groups = {}
    for (part, c, method, _), r in latest.items():
        groups.setdefault((part, c, method), []).append(r)
    out = {}
    for key, rows in groups.items():
        out[key] = {k: (*_mean_std([r[k] for r in rows]), len(rows))
                    for _, k in COLUMNS + (("train s", "train_s"),) if all(k in r for r in rows)}
    return out


def _pct(mean_std, with_std):
    return f"{100 * mean_std[0]:.1f}" + (f" ± {100 * mean_std[1]:.1f}" if with_std else "")


def format_tables(records):
    """Markdown tables of the logged runs (mean ± sample std over seeds)."""
    lines = []
    summary = summarize(records)
    for part in ("small", "large"):
        keys = sorted({(p, c) for p, c, _ in summary if p == part})
        for _, c in keys:
            lines += [f"\n**C = {c} training classes** (+ {c} unseen), mean ± sample std over seeds\n",
                      "| method | setting | seeds | " + " | ".join(n for n, _ in COLUMNS)
                      + " | train s / seed |",
                      "|---|---|---|" + "---|" * len(COLUMNS) + "---|"]
            rows = [(m, summary[(part, c, m)]) for m in METHODS if (part, c, m) in summary]
            for method, s in rows:
                cells = []
                for _, k in COLUMNS:
                    if k not in s:
                        cells.append("–")
                        continue
                    mean, std, n = s[k]
                    cells.append(f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if n > 1 else ""))
                n = max(v[2] for v in s.values())
                lines.append(f"| {method} | {METHODS[method]} | {n} | " + " | ".join(cells)
                             + f" | {s['train_s'][0]:.0f} |")
    pfc = {}
    for r in records:
        if r["part"] == "partial_fc":
            pfc[(r["C"], r["sample_rate"], r["seed"])] = r
    if pfc:
        loss = sorted({r["method"] for r in pfc.values()})
        lines += [f"\n**Partial FC ({', '.join(loss)}) at the largest C**, same run, same machine\n",
                  "| C | sample rate | seeds | head accuracy (held-out fonts) | unseen R@1 "
                  "(1 000 chars) | MAP@R (1 000 chars) | median step ms | step vs full |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in sorted({k[0] for k in pfc}):
            full = [r["step_ms"] for (cc, rate, _), r in pfc.items() if cc == c and rate == 1.0]
            for rate in (1.0, 0.3, 0.1):
                rows = [r for (cc, rr, _), r in pfc.items() if cc == c and rr == rate]
                if not rows:
                    continue
                ha = _mean_std([r["head_accuracy"] for r in rows])
                ca = _mean_std([r["map_at_r"] for r in rows])
                r1 = _mean_std([r["r_at_1"] for r in rows])
                ms = float(np.mean([r["step_ms"] for r in rows]))
                ratio = ms / float(np.mean(full)) if full else float("nan")
                many = len(rows) > 1
                lines.append(f"| {c} | {rate} | {len(rows)} | {_pct(ha, many)} | {_pct(r1, many)} "
                             f"| {_pct(ca, many)} "
                             f"| {ms:.1f} | {ratio:.2f}× |")
    return "\n".join(lines)


def make_figure(records, args, path):
    """Probe + top-5 gallery answers per method for a few unseen characters (small part)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {}
    for r in records:
        if r["part"] == "small" and r["seed"] == args.seeds[0] and "top5" in r:
            rows[r["method"]] = r
    if not rows:
        print("figure: no logged small-part runs with answers")
        return None
    c = next(iter(rows.values()))["C"]
    data, _ = load(c, args)
    xg, yg, _ = data["gallery"]
    xp, yp, _ = data["probe"]
    gallery_of = {int(label): i for i, label in enumerate(yg)}
    methods = [m for m in METHODS if m in rows]
    probes = next(iter(rows.values()))["figure_probes"][: args.figure_chars]
    width = 8  # probe, gap, 5 answers, gap
    fig, axes = plt.subplots(len(methods), len(probes) * width,
                             figsize=(len(probes) * width * 0.42, len(methods) * 0.5 + 0.6))
    axes = np.atleast_2d(axes)
    for r_i, method in enumerate(methods):
        for p_i, probe in enumerate(probes):
            answers = rows[method]["top5"][p_i]
            cells = [(xp[probe], None), (None, None)] + [
                (xg[gallery_of[a]], a == int(yp[probe])) for a in answers] + [(None, None)]
            for k, (img, hit) in enumerate(cells):
                ax = axes[r_i, p_i * width + k]
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if img is None:
                    continue
                ax.imshow(255 - img[..., 0], cmap="gray", vmin=0, vmax=255)
                if hit is not None:
                    for spine in ax.spines.values():
                        spine.set_visible(True)
                        spine.set_color("tab:green" if hit else "tab:red")
                        spine.set_linewidth(1.5)
        axes[r_i, 0].set_ylabel(method, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(f"Unseen characters (C = {c}, seed {args.seeds[0]}): probe in a font of its own, "
                 "then the top-5 gallery answers (green: right character)", fontsize=8)
    fig.subplots_adjust(left=0.1, right=0.99, top=0.9, bottom=0.02, wspace=0.05, hspace=0.1)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"figure: {path}")
    return path


def largest_classes(args):
    """Half the characters that every benchmark font shares (the unseen protocol needs 2·C)."""
    fonts = km.data.glyph_fonts("cjk")
    missing = [f for f in args.fonts if f not in fonts]
    if missing:
        raise SystemExit(f"fonts not installed: {missing}; install fonts-noto-cjk "
                         "fonts-noto-cjk-extra fonts-wqy-zenhei fonts-wqy-microhei fonts-hanazono")
    try:
        km.data.glyphs("train", protocol="unseen", num_classes=10 ** 6, fonts=args.fonts,
                       test_fonts=args.test_fonts, gallery_font=args.gallery_font)
    except ValueError as err:  # the message names the shared count
        shared = int(str(err).split("share only ")[1].split(" ")[0])
    return shared // 2


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["small", "large", "partial_fc", "figure"],
                        choices=("small", "large", "partial_fc", "figure"))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--headline", nargs="+", default=list(HEADLINE), choices=list(METHODS))
    parser.add_argument("--large-methods", nargs="+", default=list(HEADLINE), choices=list(METHODS),
                        help="the methods of the large part (default: the headline rows)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--other-seeds", type=int, default=1,
                        help="seeds of the non-headline methods (the first N of --seeds)")
    parser.add_argument("--pfc-seeds", type=int, default=1)
    parser.add_argument("--pfc-loss", default=PFC_LOSS,
                        choices=("normface", "cosface", "arcface", "lm_softmax", "circle"),
                        help="the cosine-head loss of the Partial FC part")
    parser.add_argument("--small-c", type=int, default=1000)
    parser.add_argument("--large-c", type=int, default=None,
                        help="default: the largest C the fonts allow")
    parser.add_argument("--fonts", nargs="+", default=list(FONTS))
    parser.add_argument("--test-fonts", nargs="+", default=list(TEST_FONTS))
    parser.add_argument("--gallery-font", default=GALLERY_FONT)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--p", type=int, default=32, help="characters per batch")
    parser.add_argument("--k", type=int, default=4, help="fonts (images) per character")
    parser.add_argument("--small-steps", type=int, default=400,
                        help="training steps at C = --small-c (400 × 128 images: 4.3 passes over "
                        "the 12 training fonts)")
    parser.add_argument("--large-steps", type=int, default=800,
                        help="training steps at the largest C (0.8 passes)")
    parser.add_argument("--steps", type=int, default=None, help="overrides both")
    parser.add_argument("--chunk", type=int, default=100, help="progress line every N steps")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--figure-chars", type=int, default=4)
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: C = 200 (small) / 400 (large), 6 fonts, 60 steps, 1 seed")
    parser.add_argument("--log", default="/tmp/glyphs_runs.jsonl")
    parser.add_argument("--results", default=None, help="append the tables to this Markdown file")
    parser.add_argument("--notes", default=None, help="Markdown file added under the tables")
    parser.add_argument("--figure", default="docs/figures/glyphs_retrieval.png")
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.small_c, args.large_c = min(args.small_c, 200), args.large_c or 400
        # the small font packages that scripts/setup.sh installs for the tests
        args.fonts = list(QUICK_FONTS)
        args.test_fonts = ["ipa_gothic", "wqy_zenhei"]
        args.gallery_font = "wqy_microhei"
        args.steps, args.chunk, args.seeds = args.steps or 60, 20, args.seeds[:1]
        args.p, args.k = 32, 4
    return args


def main(argv=None):
    """Run the selected parts; returns the logged records of this mode (quick or not)."""
    args = parse(argv)
    t0 = time.time()
    if not args.table_only:
        print(f"glyphs benchmark: parts {args.parts}, methods {args.methods}, seeds {args.seeds} "
              f"(headline {args.headline}), {args.image_size} px, P×K = {args.p}×{args.k}, "
              f"steps {args.steps or (args.small_steps, args.large_steps)}", flush=True)
        for part in args.parts:
            if part == "small":
                run_part("small", args.small_c, args)
            elif part == "large":
                run_part("large", args.large_c or largest_classes(args), args)
            elif part == "partial_fc":
                run_partial_fc(args.large_c or largest_classes(args), args)
        print(f"total {time.time() - t0:.0f} s")
    records = _read_log(args.log, args.quick)
    table = format_tables(records)
    print(table)
    if "figure" in args.parts:
        make_figure(records, args, args.figure)
    if args.results:
        notes = open(args.notes).read().strip() if args.notes else ""
        write_results(args.results, table, records, notes)
    return records


def environment():
    import platform

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
            f"1-min load average {load:.1f} when the table was written; Python "
            f"{platform.python_version()}, tensorflow {tf.__version__}, keras {keras.__version__}")


def write_results(path, table, records, notes=""):
    """Replace this benchmark's section of ``path`` (between its markers), or append it."""
    start, end = "<!-- glyphs:start -->", "<!-- glyphs:end -->"
    steps = sorted({r.get("steps") for r in records if r.get("steps")})
    section = "\n".join([
        start, "## Characters in many fonts: 1 000 and 10 000+ classes, unseen characters",
        "", "`python benchmarks/glyphs.py` (see its docstring for the protocol); " + environment()
        + f". Training steps per run: {steps} (P×K batches of 32 characters × 4 fonts).",
        table, *([""] + [notes] if notes else []), end])
    text = open(path).read() if os.path.exists(path) else ""
    if start in text and end in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    sys.exit(main() and 0)
