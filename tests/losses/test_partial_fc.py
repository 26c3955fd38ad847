"""Partial FC (An et al., ICCVW 2021): km.ops.sample_classes, km.losses.PartialFC and the
class-major storage of LargestMarginHead, against the NumPy references of ``tests/references.py``
(cosines, ArcFace, NormFace) and the sampling rules of ``tests/distribution/partial_fc_reference.py``."""

import importlib.util
import math
import os

import keras
import numpy as np
import pytest
import references as ref

import keras_margins as km
from keras_margins.testing import jit, value_and_grad_of_variables

# The sampling rules recomputed in NumPy (shared with the class-parallel tests).
_SPEC = importlib.util.spec_from_file_location(
    "partial_fc_reference",
    os.path.join(os.path.dirname(__file__), os.pardir, "distribution", "partial_fc_reference.py"))
sampling = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(sampling)

C, D, N, IN = 40, 6, 12, 5
RNG = np.random.default_rng(0)
X = RNG.normal(size=(N, IN)).astype("float32")
Y = RNG.integers(0, C, size=N).astype("int32")


def mean_arcface(labels, cos):
    """Mean of the NumPy ArcFace reference with the preset's s = 64, m = 0.5."""
    return float(np.mean(ref.arcface(labels, cos, 64.0, 0.5)))


def check_sample(labels, ids, local, num_classes, num_sampled, offset=0):
    """The sampler's contract, checked element by element."""
    ids, local = np.asarray(ids), np.asarray(local)
    assert ids.shape == (num_sampled,) and local.shape == (len(labels),)
    assert len(set(ids.tolist())) == num_sampled, "sampled ids repeat"
    assert ids.min() >= 0 and ids.max() < num_classes
    for i, label in enumerate(labels):
        if offset <= label < offset + num_classes:
            assert ids[local[i]] + offset == label, "label mapped to the wrong column"
        else:
            assert local[i] == -1


def _model(loss, layout=None, num_classes=C, optimizer="sgd", jit_compile=True, seed=0):
    """MarginModel(Dense backbone, LargestMarginHead) compiled with ``loss``; ``layout`` None:
    the head's default storage."""
    keras.utils.set_random_seed(seed)
    backbone = keras.Sequential([keras.Input((IN,)), keras.layers.Dense(D)])
    kwargs = {} if layout is None else {"kernel_layout": layout}
    model = km.models.MarginModel(backbone, km.layers.LargestMarginHead(num_classes, **kwargs))
    model.compile(optimizer, loss=loss, jit_compile=jit_compile)
    model.build((None, IN))
    return model


