"""Open-set scores: TAR at a false-accept rate and the detection-and-identification rate at a
false-positive identification rate, with bootstrap intervals (evaluation-time NumPy on the
host).

Decisions are "accept if score >= threshold" on similarities (larger = more alike). The
threshold for a target false-accept rate ``far`` is the smallest one that accepts at most
``floor(far · n)`` of the ``n`` impostor scores, so the rate achieved on those scores never
exceeds the target.

Identification terms follow NIST's face-recognition vendor tests (Grother, Ngan & Hanaoka,
NISTIR 8271, 2019, Sec. 3): a *mated* search is one whose identity is enrolled in the
gallery, a *non-mated* one is not. At threshold t and rank r,

* FPIR(t) = fraction of non-mated searches whose best gallery score is >= t;
* DIR(t, r) (= TPIR, = 1 - FNIR) = fraction of mated searches whose mate is among the r
  best-scored gallery entries with a score >= t.

Intervals are percentile bootstrap intervals (Efron & Tibshirani, "An Introduction to the
Bootstrap", 1993, Ch. 13): genuine and impostor scores are resampled independently with
replacement and the threshold is chosen again on every resample, so the interval also covers
the threshold's own sampling error.
"""

import numpy as np

from keras_margins.metrics.retrieval import as_embeddings, as_label_vector, pairwise_scores


def _scores(x, name):
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"`{name}` must be a rank-1 array of scores; got shape {x.shape}.")
    if x.size == 0:
        raise ValueError(f"`{name}` must hold at least one score.")
    if x.dtype.kind not in "fiu":
        raise ValueError(f"`{name}` must hold numbers; got dtype {x.dtype}.")
    if x.dtype.kind != "f":
        x = x.astype("float64")
    if np.any(np.isnan(x)) or np.any(np.isposinf(x)):
        raise ValueError(f"`{name}` contains NaN or +inf values.")
    return x


def _check_rate(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not 0.0 < float(value) < 1.0:
        raise ValueError(f"`{name}` must be a rate in (0, 1); got {value!r}.")
    return float(value)


def _check_bootstrap(n_bootstrap, confidence):
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)) \
            or n_bootstrap < 0:
        raise ValueError(f"`n_bootstrap` must be an integer >= 0; got {n_bootstrap!r}.")
    _check_rate(confidence, "confidence")


def threshold_at_far(impostor_scores, far):
    """The smallest threshold t with ``mean(impostor_scores >= t) <= far``.

    With the n impostor scores sorted in decreasing order s_1 >= s_2 >= ... and m =
    floor(far · n) accepts allowed, t is the next representable number above s_{m+1} (in the
    scores' own float type), so s_{m+1} and everything below it is rejected.

    Args:
        impostor_scores: (n,) similarities of pairs or searches that must be rejected.
        far: the target false-accept rate, in (0, 1).

    Returns:
        The threshold, a float of the scores' dtype.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> t = km.metrics.threshold_at_far(np.float32([0.9, 0.5, 0.4, 0.3]), far=0.25)
    >>> bool(np.float32(0.9) >= t), bool(np.float32(0.5) >= t)
    (True, False)
    """
    scores = _scores(impostor_scores, "impostor_scores")
    far = _check_rate(far, "far")
    ordered = np.sort(scores)[::-1]
    allowed = int(np.floor(far * len(ordered) + 1e-9))
    if allowed >= len(ordered):  # pragma: no cover - far < 1 keeps allowed < n
        return ordered[-1]
    return np.nextafter(ordered[allowed], np.array(np.inf, dtype=ordered.dtype))


def _resampled_counts(rng, n, rounds):
    """(rounds, n) multiplicities of a bootstrap resample of n items."""
    return np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(rounds)])


