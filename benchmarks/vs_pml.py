"""keras_margins against pytorch-metric-learning (PML, torch CPU) on identical data.

Needs the optional ``bench`` extra (``pip install torch pytorch-metric-learning``); without it
the script prints a note and exits 0. For each loss both libraries get the same features,
labels and (for the classification losses) the same initial class weights; the script checks
that the loss values agree, then times one training step of each side by side:

* ArcFace / CosFace (N = 256, D = 512, C classes): our ``LargestMarginHead`` + loss through
  ``model.train_step`` (XLA on and off) vs PML's ``ArcFaceLoss`` / ``CosFaceLoss`` (which own
  the (D, C) weights) + ``torch.optim.SGD`` — forward, backward and the weight update.
  PML's ArcFace margin is in degrees: it gets ``degrees(0.5)``.
* Pair-wise Circle loss (N embeddings, D = 128, N/4 classes × 4): loss + gradient w.r.t. the
  embeddings, ours (``PairCircleLoss``, with and without ``MultiSimilarityMiner``) vs PML's
  ``CircleLoss`` (with its ``MultiSimilarityMiner``).

Goal: our time / PML's time < 1.0.

Usage:
    python benchmarks/vs_pml.py
    python benchmarks/vs_pml.py --classes 1000 10000 --pair-sizes 1024 4096
"""

import math
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _timing  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pair_losses  # noqa: E402
import step_time  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_margins as km  # noqa: E402

ARC_MARGIN = 0.5
COS_MARGIN = 0.35
SCALE = 64.0
LR = 0.01


def import_pml():
    """(torch, pytorch_metric_learning) or None when the bench extra is not installed."""
    try:
        import pytorch_metric_learning
        import pytorch_metric_learning.losses  # noqa: F401
        import pytorch_metric_learning.miners  # noqa: F401
        import torch
    except ImportError:
        return None
    return torch, pytorch_metric_learning


# ----------------------------------------------------------------------------- classification


def classification_pair(name, num_classes, dim, torch, pml):
    """(our builder, PML loss module) sharing the same initial (D, C) weights."""
    if name == "ArcFace":
        theirs = pml.losses.ArcFaceLoss(num_classes, dim, margin=math.degrees(ARC_MARGIN),
                                        scale=SCALE)
        ours_loss = lambda: km.losses.ArcFace(scale=SCALE, margin=ARC_MARGIN)  # noqa: E731
    else:
        theirs = pml.losses.CosFaceLoss(num_classes, dim, margin=COS_MARGIN, scale=SCALE)
        ours_loss = lambda: km.losses.CosFace(scale=SCALE, margin=COS_MARGIN)  # noqa: E731
    kernel = theirs.W.detach().numpy().copy()  # PML's W is (D, C), like our kernel

    def builder():
        head = km.layers.LargestMarginHead(num_classes, kernel_layout="feature_major")
        model = keras.Sequential([keras.Input((dim,)), head])
        head.kernel.assign(kernel)
        return model, ours_loss()

    return builder, theirs


def torch_class_step(loss_module, emb, labels, torch):
    opt = torch.optim.SGD(loss_module.parameters(), lr=LR)

    def run():
        opt.zero_grad(set_to_none=True)
        loss = loss_module(emb, labels)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return run


def bench_classification(name, num_classes, args, torch, pml):
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((args.batch, args.dim)).astype("float32")
    y = rng.integers(0, num_classes, args.batch).astype("int64")
    torch.manual_seed(args.seed)
    builder, theirs = classification_pair(name, num_classes, args.dim, torch, pml)
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
    model, loss = builder()
    value_ours = float(loss(y.astype("int32"), model(x)))
    with torch.no_grad():
        value_theirs = float(theirs(x_t, y_t))
    cases = pml_cases(torch_class_step(theirs, x_t, y_t, torch), torch, args)
    x_tf, y_tf = tf.constant(x), tf.constant(y.astype("int32"))
    for xla in args.xla_modes:
        cases[f"ours|xla={'on' if xla else 'off'}"] = step_time.make_step(builder, x_tf, y_tf, xla)
    return cases, (value_ours, value_theirs)


# ----------------------------------------------------------------------------- pair-wise Circle


def torch_pair_step(loss_module, miner, emb, labels):
    def run():
        e = emb.detach().requires_grad_(True)
        pairs = miner(e, labels) if miner is not None else None
        loss = loss_module(e, labels, pairs)
        loss.backward()
        return float(loss.detach())

    return run


def bench_pairs(name, n, args, torch, pml):
    labels, emb = pair_losses.make_inputs(n, args.pair_dim, args.seed)
    mined = "MultiSimilarity" in name
    ours = km.losses.PairCircleLoss(
        margin=0.4, gamma=80.0, miner=km.miners.MultiSimilarityMiner(0.1) if mined else None
    )
    theirs = pml.losses.CircleLoss(m=0.4, gamma=80.0)
    miner = pml.miners.MultiSimilarityMiner(epsilon=0.1) if mined else None
    e_t = torch.from_numpy(emb.numpy())
    y_t = torch.from_numpy(labels.numpy().astype("int64"))
    value_ours = float(ours(labels, emb))
    with torch.no_grad():
        value_theirs = float(theirs(e_t, y_t, miner(e_t, y_t) if miner is not None else None))
    cases = pml_cases(torch_pair_step(theirs, miner, e_t, y_t), torch, args)
    for xla in args.xla_modes:
        cases[f"ours|xla={'on' if xla else 'off'}"] = pair_losses.make_step(ours, labels, emb, xla)
    return cases, (value_ours, value_theirs)