# --------------------------------------------------------------------------- the sampler
METHODS = ["exact", "affine"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("num_classes, num_sampled, batch", [(10, 5, 5), (40, 12, 12), (97, 30, 8),
                                                              (1000, 100, 64), (7, 7, 3)])
def test_sample_contains_every_batch_class_and_maps_labels(num_classes, num_sampled, batch, method):
    rng = np.random.default_rng(num_classes)
    for seed in range(12):
        for labels in (rng.integers(0, num_classes, batch),
                       rng.integers(0, min(3, num_classes), batch),  # many repeats
                       np.full(batch, num_classes - 1)):
            ids, local = km.ops.sample_classes(labels.astype("int32"), num_classes, num_sampled, seed,
                                               method=method)
            check_sample(labels, ids, local, num_classes, num_sampled)


@pytest.mark.parametrize("method", METHODS)
def test_sample_every_slot_a_batch_class(method):
    """K = N distinct labels: the sample is exactly the batch's classes."""
    labels = np.random.default_rng(1).permutation(50)[:16].astype("int32")
    for seed in range(10):
        ids, local = km.ops.sample_classes(labels, 50, 16, seed, method=method)
        assert set(np.asarray(ids).tolist()) == set(labels.tolist())
        check_sample(labels, ids, local, 50, 16)


@pytest.mark.parametrize("method", METHODS)
def test_sample_block_of_a_shard(method):
    """Per-shard use: labels of other blocks are not positives (−1), ids are block-local."""
    labels = np.array([3, 25, 27, 39, 25, 10, 31], "int32")
    for seed in range(10):
        ids, local = km.ops.sample_classes(labels, 10, 7, seed, class_offset=20, method=method)
        check_sample(labels, ids, local, 10, 7, offset=20)
        assert {25, 27} <= set((np.asarray(ids) + 20).tolist())
        np.testing.assert_array_equal(np.asarray(local)[[0, 3, 5, 6]], -1)


def test_sample_rate_one_is_every_class_in_order():
    ids, local = km.ops.sample_classes(np.array([4, 0, 4, -1]), 6, 6, seed=3)
    np.testing.assert_array_equal(ids, np.arange(6))
    np.testing.assert_array_equal(local, [4, 0, 4, -1])


@pytest.mark.parametrize("method", METHODS)
def test_sample_is_uniform_over_other_classes(method):
    """Every class outside the batch is drawn with probability (K − |P|)/(C − |P|); the
    exact sampler also draws (nearly) a new subset every time."""
    num_classes, num_sampled, labels = 30, 8, np.array([0, 1, 1, 2], "int32")
    counts = np.zeros(num_classes)
    sets = set()
    trials = 1500
    for seed in range(trials):
        ids = np.asarray(km.ops.sample_classes(labels, num_classes, num_sampled, seed, method=method)[0])
        counts[ids] += 1
        sets.add(tuple(sorted(ids.tolist())))
    np.testing.assert_array_equal(counts[:3], trials)
    p = (num_sampled - 3) / (num_classes - 3)
    sigma = math.sqrt(trials * p * (1 - p))
    assert np.abs(counts[3:] - trials * p).max() < 5 * sigma, counts
    if method == "exact":  # 80 730 possible subsets: almost never the same twice
        assert len(sets) > 0.95 * trials
    else:  # at most φ(30)·30 = 240 windows
        assert 50 < len(sets) <= 240


def test_auto_method_switches_to_affine_for_large_c():
    labels = np.array([5, 200_000], "int32")
    auto = km.ops.sample_classes(labels, 300_000, 10, seed=4)
    affine = km.ops.sample_classes(labels, 300_000, 10, seed=4, method="affine")
    np.testing.assert_array_equal(auto[0], affine[0])
    small = km.ops.sample_classes(labels[:1], 1000, 10, seed=4)
    np.testing.assert_array_equal(small[0], km.ops.sample_classes(labels[:1], 1000, 10, 4, method="exact")[0])


@pytest.mark.parametrize("method", METHODS)
def test_sample_same_seed_same_sample_and_compiles(method):
    labels = np.array([5, 9, 5, 30, 2, 2], "int32")
    fast = jit(lambda y, s: km.ops.sample_classes(y, 64, 16, s, method=method))
    for seed in (0, 7, 123456):
        eager = km.ops.sample_classes(labels, 64, 16, seed, method=method)
        compiled = fast(labels, np.int32(seed))
        np.testing.assert_array_equal(eager[0], compiled[0])
        np.testing.assert_array_equal(eager[1], compiled[1])
        check_sample(labels, *compiled, 64, 16)


# ------------------------------------------------------------------------------ the loss
@pytest.mark.parametrize("num_classes, batch, rate", [(40, 12, 0.1), (40, 12, 0.5), (1000, 64, 0.1),
                                                      (1000, 256, 0.1), (10, 4, 0.5), (7, 3, 1.0)])
def test_num_sampled_is_static_formula(num_classes, batch, rate):
    loss = km.losses.PartialFC(km.losses.ArcFace(), rate)
    expected = min(num_classes, max(math.ceil(rate * num_classes), batch))
    assert loss.num_sampled(num_classes, batch) == expected
    ids, local = loss.sample(np.zeros(batch, "int32"), num_classes)
    assert tuple(ids.shape) == (expected,) and tuple(local.shape) == (batch,)


def _value_and_grads(model, loss_fn):
    weights = [model.head.trainable_weights[0], *model.backbone.trainable_weights]

    def fn():
        outputs = {"embedding": model.backbone(X), "scores": None}
        return loss_fn(outputs)

    return value_and_grad_of_variables(fn, weights)


@pytest.mark.parametrize("layout", ["class_major", "feature_major"])
@pytest.mark.parametrize("wrapped", [km.losses.ArcFace, km.losses.LMSoftmax, km.losses.CircleLoss,
                                     lambda: km.losses.MarginSoftmax(30.0, m2=0.2, m3=0.1),
                                     km.losses.ProxyNCALoss])
def test_rate_one_is_the_wrapped_loss(layout, wrapped):
    model = _model(km.losses.PartialFC(wrapped(), 1.0, seed=0), layout)
    pfc, plain = model.loss, wrapped()
    value, grads = _value_and_grads(
        model, lambda o: pfc.compute_model_loss(Y, o, model, training=True))
    ref_value, ref_grads = _value_and_grads(model, lambda o: plain(Y, model.head(o["embedding"])))
    assert value == pytest.approx(ref_value, rel=1e-6, abs=1e-6)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-6, atol=1e-6)
    if isinstance(plain, km.losses.ArcFace):  # and both equal the NumPy reference
        features = keras.ops.convert_to_numpy(model.backbone(X)).astype("float64")
        kernel = keras.ops.convert_to_numpy(model.head.kernel).astype("float64")
        assert value == pytest.approx(mean_arcface(Y, ref.cosine(features, kernel)), rel=1e-5)


