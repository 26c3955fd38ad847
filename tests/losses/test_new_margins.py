"""km.losses.SubCenterArcFace (and the sub-centre head), CurricularFace, MagFace, AdaFace,
ElasticFace and UniFace as Keras losses: values against the NumPy references of
``tests/references.py`` through ``MarginModel``, their state (t, norm statistics,
step counter, learned bias) updated as the papers say, trained under ``jit_compile=True``,
saved and reloaded with the state, finite under mixed precision (zero-norm embeddings
included), NaN for invalid labels under XLA, refused where they cannot work.
"""

import math
import os

import keras
import numpy as np
import pytest
from references import adaface as ref_adaface
from references import adaface_stats as ref_adaface_stats
from references import arc_target, unit_rows
from references import arcface as ref_arcface
from references import curricular as ref_curricular
from references import curricular_t as ref_curricular_t
from references import elastic as ref_elastic
from references import magface as ref_magface
from references import row_norms as norms_of
from references import subcenter_max as ref_subcenter_max
from references import uniface as ref_uniface

import keras_margins as km
from keras_margins.testing import (
    assert_finite_training_step,
    config_roundtrip,
)

N, F, D, C = 16, 6, 8, 5

LOSSES = {
    # name: (loss factory, sub-centres of the head)
    "subcenter": (lambda: km.losses.SubCenterArcFace(16.0), 3),
    "curricular": (lambda: km.losses.CurricularFace(16.0), 1),
    "magface": (lambda: km.losses.MagFace(16.0), 1),
    "adaface": (lambda: km.losses.AdaFace(16.0), 1),
    "elastic": (lambda: km.losses.ElasticFace(16.0, seed=3), 1),
    "elastic_cos_plus": (lambda: km.losses.ElasticFace(16.0, kind="cos", plus=True, seed=3), 1),
    "uniface": (lambda: km.losses.UniFace(16.0), 1),
}
STATE = {  # name -> state variable names on the model
    "curricular": ["curricular_t"],
    "adaface": ["adaface_norm_mean", "adaface_norm_std"],
    "elastic": ["elasticface_step"],
    "elastic_cos_plus": ["elasticface_step"],
    "uniface": ["uniface_bias"],
}


def data(seed=0, n=N):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, F)).astype("float32")
    x[1] = 0.0  # a zero input: a zero-norm embedding (the Dense bias starts at 0)
    y = (np.arange(n) % C).astype("int32")
    return x, y


def model_for(name, **compile_kwargs):
    make, sub_centers = LOSSES[name]
    backbone = keras.Sequential([keras.Input((F,)), keras.layers.Dense(D)])
    model = km.models.MarginModel(backbone, km.layers.LargestMarginHead(C, sub_centers=sub_centers))
    compile_kwargs.setdefault("jit_compile", True)
    model.compile(keras.optimizers.SGD(0.05), loss=make(), **compile_kwargs)
    return model


def state_of(model):
    return {v.name: float(keras.ops.convert_to_numpy(v)) for v in model.non_trainable_weights
            + model.trainable_weights if v.name in sum(STATE.values(), [])}


def as_np(x):
    return np.asarray(keras.ops.convert_to_numpy(x), "float64")


# ------------------------------------------------------------------ values vs references
def identity_model(name, sub_centers=1):
    """A MarginModel whose embedding is its input (the norms are under the test's control)."""
    make, k = LOSSES[name]
    backbone = keras.Sequential([keras.Input((D,)), keras.layers.Identity()])
    model = km.models.MarginModel(backbone, km.layers.LargestMarginHead(C, sub_centers=k))
    model.compile("sgd", loss=make())
    return model


def embeddings(seed=4):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, D)) * rng.uniform(0.0, 40.0, size=(N, 1))
    x[0] = 0.0
    x[2] *= 100.0  # far above MagFace's upper norm
    return x.astype("float32")


def reference_cosines(model, x):
    """NumPy cosines of the head (max over sub-centres)."""
    head = model.head
    sub = as_np(head.subcenters)  # (C, K, D)
    k = sub.shape[1]
    flat = unit_rows(sub.reshape(C * k, D))
    cos = np.clip(unit_rows(x) @ flat.T, -1, 1)
    return ref_subcenter_max(cos, k)


