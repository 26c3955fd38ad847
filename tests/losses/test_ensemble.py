"""km.losses.LossEnsemble through km.models.MarginModel (Zabihzadeh et al.)."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import references as ref

import keras_margins as km
from keras_margins.testing import value_and_grad_of_variables

PENALTY = 100.0 * 100.0  # penalty_scale * eta defaults


def _model(dim=8, classes=5):
    backbone = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(dim)]
    )
    return km.models.MarginModel(backbone, km.layers.LargestMarginHead(classes))


def _members():
    return [km.losses.ArcFace(scale=16.0, margin=0.3), km.losses.PairCircleLoss()]


def _batch(n=20, seed=0):
    (x, y), _ = km.data.digits_zero_shot()
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(y), n, replace=False)
    return x[idx], y[idx]


def test_prior_sets_initial_coefficients():
    members = [km.losses.NormFace(), km.losses.ArcFace(), km.losses.CosFace(), km.losses.CircleLoss()]
    ens = km.losses.LossEnsemble(members, prior=[2, 1, 2, 3])
    assert ens.coefficients is None
    model = _model()
    model.compile("adam", loss=ens)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ens.coefficients), [0.25, 0.125, 0.25, 0.375], rtol=1e-6
    )
    uniform = km.losses.LossEnsemble(_members())
    _model().compile("adam", loss=uniform)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(uniform.coefficients), [0.5, 0.5], rtol=1e-6)


def test_value_and_running_means_match_reference():
    x, y = _batch()
    model = _model()
    members = _members()
    ens = km.losses.LossEnsemble(members, prior=[3, 1])
    model.compile("adam", loss=ens)
    outputs = model(x, training=True)
    raw = np.array(
        [float(members[0](y, outputs["scores"])), float(members[1](y, outputs["embedding"]))]
    )
    a = ens.a_variable.numpy().astype("float64")
    c = a**2 + 1.0 / 8.0
    # step 1: running mean = the batch losses -> each normalised loss = their mean
    got1 = float(ens.compute_model_loss(y, outputs, model, training=True))
    want1 = np.sum(c * raw.mean() / raw * raw) + PENALTY * (c.sum() - 1) ** 2
    np.testing.assert_allclose(got1, want1, rtol=1e-5)
    np.testing.assert_allclose(ens.running_mean_variable.numpy(), raw, rtol=1e-6)
    # step 2 with other values (scaled sample weights): cumulative mean
    weights = np.full(len(y), 2.0, "float32")
    got2 = float(ens.compute_model_loss(y, outputs, model, weights, training=True))
    raw2 = 2.0 * raw
    mean = raw + (raw2 - raw) / 2.0
    want2 = np.sum(c * mean.mean() / mean * raw2) + PENALTY * (c.sum() - 1) ** 2
    np.testing.assert_allclose(got2, want2, rtol=1e-5)
    np.testing.assert_allclose(ens.running_mean_variable.numpy(), mean, rtol=1e-6)
    assert float(ens.steps_variable.numpy()) == 2.0
    # evaluation does not update the means
    ens.compute_model_loss(y, outputs, model, training=False)
    np.testing.assert_allclose(ens.running_mean_variable.numpy(), mean, rtol=1e-6)


def test_gradient_on_a_k():
    x, y = _batch()
    model = _model()
    ens = km.losses.LossEnsemble(_members(), prior=[1, 4])
    model.compile("adam", loss=ens)
    outputs = {k: keras.ops.stop_gradient(v) for k, v in model(x, training=True).items()}
    members = ens.members
    raw = np.array([float(members[0](y, outputs["scores"])), float(members[1](y, outputs["embedding"]))])
    ens.a_variable.assign([0.6, 0.5])  # c = a² + 1/8: sum c = 0.86
    _, (grad,) = value_and_grad_of_variables(
        lambda: ens.compute_model_loss(y, outputs, model, training=True), [ens.a_variable]
    )
    normalised = np.full(2, raw.mean())  # step 1: running mean = raw -> each normalised loss = their mean
    a = np.array([0.6, 0.5])
    s = np.sum(a**2 + 0.125)
    want = 2 * a * (normalised + 2 * PENALTY * (s - 1))
    np.testing.assert_allclose(grad, want, rtol=1e-5)


def _cosine_outputs(seed, confident):
    """Outputs of a step on 5 classes: cosines (confident: targets at 0.6, others in
    [−0.5, 0.2], where LM-Softmax is negative and the margin losses are not near 0) and
    embeddings."""
    rng = np.random.default_rng(seed)
    y = np.arange(10) % 5
    cos = rng.uniform(-0.8, 0.8, (10, 5))
    if confident:
        cos = rng.uniform(-0.5, 0.2, (10, 5))
        cos[np.arange(10), y] = 0.6
    emb = rng.normal(size=(10, 8))
    return y, cos, emb


def test_negative_member_against_the_running_mean_of_abs_reference():
    """LM-Softmax can be negative: the ensemble normalises by the running mean of |L_k|
    (tests/references.py: ensemble_steps), steps with negative and positive member values."""
    members = [km.losses.LMSoftmax(5.0), km.losses.ArcFace(16.0, 0.3), km.losses.NormFace(8.0)]
    ens = km.losses.LossEnsemble(members, prior=[1, 2, 3])
    model = _model(dim=8, classes=5)
    model.compile("sgd", loss=ens)
    a = keras.ops.convert_to_numpy(ens.a_variable).astype("float64")
    steps = [_cosine_outputs(0, True), _cosine_outputs(1, False), _cosine_outputs(2, True),
             _cosine_outputs(3, True)]
    member_values, got = [], []
    for y, cos, emb in steps:
        member_values.append([np.mean(ref.lm_softmax(y, cos, 5.0)),
                              np.mean(ref.margin_softmax(y, cos, 16.0, m2=0.3)),
                              np.mean(ref.margin_softmax(y, cos, 8.0))])
        outputs = {"scores": cos.astype("float32"), "embedding": emb.astype("float32")}
        got.append(float(ens.compute_model_loss(y, outputs, model, training=True)))
    assert member_values[0][0] < 0 and member_values[1][0] > 0  # a sign change of L_1
    want, running = ref.ensemble_steps(member_values, a)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(ens.running_mean_variable.numpy(), running, rtol=1e-5)
    assert np.all(ens.running_mean_variable.numpy() > 0)
    # evaluation uses the training means without updating them
    y, cos, emb = _cosine_outputs(4, True)
    values = [np.mean(ref.lm_softmax(y, cos, 5.0)), np.mean(ref.margin_softmax(y, cos, 16.0, m2=0.3)),
              np.mean(ref.margin_softmax(y, cos, 8.0))]
    c = a**2 + 1.0 / 12.0
    want_eval = sum(c[k] * np.mean(running) / running[k] * values[k] for k in range(3)) + PENALTY * (
        c.sum() - 1.0) ** 2
    outputs = {"scores": cos.astype("float32"), "embedding": emb.astype("float32")}
    assert float(ens.compute_model_loss(y, outputs, model, training=False)) == pytest.approx(
        want_eval, rel=1e-5)
    np.testing.assert_allclose(ens.running_mean_variable.numpy(), running, rtol=1e-5)


def test_sample_weights_with_zeros_and_member_reductions():
    """Every member gets the step's sample weights (zeros included) and reduces as it says."""
    y, cos, emb = _cosine_outputs(5, False)
    weights = np.array([1.0, 0.0, 2.0, 0.5, 0.0, 1.5, 1.0, 0.25, 3.0, 0.0])
    outputs = {"scores": cos.astype("float32"), "embedding": emb.astype("float32")}
    members = [km.losses.ArcFace(16.0, 0.3, reduction="sum"), km.losses.PairCircleLoss()]
    ens = km.losses.LossEnsemble(members, normalize_by_running_mean=False)
    model = _model(dim=8, classes=5)
    model.compile("sgd", loss=ens)
    c = keras.ops.convert_to_numpy(ens.coefficients).astype("float64")
    pair, valid = ref.circle_pairwise(y, emb, 0.4, 80.0)
    values = [ref.keras_reduce(ref.margin_softmax(y, cos, 16.0, m2=0.3), weights, "sum"),
              ref.keras_reduce(pair, weights, valid=valid)]
    want = c[0] * values[0] + c[1] * values[1] + PENALTY * (c.sum() - 1.0) ** 2
    got = float(ens.compute_model_loss(y, outputs, model, weights.astype("float32"), training=False))
    assert got == pytest.approx(want, rel=1e-5)
    zero = float(ens.compute_model_loss(y, outputs, model, np.zeros(10, "float32"), training=False))
    assert zero == pytest.approx(PENALTY * (c.sum() - 1.0) ** 2, abs=1e-6)


