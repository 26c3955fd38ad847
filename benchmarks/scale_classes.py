"""Training with many classes: full cosine head vs Partial FC, step time and memory.

Setup: N = 256 embeddings of D = 128 from a one-layer backbone (Dense(128) on fixed 128-d
inputs), a ``km.layers.LargestMarginHead(C)`` (its default class-major (C, D) storage),
``km.losses.ArcFace()``, ``keras.optimizers.SGD(0.1, momentum=0.9)``, XLA on
(``jit_compile=True``), C = 10 000, 100 000 and 1 000 000. Cases per C, each its own
``km.models.MarginModel`` with identical weights and optimizer:

* ``full``: the whole head, ``loss=ArcFace()``;
* ``pfc0.3`` / ``pfc0.1``: ``loss=km.losses.PartialFC(ArcFace(), sample_rate)``;
* with ``--feature-major`` (C ≤ 100 000): ``full_feature_major`` and
  ``pfc0.1_feature_major``, the same with ``kernel_layout="feature_major"`` ((D, C) storage,
  the default before class-major became it): the storage costs the full head nothing and
  decides what a sampled step saves.

One step is ``model.train_on_batch`` (the model's compiled train function). The cases of a
C are timed interleaved (``_timing.measure``: shuffled order every round, medians, ratio =
median of per-round paired ratios), so load from other processes hits them alike.

The parts of a Partial FC step (``--parts``, C = 1M): the class sampler, the row gather,
the sampled cosine matmul forward and backward, the dense momentum update of the (C, D)
kernel; the *floor* is the sampled matmuls (forward + backward) plus one momentum pass over
the kernel: what any Partial FC step with this optimizer must pay.

Memory: peak resident memory of a separate process that builds one case and runs 3 steps,
minus that of a process with the same imports and a C = 10 model (so the numbers are what
the case adds). The 10 M row is extrapolated linearly from the 100 k → 1 M slope (labelled
so). The per-device memory of an 8-way class-sharded head is computed:
C·D·4 bytes·(1 + optimizer slots) / 8 (SGD with momentum: 1 slot).

At C = 1M the three 1M models of one run need ~9 GB of RAM next to each other: on a machine
with less free memory, time the sizes in separate invocations (``--sizes 1000000``).

Usage:
    python benchmarks/scale_classes.py                 # C = 10k, 100k, 1M (~15 min on 2 cores)
    python benchmarks/scale_classes.py --quick         # smoke test: C = 2000, 3 rounds
    python benchmarks/scale_classes.py --sizes 100000 --parts
    python benchmarks/scale_classes.py --digits        # accuracy: full head vs Partial FC 0.5
"""

import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _timing  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_margins as km  # noqa: E402

N, D = 256, 128
RATES = (0.3, 0.1)
#: Goals: Partial FC at rate 0.1 vs the full head (step time ratio).
GOALS = {1_000_000: 0.30, 100_000: 0.50}
SLOTS = 1  # SGD with momentum keeps one slot per weight


def _model(num_classes, loss, layout=None, seed=0):
    """MarginModel(Dense, LargestMarginHead(C)); ``layout`` None: the head's default storage."""
    keras.utils.set_random_seed(seed)
    backbone = keras.Sequential([keras.Input((D,)), keras.layers.Dense(D)])
    kwargs = {} if layout is None else {"kernel_layout": layout}
    head = km.layers.LargestMarginHead(num_classes, **kwargs)
    model = km.models.MarginModel(backbone, head)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), loss=loss, jit_compile=True)
    return model


FEATURE_MAJOR = "_feature_major"


def _loss(case):
    if case.startswith("pfc"):
        rate = float(case[3:].removesuffix(FEATURE_MAJOR))
        return km.losses.PartialFC(km.losses.ArcFace(), sample_rate=rate, seed=0)
    return km.losses.ArcFace()


def build_case(num_classes, case):
    layout = "feature_major" if case.endswith(FEATURE_MAJOR) else None
    return _model(num_classes, _loss(case), layout)


def _batches(num_classes, count=4, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(N, D)).astype("float32"),
             rng.integers(0, num_classes, size=N).astype("int32")) for _ in range(count)]


def _stepper(model, batches):
    state = {"i": 0}

    def step():
        x, y = batches[state["i"] % len(batches)]
        state["i"] += 1
        model.train_on_batch(x, y)  # returns host values: the step has completed

    return step


def case_names(num_classes, feature_major):
    names = ["full"] + [f"pfc{rate}" for rate in RATES]
    if feature_major and num_classes <= 100_000:
        names += ["full" + FEATURE_MAJOR, f"pfc{RATES[-1]}" + FEATURE_MAJOR]
    return names