def loss_value(model, x, y, training):
    outputs = {"embedding": keras.ops.convert_to_tensor(x), "scores": model.head(x)}
    return float(model.loss.compute_model_loss(y, outputs, model, training=training)
                 if isinstance(model.loss, km.losses.ModelLoss)
                 else model.loss(y, outputs["scores"]))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_value_and_state_update_match_the_references(name):
    model = identity_model(name)
    x, y = embeddings(), data()[1]
    cos = reference_cosines(model, x)
    norms = norms_of(x)
    loss = model.loss
    if name == "subcenter":
        expected_eval = expected_train = ref_arcface(y, cos, 16.0, 0.5).mean()
    elif name == "curricular":
        expected_eval = ref_curricular(y, cos, 0.0, 16.0, 0.5).mean()
        t = ref_curricular_t(0.0, [cos[i, y[i]] for i in range(N)])
        expected_train = ref_curricular(y, cos, t, 16.0, 0.5).mean()
    elif name == "magface":
        expected_eval = expected_train = ref_magface(y, cos, norms, s=16.0).mean()
    elif name == "adaface":
        expected_eval = ref_adaface(y, cos, norms, 20.0, 100.0, s=16.0).mean()
        mean, std = ref_adaface_stats(norms, 20.0, 100.0)
        expected_train = ref_adaface(y, cos, norms, mean, std, s=16.0).mean()
    elif name.startswith("elastic"):
        kind = "cos" if "cos" in name else "arc"
        expected_eval = ref_elastic(y, cos, [loss.margin] * N, s=16.0, kind=kind).mean()
        margins = as_np(loss.margins(keras.ops.convert_to_tensor(cos, "float32"), y, step=0))
        expected_train = ref_elastic(y, cos, margins, s=16.0, kind=kind).mean()
    else:  # uniface
        bias = math.log(10 * C)
        expected_eval = expected_train = ref_uniface(y, cos, bias, s=16.0).mean()
    assert loss_value(model, x, y, training=False) == pytest.approx(expected_eval, rel=1e-4, abs=1e-4)
    assert loss_value(model, x, y, training=True) == pytest.approx(expected_train, rel=1e-4, abs=1e-4)
    state = state_of(model)
    if name == "curricular":
        assert state["curricular_t"] == pytest.approx(t, abs=1e-6)
    if name == "adaface":
        assert [state["adaface_norm_mean"], state["adaface_norm_std"]] == pytest.approx([mean, std])
    if name.startswith("elastic"):
        assert state["elasticface_step"] == 1


def test_elastic_plus_margins_follow_the_target_cosines():
    model = identity_model("elastic_cos_plus")
    x, y = embeddings(), data()[1]
    cos = keras.ops.convert_to_tensor(reference_cosines(model, x), "float32")
    margins = as_np(model.loss.margins(cos, y, step=0))
    cos_y = as_np(cos)[np.arange(N), y]
    # larger target cosine, smaller margin (ranks reversed)
    assert np.all(np.argsort(-cos_y) == np.argsort(margins))
    again = as_np(model.loss.margins(cos, y, step=0))
    other = as_np(model.loss.margins(cos, y, step=1))
    np.testing.assert_array_equal(margins, again)
    assert not np.allclose(margins, other)


# ------------------------------------------------------------------- training and state
#: The default run trains, saves and reloads these (every kind of state); the others and the
#: mixed-precision fits run with ``-m slow``.
FAST = ("curricular", "adaface", "elastic", "uniface", "subcenter")


def slow_unless(names):
    return [n if n in names else pytest.param(n, marks=pytest.mark.slow) for n in sorted(LOSSES)]


@pytest.mark.parametrize("name", slow_unless(FAST))
def test_trains_under_xla_round_trips_with_its_state_and_poisons_bad_labels(name, tmp_path):
    model = model_for(name)
    x, y = data()
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    state = state_of(model)
    if name == "curricular":
        assert state["curricular_t"] != 0.0
        assert history.history["curricular_t"][-1] != 0.0
    if name == "adaface":
        assert state["adaface_norm_mean"] != 20.0 and state["adaface_norm_std"] != 100.0
    if name.startswith("elastic"):
        assert state["elasticface_step"] == 2  # 1 epoch × 2 steps
    if name == "uniface":
        assert state["uniface_bias"] != pytest.approx(math.log(10 * C))
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    assert state_of(reloaded) == state
    for a, b in zip(model.weights, reloaded.weights):
        np.testing.assert_array_equal(as_np(a), as_np(b))
    good = reloaded.evaluate(x, y, batch_size=N, verbose=0, return_dict=True)["loss"]
    assert good == pytest.approx(model.evaluate(x, y, batch_size=N, verbose=0, return_dict=True)["loss"])
    # Under XLA a label outside [0, C) makes the loss NaN, never a wrong finite value.
    for bad in (-1, C, 100):
        labels = y.copy()
        labels[3] = bad
        assert np.isnan(reloaded.evaluate(x, labels, batch_size=N, verbose=0, return_dict=True)["loss"])
    # training goes on from the saved state (one more step on each)
    model.train_on_batch(x[:8], y[:8])
    reloaded.train_on_batch(x[:8], y[:8])
    assert state_of(reloaded) == pytest.approx(state_of(model), rel=1e-5)


