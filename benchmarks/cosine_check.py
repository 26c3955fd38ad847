"""Cost of the cosine range check of the losses on cosines, on a compiled training step.

A loss that declares ``score_kind = "cosine"`` checks its input: in eager mode values outside
[−1 − slack, 1 + slack] raise (``check_cosine_range``), inside a compiled graph the rows out of
range become NaN (``poison_out_of_range``: |cos| > 1 + slack over the (N, C) scores, an
any-reduction per row and a select over N). This script times each loss's training step
(``LargestMarginHead`` + loss, N = 256, D = 512, SGD, ``jit_compile=True``, the harness of
``step_time.py``) traced with the check and without it (both functions replaced by the
identity while the step is traced), interleaved in shuffled order every round; ratios are
medians of per-round paired ratios [IQR], on wall time and on process CPU time. Goal: < 1 %
(CPU-time ratio ≤ 1.01).

Usage:
    python benchmarks/cosine_check.py                      # C = 10 and 10 000, 200 rounds
    python benchmarks/cosine_check.py --classes 10 --repeats 50 --losses ArcFace
"""

import contextlib
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

#: The losses timed by default (all declare score_kind = "cosine").
LOSSES = {
    "ArcFace": lambda: km.losses.ArcFace(),
    "CircleLoss": lambda: km.losses.CircleLoss(),
    "ProxyNCALoss": lambda: km.losses.ProxyNCALoss(),
}
NO_CHECK = " (no range check)"


@contextlib.contextmanager
def cosine_check(enabled=True):
    """Trace with (default) or without the range check: without it, ``check_cosine_range``
    and ``poison_out_of_range`` of ``keras_margins.losses._base`` are the identity while a step
    is traced (the compiled step keeps what it traced)."""
    if enabled:
        yield
        return
    from keras_margins.losses import _base

    identity = {"check_cosine_range": lambda cos, owner: None,
                "poison_out_of_range": lambda loss, cos: loss}
    # _base and every library module that imported the two functions by name
    modules = [m for name, m in sorted(sys.modules.items())
               if name.startswith("keras_margins") and m is not None
               and getattr(m, "poison_out_of_range", None) is _base.poison_out_of_range]
    saved = [(m, {k: getattr(m, k) for k in identity if hasattr(m, k)}) for m in modules]
    for m, names in saved:
        for k in names:
            setattr(m, k, identity[k])
    try:
        yield
    finally:
        for m, names in saved:
            for k, fn in names.items():
                setattr(m, k, fn)


def make_step(make_loss, num_classes, x, y, checked, seed=0):
    """One compiled training step of LargestMarginHead + the loss, traced with or without
    the check (``step_time.make_step`` with its label check left on in both arms); both arms
    start from the same weights (``seed``)."""
    def builder():
        keras.utils.set_random_seed(seed)
        return step_time._sequential(km.layers.LargestMarginHead(num_classes), x.shape[1]), make_loss()

    with cosine_check(checked):
        return step_time.make_step(builder, x, y, True)


def bench(num_classes, args):
    rng = np.random.default_rng(args.seed)
    x = tf.constant(rng.standard_normal((args.batch, args.dim)).astype("float32"))
    y = tf.constant(rng.integers(0, num_classes, args.batch).astype("int32"))
    names = [n for n in LOSSES if not args.losses or n in args.losses]
    return _timing.time_with_without(
        names, lambda name, checked: make_step(LOSSES[name], num_classes, x, y, checked, args.seed),
        args.repeats, args.warmup, args.seed, suffix=NO_CHECK, num_classes=num_classes)


def parse_args(argv):
    parser = _timing.new_parser(__doc__.splitlines()[0], repeats=200, warmup=3, xla_flag=False)
    parser.add_argument("--batch", type=int, default=256, help="N")
    parser.add_argument("--dim", type=int, default=512, help="D")
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 10_000], help="C values")
    parser.add_argument("--losses", nargs="*", default=None, choices=sorted(LOSSES),
                        help="losses to time (default: all)")
    return _timing.parse(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    info = _timing.machine_info()
    rows = []
    for c in args.classes:
        print(f"C = {c}: cosine range check on/off, compiling and timing ...", flush=True)
        rows += bench(c, args)
    notes = (
        f"Cost of the cosine range check of the losses on cosines (NaN for rows with |cos| > "
        f"1 + slack inside compiled graphs: an (N, C) comparison, a row any-reduction and a "
        f"select over N). Each loss's training step (LargestMarginHead, N = {args.batch}, "
        f"D = {args.dim}, SGD, `jit_compile=True`) traced with and without the check, timed "
        f"interleaved; median of {args.repeats} rounds, ratios are medians of per-round paired "
        f"ratios [IQR]. Goal: < 1 % (CPU-time ratio ≤ 1.01).\n\n"
        f"Machine: {_timing.machine_line(info)}"
    )
    payload = {"benchmark": "cosine_check", "machine": info, "config": _timing.config_of(args),
               "rows": rows}
    return _timing.report(args, "cosine_check", "Cost of the cosine range check", notes,
                          _timing.with_without_table(rows), payload)


if __name__ == "__main__":
    main()
