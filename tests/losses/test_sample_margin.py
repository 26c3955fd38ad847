"""km.losses.SampleMarginRegularizer: loss + λ·R_sm on the head's class vectors, any head."""

import keras
import numpy as np
import pytest
import references as ref

import keras_margins as km

N, D, C = 24, 8, 5


def _data(n=N, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)).astype("float32"), (np.arange(n) % C).astype("int32")


def _model(head, seed=0):
    keras.utils.set_random_seed(seed)
    backbone = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"),
                                 keras.layers.Dense(D)])
    return km.models.MarginModel(backbone, head)


def _ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def test_hand_made_sample_margin():
    # embedding along w_0; class vectors e0, e1 (not normalised: 3·e1), e0+e1
    kernel = np.array([[1.0, 0.0, 1.0], [0.0, 3.0, 1.0]], dtype="float32")
    features = np.array([[2.0, 0.0]], dtype="float32")
    # cosines: 1, 0, 1/√2 -> γ = 1 − 1/√2 for label 0; for label 1: 0 − 1 = −1
    cos = ref.cosine(features, kernel)
    np.testing.assert_allclose(ref.sample_margin([0], cos), [1 - 2 ** -0.5], rtol=1e-6)
    np.testing.assert_allclose(ref.sample_margin([1], cos), [-1.0], rtol=1e-6)


@pytest.mark.parametrize("weight", [0.0, 0.7, 3.0])
def test_dense_head_value_equals_numpy_reference(weight):
    x, y = _data()
    head = keras.layers.Dense(C, use_bias=False)
    model = _model(head)
    model.compile("sgd", loss=km.losses.SampleMarginRegularizer(_ce(), weight), jit_compile=True)
    value = model.evaluate(x, y, batch_size=N, verbose=0, return_dict=True)["loss"]
    features = keras.ops.convert_to_numpy(model.backbone(x)).astype("float64")
    kernel = keras.ops.convert_to_numpy(head.kernel).astype("float64")
    expected = np.mean(ref.log_softmax_nll(y, features @ kernel)) - weight * np.mean(
        ref.sample_margin(y, ref.cosine(features, kernel)))
    assert value == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_sample_weights_weight_the_margin_like_the_base_loss():
    x, y = _data()
    head = keras.layers.Dense(C, use_bias=False)
    model = _model(head)
    model.compile("sgd", loss=km.losses.SampleMarginRegularizer(_ce(), 2.0), jit_compile=True)
    weights = np.linspace(0.0, 2.0, N).astype("float32")
    value = model.evaluate(x, y, sample_weight=weights, batch_size=N, verbose=0, return_dict=True)["loss"]
    features = keras.ops.convert_to_numpy(model.backbone(x)).astype("float64")
    kernel = keras.ops.convert_to_numpy(head.kernel).astype("float64")
    margins = ref.sample_margin(y, ref.cosine(features, kernel))
    per_sample = ref.log_softmax_nll(y, features @ kernel) - 2.0 * margins
    assert value == pytest.approx(np.sum(per_sample * weights) / N, rel=1e-5)


@pytest.mark.parametrize(
    "make_head, make_loss",
    [
        (lambda: km.layers.VirtualSoftmaxHead(C), km.losses.VirtualSoftmax),
        (lambda: km.layers.LargestMarginHead(C), lambda: km.losses.ArcFace(16.0, 0.2)),
        (lambda: km.layers.PEDCCHead(C), km.losses.POD),
    ],
    ids=["virtual_softmax", "cosine_head", "pedcc_pod"],
)
def test_every_head_uses_its_kernel_columns(make_head, make_loss):
    x, y = _data()
    head = make_head()
    model = _model(head)
    base = make_loss()
    model.compile("sgd", loss=km.losses.SampleMarginRegularizer(base, 1.5), jit_compile=True)
    value = model.evaluate(x, y, batch_size=N, verbose=0, return_dict=True)["loss"]
    features = keras.ops.convert_to_numpy(model.backbone(x))
    kernel = keras.ops.convert_to_numpy(head.kernel)
    if isinstance(base, km.losses.POD):
        base_value = ref.pod(y, features, kernel)
    elif isinstance(base, km.losses.VirtualSoftmax):  # evaluate: the head emits log_softmax(x·W)
        base_value = float(np.mean(ref.log_softmax_nll(y, features.astype("float64") @ kernel)))
    else:  # ArcFace(16.0, 0.2) on the cosine head
        base_value = float(np.mean(ref.margin_softmax(y, ref.cosine(features, kernel), 16.0, m2=0.2)))
    margins = ref.sample_margin(y, ref.cosine(features.astype("float64"), kernel))
    expected = base_value - 1.5 * np.mean(margins)
    assert value == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_training_gradient_equals_reference():
    """One SGD step moves the head kernel by −lr·∂(CE + λ·R_sm)/∂W of the reference."""
    x, y = _data()
    head = keras.layers.Dense(C, use_bias=False)
    model = _model(head)
    model.compile(keras.optimizers.SGD(1.0), loss=km.losses.SampleMarginRegularizer(_ce(), 1.0),
                  jit_compile=True)
    model.build((None, 6))
    features = keras.ops.convert_to_numpy(model.backbone(x)).astype("float64")
    kernel = keras.ops.convert_to_numpy(head.kernel).astype("float64")

    def reference(w_flat):
        w = w_flat.reshape(kernel.shape)
        margins = ref.sample_margin(y, ref.cosine(features, w))
        return np.mean(ref.log_softmax_nll(y, features @ w)) - np.mean(margins)

    grad = np.zeros(kernel.size)
    for k in range(kernel.size):
        step = np.zeros(kernel.size)
        step[k] = 1e-6
        grad[k] = (reference(kernel.ravel() + step) - reference(kernel.ravel() - step)) / 2e-6
    model.train_on_batch(x, y)
    moved = kernel - keras.ops.convert_to_numpy(head.kernel)
    np.testing.assert_allclose(moved.ravel(), grad, rtol=1e-3, atol=1e-5)


