"""Plain NumPy references of every formula the library implements, for the tests.

Written from the papers' equations with explicit Python loops over samples, classes and
pairs, in float64; nothing here calls ``keras_margins`` (a reference that calls the library
cannot catch a wrong formula). Where the library documents a convention that is not in the
paper (the ArcFace fallback past π, SphereFace's monotone extension for real m, empty sets
of pair losses), the reference states it explicitly.

Per-sample functions return (N,) float64 arrays; ``keras_reduce`` applies Keras' reductions
and sample weights to them.

Papers:
    Zhou et al. 2022 (ICLR), "Learning Towards the Largest Margins": generalised margin
        softmax ψ(θ) = cos(m1·θ + m2) − m3, LM-Softmax, sample / class margins.
    Wang et al. 2017 (NormFace), Liu et al. 2017 (SphereFace), Wang et al. 2018 (CosFace),
    Deng et al. 2019 (ArcFace): the presets of the generalised margin softmax.
    Sun et al. 2020 (CVPR), "Circle Loss", Eq. 6.
    Chen, Deng & Shen 2018 (NeurIPS), "Virtual Class Enhanced Discriminative Embedding
        Learning", Eq. 3.
    Zhu & Zu 2021 (arXiv:2111.15449), POD loss (NaC and decorrelation terms).
    Schroff et al. 2015 (FaceNet), Eq. 1 and semi-hard negatives; Weinberger & Saul 2009.
    Movshovitz-Attias et al. 2017 (ICCV), "No Fuss Distance Metric Learning using Proxies".
    Yi, Lei, Liao & Li 2014 (ICPR), binomial deviance.
    Zabihzadeh et al. 2021, "Ensemble of Loss Functions ...": learned-weight ensemble.
    Deng et al. 2020 (ECCV), "Sub-center ArcFace": max over K sub-centres.
    Huang et al. 2020 (CVPR), "CurricularFace": N(t, cos θ_j), t's moving average.
    Meng et al. 2021 (CVPR), "MagFace": m(a) linear on [l_a, u_a], g(a) = 1/a + a/u_a².
    Kim, Jain & Liu 2022 (CVPR), "AdaFace": ẑ, g_angle = −m·ẑ, g_add = m·ẑ + m, μ/σ EMA.
    Boutros et al. 2022 (CVPRW), "ElasticFace": E ~ N(m, σ²); "+": margins by rank.
    Zhou et al. 2023 (ICCV), "UniFace": L_uce-m with a bias b̃ and λ on the negatives.
    keras.applications' documented input preprocessing (pixel scalings).
    Hermans et al. 2017 (batch-hard mining), Schroff et al. 2015 (semi-hard),
        Wang et al. 2019 (CVPR), "Multi-Similarity Loss", Eq. 5-6 (pair mining).
"""

import math

import numpy as np

# ------------------------------------------------------------------------------ helpers


def logsumexp(values):
    """log Σ exp(v) of a non-empty sequence, stable (max shifted out)."""
    values = np.asarray(values, "float64")
    top = float(np.max(values))
    return top + math.log(float(np.sum(np.exp(values - top))))


def softplus(v):
    """log(1 + e^v), stable for large |v|."""
    v = float(v)
    return max(v, 0.0) + math.log1p(math.exp(-abs(v)))


def unit_rows(x, floor=1e-12):
    """Rows of ``x`` divided by their Euclidean norm (a zero row stays zero)."""
    x = np.asarray(x, "float64")
    out = np.zeros_like(x)
    for i in range(x.shape[0]):
        norm = math.sqrt(sum(float(v) ** 2 for v in x[i]))
        out[i] = x[i] / max(norm, floor)
    return out


def row_norms(x):
    """Euclidean norm of each row of ``x`` (N, D)."""
    return np.array([math.sqrt(sum(float(v) ** 2 for v in row)) for row in np.asarray(x, "float64")])


def cosine(x, w, floor=1e-12):
    """cos θ_ij between feature rows x_i (N, D) and class columns w_j (D, C) (NormFace's
    normalised features and weights); norms below ``floor`` count as ``floor``, so a zero
    vector has cosine 0 with everything."""
    return unit_rows(x, floor) @ unit_rows(np.asarray(w, "float64").T, floor).T


