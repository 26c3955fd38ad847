"""The search computations of the indexes, in ``keras.ops`` (private to ``km.retrieval``).

Everything here is a pure function of arrays, so the same code runs compiled with XLA on the
TensorFlow and JAX backends, and traced into a plain TensorFlow graph (stock ops only) by
``km.retrieval.export_search_model``. ``k`` is a Python int under XLA (static shapes); in
the exported graph it may be a scalar tensor (a serving input).

Exact search never builds the (Q, G) score matrix: it walks the gallery in chunks of
``chunk`` rows, keeps the best ``k`` of each query so far and merges each chunk's best into
them. Within a chunk, with a static ``k``, the top-k is found through block maxima: the k
elements with the largest scores lie in the k blocks whose maxima are largest (each block
maximum among the top k blocks is itself >= every element of the other blocks' maxima, so
an element of a lower block is beaten by k larger ones), which replaces a top-k over the
whole chunk by a max over it plus a top-k over k blocks.

Gallery layout of :func:`exact_search`: ``embeddings`` (S·P, D) and ``ids`` (S·P,) are S
shards of P rows each; item n of the gallery is in shard n % S at row n // S, so every shard
holds ceil(size / S) or one less items in its first rows, and the free rows have id -1.
"""

import math

import numpy as np
from keras import ops

#: Rows of a block of the block-maximum top-k (see the module docstring).
BLOCK = 128
NEG_INF = float("-inf")


def _is_static(k):
    return isinstance(k, (int, np.integer))


def sorted_top_k(x, k):
    """``top_k`` through a sort: XLA's SPMD partitioner splits a sort along its leading
    (batch) axes, while it gathers a TopK's whole operand on every device first."""
    where = ops.argsort(-x, axis=-1)[..., :k]
    return ops.take_along_axis(x, where, axis=-1), where


def _merge(best_scores, best_pos, scores, pos, k, top_k=ops.top_k):
    """Best ``k`` along the last axis of the concatenation of two (…, k') candidate sets."""
    scores = ops.concatenate([best_scores, scores], axis=-1)
    pos = ops.concatenate([best_pos, pos], axis=-1)
    top, where = top_k(scores, k)
    return top, ops.take_along_axis(pos, where, axis=-1)


