"""Tests of km.models.MarginModel: routing, one pass per step, loss state, saving."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras import ops

import keras_margins as km
from keras_margins.ops._validation import is_concrete

D, C = 8, 4


@keras.saving.register_keras_serializable(package="keras_margins_tests")
class CountCalls(keras.layers.Layer):
    """Identity layer counting its (eager) calls."""

    calls = 0

    def call(self, inputs):
        if is_concrete(inputs):  # not the symbolic build traces (JAX's fit runs one)
            CountCalls.calls += 1
        return inputs


@keras.saving.register_keras_serializable(package="keras_margins_tests")
class EmbeddingMSE(keras.losses.Loss):
    """needs='embedding': mean squared embedding norm (checks it gets the embedding)."""

    needs = "embedding"

    def call(self, y_true, y_pred):
        if y_pred.shape[-1] != D:
            raise AssertionError(f"expected the (N, {D}) embedding, got {y_pred.shape}")
        return ops.mean(ops.square(y_pred), axis=-1)


@keras.saving.register_keras_serializable(package="keras_margins_tests")
class ScaledCE(km.losses.ModelLoss):
    """needs='model' with state: a trainable factor a (loss a²·CE + (a−2)²) and a step counter."""


    def build_state(self, model):
        self.a = model.add_weight(name="a", shape=(), initializer=keras.initializers.Constant(1.0))
        self.steps = model.add_weight(
            name="steps", shape=(), initializer="zeros", trainable=False, aggregation="sum"
        )

    def compute_model_loss(self, y, outputs, model, sample_weight=None, training=True):
        assert outputs["embedding"].shape[-1] == D and outputs["scores"].shape[-1] == C
        if training:
            self.steps.assign_add(1.0)
        ce = keras.losses.sparse_categorical_crossentropy(y, outputs["scores"], from_logits=True)
        return ops.square(self.a) * ops.mean(ce) + ops.square(self.a - 2.0)

    def logs(self, model):
        return {"a": ops.convert_to_tensor(self.a), "steps": ops.convert_to_tensor(self.steps)}


def _data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n).astype("int32")
    centres = rng.normal(size=(C, 6)) * 3
    x = (centres[y] + rng.normal(size=(n, 6))).astype("float32")
    return x, y


def _model(head=True, count=False):
    layers = [keras.Input((6,))] + ([CountCalls()] if count else []) + [keras.layers.Dense(D)]
    backbone = keras.Sequential(layers, name="backbone")
    head_layer = keras.layers.Dense(C, name="head") if head else None
    return km.models.MarginModel(backbone, head_layer)


def test_predict_gives_scores_or_embedding():
    x, _ = _data()
    model = _model()
    assert model.predict(x, verbose=0).shape == (len(x), C)
    np.testing.assert_allclose(
        model.predict(x, verbose=0), model.head(model.backbone(x)), atol=1e-6
    )
    assert _model(head=False).predict(x, verbose=0).shape == (len(x), D)
    assert model(x).shape == (len(x), C)
    out = model(x, training=True)
    assert set(out) == {"embedding", "scores"}


def test_scores_loss_equals_sequential_loss_and_trains_under_xla():
    (x, y), _ = km.data.digits_classification()
    backbone = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32)])
    head = km.layers.LargestMarginHead(10)
    model = km.models.MarginModel(backbone, head)
    loss = km.losses.ArcFace(scale=16.0, margin=0.2)
    model.compile(keras.optimizers.Adam(1e-2), loss=loss, metrics=["accuracy"], jit_compile=True)
    logs = model.evaluate(x[:64], y[:64], batch_size=64, verbose=0, return_dict=True)
    expected = float(loss(y[:64], head(backbone(x[:64]))))
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)
    history = model.fit(x[:256], y[:256], batch_size=64, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_one_backbone_pass_per_step():
    x, y = _data(48)
    model = _model(count=True)
    model.compile("adam", loss=EmbeddingMSE(), run_eagerly=True)
    model.predict(x[:2], verbose=0)
    CountCalls.calls = 0
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert CountCalls.calls == 3
    CountCalls.calls = 0
    model.evaluate(x, y, batch_size=24, verbose=0)
    assert CountCalls.calls == 2


def test_embedding_loss_gets_the_embedding():
    x, y = _data()
    model = _model()
    model.compile("adam", loss=EmbeddingMSE())
    value = model.evaluate(x, y, batch_size=len(x), verbose=0)
    emb = model.backbone(x)
    np.testing.assert_allclose(value, np.mean(np.square(emb)), rtol=1e-5)


def test_model_loss_state_trained_logged_and_saved(tmp_path):
    x, y = _data()
    model = _model()
    loss = ScaledCE()
    model.compile(keras.optimizers.SGD(0.05), loss=loss, metrics=["accuracy"], jit_compile=True)
    model.compile(keras.optimizers.SGD(0.05), loss=loss, metrics=["accuracy"], jit_compile=True)
    assert len(model.non_trainable_weights) == 1  # build_state ran once for this loss object
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert float(loss.steps) == 6.0
    assert history.history["steps"][-1] == pytest.approx(6.0)
    assert float(loss.a) != 1.0  # trained by the model's optimizer
    # logs carry the value the step used (read in compute_loss, before the update)
    assert history.history["a"][-1] != 1.0
    assert model.evaluate(x, y, verbose=0, return_dict=True)["a"] == pytest.approx(float(loss.a))
    reloaded = km.testing.assert_save_load_identical(model, x, directory=tmp_path)
    state = {w.name: float(w.numpy()) for w in reloaded.weights if w.name in ("a", "steps")}
    assert state == {"a": pytest.approx(float(loss.a)), "steps": 6.0}
    assert reloaded.evaluate(x, y, verbose=0) == pytest.approx(model.evaluate(x, y, verbose=0), rel=1e-6)
    reloaded.fit(x, y, batch_size=16, epochs=1, verbose=0)  # optimizer slots matched on load
    assert float(reloaded.loss.steps) == 9.0


def test_regularizer_losses_are_added():
    x, y = _data()
    backbone = keras.Sequential([keras.Input((6,)), keras.layers.Dense(D)])
    head = km.layers.LargestMarginHead(C, kernel_regularizer=km.regularizers.ZeroCentroid(3.0))
    model = km.models.MarginModel(backbone, head)
    loss = km.losses.NormFace()
    model.compile("adam", loss=loss)
    value = model.evaluate(x, y, batch_size=len(x), verbose=0)
    expected = float(loss(y, head(backbone(x)))) + 3.0 * float(km.ops.zero_centroid(head.kernel))
    assert value == pytest.approx(expected, rel=1e-5)


def test_config_roundtrip_and_save_load(tmp_path):
    x, _ = _data()
    model = _model()
    model.predict(x[:2], verbose=0)
    clone = km.models.MarginModel.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    km.testing.assert_save_load_identical(model, x, directory=tmp_path)
    no_head = _model(head=False)
    (tmp_path / "nohead").mkdir()
    km.testing.assert_save_load_identical(no_head, x, directory=tmp_path / "nohead")


def test_bad_arguments():
    with pytest.raises(ValueError, match="backbone"):
        km.models.MarginModel("not a model")
    with pytest.raises(ValueError, match="head"):
        km.models.MarginModel(keras.layers.Dense(3), head=3)

    class Odd(keras.losses.Loss):
        needs = "pixels"

        def call(self, y_true, y_pred):
            return y_pred

    with pytest.raises(ValueError, match="needs"):
        _model().compile("adam", loss=Odd())


@pytest.mark.slow
@pytest.mark.tf_only
def test_mirrored_strategy_two_cpus():
    # Without XLA: TF cannot jit a step whose mirrored variables sit on two logical CPUs
    # ("tfvariable_on_a_different_device"), for a plain keras.Sequential as well.
    script = textwrap.dedent(
        """
        import os
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras, numpy as np, keras_margins as km
        (x, y), _ = km.data.digits_classification()
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            backbone = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16)])
            model = km.models.MarginModel(backbone, km.layers.LargestMarginHead(10))
            model.compile("adam", loss=km.losses.ArcFace(16.0, 0.2), metrics=["accuracy"])
        h = model.fit(x[:512], y[:512], batch_size=64, epochs=2, verbose=0)
        assert np.isfinite(h.history["loss"]).all(), h.history
        print("OK", model.distribute_strategy.num_replicas_in_sync)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "OK 2" in out.stdout, out.stderr[-3000:]


