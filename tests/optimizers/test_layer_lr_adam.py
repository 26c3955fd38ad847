"""km.optimizers.LayerLRAdam: steps against a NumPy Adam with per-layer learning rates (eager
and under XLA, on the running backend), its multiplier lookup, arguments and .keras files."""

import warnings

import keras
import numpy as np
import pytest

import keras_margins as km

N, F_IN, H, OUT = 8, 3, 4, 2
LR, MULT = 0.01, 7.0


def _model(nested=False):
    keras.utils.set_random_seed(3)
    head = keras.layers.Dense(OUT, use_bias=False, name="head")
    if nested:  # the head inside a sub-model: its path is ".../tower/head/kernel"
        head = keras.Sequential([keras.Input((H,)), head], name="tower")
    return keras.Sequential(
        [keras.Input((F_IN,)), keras.layers.Dense(H, use_bias=False, name="body"), head]
    )


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(N, F_IN)).astype("float32"), rng.normal(size=(N, OUT)).astype("float32")


def _numpy_adam_run(w1, w2, x, y, lr1, lr2, steps, beta_1=0.9, beta_2=0.999, eps=1e-7):
    """Full-batch steps of the linear model x·W1·W2 on the mean squared error, each weight with
    its own learning rate, by Keras' Adam formula (Kingma & Ba's Algorithm 1 with ε added to
    √v and the bias corrections folded into the step size)."""
    w1, w2 = w1.astype("float64"), w2.astype("float64")
    x, y = x.astype("float64"), y.astype("float64")
    state = {name: (np.zeros_like(w), np.zeros_like(w)) for name, w in (("w1", w1), ("w2", w2))}
    for t in range(1, steps + 1):
        hidden = x @ w1
        residual = hidden @ w2 - y
        d_pred = 2.0 * residual / residual.size
        grads = {"w2": hidden.T @ d_pred, "w1": x.T @ (d_pred @ w2.T)}
        new = {}
        for name, w, lr in (("w1", w1, lr1), ("w2", w2, lr2)):
            m, v = state[name]
            g = grads[name]
            m = m + (g - m) * (1 - beta_1)
            v = v + (g * g - v) * (1 - beta_2)
            alpha = lr * np.sqrt(1 - beta_2**t) / (1 - beta_1**t)
            new[name] = w - alpha * m / (np.sqrt(v) + eps)
            state[name] = (m, v)
        w1, w2 = new["w1"], new["w2"]
    return w1, w2


def _weights(model):
    return [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("nested", [False, True])
def test_steps_match_numpy_adam_with_the_layer_multiplied(jit_compile, nested):
    x, y = _data()
    model = _model(nested)
    w1, w2 = _weights(model)
    model.compile(km.optimizers.LayerLRAdam(LR, layer_lr_multipliers={"head": MULT}), loss="mse",
                  jit_compile=jit_compile)
    model.fit(x, y, batch_size=N, epochs=3, shuffle=False, verbose=0)
    want1, want2 = _numpy_adam_run(w1, w2, x, y, LR, LR * MULT, steps=3)
    got1, got2 = _weights(model)
    np.testing.assert_allclose(got1, want1, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got2, want2, rtol=1e-4, atol=1e-6)
    # The plain run differs: the multiplier acted (and only on the head).
    plain1, plain2 = _numpy_adam_run(w1, w2, x, y, LR, LR, steps=3)
    assert np.abs(got2 - plain2).max() > 1e-3


def test_first_step_of_the_multiplied_layer_is_multiplier_times_the_plain_step():
    x, y = _data()
    scaled, plain = _model(), _model()
    before = _weights(scaled)
    scaled.compile(km.optimizers.LayerLRAdam(LR, layer_lr_multipliers={"head": MULT}), loss="mse")
    plain.compile(keras.optimizers.Adam(LR), loss="mse")
    for model in (scaled, plain):
        model.train_on_batch(x, y)
    (s1, s2), (p1, p2) = _weights(scaled), _weights(plain)
    np.testing.assert_allclose(s2 - before[1], MULT * (p2 - before[1]), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(s1, p1, rtol=0, atol=0)


def test_multiplier_lookup_by_path_segment():
    opt = km.optimizers.LayerLRAdam(layer_lr_multipliers={"head": 3.0, "tower": 2.0})
    assert opt.multiplier_for("model/head/kernel") == 3.0
    assert opt.multiplier_for("model/tower/head/kernel") == 2.0  # first segment from the left
    assert opt.multiplier_for("model/body/kernel") == 1.0
    assert opt.multiplier_for("head") == 1.0  # a variable named like the layer: not a layer


def test_unmatched_layer_name_warns_at_build():
    model = _model()
    model.compile(km.optimizers.LayerLRAdam(LR, layer_lr_multipliers={"haed": 2.0}), loss="mse")
    with pytest.warns(UserWarning, match="haed"):
        model.optimizer.build(model.trainable_variables)
    model = _model()
    model.compile(km.optimizers.LayerLRAdam(LR, layer_lr_multipliers={"head": 2.0}), loss="mse")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.optimizer.build(model.trainable_variables)


def test_keras_file_round_trip_keeps_training_identically(tmp_path):
    x, y = _data()
    model = _model()
    model.compile(km.optimizers.LayerLRAdam(LR, layer_lr_multipliers={"head": MULT}), loss="mse",
                  jit_compile=True)
    model.fit(x, y, batch_size=N, epochs=2, shuffle=False, verbose=0)
    reloaded = km.testing.assert_save_load_identical(model, x, tmp_path)
    assert isinstance(reloaded.optimizer, km.optimizers.LayerLRAdam)
    assert reloaded.optimizer.layer_lr_multipliers == {"head": MULT}
    for m in (model, reloaded):
        m.fit(x, y, batch_size=N, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(_weights(model), _weights(reloaded)):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)


def test_config_round_trip():
    opt = km.optimizers.LayerLRAdam(3e-3, layer_lr_multipliers={"head": 2.5}, beta_1=0.8)
    clone = km.testing.config_roundtrip(opt)
    assert clone.layer_lr_multipliers == {"head": 2.5} and clone.beta_1 == pytest.approx(0.8)
    assert km.optimizers.LayerLRAdam().layer_lr_multipliers == {}


@pytest.mark.parametrize(
    "multipliers",
    [{"head": 0.0}, {"head": -1.0}, {"head": True}, {"head": "2"}, {"a/b": 2.0}, {"": 2.0},
     [("head", 2.0)]],
)
def test_bad_multipliers(multipliers):
    with pytest.raises(ValueError, match="layer_lr_multipliers"):
        km.optimizers.LayerLRAdam(layer_lr_multipliers=multipliers)


def test_unknown_keyword_argument_is_refused():
    with pytest.raises(TypeError, match="'layer_lr_multiplier'.*Did you mean 'layer_lr_multipliers'"):
        km.optimizers.LayerLRAdam(layer_lr_multiplier={"head": 2.0})
    with pytest.raises(TypeError, match="beta1"):
        km.optimizers.LayerLRAdam(beta1=0.8)