def chunk_top_k(scores, k, block=BLOCK, top_k=ops.top_k):
    """``(values, positions)`` of the ``k`` largest of ``scores`` (…, C) along the last axis.

    With a static ``k`` and ``C`` a multiple of ``block`` with at least ``k`` blocks, through
    block maxima (exact; ties aside); otherwise one ``top_k`` (``k`` may be a tensor there).
    """
    width = scores.shape[-1]
    if not (_is_static(k) and width is not None and width % block == 0 and width // block >= k
            and k * block < width):
        return top_k(scores, k)
    lead = tuple(-1 if d is None else d for d in scores.shape[:-1])  # at most one unknown
    blocks = ops.reshape(scores, lead + (width // block, block))
    _, chosen = top_k(ops.max(blocks, axis=-1), k)                          # (…, k)
    picked = ops.take_along_axis(blocks, ops.expand_dims(chosen, -1), axis=-2)  # (…, k, block)
    values, where = top_k(ops.reshape(picked, lead + (k * block,)), k)
    rows = ops.take_along_axis(chosen, where // block, axis=-1) * block + where % block
    return values, rows


def exact_search(queries, embeddings, ids, size, k, chunk, shards=1, constrain=None):
    """Exact top-k inner products of ``queries`` against a sharded, chunked gallery.

    Args:
        queries: (Q, D) float32 (unit rows for cosine search).
        embeddings: (S·P, D) float32 gallery rows, P a multiple of ``chunk``.
        ids: (S·P,) int32 ids, -1 on free rows.
        size: scalar int, the number of items (rows in use).
        k: results per query, 1 <= k <= size (a Python int; a scalar tensor in a TF graph).
        chunk: rows of a shard scored at once (static).
        shards: S (static).
        constrain: optional function applied to the (S, Q, ·) intermediates to keep them
            split over devices along S (``keras.distribution.distribute_tensor``); the
            per-shard selections then sort instead of calling TopK (see :func:`sorted_top_k`),
            so each device ranks its own shard and only S·k candidates per query move.

    Returns:
        ``(ids (Q, k) int32, scores (Q, k) float32)``, best first.
    """
    keep = constrain or (lambda x: x)
    select = ops.top_k if constrain is None else sorted_top_k
    dim = embeddings.shape[-1]
    per_shard = embeddings.shape[0] // shards
    gallery = keep(ops.reshape(embeddings, (shards, per_shard, dim)))
    size = ops.cast(size, "int32")
    # Items of shard s: (size - s + S - 1) // S; the loop covers the fullest shard.
    shard_index = ops.arange(shards, dtype="int32")
    filled = ops.floor_divide(size - shard_index + (shards - 1), shards)        # (S,)
    fullest = ops.max(filled)
    n_queries = ops.shape(queries)[0]

    def scan(carry, first, steps, rows_at_once, masked):
        """Fold ``steps`` slices of ``rows_at_once`` rows from row ``first`` into ``carry``
        (``masked``: rows past a shard's items score -inf)."""
        width = min(k, rows_at_once) if _is_static(k) else ops.minimum(k, rows_at_once)
        offsets = ops.arange(rows_at_once, dtype="int32")

        def body(step, carry):
            best_scores, best_rows = carry
            start = ops.cast(first + step * rows_at_once, "int32")
            zero = start * 0  # start indices of one integer type (JAX with x64 enabled)
            block = ops.slice(gallery, (zero, start, zero), (shards, rows_at_once, dim))
            if shards == 1:  # a plain matmul (XLA's dot is faster than a batch of one)
                scores = ops.expand_dims(ops.matmul(queries, ops.transpose(block[0])), 0)
            else:
                scores = keep(ops.einsum("qd,scd->sqc", queries, block))       # (S, Q, C)
            if masked:
                rows = start + offsets
                valid = ops.expand_dims(rows[None, :] < filled[:, None], 1)     # (S, 1, C)
                scores = ops.where(valid, scores, NEG_INF)
            top, where = chunk_top_k(scores, width, top_k=select)
            return _merge(best_scores, best_rows, top, where + start, k, top_k=select)

        return ops.fori_loop(0, steps, body, carry)

    init = (
        keep(ops.full((shards, n_queries, k), NEG_INF, dtype="float32")),
        keep(ops.zeros((shards, n_queries, k), dtype="int32")),
    )
    # Whole chunks that every shard fills (no mask), then the rest in slices of chunk / 8
    # rows, masked, so that at most chunk / 8 - 1 rows past a shard's items are scored (the
    # storage is a whole number of chunks).
    full = ops.floor_divide(ops.min(filled), chunk)
    tail = chunk // 8 if chunk % 8 == 0 else chunk
    carry = scan(init, 0, full, chunk, masked=False)
    rest = ops.floor_divide(fullest - full * chunk + (tail - 1), tail)
    best_scores, best_rows = scan(carry, full * chunk, rest, tail, masked=True)
    # Rows of shard s start at s·P; merge the S shards' best (S·k candidates per query).
    slots = best_rows + ops.reshape(shard_index * per_shard, (shards, 1, 1))
    if shards == 1:
        scores, slots = best_scores[0], slots[0]
    else:
        flat_scores = ops.reshape(ops.transpose(best_scores, (1, 0, 2)), (n_queries, -1))
        flat_slots = ops.reshape(ops.transpose(slots, (1, 0, 2)), (n_queries, -1))
        scores, where = ops.top_k(flat_scores, k)
        slots = ops.take_along_axis(flat_slots, where, axis=-1)
    return ops.take(ids, slots, axis=0), scores


# ----------------------------------------------------------------------------- inverted file
def probe_lists(queries, centroids, list_blocks, nprobe):
    """Each query's ``nprobe`` lists of largest centroid score, best first, and their block
    counts: ``(lists (Q, P), counts (Q, P))`` int32."""
    _, lists = ops.top_k(ops.matmul(queries, ops.transpose(centroids)), nprobe)
    return lists, ops.take(list_blocks, lists, axis=0)


def block_numbers(lists, counts, table, budget):
    """Blocks each query scans: its probed lists' blocks, in list order, cut at ``budget``.

    Args:
        lists, counts: (Q, P) from :func:`probe_lists`.
        table: (L, M) int32 block numbers of each list (block 0 is an empty block).
        budget: blocks per query, an int or (in a TensorFlow graph) a scalar tensor.

    Returns:
        (Q, budget) int32 block numbers (0 past the probed lists' blocks).
    """
    nprobe = lists.shape[1]
    ends = ops.cumsum(counts, axis=1)
    starts = ends - counts
    slot = ops.arange(budget, dtype="int32")
    # The probed list holding slot j: the number of lists that end at or before j.
    which = ops.sum(ops.cast(ends[:, :, None] <= slot[None, None, :], "int32"), axis=1)
    inside = which < nprobe
    which = ops.minimum(which, nprobe - 1)
    offset = slot[None, :] - ops.take_along_axis(starts, which, axis=1)
    chosen = ops.take_along_axis(lists, which, axis=1)
    width = table.shape[1]
    flat = ops.reshape(table, (-1,))
    number = ops.take(flat, chosen * width + ops.minimum(offset, width - 1), axis=0)
    return ops.where(inside, number, 0)


def ivf_search(queries, centroids, list_blocks, table, blocks, block_ids, k, nprobe, budget,
               rows_per_block, query_chunk):
    """Top-k inner products over the rows of the probed lists (see :func:`block_numbers`).

    ``blocks`` (B·R, D) and ``block_ids`` (B·R,) hold B blocks of R = ``rows_per_block`` rows
    (id -1 on free rows). Queries are scanned ``query_chunk`` at a time (the gathered rows of
    a chunk of queries are the largest intermediate). ``budget``: blocks scanned per query, a
    static int (XLA); or None in a TensorFlow graph, where each chunk of queries scans as
    many blocks as the most any of them needs (all its probed lists, none padded beyond
    that). Returns ``(ids (Q, k), scores (Q, k))``; a query whose scanned rows are fewer than
    ``k`` gets id -1 and score -inf in the remaining places.
    """
    dim = blocks.shape[-1]
    blocks3 = ops.reshape(blocks, (-1, rows_per_block, dim))
    ids2 = ops.reshape(block_ids, (-1, rows_per_block))
    n_queries = ops.shape(queries)[0]
    padded = ((n_queries + query_chunk - 1) // query_chunk) * query_chunk
    padded_queries = ops.pad(queries, ((0, padded - n_queries), (0, 0)))
    lists, counts = probe_lists(padded_queries, centroids, list_blocks, nprobe)
    static = _is_static(k) and budget is not None

    def body(step, carry):
        out_scores, out_ids = carry
        start = ops.cast(step * query_chunk, "int32")
        zero = start * 0
        q = ops.slice(padded_queries, (start, zero), (query_chunk, dim))
        chunk_lists = ops.slice(lists, (start, zero), (query_chunk, nprobe))
        chunk_counts = ops.slice(counts, (start, zero), (query_chunk, nprobe))
        blocks_here = budget
        if budget is None:
            blocks_here = ops.maximum(ops.max(ops.sum(chunk_counts, axis=1)), 1)
        number = block_numbers(chunk_lists, chunk_counts, table, blocks_here)
        rows = ops.take(blocks3, number, axis=0)                          # (q, budget, R, D)
        scores = ops.einsum("qd,qbrd->qbr", q, rows)
        found = ops.take(ids2, number, axis=0)                            # (q, budget, R)
        scores = ops.reshape(ops.where(found >= 0, scores, NEG_INF), (query_chunk, -1))
        found = ops.reshape(found, (query_chunk, -1))
        scanned = blocks_here * rows_per_block
        width = min(k, scanned) if static else ops.minimum(k, scanned)
        top, where = ops.top_k(scores, width)
        got = ops.take_along_axis(found, where, axis=1)
        if not static or width < k:  # fewer rows scanned than k: pad the results
            fill = k - width
            top = ops.concatenate([top, ops.full((query_chunk, fill), NEG_INF, "float32")], 1)
            got = ops.concatenate([got, ops.full((query_chunk, fill), -1, "int32")], 1)
        got = ops.where(top > NEG_INF, got, -1)
        out_scores = ops.slice_update(out_scores, (start, zero), top)
        out_ids = ops.slice_update(out_ids, (start, zero), got)
        return out_scores, out_ids

    init = (ops.zeros((padded, k), "float32"), ops.zeros((padded, k), "int32"))
    scores, found = ops.fori_loop(0, padded // query_chunk, body, init)
    return found[:n_queries], scores[:n_queries]


def scan_runs(table, list_blocks, list_rows, rows_per_block, window_blocks):
    """Host-side plan of :func:`ivf_scan` (NumPy): each list cut into *runs*, stretches of at
    most ``window_blocks`` blocks with consecutive numbers in the store, so that a run is one
    contiguous slice of rows.

    Returns ``(first, offset, rows, count)``: (L, M') int32 first block, position in the list
    of its first row and rows in use of run j of list l; (L,) int32 runs per list.
    """
    table = np.asarray(table, "int64")
    blocks = np.asarray(list_blocks, "int64")
    used_rows = np.asarray(list_rows, "int64")
    lists, width = table.shape
    j = np.arange(width)[None, :]
    inside = j < blocks[:, None]
    follows = np.zeros_like(inside)
    follows[:, 1:] = table[:, 1:] == table[:, :-1] + 1
    stretch = np.where(inside & ~follows, j, 0)
    stretch = np.maximum.accumulate(stretch, axis=1)  # first block of each block's stretch
    starts = inside & (~follows | ((j - stretch) % window_blocks == 0))
    count = starts.sum(axis=1)
    runs = max(1, int(count.max()) if lists else 1)
    first = np.zeros((lists, runs), "int32")
    offset = np.zeros((lists, runs), "int32")
    rows = np.zeros((lists, runs), "int32")
    which, where = np.nonzero(starts)
    slot = np.arange(len(which)) - np.searchsorted(which, which, side="left")
    # The run starting at block j ends before the next start in its list (or at its last block).
    nxt = np.where(starts, j, width)
    nxt = np.minimum.accumulate(nxt[:, ::-1], axis=1)[:, ::-1]
    end = np.concatenate([nxt[:, 1:], np.full((lists, 1), width)], axis=1)
    end = np.minimum(end, blocks[:, None])
    first[which, slot] = table[which, where]
    offset[which, slot] = where * rows_per_block
    rows[which, slot] = np.minimum(end[which, where] * rows_per_block, used_rows[which]) \
        - where * rows_per_block
    return first, offset, np.maximum(rows, 0), count.astype("int32")


def ivf_scan(queries, centroids, table, rows, row_ids, run_first, run_offset, run_rows,
             run_count, k, nprobe, rows_per_block, window, group, width):
    """Inverted-file top-k that reads each probed list once per batch of queries.

    The (query, probed list) pairs of the batch are sorted by list, so the queries probing a
    list are neighbours; each list is read run by run (:func:`scan_runs`: ``window`` rows at
    a time, one contiguous slice of the store, no gather) and scored against ``group`` of its
    queries at once by a matrix product — faiss' query grouping by list, with the rows shared
    by the queries of a group. The scores of each pair go to its row of a (pairs, ``width``)
    buffer at the rows' positions in the list; the pairs' best ``k`` are merged per query.
    Every probed list is scanned in full, as by faiss' ``IndexIVFFlat``.

    Args:
        queries: (Q, D) float32. centroids: (L, D). table: (L, M) block numbers of each list.
        rows: (B·R, D) the block store; row_ids: (B·R,) int32 ids (-1 on free rows).
        run_first, run_offset, run_rows, run_count: the plan of :func:`scan_runs`.
        k, nprobe, rows_per_block (R), window (rows per slice, a multiple of R and at most
        the store's rows), group (queries scored together), width (buffer columns, a
        multiple of 32 and at least 2·window + the longest list): static ints.

    Returns:
        ``(ids (Q, k) int32, scores (Q, k) float32)``; -1 / -inf where the probed lists hold
        fewer than ``k`` rows.
    """
    dim = rows.shape[-1]
    n_queries = queries.shape[0]
    pairs = n_queries * nprobe
    runs = run_first.shape[1]
    total_rows = rows.shape[0]
    _, lists = ops.top_k(ops.matmul(queries, ops.transpose(centroids)), nprobe)
    flat = ops.reshape(ops.cast(lists, "int32"), (-1,))
    order = ops.cast(ops.argsort(flat), "int32")
    sorted_lists = ops.take(flat, order, axis=0)                                  # (QP,)
    pair_queries = ops.take(queries, order // nprobe, axis=0)
    pair_queries = ops.concatenate([pair_queries, ops.zeros((group, dim), queries.dtype)], 0)
    # Pairs of one list form a segment; its first pair of every `group` heads a group.
    position = ops.arange(pairs, dtype="int32")
    new = ops.concatenate([ops.ones((1,), "int32"),
                           ops.cast(sorted_lists[1:] != sorted_lists[:-1], "int32")], 0)
    segment = ops.cumsum(new) - 1
    sizes = ops.segment_sum(ops.ones((pairs,), "int32"), segment, num_segments=pairs)
    seg_first = ops.take(ops.cumsum(sizes) - sizes, segment, axis=0)
    seg_end = seg_first + ops.take(sizes, segment, axis=0)
    head = ops.equal((position - seg_first) % group, 0)
    members = ops.minimum(group, seg_end - position)
    # Work items: (group head, run of its list); item t belongs to the head whose range holds t.
    items = ops.where(head, ops.take(run_count, sorted_lists, axis=0), 0)
    ends = ops.cumsum(items)
    total = ends[-1]
    slots = pairs * runs
    marks = ops.scatter(ops.expand_dims(ops.minimum(ends, slots), 1),
                        ops.ones((pairs,), "int32"), (slots + 1,))
    owner = ops.minimum(ops.cumsum(marks)[:slots], pairs - 1)                     # (T,)
    run = ops.arange(slots, dtype="int32") - ops.take(ends - items, owner, axis=0)
    run = ops.clip(run, 0, runs - 1)
    cell = ops.take(sorted_lists, owner, axis=0) * runs + run
    start = ops.take(ops.reshape(run_first, (-1,)), cell, axis=0) * rows_per_block
    begin = ops.minimum(start, total_rows - window)  # a slice may not leave the store
    shift = start - begin
    column = window + ops.take(ops.reshape(run_offset, (-1,)), cell, axis=0) - shift
    length = ops.take(ops.reshape(run_rows, (-1,)), cell, axis=0)
    count = ops.take(members, owner, axis=0)
    offsets = ops.arange(window, dtype="int32")
    slots_in_group = ops.arange(group, dtype="int32")

    def body(item, buffer):
        pair, row0, col = owner[item], begin[item], column[item]
        zero = pair * 0
        block = ops.slice(rows, (row0, zero), (window, dim))
        q = ops.slice(pair_queries, (pair, zero), (group, dim))
        scores = ops.matmul(q, ops.transpose(block))                             # (group, window)
        valid = ((offsets >= shift[item]) & (offsets < shift[item] + length[item]))[None, :] \
            & (slots_in_group < count[item])[:, None]
        old = ops.slice(buffer, (pair, col), (group, window))
        return ops.slice_update(buffer, (pair, col), ops.where(valid, scores, old))

    buffer = ops.full((pairs + group, width), NEG_INF, dtype="float32")
    buffer = ops.fori_loop(0, total, body, buffer)
    top, where = chunk_top_k(buffer[:pairs], k, block=32)                        # (QP, k)
    place = ops.maximum(where - window, 0)
    table_width = table.shape[1]
    block_of = ops.take(ops.reshape(table, (-1,)),
                        ops.expand_dims(sorted_lists, 1) * table_width
                        + ops.minimum(place // rows_per_block, table_width - 1), axis=0)
    found = ops.take(row_ids, block_of * rows_per_block + place % rows_per_block, axis=0)
    found = ops.where(top > NEG_INF, found, -1)
    back = ops.argsort(order)                                                    # pairs by query
    top = ops.reshape(ops.take(top, back, axis=0), (n_queries, nprobe * k))
    found = ops.reshape(ops.take(found, back, axis=0), (n_queries, nprobe * k))
    best, pick = ops.top_k(top, k)
    return ops.take_along_axis(found, pick, axis=1), best


# ----------------------------------------------------------------------------- k-means
def assign_sums(sample, centroids, chunk, bias=0.0):
    """One Lloyd step's statistics: per centroid, the sum and count of the ``sample`` rows
    nearest to it — largest ``x·c + bias_c`` (bias 0: inner product; -|c|²/2: squared
    distance) — scanning ``chunk`` rows at a time.

    ``sample`` (N, D) with N a multiple of ``chunk``; rows of all zeros are ignored (padding).
    Returns ``(sums (L, D), counts (L,), total score)``.
    """
    n_lists, dim = centroids.shape
    steps = sample.shape[0] // chunk

    def body(step, carry):
        sums, counts, total = carry
        start = ops.cast(step * chunk, "int32")
        rows = ops.slice(sample, (start, start * 0), (chunk, dim))
        scores = ops.matmul(rows, ops.transpose(centroids)) + bias
        nearest = ops.argmax(scores, axis=1)
        used = ops.cast(ops.any(rows != 0, axis=1), "float32")
        sums = sums + ops.segment_sum(rows, nearest, num_segments=n_lists)
        counts = counts + ops.segment_sum(used, nearest, num_segments=n_lists)
        total = total + ops.sum(ops.max(scores, axis=1) * used)
        return sums, counts, total

    init = (ops.zeros((n_lists, dim), "float32"), ops.zeros((n_lists,), "float32"),
            ops.zeros((), "float32"))
    return ops.fori_loop(0, steps, body, init)


def nearest_centroid(x, centroids):
    """Index of the centroid with the largest inner product, per row of ``x`` (int32)."""
    return ops.cast(ops.argmax(ops.matmul(x, ops.transpose(centroids)), axis=1), "int32")


def round_up(value, multiple):
    return int(math.ceil(value / multiple) * multiple)
