"""km.losses.POD through km.models.MarginModel: value = op, state, saving, digits accuracy."""

import keras
import numpy as np
import pytest
import references as ref

import keras_margins as km


def _model(dim=8, classes=4, hidden=None):
    layers = [keras.Input((6,))] + ([keras.layers.Dense(hidden, activation="relu")] if hidden else [])
    backbone = keras.Sequential(layers + [keras.layers.Dense(dim)])
    return km.models.MarginModel(backbone, km.layers.PEDCCHead(classes))


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)).astype("float32"), (np.arange(n) % 4).astype("int32")


def test_evaluate_equals_op_and_state_variables():
    x, y = _data()
    model = _model()
    loss = km.losses.POD(delta=0.2, decorrelation_weight=0.5)
    model.compile("adam", loss=loss, jit_compile=True)
    assert sorted(w.name for w in model.non_trainable_weights if w.name.startswith("pod")) == [
        "pod_delta", "pod_feature_norm_sum", "pod_logit_norm_sum", "pod_norm_count"]
    value = model.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)["loss"]
    features = keras.ops.convert_to_numpy(model.backbone(x)).astype("float64")
    kernel = keras.ops.convert_to_numpy(model.head.kernel).astype("float64")
    expected = ref.pod(y, features, kernel, delta=0.2, weight=0.5)  # loops (tests/references.py)
    assert value == pytest.approx(expected, rel=1e-5)
    # sample weights weight each sample's share (NaC_i + w·L_sc) of the batch mean
    weights = np.linspace(0.0, 2.0, len(x)).astype("float32")
    nac, decorrelation = ref.pod_terms(y, features, kernel, 0.2)
    weighted = float(np.mean((nac + 0.5 * decorrelation) * weights))
    logs = model.evaluate(x, y, sample_weight=weights, batch_size=len(x), verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(weighted, rel=1e-5)
    assert float(loss.state["count"]) == 0.0  # evaluation does not touch the epoch norms


def test_training_accumulates_norms_and_saves_delta(tmp_path):
    x, y = _data()
    model = _model()
    loss = km.losses.POD()
    model.compile(keras.optimizers.SGD(0.0), loss=loss, jit_compile=True)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    features = keras.ops.convert_to_numpy(model.backbone(x))
    assert float(loss.state["count"]) == 32.0
    assert float(loss.state["feature_norm_sum"]) == pytest.approx(
        np.linalg.norm(features, axis=1).sum(), rel=1e-5
    )
    logits = features @ model.head.kernel.numpy()
    assert float(loss.state["logit_norm_sum"]) == pytest.approx(
        np.linalg.norm(logits, axis=1).sum(), rel=1e-5
    )
    assert float(loss.state["delta"]) == pytest.approx(0.05)  # no PODDelta callback: unchanged
    loss.state["delta"].assign(0.7)
    reloaded = km.testing.assert_save_load_identical(model, x, directory=tmp_path)
    assert float(reloaded.loss.state["delta"]) == pytest.approx(0.7)
    assert reloaded.evaluate(x, y, verbose=0, return_dict=True) == pytest.approx(
        model.evaluate(x, y, verbose=0, return_dict=True), rel=1e-6
    )


def test_config_and_misuse():
    loss = km.testing.config_roundtrip(km.losses.POD(delta=0.1, decorrelation_weight=2.0))
    assert (loss.delta, loss.decorrelation_weight) == (0.1, 2.0)
    with pytest.raises(ValueError, match="delta"):
        km.losses.POD(delta=-1.0)
    with pytest.raises(ValueError, match="decorrelation_weight"):
        km.losses.POD(decorrelation_weight=-1.0)
    x, y = _data()
    seq = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8), km.layers.PEDCCHead(4)])
    seq.compile("adam", loss=km.losses.POD())
    with pytest.raises(ValueError, match="MarginModel"):
        seq.fit(x, y, epochs=1, verbose=0)
    no_head = km.models.MarginModel(keras.Sequential([keras.Input((6,)), keras.layers.Dense(8)]))
    with pytest.raises(ValueError, match="head"):  # refused at compile
        no_head.compile("adam", loss=km.losses.POD())


def _train(epochs):
    (x, y), (xt, yt) = km.data.digits_classification()
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(256, activation="relu"), keras.layers.Dense(32)]
    )
    model = km.models.MarginModel(backbone, km.layers.PEDCCHead(10))
    model.compile(keras.optimizers.Adam(3e-3), loss=km.losses.POD(), metrics=["accuracy"], jit_compile=True)
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=[km.callbacks.PODDelta()])
    return model.evaluate(xt, yt, verbose=0, return_dict=True), model


# README, feature table: "digits >= 97 %, class margin 96.4° (the simplex)" (seed 0, 20
# epochs; measured 97.8 %, and 96.7 % with seed 1).
@pytest.mark.slow
def test_digits_accuracy_at_least_97_percent_under_xla():
    logs, model = _train(20)
    assert logs["accuracy"] >= 0.97
    # PEDCC for C <= D + 1 is the regular simplex: every pair at arccos(-1/(C-1)) = 96.38°
    kernel = keras.ops.convert_to_numpy(model.head.kernel).astype("float64")
    unit = kernel / np.linalg.norm(kernel, axis=0, keepdims=True)
    gram = unit.T @ unit
    smallest = np.degrees(np.arccos(np.max(gram[~np.eye(10, dtype=bool)])))
    assert smallest == pytest.approx(np.degrees(np.arccos(-1 / 9)), abs=1e-3)
    assert round(smallest, 1) == 96.4