@pytest.mark.float64
def test_float64_is_honoured():
    y, cos, emb = _cosine_outputs(6, True)
    members = [km.losses.LMSoftmax(5.0, dtype="float64"), km.losses.ArcFace(16.0, 0.3, dtype="float64")]
    # unequal priors: with equal c_k the two normalised terms (LM-Softmax negative) cancel to ~0
    ens = km.losses.LossEnsemble(members, prior=[1.0, 3.0], dtype="float64")
    model = _model(dim=8, classes=5)
    model.compile("sgd", loss=ens)
    a = keras.ops.convert_to_numpy(ens.a_variable).astype("float64")
    values = [np.mean(ref.lm_softmax(y, cos, 5.0)), np.mean(ref.margin_softmax(y, cos, 16.0, m2=0.3))]
    got = ens.compute_model_loss(y, {"scores": cos, "embedding": emb}, model, training=True)
    assert keras.backend.standardize_dtype(got.dtype) == "float64"
    np.testing.assert_allclose(float(got), ref.ensemble_steps([values], a)[0][0], rtol=1e-12)
    # the state is kept in the loss's dtype too (the running means are not rounded to float32)
    for v in (ens.a_variable, ens.running_mean_variable, ens.steps_variable):
        assert keras.backend.standardize_dtype(v.dtype) == "float64", v.name
    # the default stays float32
    default = km.losses.LossEnsemble([km.losses.LMSoftmax(5.0), km.losses.ArcFace(16.0, 0.3)])
    _model(dim=8, classes=5).compile("sgd", loss=default)
    cos32 = {"scores": cos.astype("float32"), "embedding": emb.astype("float32")}
    got32 = default.compute_model_loss(y, cos32, None, training=False)
    assert keras.backend.standardize_dtype(got32.dtype) == "float32"


