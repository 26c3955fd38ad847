"""Gallery search: km.retrieval's exact and inverted-file search against faiss-cpu and NumPy.

For each gallery size G (D = 128 by default), on clustered synthetic embeddings (and, with
``--real``, on embeddings of rendered characters by a briefly trained MLP), side by side in
one process, cases interleaved round by round (``_timing.measure``):

* exact search, 256 queries: ``EmbeddingIndex.search`` (XLA), the compute floor (one XLA
  matmul + top_k of the same shapes, no chunking), faiss ``IndexFlatIP``, NumPy brute force
  (matmul + argpartition), and the exported SavedModel's ``search`` signature;
* exact search, 1 query: the same, against the memory floor (one read of the gallery: the
  faster of an XLA and a NumPy sum over it);
* inverted file, 256 queries: ``IVFIndex`` (in-process: a TensorFlow graph on the TF
  backend, XLA on JAX) and faiss ``IndexIVFFlat`` with the *same*
  coarse centroids (ours, given to faiss' quantizer) and the same ``nprobe``, so both scan
  the same lists; recall@10 against the exact top 10 of 1000 queries, throughput, and the
  ratio to exact search; the SavedModel at the first nprobe reaching recall 0.95.

Memory is the size of each index's state (computed: rows × D × 4 bytes + ids). The real
queries are shuffled before use (they come grouped by character).

Usage:
    python benchmarks/search.py --sizes 100000                 # minutes
    python benchmarks/search.py --sizes 100000 1000000 --real  # the RESULTS.md run
"""

import gc
import math
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _timing  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

import keras_margins as km  # noqa: E402
from keras_margins.retrieval.gallery import compile_function  # noqa: E402

try:  # optional: pip install "keras-margins[faiss]"
    import faiss
except ImportError:  # pragma: no cover - depends on the environment
    faiss = None

K = 10
RECALL_TARGET = 0.95


def parse_args(argv):
    parser = _timing.new_parser(__doc__.splitlines()[0], repeats=7, warmup=1, xla_flag=False)
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000],
                        help="gallery sizes G (none: skip the speed cases)")
    parser.add_argument("--dim", type=int, default=128, help="D")
    parser.add_argument("--batch", type=int, default=256, help="queries per batch")
    parser.add_argument("--queries", type=int, default=1000, help="queries for recall@10")
    parser.add_argument("--chunk-size", type=int, default=8192, help="EmbeddingIndex chunk_size")
    parser.add_argument("--lists", type=int, default=None,
                        help="IVF lists (default: the power of two nearest 4·sqrt(G))")
    parser.add_argument("--nprobes", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    parser.add_argument("--kmeans-iterations", type=int, default=10)
    parser.add_argument("--clusters-per", type=int, default=500,
                        help="synthetic data: one cluster per this many rows")
    parser.add_argument("--real", action="store_true",
                        help="also run on CNN embeddings of rendered characters (km.data.glyphs)")
    parser.add_argument("--real-classes", type=int, default=6000)
    parser.add_argument("--real-epochs", type=int, default=3)
    parser.add_argument("--calibration", action="store_true",
                        help="also check calibration out of sample (own markdown section)")
    parser.add_argument("--calibration-only", action="store_true",
                        help="only the calibration check (with --real: on glyphs too)")
    parser.add_argument("--no-faiss", action="store_true")
    parser.add_argument("--no-saved-model", action="store_true")
    return _timing.parse(parser, argv)


# ----------------------------------------------------------------------------- data
def clustered(n, dim, clusters, seed, noise=1.0):
    """Unit rows drawn around ``clusters`` Gaussian centres (cluster k: centre k + noise)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(12345).normal(size=(clusters, dim)).astype("float32")
    x = centres[rng.integers(0, clusters, n)] + noise * rng.normal(size=(n, dim)).astype("float32")
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def real_embeddings(args):
    """Rendered CJK characters (``km.data.glyphs``, closed set): an MLP on the pixels, trained
    briefly with ArcFace on every character, embeds the training fonts' images (the gallery)
    and the held-out fonts' images (the queries). Cached in the results folder."""
    cache = os.path.join(args.out_dir or tempfile.gettempdir(),
                         f"search_real_{args.real_classes}_{args.dim}.npz")
    if os.path.exists(cache):
        with np.load(cache) as f:
            return f["gallery"], f["queries"], str(f["what"])
    (x, y), info = km.data.glyphs("train", num_classes=args.real_classes, return_info=True)
    (xt, _) = km.data.glyphs("test", num_classes=args.real_classes)
    pixels = lambda images: images.reshape(len(images), -1).astype("float32") / 255.0
    keras.utils.set_random_seed(args.seed)
    model = keras.Sequential([km.models.mlp_backbone(x[0].size, args.dim, hidden=512),
                              km.layers.LargestMarginHead(args.real_classes)])
    model.compile("adam", loss=km.losses.ArcFace(scale=30.0, margin=0.2), jit_compile=True)
    start = time.perf_counter()
    model.fit(pixels(x), y, batch_size=256, epochs=args.real_epochs, verbose=0)
    trained = time.perf_counter() - start
    embed = km.models.embedding_model(model)
    gallery = embed.predict(pixels(x), batch_size=2048, verbose=0)
    queries = embed.predict(pixels(xt), batch_size=2048, verbose=0)
    what = (f"{len(gallery):,} images of {args.real_classes:,} CJK characters rendered in "
            f"{len(info['train_fonts'])} fonts (`km.data.glyphs`), embedded (D = {args.dim}) by "
            f"an MLP on the pixels after {args.real_epochs} epochs of ArcFace ({trained:.0f} s); "
            f"queries: the {len(info['test_fonts'])} held-out fonts' images")
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    np.savez(cache, gallery=gallery, queries=queries, what=what)
    return gallery, queries, what


def exact_truth(gallery, queries, k=K, chunk=65536):
    """Exact top-k ids by NumPy (chunked over the gallery)."""
    best_s = np.full((len(queries), k), -np.inf, "float32")
    best_i = np.zeros((len(queries), k), "int64")
    for start in range(0, len(gallery), chunk):
        s = queries @ gallery[start:start + chunk].T
        top = np.argpartition(-s, min(k, s.shape[1] - 1), axis=1)[:, :k]
        cand_s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], 1)
        cand_i = np.concatenate([best_i, top + start], 1)
        order = np.argsort(-cand_s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, order, 1), np.take_along_axis(cand_i, order, 1)
    return best_i


