"""NumPy loop references of sub-center ArcFace, CurricularFace, MagFace, AdaFace,
ElasticFace and UniFace, written from the papers (nothing here calls keras_margins).

Papers:
    Deng et al. 2020 (ECCV), "Sub-center ArcFace": max over K sub-centres.
    Huang et al. 2020 (CVPR), "CurricularFace": N(t, cos θ_j), t's moving average.
    Meng et al. 2021 (CVPR), "MagFace": m(a) linear on [l_a, u_a], g(a) = 1/a + a/u_a².
    Kim, Jain & Liu 2022 (CVPR), "AdaFace": ẑ, g_angle = −m·ẑ, g_add = m·ẑ + m, μ/σ EMA.
    Boutros et al. 2022 (CVPRW), "ElasticFace": E ~ N(m, σ²); "+": margins by rank.
    Zhou et al. 2023 (ICCV), "UniFace": L_uce-m with a bias b̃ and λ on the negatives.

Library conventions that are not in the papers are stated where they are used: ArcFace's
continuation cos θ − m·sin m past π (``arc_target``).
"""

import math

import numpy as np


def lse(values):
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def softplus(v):
    return max(v, 0.0) + math.log1p(math.exp(-abs(v)))


def arc_target(cos_y, m):
    """cos(θ + m); past π ArcFace's continuation cos θ − m·sin m (the library's convention)."""
    theta = math.acos(min(1.0, max(-1.0, cos_y)))
    if theta + m <= math.pi:
        return math.cos(theta + m)
    return cos_y - m * math.sin(m)


def ce_with_target(row, label, target_logit, other_logit):
    """−log softmax with the target logit and a function giving the other logits."""
    logits = [target_logit if j == label else other_logit(row[j]) for j in range(len(row))]
    return lse(logits) - target_logit


def ref_curricular(labels, cos, t, s, m):
    out = []
    for i, y in enumerate(labels):
        psi = arc_target(cos[i, y], m)

        def other(c, psi=psi):
            return s * c if psi - c >= 0 else s * c * (t + c)

        out.append(ce_with_target(cos[i], y, s * psi, other))
    return np.array(out)


def ref_curricular_t(t, cos_y, momentum=0.99):
    return momentum * t + (1 - momentum) * sum(cos_y) / len(cos_y)


def ref_magface(labels, cos, norms, s=64.0, la=10.0, ua=110.0, lm=0.45, um=0.8, lam=35.0,
                easy=False):
    out = []
    for i, y in enumerate(labels):
        a = min(max(norms[i], la), ua)
        m = (um - lm) / (ua - la) * (a - la) + lm
        if easy:
            theta = math.acos(cos[i, y])
            psi = math.cos(theta + m) if cos[i, y] > 0 else cos[i, y]
        else:
            psi = arc_target(cos[i, y], m)
        out.append(ce_with_target(cos[i], y, s * psi, lambda c: s * c) + lam * (1 / a + a / ua**2))
    return np.array(out)


def ref_adaface_scaler(norm, mean, std, h):
    n = min(max(norm, 1e-3), 100.0)
    return min(max(h * (n - mean) / (std + 1e-3), -1.0), 1.0)


def ref_adaface(labels, cos, norms, mean, std, s=64.0, m=0.4, h=0.333):
    eps = 1e-3
    out = []
    for i, y in enumerate(labels):
        z = ref_adaface_scaler(norms[i], mean, std, h)
        g_angle, g_add = -m * z, m * z + m
        theta = math.acos(min(1.0, max(-1.0, cos[i, y])))
        theta_m = min(max(theta + g_angle, eps), math.pi - eps)
        target = math.cos(theta_m) - g_add
        out.append(ce_with_target(cos[i], y, s * target, lambda c: s * c))
    return np.array(out)


def ref_adaface_stats(norms, mean, std, momentum=0.99):
    n = [min(max(v, 1e-3), 100.0) for v in norms]
    mu = sum(n) / len(n)
    var = sum((v - mu) ** 2 for v in n) / max(len(n) - 1, 1)
    return (momentum * mean + (1 - momentum) * mu, momentum * std + (1 - momentum) * math.sqrt(var))


def ref_elastic(labels, cos, margins, s=64.0, kind="arc"):
    out = []
    for i, y in enumerate(labels):
        if kind == "arc":
            target = arc_target(cos[i, y], min(max(margins[i], 0.0), math.pi - 1e-3))
        else:
            target = cos[i, y] - margins[i]
        out.append(ce_with_target(cos[i], y, s * target, lambda c: s * c))
    return np.array(out)


def ref_plus_assignment(draws, cos_y):
    """ElasticFace+: the k-th largest target cosine gets the k-th smallest margin."""
    ascending = sorted(draws)
    order = sorted(range(len(cos_y)), key=lambda i: -cos_y[i])
    out = [0.0] * len(cos_y)
    for k, i in enumerate(order):
        out[i] = ascending[k]
    return np.array(out)


def ref_uniface(labels, cos, b, s=64.0, m=0.4, lam=1.0):
    out = []
    for i, y in enumerate(labels):
        value = softplus(-(s * (cos[i, y] - m) - b))
        for j in range(cos.shape[1]):
            if j != y:
                value += lam * softplus(s * cos[i, j] - b)
        out.append(value)
    return np.array(out)


def ref_subcenter_max(cos, k, keep=None):
    n, ck = cos.shape
    out = np.zeros((n, ck // k))
    for i in range(n):
        for j in range(ck // k):
            values = [cos[i, j * k + q] if keep is None or keep[j][q] else -1.0 for q in range(k)]
            out[i, j] = max(values)
    return out


def unit_rows(x):
    x = np.asarray(x, "float64")
    out = np.zeros_like(x)
    for i in range(x.shape[0]):
        norm = math.sqrt(sum(float(v) ** 2 for v in x[i]))
        out[i] = x[i] / max(norm, 1e-12)
    return out


def norms_of(x):
    return np.array([math.sqrt(sum(float(v) ** 2 for v in row)) for row in np.asarray(x, "float64")])


def ref_arcface(labels, cos, s, m):
    return np.array([ce_with_target(cos[i], y, s * arc_target(cos[i, y], m), lambda c: s * c)
                     for i, y in enumerate(labels)])