def time_cases(num_classes, args):
    batches = _batches(num_classes)
    models = {name: build_case(num_classes, name) for name in case_names(num_classes, args.feature_major)}
    cases = {name: _stepper(model, batches) for name, model in models.items()}
    return _timing.measure(cases, args.repeats, args.warmup, args.seed)


# ------------------------------------------------------------------------------------ parts
def time_parts(num_classes, args):
    """Each part of a Partial FC step alone (XLA), and the floor: sampled matmuls + one
    momentum pass over the (C, D) kernel."""
    import tensorflow as tf

    rate = RATES[-1]
    k = km.losses.PartialFC(km.losses.ArcFace(), rate).num_sampled(num_classes, N)
    rng = np.random.default_rng(0)
    centers = tf.Variable(rng.normal(size=(num_classes, D)).astype("float32"))
    momentum = tf.Variable(tf.zeros_like(centers))
    x = tf.constant(rng.normal(size=(N, D)).astype("float32"))
    y = tf.constant(rng.integers(0, num_classes, size=N).astype("int32"))
    ids = tf.constant(rng.choice(num_classes, size=k, replace=False).astype("int32"))
    rows = tf.constant(rng.normal(size=(k, D)).astype("float32"))
    local = tf.constant(rng.integers(0, k, size=N).astype("int32"))
    arcface = km.losses.ArcFace()
    step = tf.Variable(0)

    @tf.function(jit_compile=True)
    def sampler():
        step.assign_add(1)
        ids_, local_ = km.ops.sample_classes(y, num_classes, k, step)
        return tf.reduce_sum(ids_) + tf.reduce_sum(local_)

    @tf.function(jit_compile=True)
    def topk_sampler():
        scores = tf.random.uniform((num_classes,))
        scores = tf.tensor_scatter_nd_update(scores, y[:, None], tf.fill((N,), 2.0))
        return tf.reduce_sum(tf.math.top_k(scores, k)[1])

    @tf.function(jit_compile=True)
    def gather():
        return tf.reduce_sum(tf.gather(centers, ids))

    @tf.function(jit_compile=True)
    def sampled_matmuls():  # forward + backward of the sampled cosines and the loss
        with tf.GradientTape() as tape:
            tape.watch(rows)
            tape.watch(x)
            loss = arcface(local, km.ops.cosine_similarity(x, tf.transpose(rows)))
        dx, dw = tape.gradient(loss, [x, rows])
        return tf.reduce_sum(dx) + tf.reduce_sum(dw)

    @tf.function(jit_compile=True)
    def momentum_pass():  # Keras' SGD momentum update of the whole kernel (gradient rows)
        grad = tf.IndexedSlices(rows, ids, tf.constant([num_classes, D]))
        momentum.assign(momentum * 0.9 - tf.convert_to_tensor(grad) * 0.1)
        centers.assign_add(momentum)
        return momentum[:1, :1]

    cases = {"sampler (affine permutation)": sampler, "sampler (top-k of random scores)": topk_sampler,
             "row gather": gather, "sampled matmuls + loss (fwd+bwd)": sampled_matmuls,
             "momentum update (dense pass)": momentum_pass}
    wrapped = {name: (lambda f=f: np.asarray(f())) for name, f in cases.items()}
    return _timing.measure(wrapped, args.repeats, args.warmup, args.seed), k


# ----------------------------------------------------------------------------------- digits
def digits_accuracy(sample_rate, seed, epochs=4, batch_size=4):
    """Test accuracy on the bundled digits (C = 10) of the full head (``sample_rate=None``)
    or Partial FC: batches of 4 so that rate 0.5 keeps K = max(5, 4) = 5 of the 10 classes
    per step. Same seed, same backbone, same data order for both."""
    (x, y), (x_test, y_test) = km.data.digits_classification()
    keras.utils.set_random_seed(seed)
    backbone = keras.Sequential([keras.Input((64,)), keras.layers.Dense(128, activation="relu"),
                                 keras.layers.Dense(32)])
    model = km.models.MarginModel(backbone, km.layers.LargestMarginHead(10))
    loss = km.losses.ArcFace(scale=16.0, margin=0.2)
    if sample_rate is not None:
        loss = km.losses.PartialFC(loss, sample_rate, seed=seed)
    model.compile(keras.optimizers.Adam(2e-3), loss=loss, jit_compile=True,
                  steps_per_execution=64)
    usable = len(x) // batch_size * batch_size
    model.fit(x[:usable], y[:usable], batch_size=batch_size, epochs=epochs, verbose=0, shuffle=True)
    scores = model.predict(x_test, verbose=0, batch_size=256)
    return float(np.mean(scores.argmax(-1) == y_test))