def pairwise_cosine(emb):
    """(N, N) cosines between the rows of ``emb`` (a zero row has cosine 0 with everything)."""
    unit = unit_rows(emb)
    n = unit.shape[0]
    return np.array([[float(unit[i] @ unit[j]) for j in range(n)] for i in range(n)])


def ce_with_target(row, label, target_logit, other_logit):
    """−log softmax of one row whose target logit is ``target_logit`` and whose other logits
    are ``other_logit(cos θ_j)``."""
    logits = [target_logit if j == label else other_logit(row[j]) for j in range(len(row))]
    return logsumexp(logits) - target_logit


def keras_reduce(per_sample, sample_weight=None, reduction="sum_over_batch_size", valid=None):
    """Keras' reduction of per-sample values: weighted values (``None``/"none"), their sum
    ("sum") or their sum over the batch size ("sum_over_batch_size", "mean"). With ``valid``
    (a loss's Keras mask), the mean divides by the number of valid rows instead."""
    per_sample = np.asarray(per_sample, "float64")
    weights = np.ones_like(per_sample) if sample_weight is None else np.asarray(sample_weight, "float64")
    if valid is not None:
        weights = weights * np.asarray(valid, "float64")
    weighted = [float(v) * float(w) for v, w in zip(per_sample, weights)]
    if reduction in (None, "none"):
        return np.array(weighted)
    total = sum(weighted)
    if reduction == "sum":
        return total
    count = len(per_sample) if valid is None else int(np.sum(valid))
    return total / count if count else 0.0


# ------------------------------------------------ generalised margin softmax (Zhou et al.)


def psi(cos_y, m1=1.0, m2=0.0, m3=0.0, acos_clip=None):
    """Target function ψ(θ) = cos(m1·θ + m2) − m3 for one target cosine.

    Conventions: for m1 = 1, where θ + m2 > π ArcFace's fallback cos θ − m2·sin m2 − m3
    (Deng et al.'s code); for m1 > 1 the monotone extension (−1)^k cos(t) − 2k − m3 with
    t = m1·θ + m2, k = ⌊t/π⌋ (Liu et al. 2017, here for real m1). ``acos_clip`` clips the
    cosine before arccos (the library keeps arccos away from ±1 for SphereFace)."""
    c = min(max(float(cos_y), -1.0), 1.0)
    if m1 == 1.0:
        theta = math.acos(c)
        if theta + m2 > math.pi:
            return c - m2 * math.sin(m2) - m3
        return math.cos(theta + m2) - m3
    if acos_clip is not None:
        c = min(max(c, -acos_clip), acos_clip)
    t = m1 * math.acos(c) + m2
    k = math.floor(t / math.pi)
    return (-1.0) ** k * math.cos(t) - 2.0 * k - m3


def margin_softmax(labels, cos, scale, m1=1.0, m2=0.0, m3=0.0, acos_clip=None):
    """L_i = −log e^{s·ψ(θ_y)} / (e^{s·ψ(θ_y)} + Σ_{j≠y} e^{s·cos θ_j}) (GM-Softmax)."""
    cos = np.asarray(cos, "float64")
    out = []
    for i, y in enumerate(labels):
        target = scale * psi(cos[i, y], m1, m2, m3, acos_clip)
        logits = scale * cos[i]  # the other classes' logits s·cos θ_j, j ≠ y
        logits[y] = target
        out.append(logsumexp(logits) - target)
    return np.array(out)


def arc_target(cos_y, m):
    """ArcFace's target cos(θ + m); past π its continuation cos θ − m·sin m (``psi`` with
    m2 = m)."""
    return psi(cos_y, m2=m)


def arcface(labels, cos, scale, margin):
    """ArcFace per sample (Deng et al. 2019): ``margin_softmax`` with m2 = ``margin``."""
    return margin_softmax(labels, cos, scale, m2=margin)


