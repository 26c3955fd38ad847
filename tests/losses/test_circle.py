"""km.losses.CircleLoss / PairCircleLoss: reductions, keras.losses.Circle agreement, saving."""

import keras
import numpy as np
import pytest
import references as ref

import keras_margins as km
from keras_margins.testing import value_and_grad


def test_circle_loss_is_batch_mean_of_reference():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=9)
    cos = np.clip(rng.normal(scale=0.5, size=(9, 5)), -1, 1).astype("float32")
    want = ref.circle_class_level(labels, cos.astype("float64"), 0.25, 256.0)
    loss = km.losses.CircleLoss()
    np.testing.assert_allclose(float(loss(labels, cos)), want.mean(), rtol=1e-5)
    weights = rng.random(9).astype("float32")
    np.testing.assert_allclose(
        float(loss(labels[:, None], cos, sample_weight=weights)),
        np.sum(want * weights) / 9,
        rtol=1e-5,
    )


def test_pair_circle_mean_over_valid_anchors():
    rng = np.random.default_rng(1)
    labels = np.array([0, 0, 1, 1, 2, 3, 3, 4])  # anchors 4 and 7 have no positive
    emb = rng.normal(size=(8, 5)).astype("float32")
    per_anchor, valid = ref.circle_pairwise(labels, emb.astype("float64"), 0.4, 80.0)
    loss = km.losses.PairCircleLoss()
    np.testing.assert_allclose(float(loss(labels, emb)), per_anchor[valid].mean(), rtol=1e-5)
    weights = rng.random(8).astype("float32")
    np.testing.assert_allclose(
        float(loss(labels, emb, sample_weight=weights)),
        np.sum(per_anchor * weights) / valid.sum(),
        rtol=1e-5,
    )