def recall_at_k(found, truth):
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth)]))


# ----------------------------------------------------------------------------- cases
def bare_floor():
    """One XLA matmul + top_k of the whole (Q, G) scores: the compute floor."""
    return compile_function(lambda q, g: ops.top_k(ops.matmul(q, ops.transpose(g)), K))


def gallery_read():
    return compile_function(lambda g: ops.sum(g))


def numpy_brute(q, g):
    s = q @ g.T
    top = np.argpartition(-s, K, axis=1)[:, :K]
    order = np.argsort(-np.take_along_axis(s, top, 1), axis=1)
    return np.take_along_axis(top, order, 1)


def export(index, folder):
    """The search SavedModel of an identity embedding (inputs are the embeddings)."""
    import tensorflow as tf

    model = keras.Sequential([keras.Input((index.dim,)), keras.layers.Identity()])
    index.threshold = 0.5
    path = km.retrieval.export_search_model(model, index, folder, models_config=False)
    loaded = tf.saved_model.load(path)
    return loaded.signatures["search"], tf


def faiss_ivf(centroids, data, nprobe):
    quantizer = faiss.IndexFlatIP(centroids.shape[1])
    quantizer.add(centroids)
    index = faiss.IndexIVFFlat(quantizer, centroids.shape[1], len(centroids),
                               faiss.METRIC_INNER_PRODUCT)
    index.is_trained = True
    index.add(data)
    index.nprobe = nprobe
    return index, quantizer


def mb(n_bytes):
    return f"{n_bytes / 2**20:,.0f}"