def lm_softmax(labels, cos, scale):
    """L_i = −log e^{s·cos θ_y} / Σ_{j≠y} e^{s·cos θ_j} (LM-Softmax: target left out)."""
    cos = np.asarray(cos, "float64")
    return np.array([
        logsumexp([scale * cos[i, j] for j in range(cos.shape[1]) if j != y]) - scale * cos[i, y]
        for i, y in enumerate(labels)
    ])


def sample_margin(labels, cos):
    """γ_i = cos θ_{y_i} − max_{j≠y_i} cos θ_j (Zhou et al. 2022, Definition 3.2)."""
    cos = np.asarray(cos, "float64")
    return np.array([
        cos[i, y] - max(cos[i, j] for j in range(cos.shape[1]) if j != y)
        for i, y in enumerate(labels)
    ])


def class_margin(w):
    """Smallest angle between two class columns of w (D, C), radians."""
    w = np.asarray(w, "float64")
    best = math.pi
    for a in range(w.shape[1]):
        for b in range(w.shape[1]):
            if a != b:
                c = w[:, a] @ w[:, b] / (np.linalg.norm(w[:, a]) * np.linalg.norm(w[:, b]))
                best = min(best, math.acos(max(-1.0, min(1.0, c))))
    return best


def zero_centroid(w):
    """||Σ_k w_k/||w_k|| ||² over the class columns of w (D, C) (sum form)."""
    w = np.asarray(w, "float64")
    total = np.zeros(w.shape[0])
    for k in range(w.shape[1]):
        total += w[:, k] / np.linalg.norm(w[:, k])
    return float(total @ total)


# ----------------------------------------------------------------- Circle loss (Sun et al.)


def circle_anchor(s_pos, s_neg, margin, gamma):
    """Eq. 6 for one anchor: log[1 + Σ_n e^{γ α_n (s_n − Δ_n)} Σ_p e^{−γ α_p (s_p − Δ_p)}],
    α_p = [1 + m − s_p]_+, α_n = [s_n + m]_+, Δ_p = 1 − m, Δ_n = m; 0 when an anchor has no
    positive or no negative."""
    if len(s_pos) == 0 or len(s_neg) == 0:
        return 0.0
    terms_p = [-gamma * max(1 + margin - s, 0.0) * (s - (1 - margin)) for s in s_pos]
    terms_n = [gamma * max(s + margin, 0.0) * (s - margin) for s in s_neg]
    return softplus(logsumexp(terms_p) + logsumexp(terms_n))


def circle_class_level(labels, cos, margin, gamma):
    """Class-level Circle loss: one positive cos θ_y, the C − 1 negatives cos θ_j."""
    cos = np.asarray(cos, "float64")
    return np.array([
        circle_anchor([cos[i, y]], [cos[i, j] for j in range(cos.shape[1]) if j != y], margin, gamma)
        for i, y in enumerate(labels)
    ])


def circle_pairwise(labels, emb, margin, gamma, pos_mask=None, neg_mask=None):
    """Pair-wise Circle loss per anchor on in-batch cosines of the normalised embeddings, and
    whether each anchor had a positive and a negative: ``(values (N,), valid (N,))``."""
    unit = unit_rows(emb)
    n = len(labels)
    out, valid = [], []
    for i in range(n):
        pos, neg = [], []
        for j in range(n):
            s = float(unit[i] @ unit[j])
            if j != i and labels[j] == labels[i] and (pos_mask is None or pos_mask[i, j]):
                pos.append(s)
            if labels[j] != labels[i] and (neg_mask is None or neg_mask[i, j]):
                neg.append(s)
        out.append(circle_anchor(pos, neg, margin, gamma))
        valid.append(bool(pos) and bool(neg))
    return np.array(out), np.array(valid)


def pair_masks(labels):
    """pos[i, j] = (y_i == y_j and i != j), neg[i, j] = (y_i != y_j)."""
    n = len(labels)
    pos = np.zeros((n, n), bool)
    neg = np.zeros((n, n), bool)
    for i in range(n):
        for j in range(n):
            pos[i, j] = i != j and labels[i] == labels[j]
            neg[i, j] = labels[i] != labels[j]
    return pos, neg


