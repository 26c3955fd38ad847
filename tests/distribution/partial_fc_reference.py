"""Partial FC's class sample recomputed in plain NumPy from its documented rules, for the
tests (the class-parallel and multi-host children and tests/losses/test_partial_fc.py).

* K = max(⌈rate·C⌉, N), at most C (per device: C is the device's block of classes);
* seed of step t on device (shard) s: t + seed·0x9E3779B1 + s·0x3C6EF372, wrapping int32;
* the "exact" sampler: every class gets the hashed score hash(c·0x9E3779B1 + hash(seed)); the
  sample is the batch's classes plus the first K − |P| other classes in the order of
  decreasing score (ties: lower class first).

Nothing here calls the library, so a library that gives every device the same seed, samples
the whole head instead of each device's block, or maps labels to the wrong block disagrees.
"""

import math

import numpy as np

MASK32 = 0xFFFFFFFF


def wrap_int32(value):
    """A Python int as the int32 it wraps to."""
    return ((int(value) & MASK32) ^ 0x80000000) - 0x80000000


def hash32(x):
    """The sampler's int32 mixing function on uint32 bit patterns (int64 arrays)."""
    x = np.asarray(x, dtype=np.int64) & MASK32
    for _ in range(2):
        x = (x ^ (x >> 16)) & MASK32
        x = (x * 0x045D9F3B) & MASK32
    x = (x ^ (x >> 16)) & MASK32
    return x & 0x7FFFFFFF


def step_seed(seed, step, shard=0):
    """int32 seed of training step ``step`` on shard ``shard``."""
    return wrap_int32(step + wrap_int32(seed * 0x9E3779B1) + shard * 0x3C6EF372)


def num_sampled(num_classes, batch, rate):
    return min(num_classes, max(math.ceil(rate * num_classes - 1e-9), batch))


def exact_sample(labels, num_classes, k, seed):
    """The set of K class ids (0 … C − 1) the exact sampler keeps for ``labels`` (ids outside
    [0, C) are other blocks' classes and ignored)."""
    labels = np.asarray(labels)
    positives = sorted({int(v) for v in labels if 0 <= v < num_classes})
    h = int(hash32(seed & MASK32))
    classes = np.arange(num_classes, dtype=np.int64)
    scores = hash32(classes * 0x9E3779B1 + h)
    order = np.lexsort((classes, -scores))  # decreasing score, lower class first on ties
    others = [int(c) for c in order if int(c) not in set(positives)]
    chosen = set(positives) | set(others[: k - len(positives)])
    assert len(chosen) == k
    return chosen


def sharded_sample(labels, num_classes, shards, rate, seed, step):
    """Per device s: the set of global class ids it samples from its block
    [s·B, (s + 1)·B), B = C / shards, with K_b = max(⌈rate·B⌉, N)."""
    labels = np.asarray(labels)
    block = num_classes // shards
    k = num_sampled(block, len(labels), rate)
    out = []
    for s in range(shards):
        local = exact_sample(labels - s * block, block, k, step_seed(seed, step, s))
        out.append({c + s * block for c in local})
    return out
