"""Predefined evenly-distributed class centroids (PEDCC; Zhu & Zu, arXiv:2111.15449).

Runs once, at build time, in NumPy (the result becomes a fixed, non-trainable weight).
Construction and deviations: ``docs/papers.md`` §3.1.
"""

import functools

import numpy as np


def _random_orthonormal(rng, dim, k):
    """(dim, k) matrix with orthonormal columns (QR of a Gaussian, signs fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((dim, k)))
    return q * np.sign(np.diag(r))


def _simplex(num_classes, dim, rng):
    """C unit vectors with pairwise cosine exactly −1/(C−1), summing to 0, in R^D (C ≤ D+1).

    The centred one-hots e_k − 1/C span a (C−1)-dim space; their coordinates in an
    orthonormal basis of it are rotated into R^D by a random orthonormal map.
    """
    centred = np.eye(num_classes) - 1.0 / num_classes
    _, _, vt = np.linalg.svd(centred)
    coords = centred @ vt[: num_classes - 1].T  # (C, C-1)
    coords /= np.linalg.norm(coords, axis=1, keepdims=True)
    return coords @ _random_orthonormal(rng, dim, num_classes - 1).T  # (C, D)


def _repulsion(num_classes, dim, rng, iterations, step):
    """Points on S^{D−1} pushed apart by inverse-square forces (Coulomb energy descent).

    Each step moves u_m along the tangential part of F_m = Σ_n (u_m − u_n)/d_mn³ (distances
    floored at 1e-2), with a step that decays geometrically, then renormalises.
    """
    u = rng.standard_normal((num_classes, dim))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    decay = (1e-3) ** (1.0 / max(iterations - 1, 1))
    diagonal = np.eye(num_classes, dtype=bool)
    for it in range(iterations):
        # Unit vectors: ||u_m − u_n||² = 2 − 2 u_m·u_n, so everything is (C, C) or (C, D)
        # (no (C, C, D) difference tensor: 1 000 classes stay at a few MB per step).
        gram = u @ u.T
        dist = np.sqrt(np.maximum(2.0 - 2.0 * gram, 1e-4))  # floored at 1e-2
        weight = np.where(diagonal, 0.0, dist**-3)
        # F_m = Σ_n (u_m − u_n)/d_mn³ = u_m Σ_n w_mn − Σ_n w_mn u_n
        force = u * weight.sum(axis=1, keepdims=True) - weight @ u
        force -= np.sum(force * u, axis=1, keepdims=True) * u
        scale = np.max(np.linalg.norm(force, axis=1))
        u = u + (step * decay**it / max(scale, 1e-12)) * force
        u /= np.linalg.norm(u, axis=1, keepdims=True)
    return u


def pedcc_centroids(num_classes, dim, seed=0, iterations=1000, step=0.1):
    """(D, C) NumPy float32 array of unit columns evenly spread on the sphere.

    C ≤ D+1: the exact regular simplex (Gram matrix 1 on the diagonal, −1/(C−1) elsewhere,
    columns summing to zero), randomly rotated into R^D. C > D+1: repulsion on the sphere
    (``iterations`` steps of geometrically decaying size, starting at ``step``).
    Deterministic for a given ``seed``; cached per process.

    Args:
        num_classes: C >= 2.
        dim: D >= 1.
        seed: integer seed of the rotation / initial points, or None for fresh randomness
            (default 0).
        iterations: repulsion steps for C > D+1 (default 1000).
        step: initial repulsion step size, > 0 (default 0.1).

    Returns:
        A (D, C) float32 NumPy array.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> c = km.ops.pedcc_centroids(4, 3)
    >>> c.shape
    (3, 4)
    >>> print(np.round(c.T @ c, 4))
    [[ 1.     -0.3333 -0.3333 -0.3333]
     [-0.3333  1.     -0.3333 -0.3333]
     [-0.3333 -0.3333  1.     -0.3333]
     [-0.3333 -0.3333 -0.3333  1.    ]]

    Reference:
        - Zhu & Zu, 2021. POD loss on predefined evenly-distributed class centroids, [arXiv:2111.15449](https://arxiv.org/abs/2111.15449).
    """
    for name, value, low in (("num_classes", num_classes, 2), ("dim", dim, 1)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"`{name}` must be an integer >= {low}; got {value!r}.")
    if not isinstance(iterations, (int, np.integer)) or iterations < 1:
        raise ValueError(f"`iterations` must be an integer >= 1; got {iterations!r}.")
    if not step > 0:
        raise ValueError(f"`step` must be > 0; got {step}.")
    generate = _generate.__wrapped__ if seed is None else _generate  # None: fresh randomness
    return generate(int(num_classes), int(dim), seed, int(iterations), float(step)).copy()


@functools.lru_cache(maxsize=16)
def _generate(num_classes, dim, seed, iterations, step):
    """Cached: a head rebuilt in the same process (e.g. on reload) does not repeat the
    repulsion, which takes about a minute for 1 000 classes."""
    rng = np.random.default_rng(seed)
    if num_classes <= dim + 1:
        rows = _simplex(num_classes, dim, rng)
    else:
        rows = _repulsion(num_classes, dim, rng, iterations, step)
    return np.ascontiguousarray(rows.T, dtype="float32")