# ------------------------------------------------------------------------------- miners
# Mining rules on a given (N, N) similarity matrix ``sim``; masks are subsets of ``pair_masks``.


def batch_hard_masks(labels, sim):
    """Per anchor with a positive and a negative: its hardest positive (lowest similarity)
    and hardest negative (highest), ties to the lowest index (Hermans et al. 2017)."""
    pos, neg = pair_masks(labels)
    out_p, out_n = np.zeros_like(pos), np.zeros_like(neg)
    for a in range(len(labels)):
        ps = [j for j in range(len(labels)) if pos[a, j]]
        ns = [j for j in range(len(labels)) if neg[a, j]]
        if ps and ns:
            out_p[a, min(ps, key=lambda j: (sim[a, j], j))] = True
            out_n[a, max(ns, key=lambda j: (sim[a, j], -j))] = True
    return out_p, out_n


def semi_hard_masks(labels, sim, margin=0.2):
    """Pairs of at least one semi-hard triplet s_ap − margin < s_an < s_ap (FaceNet's
    semi-hard negatives, on similarities)."""
    pos, neg = pair_masks(labels)
    out_p, out_n = np.zeros_like(pos), np.zeros_like(neg)
    n = len(labels)
    for a in range(n):
        for p in range(n):
            for q in range(n):
                if pos[a, p] and neg[a, q] and sim[a, p] - margin < sim[a, q] < sim[a, p]:
                    out_p[a, p] = out_n[a, q] = True
    return out_p, out_n


def multi_similarity_masks(labels, sim, eps=0.1):
    """Wang et al. 2019, Eq. 5-6: negative (a, n) if s_an + ε > min_p s_ap, positive (a, p)
    if s_ap − ε < max_n s_an; an anchor without positives keeps no negatives and vice versa."""
    pos, neg = pair_masks(labels)
    out_p, out_n = np.zeros_like(pos), np.zeros_like(neg)
    n = len(labels)
    for a in range(n):
        ps = [sim[a, j] for j in range(n) if pos[a, j]]
        ns = [sim[a, j] for j in range(n) if neg[a, j]]
        for j in range(n):
            out_n[a, j] = neg[a, j] and bool(ps) and sim[a, j] + eps > min(ps)
            out_p[a, j] = pos[a, j] and bool(ns) and sim[a, j] - eps < max(ns)
    return out_p, out_n


# ---------------------------------------------------------- Virtual Softmax (Chen et al.)


def virtual_softmax(labels, x, w, clip=None):
    """L_i = −log e^{z_y} / (Σ_j e^{z_j} + e^{||W_y||·||x_i||}), z_j = W_jᵀ x_i (Eq. 3)."""
    x, w = np.asarray(x, "float64"), np.asarray(w, "float64")
    out = []
    for i, y in enumerate(labels):
        z = [float(x[i] @ w[:, j]) for j in range(w.shape[1])]
        virtual = float(np.linalg.norm(w[:, y]) * np.linalg.norm(x[i]))
        if clip is not None:
            virtual = min(virtual, clip)
        out.append(logsumexp(z + [virtual]) - z[y])
    return np.array(out)


def log_softmax_nll(labels, logits):
    """−log softmax(z_i)_{y_i} (the plain softmax cross-entropy)."""
    logits = np.asarray(logits, "float64")
    return np.array([logsumexp(logits[i]) - logits[i, y] for i, y in enumerate(labels)])


# ------------------------------------------------------------------ POD (Zhu & Zu 2021)