def run_size(args, name, gallery, queries, rows, notes):
    g_count, dim = gallery.shape
    print(f"\n=== {name}: G = {g_count:,}, D = {dim} ===", flush=True)
    truth = exact_truth(gallery, queries[: args.queries])
    batch, one = queries[: args.batch], queries[:1]
    index = km.retrieval.EmbeddingIndex(dim, capacity=g_count, chunk_size=args.chunk_size)
    index.add(gallery, np.arange(g_count))
    found, _ = index.search(queries[: args.queries], K)
    exact_recall = recall_at_k(found, truth)
    g_tensor = ops.convert_to_tensor(gallery)
    bare, read = bare_floor(), gallery_read()
    qb, q1 = ops.convert_to_tensor(batch), ops.convert_to_tensor(one)
    cases = {
        "km exact (XLA)": lambda: np.asarray(index.search_batch(batch, K)[0]),
        "matmul + top_k (XLA)": lambda: np.asarray(bare(qb, g_tensor)[1]),
        "NumPy brute force": lambda: numpy_brute(batch, gallery),
    }
    cases1 = {
        "km exact (XLA)": lambda: np.asarray(index.search_batch(one, K)[0]),
        "matmul + top_k (XLA)": lambda: np.asarray(bare(q1, g_tensor)[1]),
        "read gallery (XLA sum)": lambda: np.asarray(read(g_tensor)),
        "read gallery (NumPy sum)": lambda: gallery.sum(),
        "NumPy brute force": lambda: numpy_brute(one, gallery),
    }
    flat = serve = None
    if faiss is not None and not args.no_faiss:
        flat = faiss.IndexFlatIP(dim)
        flat.add(gallery)
        cases["faiss IndexFlatIP"] = lambda: flat.search(batch, K)
        cases1["faiss IndexFlatIP"] = lambda: flat.search(one, K)
    tmp = tempfile.mkdtemp(prefix="km_search_")
    if not args.no_saved_model and keras.backend.backend() == "tensorflow":
        serve, tf = export(index, os.path.join(tmp, "exact"))
        tb, t1, k_in = tf.constant(batch), tf.constant(one), tf.constant(K)
        cases["km exact (SavedModel)"] = lambda: serve(inputs=tb, k=k_in)["ids"].numpy()
        cases1["km exact (SavedModel)"] = lambda: serve(inputs=t1, k=k_in)["ids"].numpy()
    timed = _timing.measure(cases, args.repeats, args.warmup, args.seed)
    timed1 = _timing.measure(cases1, max(args.repeats, 15), args.warmup, args.seed, min_round_s=0.05)
    floor1 = min(("read gallery (XLA sum)", "read gallery (NumPy sum)"),
                 key=lambda c: timed1[c]["median"])
    exact_name = "km exact (XLA)"
    for case, stats in timed.items():
        qps = args.batch / stats["median"]
        ratio = _timing.paired_ratio(timed, case, "matmul + top_k (XLA)")
        rows.append([name, f"{g_count:,}", "exact", case, f"{args.batch}", _timing.fmt_ms(stats),
                     f"{qps:,.0f}", _timing.fmt_ratio(ratio),
                     f"{exact_recall:.3f}" if case.startswith("km") else "exact",
                     mb(g_count * dim * 4)])
    for case, stats in timed1.items():
        if case.startswith("read"):
            continue
        ratio = _timing.paired_ratio(timed1, case, floor1)
        rows.append([name, f"{g_count:,}", "exact", case, "1", _timing.fmt_ms(stats),
                     f"{1 / stats['median']:,.0f}", f"÷ read: {_timing.fmt_ratio(ratio)}",
                     f"{exact_recall:.3f}" if case.startswith("km") else "exact",
                     mb(g_count * dim * 4)])
    cases = {exact_name: cases[exact_name]}  # free faiss' flat index and the SavedModel
    cases1.clear()
    flat = serve = None  # noqa: F841 - drop the references before the IVF cases
    gc.collect()
    floors = {
        "exact_vs_compute_floor": _timing.paired_ratio(timed, exact_name, "matmul + top_k (XLA)"),
        "exact_batch1_vs_memory_floor": _timing.paired_ratio(timed1, exact_name, floor1),
        "memory_floor_case": floor1,
        "memory_floor_ms": timed1[floor1]["median"] * 1e3,
        "exact_recall": exact_recall,
    }
    if "faiss IndexFlatIP" in timed:
        floors["exact_vs_faiss_flat"] = _timing.paired_ratio(timed, exact_name, "faiss IndexFlatIP")
    # ------------------------------------------------------------------ inverted file
    lists = args.lists or 2 ** round(math.log2(4 * math.sqrt(g_count)))
    ivf = km.retrieval.IVFIndex(dim, num_lists=lists, nprobe=min(args.nprobes), block_size=32)
    start = time.perf_counter()
    ivf.train(gallery, iterations=args.kmeans_iterations, max_sample=64 * lists)
    trained_s = time.perf_counter() - start
    start = time.perf_counter()
    ivf.add(gallery, np.arange(g_count))
    added_s = time.perf_counter() - start
    sizes = ivf.list_sizes()
    centroids = np.asarray(ops.convert_to_numpy(ivf.ivf_centroids.value))
    notes.append(f"{name}, G = {g_count:,}: IVF {lists} lists trained in {trained_s:.0f} s "
                 f"(k-means, {args.kmeans_iterations} iterations on {min(g_count, 64 * lists):,} "
                 f"rows), gallery assigned in {added_s:.0f} s; list sizes min {sizes.min()}, "
                 f"median {int(np.median(sizes))}, max {sizes.max()}.")
    ivf_rows = []
    reached = None
    f_index = None
    if faiss is not None and not args.no_faiss:
        f_index, quantizer = faiss_ivf(centroids, gallery, min(args.nprobes))
    for nprobe in args.nprobes:
        if nprobe > lists:
            continue
        ivf.nprobe = nprobe
        found, _ = ivf.search(queries[: args.queries], K)
        recall = recall_at_k(found, truth)
        ivf_cases = {"km IVF (in-process)": lambda: np.asarray(ivf.search_batch(batch, K)[0]),
                     exact_name: cases[exact_name]}
        f_recall = None
        if f_index is not None:
            f_index.nprobe = nprobe
            _, f_found = f_index.search(queries[: args.queries], K)
            f_recall = recall_at_k(f_found, truth)
            ivf_cases["faiss IndexIVFFlat"] = lambda: f_index.search(batch, K)
        if reached is None and recall >= RECALL_TARGET and not args.no_saved_model \
                and keras.backend.backend() == "tensorflow":
            reached = nprobe
            serve_ivf, tf = export(ivf, os.path.join(tmp, "ivf"))
            tb, k_in = tf.constant(batch), tf.constant(K)
            ivf_cases["km IVF (SavedModel)"] = (
                lambda s=serve_ivf, x=tb, k=k_in: s(inputs=x, k=k)["ids"].numpy())
        t = _timing.measure(ivf_cases, args.repeats, args.warmup, args.seed)
        speedup = _timing.paired_ratio(t, exact_name, "km IVF (in-process)")
        entry = {"nprobe": nprobe, "recall": recall, "faiss_recall": f_recall,
                 "scan_blocks": ivf.scan_blocks(), "km_ms": t["km IVF (in-process)"]["median"] * 1e3,
                 "speedup_vs_exact": speedup}
        for case, stats in t.items():
            if case == exact_name:
                continue
            r = f_recall if case.startswith("faiss") else recall
            vs_exact = _timing.paired_ratio(t, exact_name, case)
            rows.append([name, f"{g_count:,}", f"IVF nprobe {nprobe}", case, f"{args.batch}",
                         _timing.fmt_ms(stats), f"{args.batch / stats['median']:,.0f}",
                         f"× exact: {_timing.fmt_ratio(vs_exact)}", f"{r:.3f}",
                         mb(ivf.capacity * dim * 4 if case.startswith("km") else g_count * (dim * 4 + 8))])
        if "faiss IndexIVFFlat" in t:
            entry["km_vs_faiss"] = _timing.paired_ratio(t, "km IVF (in-process)", "faiss IndexIVFFlat")
            entry["faiss_ms"] = t["faiss IndexIVFFlat"]["median"] * 1e3
        ivf_rows.append(entry)
        print(f"  nprobe {nprobe}: recall@10 {recall:.3f} (faiss {f_recall}), "
              f"{entry['km_ms']:.1f} ms, x{speedup['median']:.1f} exact", flush=True)
    floors["ivf"] = ivf_rows
    floors["ivf_lists"] = lists
    shutil.rmtree(tmp, ignore_errors=True)
    return floors


