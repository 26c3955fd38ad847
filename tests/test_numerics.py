"""Numerics: every loss gives a finite value AND finite gradients (w.r.t.
the features and the class kernel) at the edges: cosines of exactly +1 and -1, zero-norm
features and class columns, one-class batches, batches without a positive pair, identical
embeddings, and the largest published scales (s = 64, gamma = 256)."""

import keras
import numpy as np
import pytest

import keras_margins as km

N, D, C = 6, 4, 6
# Class columns +e0, -e0, +e1, -e1, +e2, -e2: a feature equal to its class column has
# cos_y = +1 and cosine -1 with the opposite column.
KERNEL = np.zeros((D, C), "float32")
for _c in range(C):
    KERNEL[_c // 2, _c] = 1.0 if _c % 2 == 0 else -1.0
LABELS = np.array([0, 1, 2, 3, 0, 1])


def _scenario(name):
    """(labels, features, kernel) of one edge case."""
    labels, kernel = LABELS.copy(), KERNEL.copy()
    if name == "cos_plus_one":
        features = kernel.T[labels] * 3.0
    elif name == "cos_minus_one":
        features = -kernel.T[labels]
    elif name == "zero_features":
        features = kernel.T[labels].copy()
        features[[0, 3]] = 0.0
    elif name == "all_zero_features":
        features = np.zeros((N, D), "float32")
    elif name == "zero_kernel_column":
        features = np.random.default_rng(1).normal(size=(N, D)).astype("float32")
        kernel[:, 2] = 0.0
    elif name == "one_class":
        labels = np.zeros(N, "int64")
        features = np.random.default_rng(2).normal(size=(N, D)).astype("float32")
    elif name == "no_positive_pair":
        labels = np.arange(N)
        features = np.random.default_rng(3).normal(size=(N, D)).astype("float32")
    elif name == "identical_embeddings":
        features = np.ones((N, D), "float32")
    else:  # pragma: no cover
        raise KeyError(name)
    return labels, features.astype("float32"), kernel


SCENARIOS = [
    "cos_plus_one", "cos_minus_one", "zero_features", "all_zero_features",
    "zero_kernel_column", "one_class", "no_positive_pair", "identical_embeddings",
]


def _on_cosines(loss):
    return lambda y, f, w: loss(y, km.ops.cosine_similarity(f, w))


_ENSEMBLE_MODEL = []


def _ensemble_loss(y, f, w):
    """LossEnsemble (ArcFace s=64 + PairCircle gamma=256) through its compute_model_loss."""
    if not _ENSEMBLE_MODEL:  # built once, outside any gradient trace
        model = km.models.MarginModel(keras.Sequential([keras.layers.Identity()]),
                                      km.layers.LargestMarginHead(C))
        model.build((None, D))
        model.compile("sgd", loss=km.losses.LossEnsemble(
            [km.losses.ArcFace(64.0), km.losses.PairCircleLoss(gamma=256.0)]))
        _ENSEMBLE_MODEL.append(model)
    model = _ENSEMBLE_MODEL[0]
    outputs = {"embedding": f, "scores": km.ops.cosine_similarity(f, w)}
    return model.loss.compute_model_loss(y, outputs, model, training=False)


LOSSES = {
    "arcface_s64": _on_cosines(km.losses.ArcFace(64.0, 0.5)),
    "cosface_s64": _on_cosines(km.losses.CosFace(64.0, 0.35)),
    "sphereface_s64_m4": _on_cosines(km.losses.SphereFace(64.0, 4.0)),
    "normface_s64": _on_cosines(km.losses.NormFace(64.0)),
    "combined_margin_s64": _on_cosines(km.losses.MarginSoftmax(64.0, m1=1.5, m2=0.3, m3=0.2)),
    "lm_softmax_s64_smw": _on_cosines(km.losses.LMSoftmax(64.0, sample_margin_weight=1.0)),
    "circle_g256": _on_cosines(km.losses.CircleLoss(0.25, 256.0)),
    "virtual_softmax": lambda y, f, w: km.losses.VirtualSoftmax()(
        y, km.ops.virtual_log_probs(f * 30.0, w * 30.0)),
    "pod": lambda y, f, w: km.losses.POD(delta=0.05)(
        y, {"features": f, "centroids": w, "delta": 0.05}),
    "pair_circle_g256": lambda y, f, w: km.losses.PairCircleLoss(0.25, 256.0)(y, f),
    "pair_circle_batch_hard": lambda y, f, w: km.losses.PairCircleLoss(
        gamma=256.0, miner=km.miners.BatchHardMiner())(y, f),
    "pair_circle_semi_hard": lambda y, f, w: km.losses.PairCircleLoss(
        gamma=256.0, miner=km.miners.SemiHardMiner())(y, f),
    "pair_circle_multi_similarity": lambda y, f, w: km.losses.PairCircleLoss(
        gamma=256.0, miner=km.miners.MultiSimilarityMiner())(y, f),
    "loss_ensemble": _ensemble_loss,
}


value_and_grad = km.testing.value_and_grad  # backend-agnostic; unused args get zero gradients


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_loss_and_gradients_are_finite(loss_name, scenario):
    labels, features, kernel = _scenario(scenario)
    loss = LOSSES[loss_name]
    value, (g_features, g_kernel) = value_and_grad(
        lambda f, w: loss(labels, f, w), features, kernel
    )
    value = np.asarray(value)
    assert value.shape == () and np.isfinite(value), (loss_name, scenario, value)
    for name, grad in (("features", g_features), ("kernel", g_kernel)):
        grad = np.asarray(grad)
        assert np.all(np.isfinite(grad)), (loss_name, scenario, name, grad)


def test_edge_values_are_the_expected_ones():
    """Hand-checked values, so the finite-ness test cannot pass on a constant."""
    labels, features, kernel = _scenario("no_positive_pair")
    # No anchor has a positive: pair Circle loss is exactly 0 with zero gradient.
    value, (g_f, _) = value_and_grad(
        lambda f, w: km.losses.PairCircleLoss(gamma=256.0)(labels, f), features, kernel)
    assert float(value) == 0.0 and not np.any(np.asarray(g_f))
    # All-zero features: every cosine is 0, so NormFace is log(C) and Virtual Softmax log(C+1).
    labels, features, kernel = _scenario("all_zero_features")
    cos = km.ops.cosine_similarity(features, kernel)
    np.testing.assert_allclose(float(km.losses.NormFace(64.0)(labels, cos)), np.log(C), rtol=1e-6)
    u = km.ops.virtual_log_probs(features, kernel)
    np.testing.assert_allclose(float(km.losses.VirtualSoftmax()(labels, u)), np.log(C + 1), rtol=1e-6)
    # cos_y = +1, ArcFace: target logit s*cos(m) vs. others s*cos (one at -1, four at 0):
    # L = log(1 + (4 + e^{-s}) e^{-s cos 0.5}); at s = 64 it underflows to exactly 0.
    labels, features, kernel = _scenario("cos_plus_one")
    cos = km.ops.cosine_similarity(features, kernel)
    for s in (4.0, 64.0):
        expected = np.log1p((4 + np.exp(-s)) * np.exp(-s * np.cos(0.5)))
        got = float(km.losses.ArcFace(s, 0.5)(labels, cos))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