def mixed_cases():
    cases = []
    for policy in ("mixed_float16", "mixed_bfloat16"):
        for name in sorted(LOSSES):
            marks = () if policy == "mixed_float16" else (pytest.mark.slow,)
            cases.append(pytest.param(name, policy, marks=marks))
    return cases


@pytest.mark.parametrize("name, policy", mixed_cases())
def test_mixed_precision_gives_finite_loss_and_gradients(name, policy):
    """A float16 / bfloat16 backbone, a zero-norm embedding in the batch: the loss and every
    gradient are finite (the loss computes in float32)."""
    keras.mixed_precision.set_global_policy(policy)
    model = model_for(name)
    x, y = data()
    model.build((None, F))
    assert_finite_training_step(model, x, y, (name, policy))


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_fits_under_mixed_precision(name, policy):
    keras.mixed_precision.set_global_policy(policy)
    model = model_for(name)
    x, y = data()
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert all(np.all(np.isfinite(as_np(w))) for w in model.weights)


# ------------------------------------------------------------------- arguments and errors
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_config_round_trip_and_unknown_arguments(name):
    loss = LOSSES[name][0]()
    clone = config_roundtrip(loss)
    assert clone.get_config() == loss.get_config()
    with pytest.raises(TypeError, match="margn"):
        type(loss)(margn=0.3)


@pytest.mark.parametrize("call, argument", [
    (lambda: km.losses.CurricularFace(margin=3.2), "margin"),
    (lambda: km.losses.CurricularFace(momentum=1.0), "momentum"),
    (lambda: km.losses.MagFace(lower_norm=0.0), "lower_norm"),
    (lambda: km.losses.MagFace(upper_margin=1.6), "upper_margin"),
    (lambda: km.losses.MagFace(easy_margin="yes"), "easy_margin"),
    (lambda: km.losses.AdaFace(h=-1.0), "h"),
    (lambda: km.losses.AdaFace(margin=1.6), "margin"),
    (lambda: km.losses.ElasticFace(kind="sphere"), "kind"),
    (lambda: km.losses.ElasticFace(std=-0.1), "std"),
    (lambda: km.losses.ElasticFace(seed=1.5), "seed"),
    (lambda: km.losses.UniFace(r=0.0), "r"),
    (lambda: km.losses.UniFace(negative_weight=-1.0), "negative_weight"),
    (lambda: km.losses.SubCenterArcFace(margin=3.5), "m2|margin"),
])
def test_bad_arguments_raise_value_errors_naming_them(call, argument):
    with pytest.raises(ValueError, match=argument):
        call()


def test_magface_warns_below_the_papers_smallest_regulariser_weight():
    with pytest.warns(UserWarning, match="unique optimal"):
        km.losses.MagFace(regularizer_weight=10.0)


def test_elastic_defaults_are_the_authors_per_variant():
    got = {(k, p): (km.losses.ElasticFace(kind=k, plus=p).margin, km.losses.ElasticFace(kind=k, plus=p).std)
           for k in ("arc", "cos") for p in (False, True)}
    assert got == {("arc", False): (0.5, 0.05), ("arc", True): (0.5, 0.0175),
                   ("cos", False): (0.35, 0.05), ("cos", True): (0.35, 0.02)}


@pytest.mark.parametrize("name", [n for n in sorted(LOSSES) if n != "subcenter"])
def test_model_losses_refuse_a_plain_keras_model_and_a_non_cosine_head(name):
    make = LOSSES[name][0]
    x, y = data()
    plain = keras.Sequential([keras.Input((F,)), keras.layers.Dense(D), km.layers.LargestMarginHead(C)])
    plain.compile("sgd", loss=make())
    with pytest.raises(ValueError, match="MarginModel"):
        plain.fit(x, y, verbose=0)
    backbone = keras.Sequential([keras.Input((F,)), keras.layers.Dense(D)])
    model = km.models.MarginModel(backbone, km.layers.VirtualSoftmaxHead(C))
    with pytest.raises(ValueError, match="cosine head"):
        model.compile("sgd", loss=make())