def pod_terms(labels, x, centroids, delta, norm_floor=None):
    """NaC_i = (1 − x_i·ĉ_{y_i}/sqrt(||x_i||² + δ²))² and the decorrelation
    Σ_{a≠b} Σ_ab² / (D − 1), Σ = RᵀR/(N − 1), r_i = x_i/||x_i|| − ĉ_{y_i}.
    ``norm_floor`` floors sqrt(||x||² + δ²) (the library's, for x = 0 with δ = 0)."""
    x = np.asarray(x, "float64")
    centroids = np.asarray(centroids, "float64")
    n, d = x.shape
    c = centroids / np.linalg.norm(centroids, axis=0, keepdims=True)
    nac = np.zeros(n)
    residual = np.zeros((n, d))
    for i, y in enumerate(labels):
        norm = math.sqrt(float(np.sum(x[i] ** 2)))
        denom = math.sqrt(norm**2 + delta**2)
        if norm_floor is not None:
            denom = max(denom, norm_floor)
        nac[i] = (1.0 - float(x[i] @ c[:, y]) / denom) ** 2
        residual[i] = x[i] / max(norm, 1e-12) - c[:, y]  # a zero row stays zero
    decorrelation = 0.0
    for a in range(d):
        for b in range(d):
            if a != b:
                cov_ab = sum(residual[i, a] * residual[i, b] for i in range(n)) / (n - 1)
                decorrelation += cov_ab**2
    return nac, decorrelation / (d - 1)


def pod(labels, x, centroids, delta=0.05, weight=1.0):
    """mean_i NaC_i + weight · decorrelation (the batch POD loss)."""
    nac, decorrelation = pod_terms(labels, x, centroids, delta)
    return float(np.mean(nac)) + weight * decorrelation


# ------------------------------------------------------------------------ triplet losses


def _distance(u, a, b, squared):
    sq = float(np.sum((u[a] - u[b]) ** 2))
    return sq if squared else math.sqrt(sq)


def triplet_all(labels, emb, margin, squared=False, pos_mask=None, neg_mask=None, per_anchor=False):
    """Every triplet (a, p, n), y_p = y_a ≠ y_n, p ≠ a, on L2-normalised rows:
    ℓ = max(d_ap − d_an + margin, 0); the loss is Σ ℓ / #{ℓ > 0} (0 when none is positive:
    pytorch-metric-learning's AvgNonZeroReducer).

    ``per_anchor=True`` returns (N,) values N·(Σ_{p,n} ℓ_apn)/#{ℓ > 0} whose mean is the loss
    (what the Keras loss reduces)."""
    u = unit_rows(emb)
    n = len(labels)
    sums = np.zeros(n)
    positive = 0
    for a in range(n):
        for p in range(n):
            if p == a or labels[p] != labels[a] or (pos_mask is not None and not pos_mask[a, p]):
                continue
            for q in range(n):
                if labels[q] == labels[a] or (neg_mask is not None and not neg_mask[a, q]):
                    continue
                value = max(_distance(u, a, p, squared) - _distance(u, a, q, squared) + margin, 0.0)
                sums[a] += value
                positive += value > 0
    if per_anchor:
        return sums * n / max(positive, 1)
    return float(np.sum(sums) / positive) if positive else 0.0


def triplet_semi_hard(labels, emb, margin, squared=True, per_anchor=False):
    """FaceNet's semi-hard triplet loss as TF Addons computes it, on L2-normalised rows: per
    positive pair (a, p), the closest negative farther than p (d_an > d_ap), else the farthest
    negative (0 without negatives); ℓ_ap = max(d_ap − d_an* + margin, 0); mean over positive
    pairs (0 when there is none). ``per_anchor`` as in ``triplet_all``."""
    u = unit_rows(emb)
    n = len(labels)
    sums = np.zeros(n)
    count = 0
    for a in range(n):
        negatives = [_distance(u, a, q, squared) for q in range(n) if labels[q] != labels[a]]
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            count += 1
            d_ap = _distance(u, a, p, squared)
            farther = [d for d in negatives if d > d_ap]
            d_an = min(farther) if farther else max(negatives + [0.0])
            sums[a] += max(d_ap - d_an + margin, 0.0)
    if per_anchor:
        return sums * n / max(count, 1)
    return float(np.sum(sums) / count) if count else 0.0


