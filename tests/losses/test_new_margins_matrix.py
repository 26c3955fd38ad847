"""The new margin losses composed with the rest of the library (issue 24, item 2): each of
SubCenterArcFace, CurricularFace, MagFace, AdaFace, ElasticFace (arc and cos+) and UniFace

* wrapped in ``km.losses.PartialFC``: the sampled step's value and state update equal the NumPy
  references on the sampled cosines (sub-centre head: all sub-centres of the sampled classes,
  max-pooled), it trains under ``jit_compile=True`` (this file runs on TensorFlow and on JAX),
  the state and the sampler's step round-trip through ``.keras`` and training goes on the same;
* finite loss and gradients under ``mixed_float16`` and ``mixed_bfloat16`` inside Partial FC;
* exported for TF Serving (embedding, scores and the feature norm as the quality score);
* known to the registry, the command line and the KerasTuner search.

What is tested elsewhere: values, state and XLA training without Partial FC, mixed precision
without it (``test_new_margins.py``), the 8-device class-sharded step (slow,
``test_new_margins.py::test_class_sharded_step_equals_one_device``), the exported norm in a
process without keras_margins (``tests/test_export_quality_norm.py``).
"""

import math
import os

import keras
import numpy as np
import pytest
from references import adaface as ref_adaface
from references import adaface_stats as ref_adaface_stats
from references import arcface as ref_arcface
from references import curricular as ref_curricular
from references import curricular_t as ref_curricular_t
from references import elastic as ref_elastic
from references import magface as ref_magface
from references import row_norms as norms_of
from references import subcenter_max as ref_subcenter_max
from references import uniface as ref_uniface
from references import unit_rows

import keras_margins as km
from keras_margins.testing import assert_finite_training_step, value_and_grad_of_variables

N, D, C, K = 8, 6, 20, 3  # batch, embedding, classes, sub-centres of the sub-centre head
RATE = 0.25  # Partial FC keeps max(ceil(0.25·20), 8) = 8 of the 20 classes

LOSSES = {
    # name: (loss factory, sub-centres of the head, state variables on the model)
    "subcenter": (lambda: km.losses.SubCenterArcFace(16.0), K, []),
    "curricular": (lambda: km.losses.CurricularFace(16.0), 1, ["curricular_t"]),
    "magface": (lambda: km.losses.MagFace(16.0), 1, []),
    "adaface": (lambda: km.losses.AdaFace(16.0), 1, ["adaface_norm_mean", "adaface_norm_std"]),
    "elastic": (lambda: km.losses.ElasticFace(16.0, seed=3), 1, ["elasticface_step"]),
    "elastic_cos_plus": (lambda: km.losses.ElasticFace(16.0, kind="cos", plus=True, seed=3), 1,
                         ["elasticface_step"]),
    "uniface": (lambda: km.losses.UniFace(16.0), 1, ["uniface_bias"]),
}
NAMES = sorted(LOSSES)


def as_np(x):
    return np.asarray(keras.ops.convert_to_numpy(x), "float64")