@pytest.mark.parametrize("layout", ["class_major", "feature_major"])
def test_sampled_value_is_the_loss_on_the_sampled_columns(layout):
    """Rate 0.3: the training loss = NumPy ArcFace on the cosines of the sampled columns,
    with each label's target in its own column."""
    loss = km.losses.PartialFC(km.losses.ArcFace(), 0.3, seed=5)
    model = _model(loss, layout)
    features = keras.ops.convert_to_numpy(model.backbone(X))
    value = float(loss.compute_model_loss(Y, {"embedding": features, "scores": None}, model))
    ids, local = (np.asarray(a) for a in loss.sample(Y, C, step=0))
    assert len(ids) == 12 and set(Y.tolist()) <= set(ids.tolist())
    np.testing.assert_array_equal(ids[local], Y)
    kernel = keras.ops.convert_to_numpy(model.head.kernel).astype("float64")
    cos = ref.cosine(features.astype("float64"), kernel[:, ids])
    assert value == pytest.approx(mean_arcface(local, cos), rel=1e-5)
    full = mean_arcface(Y, ref.cosine(features.astype("float64"), kernel))
    assert abs(value - full) > 1e-3  # fewer negatives: a different value


@pytest.mark.parametrize("layout", ["class_major", "feature_major"])
def test_sgd_step_changes_only_sampled_classes(layout):
    """The rows a step changes are the sample recomputed in NumPy from the documented rules
    (K, the step's seed, the exact sampler), step after step."""
    loss = km.losses.PartialFC(km.losses.ArcFace(), 0.25, seed=3)
    model = _model(loss, layout, optimizer=keras.optimizers.SGD(0.5))
    k = sampling.num_sampled(C, N, 0.25)
    assert k == max(math.ceil(0.25 * C), N)
    for step in range(3):
        before = keras.ops.convert_to_numpy(model.head.centers).copy()
        expected = sampling.exact_sample(Y, C, k, sampling.step_seed(3, step))
        model.train_on_batch(X, Y)
        after = keras.ops.convert_to_numpy(model.head.centers)
        changed = set(np.flatnonzero(np.any(after != before, axis=1)).tolist())
        assert changed == expected, (sorted(changed), sorted(expected))


def test_step_counter_draws_a_new_sample_each_step():
    loss = km.losses.PartialFC(km.losses.ArcFace(), 0.6, seed=3)  # K = 24: 12+ drawn classes
    model = _model(loss)
    model.train_on_batch(X, Y)
    model.train_on_batch(X, Y)
    assert loss.step_variable.path.endswith("partial_fc_step")
    assert int(keras.ops.convert_to_numpy(loss.step_variable)) == 2
    first, second = (set(np.asarray(loss.sample(Y, C, step=s)[0]).tolist()) for s in (0, 1))
    assert first != second
    # sample() follows the documented seed rule.
    k = sampling.num_sampled(C, N, 0.6)
    assert first == sampling.exact_sample(Y, C, k, sampling.step_seed(3, 0))


def test_unseeded_loss_draws_its_seed_once():
    loss = km.losses.PartialFC(km.losses.ArcFace(), 0.5)
    assert loss.seed is None and 0 <= loss.effective_seed < 2**31
    k = sampling.num_sampled(C, N, 0.5)
    ids = set(np.asarray(loss.sample(Y, C, step=4)[0]).tolist())
    assert ids == sampling.exact_sample(Y, C, k, sampling.step_seed(loss.effective_seed, 4))
    assert loss.get_config()["seed"] is None