def tfa_semi_hard(labels, emb, margin, metric="squared-L2"):
    """TF Addons' ``triplet_semihard_loss`` on the raw rows: ``distance_metric="squared-L2"``
    ||x_a||² + ||x_b||² − 2 x_a·x_b (floored at 0, diagonal 0), or ``"L2"``, its square root
    (TF Addons' default since v0.10)."""
    if metric not in ("squared-L2", "L2"):
        raise ValueError(metric)
    x = np.asarray(emb, "float64")
    n = len(labels)
    d = np.zeros((n, n))
    for a in range(n):
        for b in range(n):
            d[a, b] = 0.0 if a == b else max(float(x[a] @ x[a] + x[b] @ x[b] - 2 * x[a] @ x[b]), 0.0)
            if metric == "L2":
                d[a, b] = np.sqrt(d[a, b])
    total, count = 0.0, 0
    for a in range(n):
        negatives = [d[a, q] for q in range(n) if labels[q] != labels[a]]
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            count += 1
            farther = [v for v in negatives if v > d[a, p]]
            d_neg = min(farther) if farther else max(negatives + [0.0])
            total += max(margin + d[a, p] - d_neg, 0.0)
    return total / count


# -------------------------------------------------------------------------------- ProxyNCA


def proxy_nca(labels, emb, proxies, t=1.0, a=1.0, b=1.0, eps=0.0, exclude=False):
    """ProxyNCA per sample, distances written out: z_j = −t·||a·x̂ − b·p̂_j||² (proxies are
    rows); −Σ_j q_j log softmax(z)_j with q_y = 1 − ε, q_j = ε/(C − 1); or, ``exclude``
    (the paper's Eq. 4), −z_y + log Σ_{j≠y} e^{z_j}."""
    x = a * unit_rows(emb)
    p = b * unit_rows(proxies)
    return _proxy_nca_from_logits(
        labels, [[-t * float(np.sum((x[i] - p[j]) ** 2)) for j in range(len(p))] for i in range(len(x))],
        eps, exclude)


def proxy_nca_from_cos(labels, cos, t=1.0, a=1.0, b=1.0, eps=0.0, exclude=False):
    """``proxy_nca`` from the cosines cos θ_j = x̂·p̂_j: ||a x̂ − b p̂_j||² = a² + b² − 2ab cos θ_j."""
    cos = np.asarray(cos, "float64")
    logits = [[-t * (a * a + b * b - 2 * a * b * cos[i, j]) for j in range(cos.shape[1])]
              for i in range(cos.shape[0])]
    return _proxy_nca_from_logits(labels, logits, eps, exclude)


def _proxy_nca_from_logits(labels, logits, eps, exclude):
    out = []
    for i, y in enumerate(labels):
        z = logits[i]
        c = len(z)
        if exclude:
            out.append(-z[y] + logsumexp([z[j] for j in range(c) if j != y]))
        else:
            lse = logsumexp(z)
            q = [eps / (c - 1)] * c
            q[y] = 1 - eps
            out.append(-sum(q[j] * (z[j] - lse) for j in range(c)))
    return np.array(out)


# --------------------------------------------------------------------- binomial deviance


def binomial_deviance(labels, emb, alpha, beta, cost):
    """Per anchor: mean_{p} ln(1 + e^{−α(s_ip − β)}) + mean_{n} ln(1 + e^{α C (s_in − β)})
    on cosines s of the normalised embeddings (Yi et al. 2014 with m = 1 / −C; empty set: 0)."""
    u = unit_rows(emb)
    n = len(labels)
    out = np.zeros(n)
    for i in range(n):
        pos = [softplus(-alpha * (float(u[i] @ u[j]) - beta))
               for j in range(n) if j != i and labels[j] == labels[i]]
        neg = [softplus(alpha * cost * (float(u[i] @ u[j]) - beta))
               for j in range(n) if labels[j] != labels[i]]
        out[i] = (sum(pos) / len(pos) if pos else 0.0) + (sum(neg) / len(neg) if neg else 0.0)
    return out


# -------------------------------------------------------- learned-weight ensemble of losses