def floor_lines(name, g_count, f):
    """The issue's speed bars, each with its floor and how close the run came."""
    lines = []
    r = f["exact_vs_compute_floor"]
    lines.append(f"- {name}, G = {g_count:,}: exact search at batch 256 = "
                 f"{_timing.fmt_ratio(r)} × one XLA matmul + top_k (bar ≤ 1.25: "
                 f"{'met' if r['median'] <= 1.25 else 'NOT met'}).")
    if "exact_vs_faiss_flat" in f:
        r = f["exact_vs_faiss_flat"]
        lines.append(f"- {name}, G = {g_count:,}: exact search ÷ faiss IndexFlatIP time = "
                     f"{_timing.fmt_ratio(r)} (bar ≤ 1: {'met' if r['median'] <= 1 else 'NOT met'}).")
    r = f["exact_batch1_vs_memory_floor"]
    lines.append(f"- {name}, G = {g_count:,}: exact search of 1 query = {_timing.fmt_ratio(r)} × "
                 f"one read of the gallery ({f['memory_floor_case']}, "
                 f"{f['memory_floor_ms']:.2f} ms) (bar ≤ 2: {'met' if r['median'] <= 2 else 'NOT met'}).")
    good = [e for e in f["ivf"] if e["recall"] >= RECALL_TARGET]
    if good:
        e = good[0]
        lines.append(f"- {name}, G = {g_count:,}: IVF ({f['ivf_lists']} lists) first reaches "
                     f"recall@10 ≥ {RECALL_TARGET} at nprobe {e['nprobe']} (recall "
                     f"{e['recall']:.3f}) with {e['speedup_vs_exact']['median']:.1f}× exact "
                     f"search's throughput (bar ≥ 10× at G = 10⁶: "
                     f"{'met' if e['speedup_vs_exact']['median'] >= 10 else 'NOT met'}).")
        if "km_vs_faiss" in e:
            r = e["km_vs_faiss"]
            lines.append(f"- {name}, G = {g_count:,}: at that nprobe (same lists, same recall "
                         f"{e['faiss_recall']:.3f} for faiss), km IVF time ÷ faiss IndexIVFFlat = "
                         f"{_timing.fmt_ratio(r)} (bar ≤ 1: {'met' if r['median'] <= 1 else 'NOT met'}).")
    else:
        lines.append(f"- {name}, G = {g_count:,}: IVF never reached recall@10 ≥ {RECALL_TARGET} "
                     f"at the nprobes tried ({[e['nprobe'] for e in f['ivf']]}).")
    return lines