class _CoefficientsBeforeEachStep(keras.callbacks.Callback):
    """Records c_k = a_k² + 1/(4m) in NumPy from the model's a_k variable before every step
    (``self.model`` syncs the JAX trainer's state into the variables)."""

    def __init__(self, ens):
        super().__init__()
        self.ens, self.seen = ens, []

    def on_train_batch_begin(self, batch, logs=None):
        assert self.model is not None  # on JAX, reading self.model syncs the trained state
        a = keras.ops.convert_to_numpy(self.ens.a_variable).astype("float64")
        self.seen.append(a**2 + 1.0 / (4 * len(a)))


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    (x, y), _ = km.data.digits_zero_shot()
    ds = km.data.pk_batches((x, y), p=5, k=8, seed=0, steps_per_epoch=20)
    model = _model()
    ens = km.losses.LossEnsemble(_members(), prior=[1, 1])
    model.compile(keras.optimizers.Adam(1e-2), loss=ens, metrics=["accuracy"], jit_compile=True)
    record = _CoefficientsBeforeEachStep(ens)
    history = model.fit(ds, epochs=4, verbose=0, shuffle=False, callbacks=[record])
    return model, ens, history, x, np.array(record.seen)


def test_coefficients_move_and_sum_to_one(trained):
    model, ens, history, x, seen = trained
    c = keras.ops.convert_to_numpy(ens.coefficients)
    a = keras.ops.convert_to_numpy(ens.a_variable).astype("float64")
    np.testing.assert_allclose(c, a**2 + 1.0 / 8.0, rtol=1e-6)  # c_k = a_k² + 1/(4m), m = 2
    assert np.max(np.abs(c - 0.5)) > 5e-3, c  # moved away from the prior
    assert abs(c.sum() - 1.0) < 0.01, c.sum()
    # each c_k is in the fit logs, every epoch, and the model learned (accuracy on train)
    for name in ("c_arc_face", "c_pair_circle_loss"):
        assert len(history.history[name]) == 4
    # the logged c_k of each epoch is exactly the one its last step used (recorded before
    # that step), not the value after the epoch's last update
    assert seen.shape == (80, 2)
    for epoch in range(4):
        used = seen[20 * epoch + 19]
        logged = [history.history["c_arc_face"][epoch], history.history["c_pair_circle_loss"][epoch]]
        np.testing.assert_allclose(logged, used, rtol=1e-6)
    last_update = np.abs(seen[-1] - c) / c
    assert np.max(last_update) > 1e-5, last_update  # >> rtol: the check above tells them apart
    # evaluate does not train: its c_k are exactly the current ones
    logs = model.evaluate(x[:40], np.zeros(40, "int32") + 1, verbose=0, return_dict=True)
    np.testing.assert_allclose([logs["c_arc_face"], logs["c_pair_circle_loss"]], c, rtol=1e-6)
    assert history.history["accuracy"][-1] > 0.9
    # the a_k are trainable variables of the model, the running means are not
    assert any(v is ens.a_variable for v in model.trainable_variables)
    assert any(v is ens.running_mean_variable for v in model.non_trainable_variables)


def test_ensemble_model_round_trips_through_keras_file(trained, tmp_path):
    model, ens, _, x, _ = trained
    reloaded = km.testing.assert_save_load_identical(model, x[:32], tmp_path)
    loaded = reloaded.loss
    assert isinstance(loaded, km.losses.LossEnsemble) and loaded is not ens
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded.coefficients), keras.ops.convert_to_numpy(ens.coefficients), rtol=0
    )
    np.testing.assert_allclose(loaded.running_mean_variable.numpy(), ens.running_mean_variable.numpy(),
                               rtol=0)
    assert float(loaded.steps_variable.numpy()) == 80.0
    assert isinstance(loaded.members[1], km.losses.PairCircleLoss)