def ensemble_steps(member_values, a, eta=100.0, penalty_scale=100.0, normalize=True):
    """The ensemble loss of successive training steps (Zabihzadeh et al.), with the library's
    running mean of |L_k| (a loss such as LM-Softmax can be negative):

        L̄_k(t) = L̄_k(t−1) + (|L_k(t)| − L̄_k(t−1)) / t,
        L(t) = Σ_k c_k · (mean_j L̄_j(t) / L̄_k(t)) · L_k(t) + penalty_scale·η·(Σ_k c_k − 1)²,
        c_k = a_k² + 1/(4m).

    ``member_values``: one list of the K member losses per step; ``a``: the a_k (held fixed).
    Returns ``(losses per step, running means after the last step)``."""
    a = [float(v) for v in a]
    m = len(a)
    c = [v * v + 1.0 / (4 * m) for v in a]
    penalty = penalty_scale * eta * (sum(c) - 1.0) ** 2
    running = [0.0] * m
    out = []
    for t, values in enumerate(member_values, start=1):
        running = [running[k] + (abs(float(values[k])) - running[k]) / t for k in range(m)]
        mean = sum(running) / m
        total = 0.0
        for k in range(m):
            factor = mean / max(running[k], 1e-12) if normalize else 1.0
            total += c[k] * factor * float(values[k])
        out.append(total + penalty)
    return out, running


# ------------------------------------ margin losses of later papers (sub-centres, adaptive)


def curricular(labels, cos, t, s, m):
    """CurricularFace per sample: target s·cos(θ_y + m); a negative with cos θ_j > the target
    gets s·cos θ_j·(t + cos θ_j), the others s·cos θ_j (Huang et al. 2020)."""
    cos = np.asarray(cos, "float64")
    out = []
    for i, y in enumerate(labels):
        target = arc_target(cos[i, y], m)

        def other(c, target=target):
            return s * c if target - c >= 0 else s * c * (t + c)

        out.append(ce_with_target(cos[i], y, s * target, other))
    return np.array(out)


def curricular_t(t, cos_y, momentum=0.99):
    """CurricularFace's t ← momentum·t + (1 − momentum)·mean(cos θ_y)."""
    return momentum * t + (1 - momentum) * sum(cos_y) / len(cos_y)


def magface(labels, cos, norms, s=64.0, la=10.0, ua=110.0, lm=0.45, um=0.8, lam=35.0, easy=False):
    """MagFace per sample: ArcFace with m(a) linear from lm at la to um at ua, a the feature
    norm clipped to [la, ua], plus λ·g(a) with g(a) = 1/a + a/ua² (Meng et al. 2021).
    ``easy``: the margin only where cos θ_y > 0 (the authors' easy margin)."""
    cos = np.asarray(cos, "float64")
    out = []
    for i, y in enumerate(labels):
        a = min(max(norms[i], la), ua)
        m = (um - lm) / (ua - la) * (a - la) + lm
        if easy:
            target = math.cos(math.acos(cos[i, y]) + m) if cos[i, y] > 0 else cos[i, y]
        else:
            target = arc_target(cos[i, y], m)
        out.append(ce_with_target(cos[i], y, s * target, lambda c: s * c) + lam * (1 / a + a / ua**2))
    return np.array(out)


def adaface_scaler(norm, mean, std, h):
    """AdaFace's ẑ = clip(h·(||z|| − μ)/(σ + ε), −1, 1), ε = 1e-3, ||z|| clipped to [1e-3, 100]."""
    n = min(max(norm, 1e-3), 100.0)
    return min(max(h * (n - mean) / (std + 1e-3), -1.0), 1.0)


def adaface(labels, cos, norms, mean, std, s=64.0, m=0.4, h=0.333):
    """AdaFace per sample: target s·(cos(clip(θ_y + g_angle, ε, π − ε)) − g_add) with
    g_angle = −m·ẑ, g_add = m·ẑ + m (Kim et al. 2022)."""
    eps = 1e-3
    cos = np.asarray(cos, "float64")
    out = []
    for i, y in enumerate(labels):
        z = adaface_scaler(norms[i], mean, std, h)
        g_angle, g_add = -m * z, m * z + m
        theta = math.acos(min(1.0, max(-1.0, cos[i, y])))
        theta_m = min(max(theta + g_angle, eps), math.pi - eps)
        target = math.cos(theta_m) - g_add
        out.append(ce_with_target(cos[i], y, s * target, lambda c: s * c))
    return np.array(out)