def test_pair_circle_no_valid_anchor_is_zero_with_finite_gradient():
    emb = np.random.default_rng(2).normal(size=(5, 4)).astype("float32")
    loss_fn = km.losses.PairCircleLoss(gamma=256.0)
    loss, (grad,) = value_and_grad(lambda e: loss_fn(np.arange(5), e), emb)
    assert loss == 0.0
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_keras_circle_where_definitions_coincide(seed):
    """Same forward value as keras.losses.Circle on unit embeddings where every anchor has a
    positive and a negative; gradients differ only by the stop-gradient on the weights."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), 4)
    emb = ref.unit_rows(rng.normal(size=(16, 8))).astype("float32")
    ours = km.losses.PairCircleLoss(margin=0.4, gamma=80.0)(labels, emb)
    theirs = keras.losses.Circle(margin=0.4, gamma=80.0)(labels, emb)
    np.testing.assert_allclose(float(ours), float(theirs), rtol=1e-5)
    # Keras' per-anchor function equals ours anchor by anchor
    np.testing.assert_allclose(
        np.asarray(km.ops.circle_pairwise(labels, emb)),
        np.asarray(keras.losses.circle(labels, emb, margin=0.4, gamma=80.0)),
        rtol=1e-5,
    )
    # difference: Keras differentiates through the self-paced weights alpha
    _, (g_ours,) = value_and_grad(lambda e: km.losses.PairCircleLoss()(labels, e), emb)
    _, (g_keras,) = value_and_grad(lambda e: keras.losses.Circle()(labels, e), emb)
    assert np.all(np.isfinite(g_ours)) and not np.allclose(g_ours, g_keras, rtol=1e-3)


def test_keras_circle_differs_on_unnormalised_embeddings():
    rng = np.random.default_rng(4)
    labels = np.repeat(np.arange(3), 3)
    emb = 3.0 * rng.normal(size=(9, 4)).astype("float32")
    ours = float(km.losses.PairCircleLoss()(labels, emb))
    unit = float(keras.losses.Circle()(labels, ref.unit_rows(emb).astype("float32")))
    np.testing.assert_allclose(ours, unit, rtol=1e-5)  # ours normalises, Keras expects unit input


def test_pair_circle_with_miner_uses_mined_masks():
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(4), 3)
    emb = rng.normal(size=(12, 6)).astype("float32")
    miner = km.miners.BatchHardMiner()
    pos, neg = miner(labels, emb)
    per_anchor, valid = ref.circle_pairwise(
        labels, emb.astype("float64"), 0.4, 80.0, np.asarray(pos), np.asarray(neg)
    )
    got = km.losses.PairCircleLoss(miner=miner)(labels, emb)
    np.testing.assert_allclose(float(got), per_anchor[valid].mean(), rtol=1e-5)


def test_mixed_precision_inputs_compute_in_float32():
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(3), 4)
    emb16 = rng.normal(size=(12, 8)).astype("float16")
    got = km.losses.PairCircleLoss(gamma=256.0)(labels, emb16)
    want = km.losses.PairCircleLoss(gamma=256.0)(labels, emb16.astype("float32"))
    assert keras.backend.standardize_dtype(got.dtype) == "float32"
    np.testing.assert_allclose(float(got), float(want), rtol=1e-6)
    cos16 = np.clip(rng.normal(size=(12, 4)), -1, 1).astype("float16")
    assert np.isfinite(float(km.losses.CircleLoss()(labels, cos16)))


@pytest.mark.parametrize(
    "loss",
    [
        km.losses.CircleLoss(margin=0.3, gamma=128.0),
        km.losses.PairCircleLoss(),
        km.losses.PairCircleLoss(miner=km.miners.SemiHardMiner(margin=0.3)),
    ],
)
def test_config_roundtrip(loss):
    clone = km.testing.config_roundtrip(loss)
    assert clone.needs == loss.needs


def test_bad_arguments():
    with pytest.raises(ValueError, match="gamma"):
        km.losses.CircleLoss(gamma=-1.0)
    with pytest.raises(ValueError, match="margin"):
        km.losses.PairCircleLoss(margin=-0.1)
    with pytest.raises(ValueError, match="miner"):
        km.losses.PairCircleLoss(miner="hard")


def test_class_level_fit_and_save_load(tmp_path):
    (x, y), (xt, yt) = km.data.digits_classification()
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(32), km.layers.LargestMarginHead(10)]
    )
    model.compile(
        keras.optimizers.Adam(1e-2),
        loss=km.losses.CircleLoss(),
        metrics=["accuracy"],
        jit_compile=True,
    )
    model.fit(x, y, epochs=4, batch_size=64, verbose=0)
    _, acc = model.evaluate(xt, yt, verbose=0)
    assert acc > 0.85
    km.testing.assert_save_load_identical(model, xt[:16], tmp_path)


def test_pair_circle_fit_improves_and_saves(tmp_path):
    (x, y), _ = km.data.digits_zero_shot()
    ds = km.data.pk_batches((x, y), p=5, k=6, seed=0, steps_per_epoch=10)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16)])
    # Glorot-uniform start from NumPy: the same on every backend (their RNG streams differ)
    kernel = np.random.default_rng(0).uniform(-1, 1, (64, 16)) * np.sqrt(6 / 80)
    model.set_weights([kernel.astype("float32"), np.zeros(16, "float32")])
    model.compile(
        keras.optimizers.Adam(1e-2),
        loss=km.losses.PairCircleLoss(miner=km.miners.MultiSimilarityMiner()),
        jit_compile=True,
    )
    history = model.fit(ds, epochs=4, verbose=0, shuffle=False)
    assert history.history["loss"][-1] < 0.7 * history.history["loss"][0]
    reloaded = km.testing.assert_save_load_identical(model, x[:16], tmp_path)
    assert isinstance(reloaded.loss.miner, km.miners.MultiSimilarityMiner)


def test_class_level_circle_rejects_embeddings_and_points_to_pair_circle():
    """The pytorch-metric-learning trap: its CircleLoss takes (N, D) embeddings; ours is
    class-level on cosines. Embeddings with D >= C pass every shape check, so the values tell."""
    rng = np.random.default_rng(7)
    labels = np.repeat(np.arange(4), 4)
    embeddings = rng.normal(scale=3.0, size=(16, 8)).astype("float32")
    with pytest.raises(ValueError, match=r"`y_pred`.*PairCircleLoss"):
        km.losses.CircleLoss()(labels, embeddings)
    # the same embeddings as PairCircleLoss: the reference value
    per_anchor, valid = ref.circle_pairwise(labels, embeddings.astype("float64"), 0.4, 80.0)
    got = float(km.losses.PairCircleLoss()(labels, embeddings))
    np.testing.assert_allclose(got, per_anchor[valid].mean(), rtol=1e-5)
    # cosines, exactly ±1 included, and float32 round-off just above 1 are accepted
    cos = np.clip(rng.normal(size=(16, 4)), -1, 1).astype("float32")
    cos[0, 0], cos[1, 1], cos[2, 2] = 1.0, -1.0, 1.0 + 1e-6
    assert np.isfinite(float(km.losses.CircleLoss()(labels, cos)))
    cos[3, 0] = 1.01
    with pytest.raises(ValueError, match="y_pred"):
        km.losses.CircleLoss()(labels, cos)


def test_circle_docstrings_say_which_is_pytorch_metric_learnings():
    class_level = " ".join(km.losses.CircleLoss.__doc__.split())
    pair = " ".join(km.losses.PairCircleLoss.__doc__.split())
    assert "pytorch-metric-learning" in class_level and "PairCircleLoss" in class_level
    assert "pytorch-metric-learning calls ``CircleLoss``" in pair