def test_fit_under_xla_and_keras_round_trip(tmp_path):
    x, y = _data(64)
    model = _model(keras.layers.Dense(C, use_bias=False))
    loss = km.losses.SampleMarginRegularizer(_ce(), 0.5)
    model.compile("adam", loss=loss, metrics=["accuracy"], jit_compile=True)
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    reloaded = km.testing.assert_save_load_identical(model, x, directory=tmp_path)
    assert isinstance(reloaded.loss, km.losses.SampleMarginRegularizer)
    assert reloaded.loss.weight == 0.5
    assert isinstance(reloaded.loss.loss, keras.losses.SparseCategoricalCrossentropy)
    assert reloaded.evaluate(x, y, verbose=0) == pytest.approx(model.evaluate(x, y, verbose=0), rel=1e-6)


def test_wraps_a_stateful_model_loss_and_passes_its_logs():
    x, y = _data(40)
    model = _model(km.layers.LargestMarginHead(C))
    ensemble = km.losses.LossEnsemble([km.losses.ArcFace(16.0, 0.2), km.losses.CosFace(16.0, 0.2)])
    model.compile("adam", loss=km.losses.SampleMarginRegularizer(ensemble, 1.0), jit_compile=True)
    logs = model.fit(x, y, batch_size=20, epochs=1, verbose=0).history
    assert "c_arc_face" in logs and "c_cos_face" in logs


def test_config_round_trip():
    loss = km.testing.config_roundtrip(km.losses.SampleMarginRegularizer(km.losses.LMSoftmax(4.0), 2))
    assert loss.weight == 2.0 and isinstance(loss.loss, km.losses.LMSoftmax) and loss.loss.scale == 4.0


@pytest.mark.parametrize(
    "make, argument",
    [
        (lambda: km.losses.SampleMarginRegularizer(_ce(), -0.1), "weight"),
        (lambda: km.losses.SampleMarginRegularizer(_ce(), float("nan")), "weight"),
        (lambda: km.losses.SampleMarginRegularizer(_ce(), "1"), "weight"),
        (lambda: km.losses.SampleMarginRegularizer(3, 1.0), "loss"),
    ],
)
def test_bad_hyper_parameters(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()


@pytest.mark.parametrize(
    "head",
    [None, keras.layers.Dense(C), keras.layers.Activation("linear")],
    ids=["no_head", "dense_with_bias", "no_kernel"],
)
def test_head_without_class_vectors_is_rejected(head):
    model = _model(head)
    # Refused at compile, from the head's declarations, before any step runs.
    with pytest.raises(ValueError, match="head"):
        model.compile("sgd", loss=km.losses.SampleMarginRegularizer(_ce(), 1.0), run_eagerly=True)


def test_outside_margin_model_is_rejected():
    with pytest.raises(ValueError, match="MarginModel"):
        km.losses.SampleMarginRegularizer(_ce(), 1.0)(np.zeros(2, "int32"), np.zeros((2, 3), "float32"))


@pytest.mark.slow
def test_raises_the_mean_sample_margin_of_softmax_on_digits():
    (x, y), (xt, yt) = km.data.digits_classification()
    margins = {}
    for weight in (0.0, 1.0):
        head = keras.layers.Dense(10, use_bias=False)
        keras.utils.set_random_seed(0)
        backbone = keras.Sequential([keras.Input((64,)), keras.layers.Dense(128, activation="relu"),
                                     keras.layers.Dense(32)])
        model = km.models.MarginModel(backbone, head)
        model.compile(keras.optimizers.Adam(3e-3), loss=km.losses.SampleMarginRegularizer(_ce(), weight),
                      jit_compile=True)
        model.fit(x, y, batch_size=64, epochs=10, verbose=0)
        cos = km.ops.cosine_similarity(backbone.predict(xt, verbose=0), head.kernel)
        margins[weight] = float(np.mean(keras.ops.convert_to_numpy(km.ops.sample_margin(yt, cos))))
        assert np.mean(np.argmax(model.predict(xt, verbose=0), 1) == yt) > 0.9
    assert margins[1.0] > margins[0.0] + 0.1, margins


def test_training_value_with_virtual_softmax_is_the_virtual_loss_plus_margin_term():
    """In fit (training mode) the wrapped VirtualSoftmax still adds its virtual class."""
    x, y = _data()
    head = km.layers.VirtualSoftmaxHead(C)
    model = _model(head)
    model.compile(
        keras.optimizers.SGD(0.0),
        loss=km.losses.SampleMarginRegularizer(km.losses.VirtualSoftmax(), 0.5),
        jit_compile=True,
    )
    value = model.fit(x, y, batch_size=N, epochs=1, verbose=0, shuffle=False).history["loss"][0]
    features = keras.ops.convert_to_numpy(model.backbone(x)).astype("float64")
    kernel = keras.ops.convert_to_numpy(head.kernel).astype("float64")
    virtual = ref.virtual_softmax(y, features, kernel)  # −log e^{z_y} / (Σ_j e^{z_j} + e^{||W_y||·||x||})
    expected = np.mean(virtual) - 0.5 * np.mean(ref.sample_margin(y, ref.cosine(features, kernel)))
    assert value == pytest.approx(expected, rel=1e-5)