def adaface_stats(norms, mean, std, momentum=0.99):
    """AdaFace's running μ and σ of the clipped norms (batch σ with ddof = 1)."""
    n = [min(max(v, 1e-3), 100.0) for v in norms]
    mu = sum(n) / len(n)
    var = sum((v - mu) ** 2 for v in n) / max(len(n) - 1, 1)
    return (momentum * mean + (1 - momentum) * mu, momentum * std + (1 - momentum) * math.sqrt(var))


def elastic(labels, cos, margins, s=64.0, kind="arc"):
    """ElasticFace per sample with the drawn per-sample ``margins``: ArcFace target (margin
    clipped to [0, π − 1e-3]) for ``kind="arc"``, else CosFace's cos θ_y − m (Boutros et al.
    2022)."""
    cos = np.asarray(cos, "float64")
    out = []
    for i, y in enumerate(labels):
        if kind == "arc":
            target = arc_target(cos[i, y], min(max(margins[i], 0.0), math.pi - 1e-3))
        else:
            target = cos[i, y] - margins[i]
        out.append(ce_with_target(cos[i], y, s * target, lambda c: s * c))
    return np.array(out)


def elastic_plus_assignment(draws, cos_y):
    """ElasticFace+: the k-th largest target cosine gets the k-th smallest margin."""
    ascending = sorted(draws)
    order = sorted(range(len(cos_y)), key=lambda i: -cos_y[i])
    out = [0.0] * len(cos_y)
    for k, i in enumerate(order):
        out[i] = ascending[k]
    return np.array(out)


def uniface(labels, cos, b, s=64.0, m=0.4, lam=1.0):
    """UniFace's L_uce-m per sample: log(1 + e^{−(s(cos θ_y − m) − b)}) + λ Σ_{j≠y}
    log(1 + e^{s cos θ_j − b}) (Zhou et al. 2023, with the bias b)."""
    cos = np.asarray(cos, "float64")
    out = []
    for i, y in enumerate(labels):
        value = softplus(-(s * (cos[i, y] - m) - b))
        for j in range(cos.shape[1]):
            if j != y:
                value += lam * softplus(s * cos[i, j] - b)
        out.append(value)
    return np.array(out)


def subcenter_max(cos, k, keep=None):
    """Sub-center ArcFace's class cosine: the max over each class's K sub-centre columns
    (class j owns columns j·K … j·K + K − 1); ``keep[j][q]`` False drops a sub-centre (−1)."""
    n, ck = cos.shape
    out = np.zeros((n, ck // k))
    for i in range(n):
        for j in range(ck // k):
            values = [cos[i, j * k + q] if keep is None or keep[j][q] else -1.0 for q in range(k)]
            out[i, j] = max(values)
    return out


# ------------------------------------------------------------------------ pixel scalings
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def pixel_scaling(images, mode):
    """keras.applications' documented preprocessing of RGB pixels in [0, 255] (channels
    last), per pixel: ``"raw"`` unchanged, ``"unit"`` x/255, ``"symmetric"`` x/127.5 − 1,
    ``"imagenet"`` (x/255 − mean)/std, ``"caffe"`` RGB → BGR minus the BGR mean."""
    images = np.asarray(images)
    out = np.empty(images.shape, dtype="float64")
    for index in np.ndindex(images.shape[:-1]):
        rgb = images[index].astype("float64")
        if mode == "raw":
            out[index] = rgb
        elif mode == "unit":
            out[index] = rgb / 255.0
        elif mode == "symmetric":
            out[index] = rgb / 127.5 - 1.0
        elif mode == "imagenet":
            out[index] = (rgb / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
        elif mode == "caffe":
            out[index] = rgb[::-1] - np.array(CAFFE_MEAN_BGR)
        else:
            raise ValueError(f"unknown pixel scaling {mode!r}")
    return out