def _every_head_and_loss():
    cosine_losses = [
        km.losses.ArcFace(16.0, 0.2), km.losses.CosFace(16.0, 0.2), km.losses.SphereFace(16.0, 1.5),
        km.losses.NormFace(), km.losses.MarginSoftmax(16.0, m2=0.1, m3=0.1, sample_margin_weight=0.5),
        km.losses.LMSoftmax(5.0), km.losses.CircleLoss(),
    ]
    cases = [(lambda: km.layers.LargestMarginHead(C), loss) for loss in cosine_losses]
    cases += [
        (lambda: km.layers.VirtualSoftmaxHead(C), km.losses.VirtualSoftmax()),
        (lambda: km.layers.PEDCCHead(C), km.losses.POD()),
        (lambda: km.layers.PEDCCHead(C), km.losses.LMSoftmax(5.0)),
        (lambda: None, km.losses.PairCircleLoss()),
        (lambda: km.layers.LargestMarginHead(C),
         km.losses.LossEnsemble([km.losses.ArcFace(16.0, 0.2), km.losses.PairCircleLoss()])),
    ]
    return cases


def _train_and_round_trip(cases, tmp_path):
    x, y = _data(32)
    for k, (make_head, loss) in enumerate(cases):
        backbone = keras.Sequential([keras.Input((6,)), keras.layers.Dense(D)])
        model = km.models.MarginModel(backbone, make_head())
        model.compile("adam", loss=loss, jit_compile=True)
        history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"]).all(), loss.name
        assert model.predict(x, verbose=0).shape == (len(x), C if model.head is not None else D)
        (tmp_path / str(k)).mkdir()
        km.testing.assert_save_load_identical(model, x, directory=tmp_path / str(k))


@pytest.mark.slow
def test_every_head_and_loss_trains_and_round_trips(tmp_path):
    _train_and_round_trip(_every_head_and_loss(), tmp_path)


def test_virtual_softmax_and_embedding_loss_train_and_round_trip(tmp_path):
    cases = [(lambda: km.layers.VirtualSoftmaxHead(C), km.losses.VirtualSoftmax()),
             (lambda: None, km.losses.PairCircleLoss())]
    _train_and_round_trip(cases, tmp_path)