# ------------------------------------------------------------ any number of rows (issue: last batch)
def _rows(count, num_classes, seed=5):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, IN)).astype("float32")
    return x, rng.integers(0, num_classes, size=count).astype("int32")


@pytest.mark.parametrize("num_classes", [C, 4096])
def test_fit_and_evaluate_on_a_row_count_that_is_not_a_multiple_of_the_batch(num_classes):
    """1 257 rows in batches of 32 (the last one has 9) train, compiled, on every backend;
    evaluate on 450 rows is the wrapped loss on the full head (NumPy reference). With 4096
    classes the steps are sampled also when the batch size is known only when the step runs
    (TensorFlow: K = max(⌈rate·C⌉, min(C, 2048)) = 2048 < C)."""
    x, y = _rows(1257, num_classes)
    loss = km.losses.PartialFC(km.losses.NormFace(), 0.1, seed=2)
    model = _model(loss, num_classes=num_classes, optimizer=keras.optimizers.SGD(0.05))
    history = model.fit(x, y, batch_size=32, epochs=2, verbose=0)
    assert all(np.isfinite(history.history["loss"]))
    assert int(keras.ops.convert_to_numpy(loss.step_variable)) == 2 * 40
    value = model.evaluate(x[:450], y[:450], batch_size=32, verbose=0)
    features = keras.ops.convert_to_numpy(model.backbone(x[:450])).astype("float64")
    kernel = keras.ops.convert_to_numpy(model.head.kernel).astype("float64")
    normface = ref.margin_softmax(y[:450], ref.cosine(features, kernel), 16.0)  # s = 16, no margin
    assert value == pytest.approx(float(np.mean(normface)), rel=1e-4)


def test_last_smaller_batch_trains_its_sample():
    """37 rows in batches of 32: the second step (5 rows) changes exactly the rows of its
    NumPy sample; K is the static rule max(⌈rate·C⌉, N) (JAX) or, when the batch size is
    known only when the step runs (TensorFlow's fit on 37 rows), N = min(C, 2048)."""
    num_classes, rate = 4096, 0.1
    x, y = _rows(37, num_classes, seed=6)
    loss = km.losses.PartialFC(km.losses.NormFace(scale=1.0), rate, seed=8)
    model = _model(loss, num_classes=num_classes, optimizer=keras.optimizers.SGD(1.0))
    before = keras.ops.convert_to_numpy(model.head.centers).copy()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    assert int(keras.ops.convert_to_numpy(loss.step_variable)) == 2  # 32 rows, then 5
    after = keras.ops.convert_to_numpy(model.head.centers)
    changed = set(np.flatnonzero(np.any(after != before, axis=1)).tolist())
    seeds = [sampling.step_seed(8, 0), sampling.step_seed(8, 1)]
    candidates = {}
    for label, (k_full, k_last) in {
        "static": (sampling.num_sampled(num_classes, 32, rate), sampling.num_sampled(num_classes, 5, rate)),
        "unknown batch size": (2048, 2048),
    }.items():
        candidates[label] = (sampling.exact_sample(y[:32], num_classes, k_full, seeds[0])
                             | sampling.exact_sample(y[32:], num_classes, k_last, seeds[1]))
    matches = [label for label, rows in candidates.items() if rows == changed]
    assert matches, {k: len(v) for k, v in candidates.items()} | {"changed": len(changed)}
    if keras.backend.backend() == "jax":  # JAX compiles a step per batch size
        assert matches == ["static"]


@pytest.mark.tf_only
def test_unknown_batch_size_above_the_bound_makes_the_loss_nan():
    """A batch larger than K (unknown static size, N > min(C, 2048) and > ⌈rate·C⌉) cannot
    hold every class of the batch: NaN, never a loss on a wrong sample."""
    import tensorflow as tf

    num_classes = 4096
    loss = km.losses.PartialFC(km.losses.NormFace(), 0.1, seed=0)
    model = _model(loss, num_classes=num_classes)
    labels = np.arange(2100, dtype="int32")  # 2100 distinct classes > K = 2048

    @tf.function(input_signature=[tf.TensorSpec([None, IN]), tf.TensorSpec([None], tf.int32)])
    def value(x, y):
        return loss.compute_model_loss(y, {"embedding": model.backbone(x), "scores": None}, model)

    assert np.isnan(float(value(np.ones((2100, IN), "float32"), labels)))
    assert np.isfinite(float(value(np.ones((2000, IN), "float32"), labels[:2000])))