def test_cosine_range_is_checked_in_eager_mode():
    model = identity_model("curricular")
    x, y = embeddings(), data()[1]
    outputs = {"embedding": keras.ops.convert_to_tensor(x), "scores": keras.ops.convert_to_tensor(x[:, :C])}
    with pytest.raises(ValueError, match="cosines"):
        model.loss.compute_model_loss(y, outputs, model, training=False)


# ------------------------------------------------------------------------ sub-centre head
def test_subcenter_head_max_pools_and_declares_its_dominant_vectors():
    head = km.layers.LargestMarginHead(C, sub_centers=3)
    x = embeddings()
    out = as_np(head(x))
    sub = as_np(head.subcenters)
    cos = np.clip(unit_rows(x) @ unit_rows(sub.reshape(3 * C, D)).T, -1, 1)
    np.testing.assert_allclose(out, ref_subcenter_max(cos, 3), atol=1e-5)
    np.testing.assert_allclose(as_np(head.subcenter_cosines(x)).reshape(N, 3 * C), cos, atol=1e-5)
    np.testing.assert_allclose(as_np(head.class_cosines(x, np.array([3, 0]))), out[:, [3, 0]], atol=1e-6)
    # one vector per class: sub-centre 0 while all are in use, the dominant one after dropping
    assert head.score_kind == "cosine"
    np.testing.assert_allclose(as_np(km.protocols.class_vectors(head)), sub[:, 0].T, atol=1e-7)
    dominant = np.array([2, 0, 1, 1, 2])
    head.drop_subcenters(dominant)
    np.testing.assert_allclose(as_np(head.centers), sub[np.arange(C), dominant], atol=1e-7)
    np.testing.assert_allclose(as_np(head(x)), cos.reshape(N, C, 3)[:, np.arange(C), dominant], atol=1e-5)
    with pytest.raises(ValueError, match="class_cosines"):
        km.protocols.gather_class_vectors(head, np.array([0, 1]))
    with pytest.raises(ValueError, match="dominant"):
        head.drop_subcenters(np.array([3, 0, 0, 0, 0]))


def test_subcenter_head_arguments_and_old_configs():
    with pytest.raises(ValueError, match="sub_centers"):
        km.layers.LargestMarginHead(C, sub_centers=0)
    with pytest.raises(ValueError, match="kernel_layout"):
        km.layers.LargestMarginHead(C, sub_centers=2, kernel_layout="feature_major")
    with pytest.raises(TypeError, match="sub_centres"):
        km.layers.LargestMarginHead(C, sub_centres=2)
    # a config written before the option loads with one centre per class, same weights
    config = km.layers.LargestMarginHead(C, name="h").get_config()
    assert config.pop("sub_centers") == 1
    old = km.layers.LargestMarginHead.from_config(config)
    old.build((None, D))
    assert old.sub_centers == 1 and [w.name for w in old.weights] == ["class_centers"]
    assert config_roundtrip(km.layers.LargestMarginHead(C, sub_centers=4)).sub_centers == 4


def numpy_report(sub, x, labels, drop_angle):
    """Dominant sub-centre = most samples closest to it; flagged = angle to dominant > threshold."""
    k = sub.shape[1]
    unit_x = unit_rows(x)
    own = np.zeros((len(labels), k))
    for i, c in enumerate(labels):
        for q in range(k):
            own[i, q] = unit_x[i] @ (sub[c, q] / np.linalg.norm(sub[c, q]))
    counts = np.zeros((sub.shape[0], k), int)
    for i, c in enumerate(labels):
        counts[c, int(np.argmax(own[i]))] += 1
    dominant = counts.argmax(axis=1)
    angles = np.array([math.acos(min(1, max(-1, own[i, dominant[c]]))) for i, c in enumerate(labels)])
    return dominant, counts, angles, np.flatnonzero(angles > drop_angle)


