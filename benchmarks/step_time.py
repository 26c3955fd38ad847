"""Training-step cost of a margin head + loss against a plain Dense + softmax classifier.

Backbone-free setup: fixed input features x (N, D) (constants, nothing trainable before the
head) and integer labels y. Each case is one full Keras training step — forward, backward
and an SGD update of the (D, C) head kernel — run through the model's own ``train_step``
wrapped in ``tf.function(jit_compile=...)``, exactly as ``model.fit(jit_compile=...)`` runs
it. The baseline is ``Dense(C)`` + ``SparseCategoricalCrossentropy(from_logits=True)`` on the
same inputs. All cases of one C run interleaved (see ``_timing.py``); the reported ratio is
the median of per-round paired ratios. XLA on and off are both measured for every case.

Goal: margin head + loss <= 1.10 x the plain softmax step under XLA.

``--label-check`` times instead each class-level loss with and without the XLA label check
(``km.ops`` multiply the gathered target by 1 or NaN, so an out-of-range label poisons the
loss under ``jit_compile``), side by side, XLA on; goal: < 1 % (ratio ≤ 1.01). It writes its
own section (``step_time_label_check``).

Usage:
    python benchmarks/step_time.py                 # C = 500, 1 000, 10 000
    python benchmarks/step_time.py --full          # also C = 100 000 (slow on 2 cores)
    python benchmarks/step_time.py --label-check   # cost of the invalid-label check
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
import tensorflow as tf  # noqa: E402

tf.get_logger().setLevel("ERROR")

import keras_margins as km  # noqa: E402

BASELINE = "softmax"
GOAL = 1.10
#: PEDCCHead builds its centroids with km.ops.pedcc_centroids: an exact simplex when
#: C <= D + 1, otherwise a NumPy repulsion whose every iteration forms a (C, C, D) array
#: (C = 1 000, D = 512: 4 GB, 1 000 iterations; not finished after 10 minutes here), so
#: PEDCC+POD is timed only where C <= D + 1 (the step itself does not depend on how the
#: centroids were made).
PEDCC_NOTE = "PEDCC+POD timed only for C ≤ D + 1 (centroid generation for larger C is too slow)"


def _sequential(head, dim):
    return keras.Sequential([keras.Input((dim,)), head])


def _identity_backbone(dim):
    inputs = keras.Input((dim,))
    return keras.Model(inputs, keras.layers.Identity()(inputs))


def case_builders(num_classes, dim):
    """name -> () -> (model, loss). Losses not (yet) in the library are skipped."""
    c = num_classes
    builders = {
        BASELINE: lambda: (
            _sequential(keras.layers.Dense(c), dim),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        ),
        "ArcFace": lambda: (_sequential(km.layers.LargestMarginHead(c), dim), km.losses.ArcFace()),
        "CosFace": lambda: (_sequential(km.layers.LargestMarginHead(c), dim), km.losses.CosFace()),
        "SphereFace": lambda: (
            _sequential(km.layers.LargestMarginHead(c), dim),
            km.losses.SphereFace(),
        ),
        "LMSoftmax": lambda: (
            _sequential(km.layers.LargestMarginHead(c), dim),
            km.losses.LMSoftmax(),
        ),
        "CircleLoss (class-level)": lambda: (
            _sequential(km.layers.LargestMarginHead(c), dim),
            km.losses.CircleLoss(),
        ),
    }
    builders["VirtualSoftmax"] = lambda: (
        _sequential(km.layers.VirtualSoftmaxHead(c), dim),
        km.losses.VirtualSoftmax(),
    )
    if c <= dim + 1:  # see PEDCC_NOTE
        builders["PEDCC+POD"] = lambda: (
            km.models.MarginModel(_identity_backbone(dim), km.layers.PEDCCHead(c)),
            km.losses.POD(),
        )
    return builders


@contextlib.contextmanager
def label_check(enabled=True):
    """Trace with (default) or without the invalid-label NaN check of the class-level ops.

    Without it, ``poison_invalid_labels`` (the one function the ops call for the check) is
    replaced by the identity while a step is traced; the compiled step keeps what it traced.
    """
    if enabled:
        yield
        return
    import keras_margins.ops._numerics as common
    import keras_margins.ops.circle as circle

    modules = [m for m in (common, circle) if hasattr(m, "poison_invalid_labels")]
    saved = [m.poison_invalid_labels for m in modules]
    for m in modules:
        m.poison_invalid_labels = lambda values, labels, num_classes, anchor=None: values
    try:
        yield
    finally:
        for m, fn in zip(modules, saved):
            m.poison_invalid_labels = fn


def make_step(builder, x, y, xla, check_labels=True):
    """A zero-argument callable running one compiled training step to completion."""
    model, loss = builder()
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss)
    if not model.built:
        model(x[:2])
    model.optimizer.build(model.trainable_variables)
    step = tf.function(model.train_step, jit_compile=xla, reduce_retracing=True)

    def run():
        logs = step((x, y))
        return float(logs["loss"])

    with label_check(check_labels):
        run()  # trace and compile now, with or without the label check
    return run


LABEL_CHECK_CASES = ("ArcFace", "CosFace", "LMSoftmax", "CircleLoss (class-level)",
                     "VirtualSoftmax", "PEDCC+POD")
NO_CHECK = " (no label check)"


def bench_label_check(num_classes, args, builders):
    """Each class-level loss with and without the label check, interleaved, XLA on."""
    rng = np.random.default_rng(args.seed)
    x = tf.constant(rng.standard_normal((args.batch, args.dim)).astype("float32"))
    y = tf.constant(rng.integers(0, num_classes, args.batch).astype("int32"))
    names = [n for n in LABEL_CHECK_CASES if n in builders]
    return _timing.time_with_without(
        names, lambda name, checked: make_step(builders[name], x, y, True, check_labels=checked),
        args.repeats, args.warmup, args.seed, suffix=NO_CHECK, num_classes=num_classes)


def main_label_check(args):
    info = _timing.machine_info()
    rows = []
    for c in args.classes:
        print(f"C = {c}: label check on/off, compiling and timing ...", flush=True)
        builders = case_builders(c, args.dim)
        if args.losses:
            builders = {k: v for k, v in builders.items() if k in args.losses}
        rows += bench_label_check(c, args, builders)
    notes = (
        f"Cost of the invalid-label check under XLA: the class-level ops multiply each "
        f"gathered target value by 1 (label in [0, C)) or NaN, two comparisons and a select "
        f"over N. Each loss's training step (as in the table above: N = {args.batch}, "
        f"D = {args.dim}, `jit_compile=True`) traced with and without the check, timed "
        f"interleaved; median of {args.repeats} rounds, ratios are medians of per-round paired "
        f"ratios [IQR]. Goal: < 1 % (CPU-time ratio ≤ 1.01).\n\n"
        f"Machine: {_timing.machine_line(info)}"
    )
    payload = {"benchmark": "step_time_label_check", "machine": info,
               "config": _timing.config_of(args), "rows": rows}
    return _timing.report(args, "step_time_label_check",
                          "Cost of the XLA invalid-label check", notes,
                          _timing.with_without_table(rows), payload)


def bench_classes(num_classes, args, builders=None):
    rng = np.random.default_rng(args.seed)
    x = tf.constant(rng.standard_normal((args.batch, args.dim)).astype("float32"))
    y = tf.constant(rng.integers(0, num_classes, args.batch).astype("int32"))
    builders = builders or case_builders(num_classes, args.dim)
    cases, skipped = {}, {}
    for name, builder in builders.items():
        for xla in args.xla_modes:
            key = f"{name}|xla={'on' if xla else 'off'}"
            try:
                cases[key] = make_step(builder, x, y, xla)
                cases[key]()  # compile now, so a failure is reported, not timed
            except Exception as err:  # report, never hide, a case that does not run
                cases.pop(key, None)
                skipped[key] = f"{type(err).__name__}: {err}"[:300]
                print(f"  skipped {key}: {skipped[key]}", flush=True)
    results = _timing.measure(cases, args.repeats, args.warmup, args.seed)
    rows = []
    for name in builders:
        row = {"loss": name, "num_classes": num_classes}
        for xla in args.xla_modes:
            tag = "on" if xla else "off"
            key, base = f"{name}|xla={tag}", f"{BASELINE}|xla={tag}"
            if key not in results:
                continue
            row[f"time_xla_{tag}"] = results[key]
            if base in results:
                row[f"ratio_xla_{tag}"] = _timing.paired_ratios(results, key, base)
        on, off = f"{name}|xla=on", f"{name}|xla=off"
        if on in results and off in results:
            row["xla_speedup"] = _timing.paired_ratios(results, off, on)
        rows.append(row)
    return rows, skipped


def _cell(row, key, fmt):
    return fmt(row[key]) if key in row else "—"


def table(rows):
    headers = [
        "C",
        "loss",
        "step, XLA on",
        "÷ softmax (wall)",
        "÷ softmax (CPU)",
        "step, XLA off",
        "÷ softmax, XLA off (CPU)",
        "XLA speed-up (CPU)",
        f"≤ {GOAL:.2f}?",
    ]
    out = []
    for r in rows:
        ratio = r.get("ratio_xla_on")
        ok = "—" if ratio is None or r["loss"] == BASELINE else (
            "yes" if ratio["cpu"]["median"] <= GOAL else "**no**"
        )
        out.append(
            [
                f"{r['num_classes']:,}",
                r["loss"],
                _cell(r, "time_xla_on", _timing.fmt_ms),
                _cell(r, "ratio_xla_on", lambda s: _timing.fmt_ratio(s["wall"])),
                _cell(r, "ratio_xla_on", lambda s: _timing.fmt_ratio(s["cpu"])),
                _cell(r, "time_xla_off", _timing.fmt_ms),
                _cell(r, "ratio_xla_off", lambda s: _timing.fmt_ratio(s["cpu"])),
                _cell(r, "xla_speedup", lambda s: f"{s['cpu']['median']:.2f}×"),
                ok,
            ]
        )
    return _timing.markdown_table(headers, out)


def parse_args(argv):
    parser = _timing.new_parser(__doc__.splitlines()[0], repeats=15)
    parser.add_argument("--batch", type=int, default=256, help="N")
    parser.add_argument("--dim", type=int, default=512, help="D")
    parser.add_argument("--classes", type=int, nargs="+", default=[500, 1000, 10000],
                        help="C values (500 <= D + 1 lets PEDCC+POD run)")
    parser.add_argument("--full", action="store_true", help="add C = 100 000")
    parser.add_argument("--losses", nargs="+", default=None, help="subset of case names")
    parser.add_argument("--label-check", action="store_true",
                        help="time the class-level losses with and without the label check")
    args = _timing.parse(parser, argv)
    if args.full and 100000 not in args.classes:
        args.classes = list(args.classes) + [100000]
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.label_check:
        return main_label_check(args)
    info = _timing.machine_info()
    all_rows, all_skipped = [], {}
    for c in args.classes:
        print(f"C = {c}: compiling and timing ...", flush=True)
        builders = case_builders(c, args.dim)
        if args.losses:
            builders = {k: v for k, v in builders.items() if k in args.losses or k == BASELINE}
        rows, skipped = bench_classes(c, args, builders)
        all_rows += rows
        all_skipped.update({f"C={c} {k}": v for k, v in skipped.items()})
    notes = (
        f"One training step (forward + backward + SGD update of the (D, C) head) on fixed "
        f"features, N = {args.batch}, D = {args.dim}; `model.train_step` under "
        f"`tf.function(jit_compile=...)`. Median of {args.repeats} interleaved rounds "
        f"(± = half the inter-quartile range); ratios are medians of per-round paired ratios "
        f"[IQR], on wall time and on this process's CPU time (steadier on a shared machine; "
        f"the goal column uses it). Goal: ≤ {GOAL:.2f} × softmax with XLA on.\n\n"
        f"Machine: {_timing.machine_line(info)}"
    )
    if any(c > args.dim + 1 for c in args.classes):
        notes += f"\n\n{PEDCC_NOTE}: its NumPy repulsion forms a (C, C, D) array per iteration."
    if all_skipped:
        notes += "\n\nNot run: " + "; ".join(f"{k} ({v})" for k, v in all_skipped.items())
    payload = {
        "benchmark": "step_time",
        "machine": info,
        "config": _timing.config_of(args),
        "rows": all_rows,
        "skipped": all_skipped,
    }
    return _timing.report(args, "step_time", "Training-step time vs plain softmax", notes,
                          table(all_rows), payload)


if __name__ == "__main__":
    main()