def tar_at_far(genuine_scores, impostor_scores, far=1e-3, n_bootstrap=1000, confidence=0.95,
               seed=0):
    """True-accept rate at the threshold of a target false-accept rate, with intervals.

    The threshold is :func:`threshold_at_far` of the impostor scores; TAR = mean(genuine >=
    t), FAR = mean(impostor >= t) (<= ``far``). With ``n_bootstrap > 0`` both sets are
    resampled ``n_bootstrap`` times (independently, with replacement), giving percentile
    intervals of coverage ``confidence`` for two questions:

    * how precise is TAR@FAR as a measurement? Each resample chooses its own threshold:
      ``tar_low``/``tar_high`` and ``threshold_low``/``threshold_high``;
    * what will the chosen threshold t do on other data of the same kind? t is kept and its
      rates measured on each resample: ``far_at_threshold_low``/``_high`` and
      ``tar_at_threshold_low``/``_high``.

    Args:
        genuine_scores: (n_g,) scores that should be accepted (a genuine score may be -inf:
            never accepted, e.g. a mated search whose mate is not ranked first).
        impostor_scores: (n_i,) scores that should be rejected.
        far: target false-accept rate in (0, 1).
        n_bootstrap: resamples (0: no intervals).
        confidence: coverage of the intervals, in (0, 1).
        seed: integer seed of the resampling.

    Returns:
        dict of Python floats: ``threshold``, ``tar``, ``far`` (achieved), ``target_far``,
        ``n_genuine``, ``n_impostor`` and, with resamples, the ``_low``/``_high`` bounds of
        ``tar``, ``threshold``, ``far_at_threshold`` and ``tar_at_threshold``.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> rng = np.random.default_rng(0)
    >>> out = km.metrics.tar_at_far(rng.normal(2, 1, 500), rng.normal(0, 1, 5000), far=0.01,
    ...                             n_bootstrap=200)
    >>> round(out["far"], 4), out["tar_low"] <= out["tar"] <= out["tar_high"]
    (0.01, True)
    """
    genuine = _scores(genuine_scores, "genuine_scores")
    impostor = _scores(impostor_scores, "impostor_scores")
    far = _check_rate(far, "far")
    _check_bootstrap(n_bootstrap, confidence)
    threshold = threshold_at_far(impostor, far)
    out = {
        "threshold": float(threshold),
        "tar": float(np.mean(genuine >= threshold)),
        "far": float(np.mean(impostor >= threshold)),
        "target_far": far,
        "n_genuine": int(genuine.size),
        "n_impostor": int(impostor.size),
    }
    if n_bootstrap:
        out.update(_bootstrap(genuine, impostor, far, int(n_bootstrap), confidence, seed,
                              threshold))
    return out


def _bootstrap(genuine, impostor, far, rounds, confidence, seed, threshold):
    """Percentile intervals over bootstrap resamples: of the threshold and TAR that each
    resample would choose (the TAR@FAR estimator), and of the FAR and TAR that the fixed
    ``threshold`` has on each resample.

    A resample is a vector of multiplicities over the sorted scores, so its (m+1)-th largest
    score and its counts above a threshold come from cumulative sums (no per-resample sort).
    """
    rng = np.random.default_rng(seed)
    imp = np.sort(impostor)[::-1]
    gen = np.sort(genuine)
    allowed = int(np.floor(far * len(imp) + 1e-9))
    one_above = np.array(np.inf, dtype=imp.dtype)
    imp_at_t = int(np.sum(imp >= threshold))          # impostors accepted by the fixed threshold
    gen_at_t = int(np.searchsorted(gen, threshold, side="left"))
    values = {name: [] for name in ("threshold", "tar", "far_at_threshold", "tar_at_threshold")}
    for start in range(0, rounds, 64):
        size = min(64, rounds - start)
        imp_counts = np.cumsum(_resampled_counts(rng, len(imp), size), axis=1)
        gen_counts = _resampled_counts(rng, len(gen), size)
        gen_tail = np.cumsum(gen_counts[:, ::-1], axis=1)[:, ::-1]  # resampled count >= index
        for row in range(size):
            # The (allowed+1)-th largest resampled impostor: first index whose cumulative
            # multiplicity exceeds `allowed`.
            position = int(np.searchsorted(imp_counts[row], allowed, side="right"))
            t = np.nextafter(imp[position], one_above)
            first = int(np.searchsorted(gen, t, side="left"))
            values["threshold"].append(float(t))
            values["tar"].append((gen_tail[row][first] if first < len(gen) else 0) / len(gen))
            values["far_at_threshold"].append(
                (imp_counts[row][imp_at_t - 1] if imp_at_t else 0) / len(imp))
            values["tar_at_threshold"].append(
                (gen_tail[row][gen_at_t] if gen_at_t < len(gen) else 0) / len(gen))
    tail = 100.0 * (1.0 - confidence) / 2.0
    out = {}
    for name, samples in values.items():
        low, high = np.percentile(samples, [tail, 100.0 - tail])
        out[f"{name}_low"], out[f"{name}_high"] = float(low), float(high)
    return out