def test_subcenter_report_flags_samples_far_from_the_dominant_subcentre():
    rng = np.random.default_rng(0)
    head = km.layers.LargestMarginHead(4, sub_centers=3)
    head.build((None, D))
    x, labels, noisy = [], [], []
    sub = as_np(head.subcenters)
    for c in range(4):
        for q, count in ((1, 12), (2, 3)):  # sub-centre 1 dominant, 2 a minority
            for _ in range(count):
                x.append(sub[c, q] + 0.05 * rng.normal(size=D))
                labels.append(c)
        for _ in range(2):  # mislabelled: the opposite direction of the class's sub-centres
            x.append(-sub[c, 1] + 0.05 * rng.normal(size=D))
            labels.append(c)
            noisy.append(len(labels) - 1)
    x, labels = np.array(x, "float32"), np.array(labels)
    report = km.losses.subcenter_report(head, x, labels, batch_size=7)
    dominant, counts, angles, flagged = numpy_report(sub, x, labels, math.radians(75))
    np.testing.assert_array_equal(report.dominant, dominant)
    np.testing.assert_array_equal(report.counts, counts)
    np.testing.assert_allclose(report.angles, angles, atol=1e-4)
    np.testing.assert_array_equal(report.flagged, flagged)
    assert set(noisy) <= set(report.flagged.tolist())
    assert report.keep.sum() == len(labels) - len(report.flagged)
    assert "flagged" in report.summary()
    with pytest.raises(ValueError, match="sub-centres"):
        km.losses.subcenter_report(km.layers.PEDCCHead(4), x, labels)
    with pytest.raises(ValueError, match="drop_angle"):
        km.losses.subcenter_report(head, x, labels, drop_angle=0.0)
    with pytest.raises(ValueError, match="labels"):
        km.losses.subcenter_report(head, x, labels + 4)


def test_subcenter_dropping_survives_save_and_load(tmp_path):
    model = model_for("subcenter")
    x, y = data()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    report = km.losses.subcenter_report(model.head, model.backbone.predict(x, verbose=0), y)
    model.head.drop_subcenters(report.dominant)
    reloaded = km.testing.assert_save_load_identical(model, x, directory=tmp_path)
    np.testing.assert_array_equal(as_np(reloaded.head.subcenter_mask),
                                  np.eye(3)[report.dominant])


def test_partial_fc_samples_a_subcenter_head_through_its_pooled_cosines():
    """PartialFC on a sub-centre head gathers all K sub-centres of each sampled class (the
    head's ``class_cosines``), never one vector per class (``gather_class_vectors`` refuses);
    values against the references: ``test_new_margins_matrix.py``."""
    x, y = data()
    head = km.layers.LargestMarginHead(20, sub_centers=3)
    model = km.models.MarginModel(keras.Sequential([keras.Input((F,)), keras.layers.Dense(D)]), head)
    model.compile("sgd", loss=km.losses.PartialFC(km.losses.SubCenterArcFace(16.0), sample_rate=0.5))
    assert np.isfinite(model.fit(x, y, batch_size=N, verbose=0).history["loss"][-1])
    with pytest.raises(ValueError, match="sub-centres"):
        head.gather_class_vectors(keras.ops.convert_to_tensor([0, 1]))


def test_arc_target_reference_continues_past_pi():
    # the shared reference itself: θ + m > π takes cos θ − m·sin m
    assert arc_target(-1.0, 0.5) == pytest.approx(-1.0 - 0.5 * math.sin(0.5))
    assert arc_target(1.0, 0.5) == pytest.approx(math.cos(0.5))


# -------------------------------------------------------------------- class-sharded heads
CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_new_margins_sharded_child.py")


@pytest.mark.slow
def test_class_sharded_step_equals_one_device():
    """8 simulated devices (JAX, ``km.distribution.class_parallel``): one SGD step of each loss
    gives the loss, the gradients and the loss state of one device (to 1e-5 relative)."""
    import json
    import subprocess
    import sys

    env = dict(os.environ, KERAS_BACKEND="jax", JAX_ENABLE_X64="0", TF_CPP_MIN_LOG_LEVEL="3",
               XLA_FLAGS="--xla_force_host_platform_device_count=8")
    root = os.path.dirname(os.path.dirname(os.path.dirname(CHILD)))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, CHILD], capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    line = [row for row in proc.stdout.splitlines() if row.startswith("RESULT ")][-1]
    results = json.loads(line[len("RESULT "):])
    assert set(results) == {"subcenter", "curricular", "magface", "adaface", "elastic_arc_plus",
                            "elastic_cos", "uniface"}
    for name, r in results.items():
        assert abs(r["loss"] - r["ref_loss"]) <= 1e-5 * max(1.0, abs(r["ref_loss"])), (name, r)
        assert r["grad_max_abs"] > 0, (name, r)
        assert r["grad_max_abs_diff"] <= 1e-5 * max(1.0, r["grad_max_abs"]), (name, r)
        assert r["state"].keys() == r["ref_state"].keys()
        for key, value in r["state"].items():
            assert value == pytest.approx(r["ref_state"][key], rel=1e-5), (name, key)
        # every device holds C / 8 classes (with sub-centres: their K rows each)
        assert r["shards"] == [[4 * (3 if name == "subcenter" else 1), 8]], (name, r["shards"])
