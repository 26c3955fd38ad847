"""Where the cosine head's extra step time goes: a breakdown against Dense + softmax.

Same harness as ``step_time.py`` (one ``train_step`` under XLA, N = 256, D = 512, SGD) with
heads that add one piece at a time, all trained with the same loss (cross-entropy on 16·scores)
so only the head differs:

    matmul only          x @ W                                   (no bias, no normalisation)
    + features normed    l2_normalize(x) @ W
    + kernel normed      x @ l2_normalize(W)
    LargestMarginHead    l2_normalize(x) @ l2_normalize(W), clipped (the library's head)
    + ArcFace            the library head with its margin loss instead of the plain CE

Usage:
    python benchmarks/head_cost.py --classes 1000
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _timing  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import step_time  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_margins as km  # noqa: E402

SCALE = 16.0


class _PartialHead(keras.layers.Layer):
    """x @ W with optional normalisation of x (rows) and/or W (columns)."""

    def __init__(self, num_classes, norm_features, norm_kernel, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.norm_features, self.norm_kernel = norm_features, norm_kernel

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.num_classes),
                                      initializer="glorot_normal")

    def call(self, x):
        x = km.ops.l2_normalize(x, axis=1) if self.norm_features else x
        w = km.ops.l2_normalize(self.kernel, axis=0) if self.norm_kernel else self.kernel
        return keras.ops.matmul(x, w)


def _scaled_ce(y_true, scores):
    return keras.losses.sparse_categorical_crossentropy(y_true, SCALE * scores, from_logits=True)


def case_builders(c, dim):
    seq = step_time._sequential

    def partial(features, kernel):
        return lambda: (seq(_PartialHead(c, features, kernel), dim), _scaled_ce)

    return {
        step_time.BASELINE: step_time.case_builders(c, dim)[step_time.BASELINE],
        "matmul only": partial(False, False),
        "+ features normed": partial(True, False),
        "+ kernel normed": partial(False, True),
        "LargestMarginHead": lambda: (seq(km.layers.LargestMarginHead(c), dim), _scaled_ce),
        "LargestMarginHead + ArcFace": lambda: (
            seq(km.layers.LargestMarginHead(c), dim),
            km.losses.ArcFace(),
        ),
    }


def parse_args(argv):
    parser = _timing.new_parser(__doc__.splitlines()[0], repeats=30, warmup=3, xla_flag=False)
    parser.add_argument("--batch", type=int, default=256, help="N")
    parser.add_argument("--dim", type=int, default=512, help="D")
    parser.add_argument("--classes", type=int, default=1000, help="C")
    return _timing.parse(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    info = _timing.machine_info()
    rng = np.random.default_rng(args.seed)
    x = tf.constant(rng.standard_normal((args.batch, args.dim)).astype("float32"))
    y = tf.constant(rng.integers(0, args.classes, args.batch).astype("int32"))
    cases = {name: step_time.make_step(b, x, y, True)
             for name, b in case_builders(args.classes, args.dim).items()}
    results = _timing.measure(cases, args.repeats, args.warmup, args.seed)
    rows, table = [], []
    for name in cases:
        ratio = _timing.paired_ratios(results, name, step_time.BASELINE)
        rows.append({"case": name, "time": results[name], "ratio": ratio})
        table.append([name, _timing.fmt_ms(results[name]), _timing.fmt_ms(results[name]["cpu"]),
                      _timing.fmt_ratio(ratio["wall"]), _timing.fmt_ratio(ratio["cpu"])])
    notes = (
        f"One XLA training step, N = {args.batch}, D = {args.dim}, C = {args.classes}; heads "
        f"built up one piece at a time, all with cross-entropy on {SCALE:g}·scores except the "
        f"last row. Median of {args.repeats} interleaved rounds; ratios vs Dense + softmax are "
        f"medians of per-round paired ratios [IQR].\n\nMachine: {_timing.machine_line(info)}"
    )
    md = _timing.markdown_table(
        ["head", "step (wall)", "step (CPU)", "÷ softmax (wall)", "÷ softmax (CPU)"], table)
    payload = {"benchmark": "head_cost", "machine": info,
               "config": _timing.config_of(args),
               "rows": rows}
    return _timing.report(args, "head_cost", "Where the cosine head's cost goes", notes, md,
                          payload)


if __name__ == "__main__":
    main()