# --------------------------------------------------------------- storage chosen for the user
def test_default_head_storage_is_class_major():
    """LargestMarginHead stores its classes as rows by default (what makes a sampled step
    cheap), named for km.distribution's layout map; feature-major stays available."""
    head = km.layers.LargestMarginHead(7)
    head.build((None, D))
    assert head.kernel_layout == "class_major" and head.get_config()["kernel_layout"] == "class_major"
    variable = km.distribution.class_variable(head)
    assert variable is head.trainable_weights[0] and variable.name == "class_centers"
    assert tuple(variable.shape) == (7, D)
    dense = km.layers.LargestMarginHead(7, kernel_layout="feature_major")
    dense.build((None, D))
    assert km.distribution.class_variable(dense).name == "class_kernel"
    assert dense.kernel is dense.trainable_weights[0]


@pytest.mark.tf_only
@pytest.mark.parametrize("layout, sparse", [(None, True), ("feature_major", False)])
def test_default_head_gets_a_row_sparse_gradient(layout, sparse):
    """With the default storage the sampled step's gradient of the class variable is K rows
    (tf.IndexedSlices), those of the NumPy sample; with (D, C) storage it is dense."""
    import tensorflow as tf

    loss = km.losses.PartialFC(km.losses.ArcFace(), 0.25, seed=4)
    model = _model(loss, layout)
    variable = km.distribution.class_variable(model.head)
    with tf.GradientTape() as tape:
        value = loss.compute_model_loss(Y, {"embedding": model.backbone(X), "scores": None}, model)
    grad = tape.gradient(value, variable)
    assert isinstance(grad, tf.IndexedSlices) is sparse
    expected = sampling.exact_sample(Y, C, sampling.num_sampled(C, N, 0.25), sampling.step_seed(4, 0))
    if sparse:
        assert set(np.asarray(grad.indices).tolist()) == expected
    else:
        nonzero = np.flatnonzero(np.any(np.asarray(grad) != 0, axis=0))
        assert set(nonzero.tolist()) == expected


