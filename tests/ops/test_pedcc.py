"""km.ops.pedcc_centroids (Zhu & Zu, PEDCC; docs/papers.md §3.1)."""

import numpy as np
import pytest

import keras_margins as km


def smallest_angle(c):
    c = c.astype("float64")
    gram = c.T @ c
    np.fill_diagonal(gram, -2.0)
    return np.arccos(np.clip(gram.max(), -1.0, 1.0))


@pytest.mark.parametrize("num_classes,dim", [(10, 32), (10, 9), (3, 2), (2, 1), (5, 64)])
def test_simplex_when_c_at_most_d_plus_1(num_classes, dim):
    c = km.ops.pedcc_centroids(num_classes, dim, seed=3)
    assert c.shape == (dim, num_classes) and c.dtype == np.float32
    expected = np.full((num_classes, num_classes), -1.0 / (num_classes - 1))
    np.fill_diagonal(expected, 1.0)
    np.testing.assert_allclose(c.T.astype("float64") @ c, expected, atol=1e-6)
    np.testing.assert_allclose(c.sum(axis=1), 0.0, atol=1e-6)  # zero centroid


@pytest.mark.parametrize("num_classes,dim", [(12, 3), (30, 8)])
def test_repulsion_when_c_above_d_plus_1(num_classes, dim):
    c = km.ops.pedcc_centroids(num_classes, dim)
    np.testing.assert_allclose(np.linalg.norm(c, axis=0), 1.0, atol=1e-6)
    best = max(smallest_angle(km.ops.pedcc_centroids(num_classes, dim, seed=s)) for s in range(1, 11))
    assert smallest_angle(c) >= 0.95 * best
    if (num_classes, dim) == (12, 3):  # the optimum is the icosahedron: 63.43°
        assert np.degrees(smallest_angle(c)) == pytest.approx(63.435, abs=0.05)


def test_deterministic_per_seed():
    for c, d in [(10, 16), (12, 3)]:
        np.testing.assert_array_equal(
            km.ops.pedcc_centroids(c, d, seed=4), km.ops.pedcc_centroids(c, d, seed=4)
        )
        assert not np.allclose(km.ops.pedcc_centroids(c, d, seed=4), km.ops.pedcc_centroids(c, d, seed=5))


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        km.ops.pedcc_centroids(1, 4)
    with pytest.raises(ValueError, match="dim"):
        km.ops.pedcc_centroids(3, 0)
    with pytest.raises(ValueError, match="iterations"):
        km.ops.pedcc_centroids(12, 3, iterations=0)