# ----------------------------------------------------------------------------- driver


def pml_cases(run, torch, args):
    """PML's step with 1 thread and with all usable cores (each call sets its thread count).

    On a loaded machine torch's OpenMP workers can spin against other processes and make the
    multi-threaded step much slower than the single-threaded one; ours is compared with the
    faster of the two, so PML is never handicapped by a thread setting.
    """

    def with_threads(k):
        def call():
            torch.set_num_threads(k)
            return run()

        return call

    counts = sorted({1, args.threads})
    return {f"pml|threads={k}": with_threads(k) for k in counts}


def run_group(label, size, cases, values, args):
    results = _timing.measure(cases, args.repeats, args.warmup, args.seed)
    ours, theirs = values
    pml_keys = [k for k in results if k.startswith("pml|")]
    best = min(pml_keys, key=lambda k: results[k]["median"])
    row = {"loss": label, "size": size, "value_ours": ours, "value_pml": theirs,
           "agree": bool(abs(ours - theirs) <= args.rtol * max(1.0, abs(theirs))),
           "time_pml": results[best], "pml_best": best.split("|")[1],
           "pml_all": {k: results[k] for k in pml_keys}}
    for mode in ("on", "off"):
        key = f"ours|xla={mode}"
        if key in results:
            row[f"time_ours_xla_{mode}"] = results[key]
            row[f"ratio_xla_{mode}"] = _timing.paired_ratios(results, key, best)
    return row


def table(rows):
    headers = ["loss", "size", "value ours / PML", "agree", "PML step", "ours, XLA on",
               "ours ÷ PML (wall)", "ours ÷ PML (CPU)", "ours, XLA off",
               "ours ÷ PML, XLA off (wall)", "< 1.0?"]
    out = []
    for r in rows:
        on, off = r.get("ratio_xla_on"), r.get("ratio_xla_off")
        out.append([
            r["loss"], r["size"], f"{r['value_ours']:.5f} / {r['value_pml']:.5f}",
            "yes" if r["agree"] else "**no**",
            f"{_timing.fmt_ms(r['time_pml'])} ({r['pml_best'].replace('=', ' ')})",
            _timing.fmt_ms(r["time_ours_xla_on"]) if on else "—",
            _timing.fmt_ratio(on["wall"]) if on else "—",
            _timing.fmt_ratio(on["cpu"]) if on else "—",
            _timing.fmt_ms(r["time_ours_xla_off"]) if off else "—",
            _timing.fmt_ratio(off["wall"]) if off else "—",
            "—" if on is None else ("yes" if on["wall"]["median"] < 1.0 else "**no**"),
        ])
    return _timing.markdown_table(headers, out)


def parse_args(argv):
    parser = _timing.new_parser(__doc__.splitlines()[0], repeats=15)
    parser.add_argument("--batch", type=int, default=256, help="N of the classification losses")
    parser.add_argument("--dim", type=int, default=512, help="D of the classification losses")
    parser.add_argument("--classes", type=int, nargs="+", default=[1000, 10000], help="C values")
    parser.add_argument("--pair-sizes", type=int, nargs="+", default=[256, 1024], help="N")
    parser.add_argument("--pair-dim", type=int, default=128, help="D of the pair losses")
    parser.add_argument("--rtol", type=float, default=1e-4, help="value agreement tolerance")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads besides 1 (default: the usable cores)")
    return _timing.parse(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    found = import_pml()
    if found is None:
        print("vs_pml: torch / pytorch-metric-learning not installed (optional `bench` extra: "
              "pip install torch pytorch-metric-learning); skipped.")
        return None
    torch, pml = found
    args.threads = args.threads or len(os.sched_getaffinity(0))
    info = _timing.machine_info((torch, pml))
    rows = []
    groups = [(name, c, bench_classification) for c in args.classes
              for name in ("ArcFace", "CosFace")]
    groups += [(name, n, bench_pairs) for n in args.pair_sizes
               for name in ("PairCircleLoss", "PairCircleLoss + MultiSimilarityMiner")]
    for name, size, bench in groups:
        print(f"{name} ({size}): compiling and timing ...", flush=True)
        cases, values = bench(name, size, args, torch, pml)
        size_label = f"C={size:,}" if bench is bench_classification else f"N={size:,}"
        rows.append(run_group(name, size_label, cases, values, args))
    notes = (
        f"Classification: N = {args.batch}, D = {args.dim}, one SGD training step of the (D, C) "
        f"weights on fixed features (PML: `loss(emb, labels)`, `backward()`, `SGD.step()`, "
        f"eager torch, timed with 1 and with {args.threads} threads, the faster kept; "
        f"ours: `model.train_step` under "
        f"`tf.function`). Pairs: D = {args.pair_dim}, loss + gradient w.r.t. the embeddings. "
        f"Same inputs and initial weights on both sides; values agree when |ours − PML| ≤ "
        f"{args.rtol:g}·max(1, |PML|). Median of {args.repeats} interleaved rounds (± = half "
        f"the IQR); ratios are medians of per-round paired ratios [IQR] on wall time (the goal "
        f"column) and on process CPU time (ours uses both cores, PML's faster setting is often "
        f"1 thread, so CPU time compares total work).\n\n"
        f"Machine: {_timing.machine_line(info)}"
    )
    payload = {"benchmark": "vs_pml", "machine": info,
               "config": _timing.config_of(args),
               "rows": rows}
    return _timing.report(args, "vs_pml", "keras_margins vs pytorch-metric-learning", notes,
                          table(rows), payload)


if __name__ == "__main__":
    main()