@pytest.mark.parametrize("layout", ["feature_major", "class_major"])
def test_files_saved_with_either_storage_load(layout, tmp_path):
    loss = km.losses.PartialFC(km.losses.ArcFace(32.0, 0.3), 0.25, seed=11)
    model = _model(loss, layout, optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    model.train_on_batch(X, Y)
    path = tmp_path / f"{layout}.keras"
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    assert reloaded.head.kernel_layout == layout
    np.testing.assert_array_equal(reloaded.predict(X, verbose=0), model.predict(X, verbose=0))


def test_proxy_nca_is_wrapped_in_a_fit():
    """ProxyNCALoss declares score_kind="cosine": Partial FC samples it like the margin losses
    (its value at rate 1 is checked in test_rate_one_is_the_wrapped_loss)."""
    loss = km.losses.PartialFC(km.losses.ProxyNCALoss(), 0.25, seed=1)
    model = _model(loss, optimizer=keras.optimizers.Adam(0.01))
    x, y = _rows(200, C, seed=9)
    y = (np.abs(x[:, 0] * 7).astype("int32") % C).astype("int32")
    before = model.evaluate(x, y, batch_size=50, verbose=0)
    history = model.fit(x, y, batch_size=50, epochs=5, verbose=0)
    assert all(np.isfinite(history.history["loss"]))
    assert model.evaluate(x, y, batch_size=50, verbose=0) < before


def test_evaluate_and_predict_use_the_full_head():
    loss = km.losses.PartialFC(km.losses.ArcFace(), 0.1, seed=0)
    model = _model(loss)
    model.train_on_batch(X, Y)
    scores = model.predict(X, verbose=0)
    assert scores.shape == (N, C)
    features = keras.ops.convert_to_numpy(model.backbone(X)).astype("float64")
    kernel = keras.ops.convert_to_numpy(model.head.kernel).astype("float64")
    np.testing.assert_allclose(scores, ref.cosine(features, kernel), atol=1e-5)
    evaluated = model.evaluate(X, Y, verbose=0, batch_size=N)
    assert evaluated == pytest.approx(mean_arcface(Y, ref.cosine(features, kernel)), rel=1e-5)


def test_training_step_skips_the_full_head_output():
    loss = km.losses.PartialFC(km.losses.ArcFace(), 0.1, seed=0)
    model = _model(loss)
    assert "scores" not in model(X, training=True)
    with_metrics = _model(km.losses.PartialFC(km.losses.ArcFace(), 0.1, seed=0))
    with_metrics.compile("sgd", loss=with_metrics.loss, metrics=["accuracy"], jit_compile=True)
    assert "scores" in with_metrics(X, training=True)
    logs = with_metrics.train_on_batch(X, Y, return_dict=True)
    assert 0.0 <= logs["accuracy"] <= 1.0
    assert "scores" in _model(km.losses.ArcFace())(X, training=True)


@pytest.mark.parametrize("bad", [C, -1, C + 100])
def test_invalid_label_makes_the_compiled_loss_nan(bad):
    """Under XLA labels cannot be checked: an invalid one must never pass for a column."""
    for rate in (0.25, 1.0):
        model = _model(km.losses.PartialFC(km.losses.ArcFace(), rate, seed=0))
        labels = Y.copy()
        labels[4] = bad
        assert np.isnan(model.train_on_batch(X, labels))


def test_invalid_label_raises_in_eager_mode():
    model = _model(km.losses.PartialFC(km.losses.ArcFace(), 0.25), jit_compile=False)
    model.compile("sgd", loss=model.loss, run_eagerly=True)
    labels = Y.copy()
    labels[0] = C
    with pytest.raises(ValueError, match="labels"):
        model.train_on_batch(X, labels)


def test_fit_under_xla_lowers_the_loss():
    loss = km.losses.PartialFC(km.losses.CosFace(16.0, 0.2), 0.25, seed=1)
    model = _model(loss, optimizer=keras.optimizers.SGD(0.2, momentum=0.9))
    x = np.random.default_rng(2).normal(size=(96, IN)).astype("float32")
    y = (np.abs(x[:, 0] * 7).astype("int32") % C).astype("int32")
    before = model.evaluate(x, y, verbose=0, batch_size=N)
    model.fit(x, y, batch_size=N, epochs=8, verbose=0)
    assert model.evaluate(x, y, verbose=0, batch_size=N) < before


def test_save_and_reload(tmp_path):
    loss = km.losses.PartialFC(km.losses.ArcFace(32.0, 0.3), 0.25, seed=11)
    model = _model(loss, "class_major", optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    model.train_on_batch(X, Y)
    path = tmp_path / "pfc.keras"
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    assert isinstance(reloaded.loss, km.losses.PartialFC)
    assert reloaded.loss.get_config() == loss.get_config()
    assert reloaded.loss.loss.get_config() == loss.loss.get_config()
    assert reloaded.head.kernel_layout == "class_major"
    np.testing.assert_array_equal(reloaded.predict(X, verbose=0), model.predict(X, verbose=0))
    assert int(keras.ops.convert_to_numpy(reloaded.loss.step_variable)) == 1
    # The next step is the same step on both (same sample, same weights, same momentum).
    a, b = model.train_on_batch(X, Y), reloaded.train_on_batch(X, Y)
    assert a == pytest.approx(b, rel=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(reloaded.head.centers),
                               keras.ops.convert_to_numpy(model.head.centers), atol=1e-6)


# ------------------------------------------------------------------------ class-major head
def test_class_major_head_equals_feature_major():
    x = RNG.normal(size=(7, D)).astype("float32")
    keras.utils.set_random_seed(4)
    a = km.layers.LargestMarginHead(9, kernel_layout="feature_major",
                                    kernel_regularizer=km.regularizers.ZeroCentroid(2.0))
    keras.utils.set_random_seed(4)
    b = km.layers.LargestMarginHead(9, kernel_layout="class_major",
                                    kernel_regularizer=km.regularizers.ZeroCentroid(2.0))
    np.testing.assert_array_equal(a(x), b(x))
    assert tuple(a.kernel.shape) == tuple(b.kernel.shape) == (D, 9)
    assert tuple(a.centers.shape) == tuple(b.centers.shape) == (9, D)
    assert tuple(b.trainable_weights[0].shape) == (9, D)
    np.testing.assert_allclose(np.asarray(a.losses), np.asarray(b.losses), rtol=1e-6)
    kernel = keras.ops.convert_to_numpy(b.kernel)
    np.testing.assert_allclose(b(x), ref.cosine(x.astype("float64"), kernel), atol=1e-5)
    assert float(km.ops.class_margin(b.kernel)) == pytest.approx(float(km.ops.class_margin(a.kernel)))


def test_class_major_head_constraint_sees_the_kernel():
    head = km.layers.LargestMarginHead(5, kernel_layout="class_major",
                                       kernel_constraint=keras.constraints.UnitNorm(axis=0))
    head(np.ones((2, D), "float32"))
    variable = head.trainable_weights[0]
    variable.assign(variable.constraint(variable))
    np.testing.assert_allclose(np.linalg.norm(keras.ops.convert_to_numpy(head.centers), axis=1), 1.0,
                               rtol=1e-6)


def test_head_config_without_layout_loads_feature_major(tmp_path):
    """Files saved before the option (no ``kernel_layout`` key) load with the (D, C) storage."""
    head = km.layers.LargestMarginHead(5)
    config = head.get_config()
    assert config["kernel_layout"] == "class_major"  # the default now, always written
    config.pop("kernel_layout")
    old = km.layers.LargestMarginHead.from_config(config)
    old(np.ones((2, D), "float32"))
    assert tuple(old.trainable_weights[0].shape) == (D, 5) and old.kernel is old.trainable_weights[0]
    model = keras.Sequential([keras.Input((D,)), km.layers.LargestMarginHead(5, kernel_layout="class_major")])
    km.testing.assert_save_load_identical(model, RNG.normal(size=(3, D)).astype("float32"), tmp_path)


def test_margin_monitor_reads_a_class_major_head():
    model = _model(km.losses.ArcFace())
    logs = {}
    km.callbacks.MarginMonitor(model.head).on_epoch_end(0, logs)
    kernel = keras.ops.convert_to_numpy(model.head.kernel)
    assert logs["class_margin"] == pytest.approx(float(km.ops.class_margin(kernel)), rel=1e-6)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, argument", [
    ({"sample_rate": 0.0}, "sample_rate"), ({"sample_rate": 1.5}, "sample_rate"),
    ({"sample_rate": -0.1}, "sample_rate"), ({"sample_rate": True}, "sample_rate"),
    ({"sample_rate": "0.1"}, "sample_rate"), ({"seed": 1.5}, "seed"),
])
def test_bad_hyper_parameters(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        km.losses.PartialFC(km.losses.ArcFace(), **kwargs)


@pytest.mark.parametrize("loss", [keras.losses.SparseCategoricalCrossentropy(), "arcface", None,
                                  km.losses.VirtualSoftmax(), km.losses.PairCircleLoss()])
def test_non_cosine_loss_is_rejected(loss):
    with pytest.raises(ValueError, match="`loss`"):
        km.losses.PartialFC(loss)


@pytest.mark.parametrize("head", [None, "virtual"])
def test_model_without_a_cosine_head_is_rejected(head):
    backbone = keras.Sequential([keras.Input((IN,)), keras.layers.Dense(D)])
    head = km.layers.VirtualSoftmaxHead(C) if head == "virtual" else None
    model = km.models.MarginModel(backbone, head)
    with pytest.raises(ValueError, match="model.head"):
        model.compile("sgd", loss=km.losses.PartialFC(km.losses.ArcFace()))


@pytest.mark.slow
def test_digits_partial_fc_matches_full_head():
    """Digits (C = 10, batches of 4): Partial FC at rate 0.5 trains each step on 5 of the 10
    centres and reaches the full head's test accuracy within noise (3 seeds)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "scale_classes.py"
    spec = importlib.util.spec_from_file_location("scale_classes_digits", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    full, pfc = [], []
    for seed in range(3):
        full.append(module.digits_accuracy(None, seed))
        pfc.append(module.digits_accuracy(0.5, seed))
    assert min(full) > 0.9 and min(pfc) > 0.9
    assert abs(np.mean(pfc) - np.mean(full)) < 0.025, (full, pfc)