def mated_and_non_mated(query_embeddings, query_labels, gallery_embeddings, gallery_labels,
                        rank=1, metric="cosine", chunk_size=256):
    """Per-search scores of an open-set identification run.

    Returns ``(genuine, impostor)``: for each mated search (its label is among
    ``gallery_labels``), its mate's score (the best score among the gallery entries of its
    identity) when the mate is ranked within ``rank`` (ties ranked pessimistically: every
    other identity's entry with a score >= the mate's ranks before it), else -inf; for each
    non-mated search, its best gallery score. ``DIR(t, rank) = mean(genuine >= t)`` and
    ``FPIR(t) = mean(impostor >= t)``.
    """
    queries = as_embeddings(query_embeddings, "query_embeddings")
    gallery = as_embeddings(gallery_embeddings, "gallery_embeddings")
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"`query_embeddings` has D={queries.shape[1]} but `gallery_embeddings` has "
            f"D={gallery.shape[1]}."
        )
    q_labels = as_label_vector(query_labels, len(queries), "query_labels")
    g_labels = as_label_vector(gallery_labels, len(gallery), "gallery_labels")
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise ValueError(f"`rank` must be a positive integer; got {rank!r}.")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) \
            or chunk_size < 1:
        raise ValueError(f"`chunk_size` must be a positive integer; got {chunk_size!r}.")
    mated = np.isin(q_labels, g_labels)
    if mated.all() or not mated.any():
        raise ValueError(
            "`query_labels` must contain both mated searches (labels among `gallery_labels`) "
            "and non-mated ones (labels that are not)."
        )
    genuine, impostor = [], []
    for start in range(0, len(queries), chunk_size):
        rows = slice(start, start + chunk_size)
        scores = pairwise_scores(queries[rows], gallery, metric).astype("float64")
        same = q_labels[rows, None] == g_labels[None, :]
        best = scores.max(axis=1)
        is_mated = mated[rows]
        impostor.append(best[~is_mated])
        mate = np.where(same, scores, -np.inf).max(axis=1)
        # Pessimistic rank: 1 + entries of other identities scoring at least the mate.
        ahead = np.sum(np.where(same, False, scores >= mate[:, None]), axis=1)
        found = np.where(ahead < rank, mate, -np.inf)
        genuine.append(found[is_mated])
    return np.concatenate(genuine), np.concatenate(impostor)


def open_set_identification(query_embeddings, query_labels, gallery_embeddings, gallery_labels,
                            fpirs=(1e-2, 1e-3), rank=1, n_bootstrap=1000, confidence=0.95,
                            seed=0, metric="cosine", chunk_size=256):
    """DIR at given FPIRs of an open-set identification run (NISTIR 8271 terms).

    Every query is searched against the gallery (several entries per identity allowed). The
    threshold for FPIR f is :func:`threshold_at_far` of the non-mated searches' best scores;
    DIR is the fraction of mated searches whose mate is within ``rank`` with a score at
    least that threshold (see :func:`mated_and_non_mated`). Bootstrap intervals as in
    :func:`tar_at_far` (mated and non-mated searches resampled independently).

    Args:
        query_embeddings: (Q, D) searches.
        query_labels: (Q,) their identities; both enrolled and non-enrolled ones needed.
        gallery_embeddings: (G, D) enrolled entries.
        gallery_labels: (G,) their identities.
        fpirs: false-positive identification rates in (0, 1) (default (1e-2, 1e-3)).
        rank: the rank within which the mate must be found (default 1).
        n_bootstrap, confidence, seed: the intervals (see :func:`tar_at_far`).
        metric: ``"cosine"`` (default) or ``"euclidean"`` (minus squared distance).
        chunk_size: queries scored at once.

    Returns:
        dict of Python floats: ``rank_{rank}_identification_rate`` (closed-set: mate within
        ``rank``, no threshold), and per FPIR f: ``dir_at_fpir_{f}``, ``threshold_at_fpir_{f}``,
        ``fpir_at_fpir_{f}`` (achieved) and, with resamples, ``dir_at_fpir_{f}_low`` /
        ``_high``; plus ``n_mated`` and ``n_non_mated``.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> rng = np.random.default_rng(0)
    >>> centers = rng.normal(size=(60, 16))
    >>> gallery, ids = centers[:40], np.arange(40)
    >>> labels = rng.integers(0, 60, 600)
    >>> queries = centers[labels] + 0.3 * rng.normal(size=(600, 16))
    >>> out = km.metrics.open_set_identification(queries, labels, gallery, ids, fpirs=(0.05,),
    ...                                          n_bootstrap=0)
    >>> out["n_mated"] + out["n_non_mated"], out["dir_at_fpir_0.05"] > 0.9
    (600, True)

    Reference:
        - Grother, Ngan & Hanaoka, 2019. Face Recognition Vendor Test (FRVT) Part 2:
          Identification, NISTIR 8271, Sec. 3 (FPIR, FNIR = 1 - DIR).
    """
    _check_bootstrap(n_bootstrap, confidence)
    rates = (fpirs,) if np.isscalar(fpirs) else tuple(fpirs)
    if not rates:
        raise ValueError("`fpirs` must name at least one rate.")
    for value in rates:
        _check_rate(value, "fpirs")
    genuine, impostor = mated_and_non_mated(query_embeddings, query_labels, gallery_embeddings,
                                            gallery_labels, rank, metric, chunk_size)
    out = {f"rank_{rank}_identification_rate": float(np.mean(np.isfinite(genuine)))}
    for rate in rates:
        res = tar_at_far(genuine, impostor, rate, n_bootstrap, confidence, seed)
        key = f"{rate:g}"
        out[f"dir_at_fpir_{key}"] = res["tar"]
        out[f"threshold_at_fpir_{key}"] = res["threshold"]
        out[f"fpir_at_fpir_{key}"] = res["far"]
        if n_bootstrap:
            out[f"dir_at_fpir_{key}_low"] = res["tar_low"]
            out[f"dir_at_fpir_{key}_high"] = res["tar_high"]
    out["n_mated"] = int(genuine.size)
    out["n_non_mated"] = int(impostor.size)
    return out
