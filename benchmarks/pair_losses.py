"""Pair-wise Circle loss (with each miner) against keras.losses.Circle: time and peak memory.

For N in {256, 1024, 4096} embeddings of D = 128 (labels: N/4 classes of 4 samples, as in a
P×K batch), each case is the loss *and its gradient* with respect to the embeddings, under
``tf.function(jit_compile=True)`` and without XLA. ``keras.losses.Circle`` gets the
L2-normalised embeddings (it expects unit vectors; ours normalises inside), so both compute
the same quantity. Times: interleaved rounds, medians, paired ratios (see ``_timing.py``).

Memory: for the XLA-compiled cases, the bytes of the compiled program's buffer assignment
(``experimental_get_compiler_ir(...)(stage="optimized_hlo_proto_serialized")``): every
temporary and output buffer XLA allocates for one call, after it has overlapped buffers with
disjoint lifetimes; inputs excluded. Divided by N²·4 bytes (one float32 N×N matrix) it shows
how memory grows. (Two other gauges were tried and rejected: TensorFlow keeps freed buffers
for reuse, so the resident-set peak of a warm step hardly moves, and
``tf.config.experimental.get_memory_info("CPU:0")`` does not see XLA's temporaries.) Without
XLA there is no such plan, and the column says "—".

Usage:
    python benchmarks/pair_losses.py                    # N = 256, 1024, 4096
    python benchmarks/pair_losses.py --sizes 256 1024 --no-memory
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _timing  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_margins as km  # noqa: E402

tf.get_logger().setLevel("ERROR")

OURS = "PairCircleLoss"
KERAS = "keras.losses.Circle"
#: SemiHardMiner tests every (a, p, n) triplet: an (N, N, N) boolean. Beyond these sizes it
#: takes minutes per call (XLA) or tens of GB (no XLA, the tensor is materialised).
SEMI_HARD_MAX_N = {True: 1024, False: 512}


def miner_classes():
    """Every concrete miner exported by km.miners, by class name."""
    base = getattr(km.miners, "Miner", None)
    out = {}
    for name in sorted(dir(km.miners)):
        obj = getattr(km.miners, name)
        if isinstance(obj, type) and base is not None and issubclass(obj, base) and obj is not base:
            out[name] = obj
    return out


def loss_functions():
    """name -> loss callable (labels, embeddings) -> scalar."""
    circle = keras.losses.Circle(gamma=80.0, margin=0.4)
    fns = {
        OURS: km.losses.PairCircleLoss(margin=0.4, gamma=80.0),
        KERAS: lambda y, e: circle(y, keras.ops.normalize(e, axis=-1)),
    }
    for name, cls in miner_classes().items():
        fns[f"{OURS} + {name}"] = km.losses.PairCircleLoss(margin=0.4, gamma=80.0, miner=cls())
    return fns


def feasible(name, n, xla):
    return "SemiHard" not in name or n <= SEMI_HARD_MAX_N[xla]


def make_inputs(n, dim, seed):
    rng = np.random.default_rng(seed)
    labels = tf.constant((np.arange(n) % max(n // 4, 2)).astype("int32"))
    emb = tf.constant(rng.standard_normal((n, dim)).astype("float32"))
    return labels, emb


def make_step(loss_fn, labels, emb, xla):
    @tf.function(jit_compile=xla)
    def value_and_grad(y, e):
        with tf.GradientTape() as tape:
            tape.watch(e)
            loss = loss_fn(y, e)
        return loss, tape.gradient(loss, e)

    def run():
        loss, grad = value_and_grad(labels, emb)
        grad.numpy()
        return float(loss)

    run.compiled, run.args = value_and_grad, (labels, emb)
    return run


def xla_buffer_bytes(compiled, *args):
    """Bytes XLA allocates to run ``compiled(*args)`` (a ``jit_compile=True`` tf.function).

    Read from the compiled program's buffer assignment: the sum of its buffer allocations
    (temporaries and outputs; inputs and thread-local scalars excluded). XLA has already
    overlapped buffers whose lifetimes do not intersect, so this is the memory one call
    needs beyond its inputs. None when the assignment cannot be read.
    """
    try:
        from tensorflow.compiler.xla.service import hlo_pb2

        raw = compiled.experimental_get_compiler_ir(*args)(
            stage="optimized_hlo_proto_serialized"
        )
        proto = hlo_pb2.HloProto()
        proto.ParseFromString(raw)
    except Exception:  # noqa: BLE001 - an unreadable IR only costs the memory column
        return None
    return sum(
        a.size
        for a in proto.buffer_assignment.buffer_allocations
        if not a.is_entry_computation_parameter and not a.is_thread_local
    )


def measure_memory(cases):
    """name -> XLA buffer bytes of each XLA-compiled case (cases without XLA: no entry)."""
    return {
        name: xla_buffer_bytes(run.compiled, *run.args)
        for name, run in cases.items()
        if name.endswith("xla=on")
    }


def values_agree(labels, emb):
    """Our loss and keras.losses.Circle on the same normalised inputs (plain, no miner)."""
    ours = float(km.losses.PairCircleLoss(margin=0.4, gamma=80.0)(labels, emb))
    theirs = float(keras.losses.Circle(gamma=80.0, margin=0.4)(
        labels, keras.ops.normalize(emb, axis=-1)))
    return ours, theirs


def bench_size(n, args):
    labels, emb = make_inputs(n, args.dim, args.seed)
    cases, skipped = {}, []
    for name, fn in loss_functions().items():
        for xla in args.xla_modes:
            key = f"{name}|xla={'on' if xla else 'off'}"
            if not feasible(name, n, xla):
                skipped.append(key)
                continue
            cases[key] = make_step(fn, labels, emb, xla)
    results = _timing.measure(cases, args.repeats, args.warmup, args.seed)
    memory = {} if args.no_memory else measure_memory(cases)
    ours, theirs = values_agree(labels, emb)
    rows = []
    for key, stats in results.items():
        name, mode = key.split("|xla=")
        ref = f"{KERAS}|xla={mode}"
        row = {"n": n, "loss": name, "xla": mode, "time": stats,
               "vs_keras": _timing.paired_ratios(results, key, ref) if ref in results else None,
               "xla_bytes": memory.get(key)}
        rows.append(row)
    return rows, skipped, {"ours": ours, "keras": theirs}


def table(rows):
    headers = ["N", "loss", "XLA", "loss + grad", "÷ keras Circle (wall)",
               "÷ keras Circle (CPU)", "XLA memory", "÷ N²·4 B"]
    out = []
    for r in rows:
        mem = r["xla_bytes"]
        out.append([
            f"{r['n']:,}", r["loss"], r["xla"], _timing.fmt_ms(r["time"]),
            _timing.fmt_ratio(r["vs_keras"]["wall"]) if r["vs_keras"] else "—",
            _timing.fmt_ratio(r["vs_keras"]["cpu"]) if r["vs_keras"] else "—",
            f"{mem / 2**20:.1f} MiB" if mem is not None else "—",
            f"{mem / (4 * r['n'] ** 2):.2f}" if mem is not None else "—",
        ])
    return _timing.markdown_table(headers, out)


def parse_args(argv):
    parser = _timing.new_parser(__doc__.splitlines()[0], repeats=10)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 4096], help="N")
    parser.add_argument("--dim", type=int, default=128, help="D")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    return _timing.parse(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    info = _timing.machine_info()
    all_rows, skipped, agree = [], [], {}
    for n in args.sizes:
        print(f"N = {n}: compiling and timing ...", flush=True)
        rows, skip, values = bench_size(n, args)
        all_rows += rows
        skipped += [f"N={n} {k}" for k in skip]
        agree[n] = values
    agreement = "; ".join(
        f"N={n}: ours {v['ours']:.5f}, keras {v['keras']:.5f}" for n, v in agree.items()
    )
    notes = (
        f"Loss value + gradient w.r.t. the (N, D={args.dim}) embeddings; labels N/4 classes × 4. "
        f"Median of {args.repeats} interleaved rounds (± = half the IQR); ratios are medians of "
        f"per-round paired ratios [IQR] (wall and process CPU time) against "
        f"`keras.losses.Circle` in the same XLA mode "
        f"(goal: ≤ 1.0). XLA memory: total size of the compiled step's buffer assignment "
        f"(temporaries + outputs, inputs excluded; XLA has already overlapped buffers with "
        f"disjoint lifetimes); ÷ N²·4 B counts float32 N×N matrices.\n\n"
        f"Same value check (no miner): {agreement}.\n\nMachine: {_timing.machine_line(info)}"
    )
    if skipped:
        notes += ("\n\nNot run (the semi-hard miner's (N, N, N) triplet test is too large): "
                  + ", ".join(skipped))
    payload = {"benchmark": "pair_losses", "machine": info,
               "config": _timing.config_of(args),
               "rows": all_rows, "skipped": skipped, "values": agree}
    return _timing.report(args, "pair_losses", "Pair-wise Circle loss: time and memory", notes,
                          table(all_rows), payload)


if __name__ == "__main__":
    main()