def embeddings(seed=4):
    """(N, D) embeddings with spread norms: a zero row, one far above MagFace's upper norm."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, D)) * rng.uniform(5.0, 40.0, size=(N, 1))
    x[0] = 0.0
    x[2] *= 10.0
    return x.astype("float32")


LABELS = np.array([0, 3, 3, 7, 11, 15, 19, 7], "int32")


def partial_fc_model(name, backbone=None, jit_compile=True):
    make, sub_centers, _ = LOSSES[name]
    if backbone is None:  # the embedding is the input: the norms are the test's
        backbone = keras.Sequential([keras.Input((D,)), keras.layers.Identity()])
    model = km.models.MarginModel(backbone, km.layers.LargestMarginHead(C, sub_centers=sub_centers))
    model.compile(keras.optimizers.SGD(0.5),
                  loss=km.losses.PartialFC(make(), sample_rate=RATE, seed=7),
                  jit_compile=jit_compile)
    model.build((None, D))
    return model


def state_of(model, name):
    wanted = set(LOSSES[name][2]) | {"partial_fc_step"}
    return {v.name: float(as_np(v)) for v in model.weights if v.name in wanted}


def full_reference_cosines(head, x):
    """NumPy (N, C) cosines of the head (max over its sub-centres)."""
    sub = as_np(head.subcenters)  # (C, K, D)
    k = sub.shape[1]
    cos = np.clip(unit_rows(x.astype("float64")) @ unit_rows(sub.reshape(C * k, D)).T, -1, 1)
    return ref_subcenter_max(cos, k)


def expected_sampled_step(name, pfc, cos, labels, norms):
    """The reference value of one training step of ``pfc`` on the sampled cosines ``cos``
    (N, K) with remapped ``labels``, and the reference state after it."""
    inner = pfc.loss
    if name == "subcenter":
        return ref_arcface(labels, cos, 16.0, 0.5).mean(), {}
    if name == "curricular":
        t = ref_curricular_t(0.0, cos[np.arange(N), labels])
        return ref_curricular(labels, cos, t, 16.0, 0.5).mean(), {"curricular_t": t}
    if name == "magface":
        return ref_magface(labels, cos, norms, s=16.0).mean(), {}
    if name == "adaface":
        mean, std = ref_adaface_stats(norms, 20.0, 100.0)
        return (ref_adaface(labels, cos, norms, mean, std, s=16.0).mean(),
                {"adaface_norm_mean": mean, "adaface_norm_std": std})
    if name.startswith("elastic"):
        # the draws are the library's (stateless normal, seed and step); the loss around them
        # is the reference's
        margins = as_np(inner.margins(keras.ops.convert_to_tensor(cos, "float32"), labels, step=0))
        kind = "cos" if "cos" in name else "arc"
        return ref_elastic(labels, cos, margins, s=16.0, kind=kind).mean(), {"elasticface_step": 1}
    bias = math.log(10 * C)  # UniFace's initial b̃ = log(10·r·C) over all C classes
    return ref_uniface(labels, cos, bias, s=16.0).mean(), {"uniface_bias": bias}


# ----------------------------------------------------------------------------- Partial FC
@pytest.mark.parametrize("name", NAMES)
def test_partial_fc_step_matches_the_reference_on_the_sampled_classes(name):
    model = partial_fc_model(name, jit_compile=False)
    pfc = model.loss
    x = embeddings()
    class_ids, sampled = (as_np(v).astype(int) for v in pfc.sample(LABELS, C, step=0))
    assert len(class_ids) == 8 and set(LABELS) <= set(class_ids)
    np.testing.assert_array_equal(class_ids[sampled], LABELS)
    cos = full_reference_cosines(model.head, x)[:, class_ids]  # (N, 8)
    expected, expected_state = expected_sampled_step(name, pfc, cos, sampled, norms_of(x))
    outputs = {"embedding": keras.ops.convert_to_tensor(x), "scores": None}
    value = float(as_np(pfc.compute_model_loss(LABELS, outputs, model, training=True)))
    assert value == pytest.approx(expected, rel=1e-4, abs=1e-4)
    state = state_of(model, name)
    assert state.pop("partial_fc_step") == 1
    assert state == pytest.approx(expected_state, rel=1e-5, abs=1e-6)
    # evaluate: the wrapped loss on all C classes, state read, not updated
    full = full_reference_cosines(model.head, x)
    value = float(as_np(pfc.compute_model_loss(LABELS, outputs, model, training=False)))
    assert np.isfinite(value)
    if name in ("subcenter", "magface"):  # stateless: the reference on the full head
        ref = (ref_arcface(LABELS, full, 16.0, 0.5) if name == "subcenter"
               else ref_magface(LABELS, full, norms_of(x), s=16.0))
        assert value == pytest.approx(ref.mean(), rel=1e-4, abs=1e-4)
    assert state_of(model, name) == pytest.approx({**expected_state, "partial_fc_step": 1})


def test_partial_fc_trains_only_the_sampled_classes_subcentres():
    """On a sub-centre head a sampled step reaches all K sub-centres of each sampled class
    (the max picks one per sample) and nothing of the other classes; dropped sub-centres
    stay out of the sampled cosines."""
    model = partial_fc_model("subcenter", jit_compile=False)
    pfc = model.loss
    x = embeddings()
    class_ids, sampled = (as_np(v).astype(int) for v in pfc.sample(LABELS, C, step=0))

    def step():  # a training step (the sampler's step stays 0: the scope discards updates)
        outputs = {"embedding": keras.ops.convert_to_tensor(x), "scores": None}
        return pfc.compute_model_loss(LABELS, outputs, model, training=True)

    _, grads = value_and_grad_of_variables(step, [model.head.storage])
    grad = as_np(grads[0]).reshape(C, K, D)
    touched = np.flatnonzero(np.abs(grad).sum(axis=(1, 2)) > 0)
    assert set(LABELS) <= set(touched) <= set(class_ids)
    assert np.all(grad[np.setdiff1d(np.arange(C), class_ids)] == 0)
    # after dropping, only the dominant sub-centre of each class is read
    dominant = np.arange(C) % K
    model.head.drop_subcenters(dominant)
    sub = as_np(model.head.subcenters)[np.arange(C), dominant]  # (C, D)
    cos = np.clip(unit_rows(x.astype("float64")) @ unit_rows(sub).T, -1, 1)[:, class_ids]
    value, grads = value_and_grad_of_variables(step, [model.head.storage])
    assert float(value) == pytest.approx(ref_arcface(sampled, cos, 16.0, 0.5).mean(),
                                         rel=1e-4, abs=1e-4)
    grad = as_np(grads[0]).reshape(C, K, D)
    assert np.all(grad[np.arange(C)[:, None], (dominant[:, None] + np.arange(1, K)) % K] == 0)


#: Losses whose training is also continued after the reload (two more compiled steps; the
#: sampler's step and each kind of state: a running statistic, a step-seeded draw).
CONTINUED = ("adaface", "elastic_cos_plus")


@pytest.mark.parametrize("name", NAMES)
def test_partial_fc_trains_under_xla_and_round_trips_with_its_state(name, tmp_path):
    model = partial_fc_model(name)
    x = np.concatenate([embeddings(), embeddings(5)])
    y = np.concatenate([LABELS, LABELS[::-1]])
    history = model.fit(x, y, batch_size=N, epochs=1, shuffle=False, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    for state_name in LOSSES[name][2]:
        if state_name != "elasticface_step":
            assert state_name in history, (name, sorted(history))  # logs pass through
    state = state_of(model, name)
    assert state["partial_fc_step"] == 2
    if name == "curricular":
        assert state["curricular_t"] != 0.0
    if name == "adaface":
        assert (state["adaface_norm_mean"], state["adaface_norm_std"]) != (20.0, 100.0)
    if name.startswith("elastic"):
        assert state["elasticface_step"] == 2
    if name == "uniface":
        assert state["uniface_bias"] != pytest.approx(math.log(10 * C))
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    assert isinstance(reloaded.loss, km.losses.PartialFC)
    assert state_of(reloaded, name) == state
    for a, b in zip(model.weights, reloaded.weights):
        np.testing.assert_array_equal(as_np(a), as_np(b))
    if name not in CONTINUED:
        return
    # the same sample, the same state update and the same weights on the next step
    model.train_on_batch(x[:N], y[:N])
    reloaded.train_on_batch(x[:N], y[:N])
    assert state_of(reloaded, name) == pytest.approx(state_of(model, name), rel=1e-5)
    for a, b in zip(model.weights, reloaded.weights):
        np.testing.assert_allclose(as_np(a), as_np(b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("name", NAMES)
def test_partial_fc_under_mixed_precision_gives_finite_loss_and_gradients(name, policy):
    keras.mixed_precision.set_global_policy(policy)
    backbone = keras.Sequential([keras.Input((D,)), keras.layers.Dense(D)])
    model = partial_fc_model(name, backbone=backbone, jit_compile=False)
    x = embeddings()  # a zero input: a zero-norm embedding
    assert_finite_training_step(model, x, LABELS, (name, policy))


def test_partial_fc_still_refuses_losses_not_on_cosines():
    for loss in (km.losses.VirtualSoftmax(), km.losses.PairCircleLoss(),
                 keras.losses.SparseCategoricalCrossentropy()):
        with pytest.raises(ValueError, match="`loss`"):
            km.losses.PartialFC(loss)


# ----------------------------------------------------------------------------- export
@pytest.mark.parametrize("name", NAMES)
def test_exports_for_serving_with_scores_and_the_norm(name, tmp_path):
    tf = pytest.importorskip("tensorflow")
    backbone = keras.Sequential([keras.Input((D,)), keras.layers.Dense(D)])
    model = partial_fc_model(name, backbone=backbone)  # with its loss state on the model
    x = embeddings()
    path = km.export.export_embedding_model(model, tmp_path / name, include_scores=True,
                                            include_norm=True, models_config=False)
    loaded = tf.saved_model.load(path)
    served = loaded.signatures["serving_default"](inputs=tf.constant(x))
    raw = as_np(backbone(x))
    np.testing.assert_allclose(served["norm"].numpy(), np.linalg.norm(raw, axis=1),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(served["embedding"].numpy(), unit_rows(raw), atol=1e-5)
    scores = loaded.signatures["scores"](inputs=tf.constant(x))["scores"].numpy()
    np.testing.assert_allclose(scores, full_reference_cosines(model.head, raw), atol=1e-5)


# ----------------------------------------------------------------- registry, CLI, tuner
FAMILIES = {  # registry name -> (loss class name, sub-centres of its head)
    "subcenter_arcface": ("SubCenterArcFace", 3),
    "curricularface": ("CurricularFace", 1),
    "magface": ("MagFace", 1),
    "adaface": ("AdaFace", 1),
    "elasticface": ("ElasticFace", 1),
    "uniface": ("UniFace", 1),
}


def test_every_new_loss_is_a_registry_family_on_the_cosine_head():
    from keras_margins.registry import FAMILIES as TABLE

    for family_name, (loss_name, sub_centers) in FAMILIES.items():
        family = TABLE[family_name]
        assert family.loss is getattr(km.losses, loss_name)
        assert family.head is km.layers.LargestMarginHead and family.wants_head
        head = family.make_head(C)
        assert head.sub_centers == sub_centers
        assert family.option_map()["scale"] == "scale"
        loss = family.make_loss(**family.loss_arguments(scale=8.0, margin=0.6))
        assert loss.scale == 8.0
    # MagFace's and AdaFace's norm is a quality score: `train --export` serves it
    assert {n for n, f in TABLE.items() if f.norm_quality} == {"magface", "adaface"}
    sub = TABLE["subcenter_arcface"]
    assert sub.make_head(C, sub_centers=2).sub_centers == 2
    assert TABLE["arcface"].make_head(C, sub_centers=2).sub_centers == 2  # a head option
    with pytest.raises(ValueError, match="sub_centers"):
        TABLE["pod"].make_head(C, sub_centers=2)
    with pytest.raises(ValueError, match="sub_centers"):
        TABLE["softmax"].make_head(C, sub_centers=2)


def test_command_line_knows_the_new_losses_and_sub_centres():
    from keras_margins import cli
    from keras_margins.cli.train import build_loss_and_head, check_args

    parser = cli.build_parser()
    for family_name, (loss_name, sub_centers) in FAMILIES.items():
        args = parser.parse_args(["train", "--loss", family_name, "--scale", "8"])
        check_args(args)
        loss, head, _ = build_loss_and_head(family_name, None, C, scale=8.0)
        assert type(loss).__name__ == loss_name and head.sub_centers == sub_centers
    args = parser.parse_args(["train", "--loss", "subcenter_arcface", "--sub-centers", "2"])
    check_args(args)
    _, head, _ = build_loss_and_head("subcenter_arcface", "cosine", C, sub_centers=2)
    assert head.sub_centers == 2
    for argv in (["--loss", "pod", "--sub-centers", "2"],
                 ["--loss", "arcface", "--head", "pedcc", "--sub-centers", "2"],
                 ["--loss", "circle_pair", "--sub-centers", "2"]):
        with pytest.raises(ValueError, match="--sub-centers"):
            check_args(parser.parse_args(["train", *argv]))


def test_tuner_searches_the_new_losses_and_the_number_of_sub_centres():
    kt = pytest.importorskip("keras_tuner")
    from keras_margins import tuning

    def backbone():
        return keras.Sequential([keras.Input((D,)), keras.layers.Dense(D)])

    hm = tuning.MarginHyperModel(backbone, C, losses=tuple(FAMILIES))
    hp = kt.HyperParameters()
    hp.Fixed("loss", "subcenter_arcface")
    model = hm.build(hp)
    assert hp.values["subcenter_arcface_sub_centers"] == 3  # the paper's K, the first trial
    assert model.get_layer(tuning.HEAD_NAME).sub_centers == 3
    assert "sub_centers=3" in hm.describe(hp.values)
    hp.values["subcenter_arcface_sub_centers"] = 2
    assert hm.build(hp).get_layer(tuning.HEAD_NAME).sub_centers == 2
    x = embeddings()
    for family_name, (loss_name, _) in FAMILIES.items():
        model = hm.compile_model(family_name, {"scale": 8.0}, 1e-2)
        assert type(model.loss).__name__ == loss_name and model.jit_compile
        if family_name in ("subcenter_arcface", "magface"):  # a compiled step (XLA) each
            logs = model.train_on_batch(x, LABELS, return_dict=True)
            assert np.isfinite(logs["loss"]), family_name