def digits_table(seeds=(0, 1, 2)):
    rows, payload = [], {}
    for seed in seeds:
        full, pfc = digits_accuracy(None, seed), digits_accuracy(0.5, seed)
        payload[seed] = {"full": full, "pfc0.5": pfc}
        rows.append([seed, f"{full:.4f}", f"{pfc:.4f}"])
    full = [v["full"] for v in payload.values()]
    pfc = [v["pfc0.5"] for v in payload.values()]
    rows.append(["mean ± std (ddof = 1)", f"{np.mean(full):.4f} ± {np.std(full, ddof=1):.4f}",
                 f"{np.mean(pfc):.4f} ± {np.std(pfc, ddof=1):.4f}"])
    return _timing.markdown_table(["seed", "full head", "Partial FC 0.5"], rows), payload


# ----------------------------------------------------------------------------------- memory
def _child(num_classes, case):
    """Run in a subprocess: build the case, 3 steps, print the peak RSS in MB."""
    model = build_case(num_classes, case)
    step = _stepper(model, _batches(num_classes, 1))
    for _ in range(3):
        step()
    print(f"PEAK_RSS_MB {_high_water_mb():.1f}")


def _high_water_mb():
    """This process's peak resident memory (MB): VmHWM of /proc/self/status, the high-water
    mark of its own address space. Not ``getrusage(...).ru_maxrss``: Linux carries that across
    fork + exec, so a child started by a parent holding the 1M-class models reported the
    parent's size (every case measured the same)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def peak_memory_mb(num_classes, case):
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--memory-child", str(num_classes), case],
        capture_output=True, text=True, timeout=900, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    for line in out.stdout.splitlines():
        if line.startswith("PEAK_RSS_MB"):
            return float(line.split()[1])
    raise RuntimeError(f"memory child failed: {out.stderr[-2000:]}")


def sharded_mb(num_classes, devices=8):
    return num_classes * D * 4 * (1 + SLOTS) / devices / 2**20


# ------------------------------------------------------------------------------------- main
def main(argv=None):
    parser = _timing.new_parser(__doc__.split("\n")[0], repeats=15, warmup=2, xla_flag=False)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--quick", action="store_true", help="smoke test: C = 2000, 3 rounds")
    parser.add_argument("--parts", action="store_true", help="also time the parts at the largest C")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    parser.add_argument("--feature-major", action="store_true",
                        help="also time the full head and Partial FC 0.1 with the (D, C) storage "
                             "(C <= 100k)")
    parser.add_argument("--digits", action="store_true",
                        help="only the digits accuracy comparison (full head vs Partial FC 0.5, 3 seeds)")
    parser.add_argument("--memory-child", nargs=2, help=argparse_suppress())
    args = _timing.parse(parser, argv)
    if args.memory_child:
        _child(int(args.memory_child[0]), args.memory_child[1])
        return None
    if args.digits:
        table, payload = digits_table()
        notes = (f"{_timing.machine_line(_timing.machine_info())} Bundled digits (C = 10), backbone "
                 "Dense(128, relu) → Dense(32), `LargestMarginHead(10)` (class-major), "
                 "ArcFace(s=16, m=0.2), Adam(2e-3), 4 epochs of batches of 4 (so that rate 0.5 keeps "
                 "K = max(5, 4) = 5 of the 10 classes per step), test accuracy on the 450 test images; "
                 "same seed = same initial weights and data order for both.")
        return _timing.report(args, "scale_classes_digits", "Partial FC vs full head: accuracy on digits",
                              notes, table, {"digits": payload})
    if args.quick:
        args.sizes, args.repeats, args.warmup = [2000], min(args.repeats, 3), 1

    info = _timing.machine_info()
    rows, payload = [], {"machine": info, "config": _timing.config_of(args), "sizes": {}}
    baseline_mb = None if args.no_memory else peak_memory_mb(10, "full")
    for num_classes in args.sizes:
        start = time.perf_counter()
        results = time_cases(num_classes, args)
        entry = {"cases": {k: {kk: vv for kk, vv in v.items() if kk != "cpu_times"}
                           for k, v in results.items()}, "ratios": {}, "memory_mb": {}}
        for name in results:
            ratio = _timing.paired_ratio(results, name, "full")
            cpu_ratio = _timing.paired_ratio(results, name, "full", "cpu_times")
            entry["ratios"][name] = ratio
            entry.setdefault("cpu_ratios", {})[name] = cpu_ratio
            mem = None
            if not args.no_memory:
                mem = peak_memory_mb(num_classes, name) - baseline_mb
                entry["memory_mb"][name] = mem
            goal = GOALS.get(num_classes) if name == f"pfc{RATES[-1]}" else None
            verdict = (
                "" if goal is None else (" ✅" if ratio["median"] <= goal else " ❌") + f" (goal ≤ {goal})"
            )
            rows.append([f"{num_classes:,}", name, _timing.fmt_ms(results[name]),
                         _timing.fmt_ratio(ratio) + verdict, _timing.fmt_ratio(cpu_ratio),
                         "–" if mem is None else f"{mem:,.0f}", f"{sharded_mb(num_classes):,.0f}"])
        sampled, dense = f"pfc{RATES[-1]}", f"pfc{RATES[-1]}" + FEATURE_MAJOR
        if dense in results:  # what the storage choice gives a sampled step, side by side
            entry["default_vs_feature_major"] = _timing.paired_ratios(results, sampled, dense)
            print(f"C={num_classes}: {sampled} on the default storage = "
                  f"{_timing.fmt_ratio(entry['default_vs_feature_major']['wall'])} x (wall), "
                  f"{_timing.fmt_ratio(entry['default_vs_feature_major']['cpu'])} x (CPU time) "
                  "its step on the (D, C) storage", flush=True)
        entry["seconds"] = time.perf_counter() - start
        payload["sizes"][num_classes] = entry
        print(f"C={num_classes}: {time.perf_counter() - start:.0f} s", flush=True)

    extrapolated = _extrapolate(payload["sizes"])
    for name, (ms, mem) in extrapolated.items():
        rows.append(["10,000,000 (extrapolated)", name, f"{ms:,.0f} ms", "–", "–",
                     "–" if mem is None else f"{mem:,.0f}", f"{sharded_mb(10_000_000):,.0f}"])
    payload["extrapolated_10M"] = extrapolated

    parts_md = ""
    if args.parts:
        parts, k = time_parts(max(args.sizes), args)
        payload["parts"] = {
            n: {kk: vv for kk, vv in v.items() if kk != "cpu_times"} for n, v in parts.items()
        }
        floor = (
            parts["sampled matmuls + loss (fwd+bwd)"]["median"]
            + parts["momentum update (dense pass)"]["median"]
        )
        payload["floor_s"] = floor
        full = payload["sizes"][max(args.sizes)]["cases"]["full"]["median"]
        pfc = payload["sizes"][max(args.sizes)]["cases"][f"pfc{RATES[-1]}"]["median"]
        parts_md = (
            f"\n\nParts of a Partial FC step alone at C = {max(args.sizes):,} (K = {k:,}), XLA:\n\n"
            + _timing.markdown_table(["part", "time"], [[n, _timing.fmt_ms(v)] for n, v in parts.items()])
            + f"\n\nFloor (sampled matmuls + one dense momentum pass): {floor * 1e3:.0f} ms = "
              f"{floor / full:.2f}x the full step; measured Partial FC step {pfc * 1e3:.0f} ms "
              f"= {pfc / floor:.2f}x the floor."
        )

    notes = (
        f"{_timing.machine_line(info)} N = {N}, D = {D}, ArcFace, SGD(0.1, momentum=0.9), XLA on, "
        "default class-major head (`_feature_major` cases: (D, C) storage); cases of one C "
        "interleaved, "
        f"{args.repeats} rounds, median ± half IQR; ratio = median of per-round ratios to `full` "
        "[quartiles], on wall time and on this process's CPU time. "
        "Memory: peak resident memory (VmHWM) a process adds building the case and running "
        "3 steps (MB). Sharded: C·D·4 B·(1 + 1 momentum slot) / 8 devices, computed (MB). 10 M rows: "
        "linear extrapolation of the 100 k → 1 M slope, not measured."
    )
    table = _timing.markdown_table(
        ["C", "case", "step", "÷ full (wall)", "÷ full (CPU time)", "peak memory (MB)",
         "8-way sharded head (MB/device)"], rows
    )
    return _timing.report(args, "scale_classes", "Many classes: full head vs Partial FC",
                          notes, table + parts_md, payload)


def _extrapolate(sizes):
    """Step time and memory at C = 10M from the slope between the two largest measured C."""
    measured = sorted(sizes)
    if len(measured) < 2 or measured[-1] < 1_000_000:
        return {}
    lo, hi = measured[-2], measured[-1]
    out = {}
    for name, stats in sizes[hi]["cases"].items():
        if name not in sizes[lo]["cases"]:
            continue
        slope = (stats["median"] - sizes[lo]["cases"][name]["median"]) / (hi - lo)
        ms = 1e3 * (stats["median"] + slope * (10_000_000 - hi))
        mem = None
        if name in sizes[hi]["memory_mb"] and name in sizes[lo]["memory_mb"]:
            mslope = (sizes[hi]["memory_mb"][name] - sizes[lo]["memory_mb"][name]) / (hi - lo)
            mem = sizes[hi]["memory_mb"][name] + mslope * (10_000_000 - hi)
        out[name] = (ms, mem)
    return out


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