def test_config_roundtrip():
    ens = km.losses.LossEnsemble(
        [km.losses.ArcFace(), km.losses.PairCircleLoss(miner=km.miners.BatchHardMiner())],
        prior=[2, 1],
        eta=10.0,
    )
    clone = km.testing.config_roundtrip(ens)
    assert clone.prior == [2.0, 1.0] and clone.eta == 10.0
    assert isinstance(clone.members[1].miner, km.miners.BatchHardMiner)


def test_bad_arguments_and_misuse():
    with pytest.raises(ValueError, match="losses"):
        km.losses.LossEnsemble([])
    with pytest.raises(ValueError, match="losses"):
        km.losses.LossEnsemble([object()])
    with pytest.raises(ValueError, match="prior"):
        km.losses.LossEnsemble(_members(), prior=[1.0])
    with pytest.raises(ValueError, match="prior"):
        km.losses.LossEnsemble(_members(), prior=[1.0, 0.0])
    with pytest.raises(ValueError, match="eta"):
        km.losses.LossEnsemble(_members(), eta=0.0)
    ens = km.losses.LossEnsemble(_members())
    with pytest.raises(ValueError, match="MarginModel"):
        ens(np.zeros(4), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="MarginModel"):
        ens.compute_model_loss(np.zeros(2), {"embedding": np.ones((2, 3)), "scores": None}, None)
    headless = km.models.MarginModel(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]))
    ens = km.losses.LossEnsemble([km.losses.ArcFace()])
    headless.compile("adam", loss=ens)
    with pytest.raises(ValueError, match="no head"):
        ens.compute_model_loss(np.zeros(2), {"embedding": np.ones((2, 3)), "scores": None}, headless)


def _run_in_fresh_process(script, backend):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND=backend)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]


_MIRRORED_SCRIPT = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np, keras_margins as km
(x, y), _ = km.data.digits_zero_shot()
with tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope():
    backbone = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16)])
    model = km.models.MarginModel(backbone, km.layers.LargestMarginHead(5))
    ens = km.losses.LossEnsemble([km.losses.ArcFace(scale=16.0), km.losses.PairCircleLoss()])
    model.compile(keras.optimizers.Adam(1e-2), loss=ens)
model.fit(km.data.pk_batches((x, y), p=5, k=8, seed=0, steps_per_epoch=5), epochs=2, verbose=0)
c = keras.ops.convert_to_numpy(ens.coefficients)
a = keras.ops.convert_to_numpy(ens.a_variable).astype("float64")
np.testing.assert_allclose(c, a**2 + 1 / 8, rtol=1e-6)
assert np.max(np.abs(c - 0.5)) > 1e-3 and abs(c.sum() - 1) < 0.05, c  # trained, near 1
assert float(ens.steps_variable.numpy()) == 10.0  # 2 epochs x 5 steps, the sum over both replicas
print("OK")
"""


@pytest.mark.slow
@pytest.mark.tf_only
def test_ensemble_under_mirrored_strategy():
    """Two logical CPU devices (needs a fresh process to configure them)."""
    _run_in_fresh_process(_MIRRORED_SCRIPT, "tensorflow")


_JAX_SCRIPT = """
import numpy as np, keras, keras_margins as km
assert keras.backend.backend() == "jax"
rng = np.random.default_rng(0)
y, e = np.repeat(np.arange(4), 4), rng.normal(size=(16, 8)).astype("float32")
unit = e / np.linalg.norm(e, axis=1, keepdims=True)
np.testing.assert_allclose(
    float(km.losses.PairCircleLoss()(y, e)), float(keras.losses.Circle()(y, unit)), rtol=1e-5
)
(x, yy), _ = km.data.digits_zero_shot()
ds = km.data.pk_batches((x, yy), p=5, k=8, seed=0, steps_per_epoch=5)
model = km.models.MarginModel(
    keras.Sequential([keras.Input((64,)), keras.layers.Dense(16)]), km.layers.LargestMarginHead(5)
)
ens = km.losses.LossEnsemble(
    [km.losses.ArcFace(scale=16.0), km.losses.PairCircleLoss(miner=km.miners.SemiHardMiner())]
)
model.compile(keras.optimizers.Adam(1e-2), loss=ens, jit_compile=True)
history = model.fit(ds, epochs=2, verbose=0).history
assert np.all(np.isfinite(history["loss"])) and "c_arc_face" in history, history
print("OK")
"""


@pytest.mark.slow
def test_circle_miners_and_ensemble_on_jax_backend():
    # jax is in the dev extra: a missing jax is a broken setup, not a reason to skip
    _run_in_fresh_process(_JAX_SCRIPT, "jax")