# ----------------------------------------------------------------------------- calibration
def calibration_sets(args):
    """``{name: (templates, template_ids, probes, probe_labels)}``: synthetic identities and,
    with ``--real``, the glyph characters (first half enrolled, held-out fonts as probes)."""
    rng = np.random.default_rng(args.seed)
    centres = rng.normal(size=(4000, args.dim)).astype("float32")
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, 4000, 40_000)
    probes = centres[labels] + 2.5 / np.sqrt(args.dim) * rng.normal(size=(len(labels), args.dim))
    sets = {"synthetic identities": (centres[:2000], np.arange(2000), probes.astype("float32"),
                                     labels)}
    if args.real:
        gallery, queries, _ = real_embeddings(args)
        y = km.data.glyphs("train", num_classes=args.real_classes)[1]
        yt = km.data.glyphs("test", num_classes=args.real_classes)[1]
        enrolled = np.arange(args.real_classes // 2)
        unit = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
        templates = np.stack([unit[y == c].mean(axis=0) for c in enrolled])
        sets["glyphs (real)"] = (templates, enrolled, queries, yt.astype("int64"))
    return sets


def calibration_report(args, info, command):
    """Calibrate on one random half of the probes, measure FAR/TAR on the other half (both
    ways), at FAR 1e-2 and 1e-3."""
    rows = []
    for name, (templates, ids, probes, labels) in calibration_sets(args).items():
        index = km.retrieval.EmbeddingIndex(templates.shape[1], chunk_size=4096)
        index.add(templates, ids)
        half = np.random.default_rng(args.seed).permutation(len(labels)) < len(labels) // 2
        for target in (1e-2, 1e-3):
            for fit, check, direction in ((half, ~half, "A → B"), (~half, half, "B → A")):
                cal = index.calibrate(probes[fit], labels[fit], target_far=target)
                held = index.decision_rates(probes[check], labels[check])
                ratio = held["far"] / target
                rows.append([
                    name, f"{len(ids):,}", f"{target:g}", direction, f"{cal.n_impostor:,}",
                    f"{cal.threshold:.4f}", f"{cal.far:.5f} [{cal.far_interval[0]:.5f}–"
                    f"{cal.far_interval[1]:.5f}]", f"{cal.tar:.4f}", f"{held['far']:.5f}",
                    f"{ratio:.2f} {'✅' if 0.5 <= ratio <= 2 else '❌'}", f"{held['tar']:.4f}",
                ])
                print(" | ".join(rows[-1]), flush=True)
    headers = ["probes", "enrolled", "target FAR", "calibrate → check", "impostor searches",
               "threshold", "FAR on calibration half [95% bootstrap, fixed threshold]",
               "TAR (calibration)", "FAR on the other half", "÷ target (goal 0.5–2)",
               "TAR (other half)"]
    text = (
        f"`python benchmarks/search.py {command}`\n\n"
        f"{_timing.machine_line(info)} `index.calibrate(probes_A, labels_A, target_far)` on "
        "one random half of the probes, then `index.decision_rates` on the other half with "
        "that threshold, and the other way round. Impostor searches: every probe's best "
        "score among the other identities' templates (probes of non-enrolled identities, and "
        "enrolled ones with their own template left out, `leave_mate_out=True`); genuine: "
        "enrolled probes, accepted when the best template is theirs. Synthetic identities: "
        f"4,000 unit centres in D = {args.dim}, the first 2,000 enrolled (the centre is the "
        "template), 40,000 probes = centre + N(0, 2.5²/D) noise. Glyphs: the characters' mean "
        "embedding over the training fonts is the template for the first half of the "
        "characters; the held-out fonts' images of all characters are the probes."
    )
    payload = {"machine": info, "config": _timing.config_of(args), "rows": rows}
    return _timing.report(args, "search_calibration", "Match thresholds out of sample",
                          text, _timing.markdown_table(headers, rows), payload)


def main(argv=None):
    args = parse_args(argv)
    info = _timing.machine_info([faiss] if faiss is not None else [])
    command = " ".join(sys.argv[1:] if argv is None else argv)
    if args.calibration or args.calibration_only:
        calibration_report(args, info, command)
    if args.calibration_only:
        return None
    rows, notes, floors = [], [], {}
    for g_count in args.sizes:
        clusters = max(2, g_count // args.clusters_per)
        gallery = clustered(g_count, args.dim, clusters, seed=args.seed)
        queries = clustered(max(args.queries, args.batch), args.dim, clusters, seed=args.seed + 1)
        floors[f"clustered/{g_count}"] = run_size(args, "clustered", gallery, queries, rows, notes)
    if args.real:
        gallery, queries, what = real_embeddings(args)
        gallery = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        notes.append(f"Real embeddings: {what}.")
        queries = queries[np.random.default_rng(args.seed).permutation(len(queries))]
        floors[f"real/{len(gallery)}"] = run_size(args, "real", gallery.astype("float32"),
                                                  queries.astype("float32"), rows, notes)
    bars = []
    for key, f in floors.items():
        name, g_count = key.split("/")
        bars += floor_lines(name, int(g_count), f)
    headers = ["data", "G", "search", "case", "batch", "time", "queries/s", "ratio", "recall@10",
               "memory (MB)"]
    table = _timing.markdown_table(headers, rows)
    text = (
        f"`python benchmarks/search.py {command}`\n\n"
        f"{_timing.machine_line(info)} D = {args.dim}, k = {K}, "
        f"`EmbeddingIndex(chunk_size={args.chunk_size})`, `IVFIndex(block_size=32)` with "
        "faiss given the same centroids; cases interleaved, "
        f"{args.repeats} rounds (15 for batch 1), median ± half IQR; ratio = median of "
        "per-round ratios [quartiles]: exact rows ÷ the XLA matmul + top_k (batch 256) or ÷ "
        "one read of the gallery (batch 1); IVF rows: exact search's time ÷ this case's "
        "(the throughput gain). Recall@10 against the exact top 10 of "
        f"{args.queries} queries. Memory: the index's stored rows (computed). Shared "
        "2-core machine: compare ratios of one run, not absolute times across runs.\n\n"
        + "\n".join(notes) + "\n\nBars:\n\n" + "\n".join(bars)
    )
    payload = {"machine": info, "config": _timing.config_of(args), "rows": rows, "floors": floors}
    return _timing.report(args, "search", "Gallery search: km.retrieval vs faiss-cpu and NumPy",
                          text, table, payload)


if __name__ == "__main__":
    main()
