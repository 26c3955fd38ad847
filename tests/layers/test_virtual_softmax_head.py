"""km.layers.VirtualSoftmaxHead: training/inference outputs, fit loss = op, saving."""

import keras
import numpy as np
import pytest

import keras_margins as km
from keras_margins.testing import value_and_grad_of_variables


def _data(n=32, d=6, c=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype("float32"), rng.integers(0, c, n).astype("int32")


def _log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def test_training_and_inference_outputs():
    x, _ = _data()
    head = km.layers.VirtualSoftmaxHead(5)
    inference = np.asarray(head(x))
    w = keras.ops.convert_to_numpy(head.kernel)
    np.testing.assert_allclose(inference, _log_softmax(x @ w), atol=1e-5)
    np.testing.assert_array_equal(inference.argmax(1), (x @ w).argmax(1))
    # training: the same class log-probabilities (what compiled metrics see) ...
    training_output = head(x, training=True)
    np.testing.assert_allclose(np.asarray(training_output), _log_softmax(x @ w), atol=1e-5)
    # ... carrying the virtual-class terms: the loss on it is the paper's per-sample loss
    labels = np.arange(len(x)) % 5
    per_sample = km.losses.VirtualSoftmax(reduction=None)(labels, training_output)
    np.testing.assert_allclose(per_sample, km.ops.virtual_softmax(labels, x, w), rtol=1e-5)
    u = np.asarray(km.ops.virtual_log_probs(x, w))
    np.testing.assert_allclose(per_sample, -u[np.arange(len(x)), labels], rtol=1e-5)
    assert np.all(np.asarray(per_sample) > -_log_softmax(x @ w)[np.arange(len(x)), labels])
    assert head.compute_output_shape((None, 6)) == (None, 5)


def test_logged_training_accuracy_is_accuracy_of_class_scores():
    """fit's "accuracy" = accuracy of argmax(x·W) on the same batch and weights (SGD lr 0),
    on rows where the virtual-class log-probabilities u_j would pick another class."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 6)).astype("float32")
    backbone = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8)])
    head = km.layers.VirtualSoftmaxHead(5)
    for model in (keras.Sequential([backbone, head]), km.models.MarginModel(backbone, head)):
        model.compile(keras.optimizers.SGD(0.0), loss=km.losses.VirtualSoftmax(), metrics=["accuracy"],
                      jit_compile=True)
        model.build((None, 6))
        features = keras.ops.convert_to_numpy(backbone(x))
        w = keras.ops.convert_to_numpy(head.kernel)
        u = np.asarray(km.ops.virtual_log_probs(features, w))
        predicted = (features @ w).argmax(1)
        assert np.any(u.argmax(1) != predicted)  # the case that used to be logged wrongly
        # labels: the class-score prediction on half the rows, the u prediction elsewhere
        y = np.where(np.arange(64) % 2 == 0, predicted, u.argmax(1)).astype("int32")
        logs = model.fit(x, y, batch_size=64, epochs=1, verbose=0, shuffle=False).history
        assert logs["accuracy"][0] == pytest.approx(np.mean(predicted == y), abs=1e-7)
        assert logs["accuracy"][0] != pytest.approx(np.mean(u.argmax(1) == y), abs=1e-7)


@pytest.mark.parametrize("jit", [False, True])
def test_fit_loss_equals_op_on_head_weights(jit):
    x, y = _data(seed=1)
    backbone = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8)])
    head = km.layers.VirtualSoftmaxHead(5)
    model = keras.Sequential([backbone, head])
    model.compile(keras.optimizers.SGD(0.0), loss=km.losses.VirtualSoftmax(), jit_compile=jit)
    history = model.fit(x, y, batch_size=len(x), epochs=1, verbose=0, shuffle=False)
    expected = float(np.mean(km.ops.virtual_softmax(y, backbone(x), head.kernel)))
    assert history.history["loss"][0] == pytest.approx(expected, rel=1e-5)
    # the gradient the model follows is the paper's: d/dθ of the op's mean
    weights = model.trainable_weights
    _, via_model = value_and_grad_of_variables(
        lambda: model.compute_loss(x, y, model(x, training=True)), weights
    )
    _, via_op = value_and_grad_of_variables(
        lambda: keras.ops.mean(km.ops.virtual_softmax(y, backbone(x), head.kernel)), weights
    )
    for a, b in zip(via_model, via_op):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # evaluate reports the plain softmax cross-entropy of x·W
    logits = keras.ops.convert_to_numpy(backbone(x)) @ keras.ops.convert_to_numpy(head.kernel)
    ce = -np.mean(_log_softmax(logits)[np.arange(len(y)), y])
    assert model.evaluate(x, y, verbose=0) == pytest.approx(ce, rel=1e-5)


def test_virtual_clip_is_used_in_training():
    x, _ = _data()
    head = km.layers.VirtualSoftmaxHead(5, virtual_clip=0.5)
    labels = np.arange(len(x)) % 5
    per_sample = km.losses.VirtualSoftmax(reduction=None)(labels, head(x * 10, training=True))
    x64, w64 = x.astype("float64") * 10, np.asarray(head.kernel, dtype="float64")
    u = np.asarray(km.ops.virtual_log_probs(x64, w64, 0.5))
    # float32 against float64: logits up to ~30, so absolute float32 rounding ~1e-6
    np.testing.assert_allclose(per_sample, -u[np.arange(len(x)), labels], rtol=1e-5, atol=2e-6)
    unclipped = km.ops.virtual_softmax(labels, x64, w64)
    assert np.any(np.asarray(unclipped) > np.asarray(per_sample) + 1e-3)  # the clip acted


def test_config_and_save_load(tmp_path):
    x, _ = _data()
    head = km.layers.VirtualSoftmaxHead(
        5, virtual_clip=15.0, kernel_regularizer=km.regularizers.ZeroCentroid(1.0)
    )
    clone = km.testing.config_roundtrip(head)
    assert clone.virtual_clip == 15.0
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8), km.layers.VirtualSoftmaxHead(5)])
    km.testing.assert_save_load_identical(model, x, directory=tmp_path)


def test_mixed_precision_outputs_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    x, _ = _data()
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8), km.layers.VirtualSoftmaxHead(5)])
    assert model(x, training=True).dtype == "float32"
    assert np.all(np.isfinite(model(x * 1000, training=True)))


def test_bad_input():
    with pytest.raises(ValueError, match="num_classes"):
        km.layers.VirtualSoftmaxHead(1)
    with pytest.raises(ValueError, match="virtual_clip"):
        km.layers.VirtualSoftmaxHead(3, virtual_clip=-1.0)
    head = km.layers.VirtualSoftmaxHead(3)
    head(np.zeros((2, 4), "float32"))
    with pytest.raises(ValueError):
        head(np.zeros((2, 5), "float32"))
