"""Tests of km.tuning: conditional search space, a real 2-trial search, reload, LR multiplier."""

import os

import keras
import keras_tuner as kt
import numpy as np
import pytest

import keras_margins as km
from keras_margins import cli, registry, tuning

LOSSES = registry.tuned_families()
NUM_CLASSES = 4


def _backbone():
    return keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(6)],
        name="embedding",
    )


def _data(n=96, seed=0):
    """Four well separated Gaussian blobs in 8-D: a tiny real classification problem."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % NUM_CLASSES
    centres = rng.normal(size=(NUM_CLASSES, 8)) * 3.0
    x = centres[y] + rng.normal(size=(n, 8))
    return x.astype("float32"), y.astype("int32")


def _expected_keys(hypermodel, loss):
    family = hypermodel.families[loss]
    keys = {"loss", "learning_rate"} | {f"{loss}_{p.name}" for p in family.params}
    if family.trainable_head:
        keys.add("head_lr_multiplier")
    return keys


def _assert_no_leak(hypermodel, hps):
    """A trial with loss X carries exactly X's hyperparameters (plus the shared ones), inside
    their ranges, and every other family's hyperparameters are inactive."""
    values = hps.values
    loss = values["loss"]
    assert set(values) == _expected_keys(hypermodel, loss)
    for name, family in hypermodel.families.items():
        if name not in hypermodel.losses:
            continue
        for p in family.params:
            key = f"{name}_{p.name}"
            assert hps.is_active(key) == (name == loss), key
            if name == loss:
                assert p.min_value <= values[key] <= p.max_value, (key, values[key])


def test_default_space_is_the_registry_families_marked_tuned():
    # The order is the `loss` Choice's order: seeded searches repeat only if it stays put.
    assert LOSSES == ("arcface", "cosface", "sphereface", "lmsoftmax", "virtual_softmax", "pod",
                      "circle")
    assert tuning.FAMILIES is registry.FAMILIES  # one table for the tuner and the CLI
    hm = tuning.MarginHyperModel(_backbone, NUM_CLASSES)
    assert hm.losses == LOSSES
    # Families outside the default space can still be searched when named.
    assert tuning.MarginHyperModel(_backbone, NUM_CLASSES, losses=("normface", "softmax")).losses \
        == ("normface", "softmax")


def test_conditional_hyperparameters_never_leak(tmp_path):
    hm = tuning.MarginHyperModel(_backbone, NUM_CLASSES)
    tuner = kt.RandomSearch(
        hm, objective="val_accuracy", max_trials=1000, seed=1, directory=tmp_path, project_name="p"
    )
    built = set()
    for i in range(12 * len(LOSSES)):
        trial = tuner.oracle.create_trial(f"tuner{i}")
        assert trial.status == "RUNNING"
        hps = trial.hyperparameters
        _assert_no_leak(hm, hps)
        loss = hps.values["loss"]
        if loss in built:
            continue
        built.add(loss)
        # The model built for this trial uses exactly the trial's values.
        model = hm.build(hps)
        config = model.loss.get_config()
        for key, value in hm.loss_values(hps.values)[1].items():
            assert config[key] == pytest.approx(value), (loss, key)
        expected = {}
        if hm.families[loss].trainable_head:
            expected = {tuning.HEAD_NAME: pytest.approx(hps.values["head_lr_multiplier"])}
        assert model.optimizer.layer_lr_multipliers == expected
        assert float(model.optimizer.learning_rate) == pytest.approx(hps.values["learning_rate"])
    assert built == set(LOSSES), "random sampling should reach every loss"


@pytest.mark.parametrize("loss", LOSSES)
def test_each_loss_builds_compiles_and_takes_a_jit_step(loss):
    hm = tuning.MarginHyperModel(_backbone, NUM_CLASSES)
    hp = kt.HyperParameters()
    hp.Fixed("loss", loss)
    model = hm.build(hp)
    family = hm.families[loss]
    assert isinstance(model.loss, family.loss)
    assert isinstance(model.get_layer(tuning.HEAD_NAME), family.head)
    for p in family.params:  # defaults of the space reach the loss
        assert model.loss.get_config()[p.name] == pytest.approx(p.default)
    assert model.jit_compile is True
    x, y = _data(32)
    before = [np.array(v) for v in model.trainable_variables]
    logs = model.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"])
    moved = [not np.array_equal(b, np.array(v)) for b, v in zip(before, model.trainable_variables)]
    assert all(moved), "every trainable variable takes a step"
    assert tuple(model(x).shape) == (32, NUM_CLASSES)


def test_two_trial_search_differs_and_best_model_reloads(tmp_path):
    x, y = _data(192, seed=1)
    xv, yv = _data(64, seed=2)
    hm = tuning.MarginHyperModel(_backbone, NUM_CLASSES, losses=("arcface", "cosface"))
    objective, callbacks = tuning.objective_and_callbacks("classification")
    tuner = tuning.make_tuner(
        hm, objective, "random", max_trials=2, seed=3, directory=tmp_path, project_name="p"
    )
    tuner.search(x, y, validation_data=(xv, yv), epochs=1, batch_size=32,
                 callbacks=callbacks, verbose=0)

    trials = [t for t in tuner.oracle.trials.values() if t.status == "COMPLETED"]
    assert len(trials) == 2
    for trial in trials:
        _assert_no_leak(hm, trial.hyperparameters)
    rows = tuning.trial_rows(tuner)
    assert [r["objective"] for r in rows] == sorted((t.score for t in trials), reverse=True)
    assert all(r["scale"] is not None and r["margin"] is not None for r in rows)
    assert (rows[0]["loss"], rows[0]["scale"], rows[0]["margin"]) != (
        rows[1]["loss"], rows[1]["scale"], rows[1]["margin"])
    assert rows[0]["scale"] != rows[1]["scale"] and rows[0]["margin"] != rows[1]["margin"]
    table = tuning.format_trials(rows, "val_accuracy")
    assert table.splitlines()[0] == "| trial | loss | scale | margin | val_accuracy |"
    assert len(table.splitlines()) == 4

    best = tuner.get_best_models(num_models=1)[0]
    predictions = best.predict(xv, verbose=0)
    assert predictions.shape == (64, NUM_CLASSES) and np.isfinite(predictions).all()
    # The best trial's score is the reloaded model's validation accuracy (checkpoint = best epoch).
    accuracy = float((predictions.argmax(-1) == yv).mean())
    assert accuracy == pytest.approx(rows[0]["objective"], abs=1e-6)

    # By hand: hypermodel.build + the checkpoint in the tuner's directory.
    best_trial = tuner.oracle.get_best_trials(1)[0]
    fresh = hm.build(best_trial.hyperparameters)
    assert not np.allclose(fresh.predict(xv, verbose=0), predictions)
    fresh.load_weights(os.path.join(tuner.get_trial_dir(best_trial.trial_id),
                                    "checkpoint.weights.h5"))
    np.testing.assert_array_equal(fresh.predict(xv, verbose=0), predictions)


def test_retrieval_objective_is_map_at_r_of_the_backbone(tmp_path):
    x, y = _data(128, seed=4)
    xv, yv = _data(60, seed=5)
    hm = tuning.MarginHyperModel(_backbone, NUM_CLASSES, losses=("cosface",))
    objective, callbacks = tuning.objective_and_callbacks("retrieval", (xv, yv))
    assert objective.name == "val_map_at_r" and objective.direction == "max"
    tuner = tuning.make_tuner(
        hm, objective, "bayesian", max_trials=1, seed=0, directory=tmp_path, project_name="r"
    )
    assert tuner.oracle.num_initial_points == 2  # not KerasTuner's 3 per hyperparameter
    tuner.search(x, y, epochs=1, batch_size=32, callbacks=callbacks, verbose=0)
    score = tuner.oracle.get_best_trials(1)[0].score
    best = tuner.get_best_models(1)[0]
    name, value = tuning.held_out_score(best, "retrieval", (xv, yv))
    assert name == "map_at_r"
    assert 0.0 < score <= 1.0 and value == pytest.approx(score, abs=1e-6)


def _one_step_model(optimizer, jit_compile=False):
    keras.utils.set_random_seed(7)
    model = keras.Sequential([_backbone(), km.layers.LargestMarginHead(NUM_CLASSES,
                                                                       name=tuning.HEAD_NAME)])
    model.compile(optimizer=optimizer, loss=km.losses.CosFace(scale=8.0), jit_compile=jit_compile)
    return model


def test_layer_lr_adam_scales_only_the_head():
    """One step of LayerLRAdam(lr, {head: M}) moves the head as Adam(lr·M) and the backbone as
    Adam(lr) (one step: afterwards the gradients themselves differ between the three runs)."""
    x, y = _data(32)
    lr, mult = 1e-2, 7.0
    scaled = _one_step_model(
        tuning.LayerLRAdam(lr, layer_lr_multipliers={tuning.HEAD_NAME: mult}), jit_compile=True
    )
    plain = _one_step_model(keras.optimizers.Adam(lr))
    fast = _one_step_model(keras.optimizers.Adam(lr * mult))
    for model in (scaled, plain, fast):
        model.train_on_batch(x, y)
    def kernel(model):  # the head's (D, C) class vectors, whatever their storage
        return keras.ops.convert_to_numpy(model.get_layer(tuning.HEAD_NAME).kernel)

    head = kernel(scaled)
    np.testing.assert_allclose(head, kernel(fast), atol=1e-6)
    assert not np.allclose(head, kernel(plain), atol=1e-4)
    for a, b in zip(scaled.layers[0].weights, plain.layers[0].weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b),
                                   atol=1e-6)


def test_layer_lr_adam_serialises_and_model_round_trips(tmp_path):
    opt = tuning.LayerLRAdam(3e-3, layer_lr_multipliers={tuning.HEAD_NAME: 2.5})
    clone = km.testing.config_roundtrip(opt)
    assert clone.layer_lr_multipliers == {tuning.HEAD_NAME: 2.5}
    hm = tuning.MarginHyperModel(_backbone, NUM_CLASSES)
    model = hm.compile_model("arcface", {"scale": 16.0, "margin": 0.3}, 1e-3, 4.0)
    reloaded = km.testing.assert_save_load_identical(model, _data(32)[0], directory=tmp_path)
    assert isinstance(reloaded.optimizer, tuning.LayerLRAdam)
    assert reloaded.optimizer.layer_lr_multipliers == {tuning.HEAD_NAME: 4.0}


def test_backbone_may_take_hp():
    def build_backbone(hp):
        width = hp.Int("width", 4, 16, step=4, default=8)
        return keras.Sequential([keras.Input((8,)), keras.layers.Dense(width)])

    hm = tuning.MarginHyperModel(build_backbone, NUM_CLASSES, losses=("lmsoftmax",))
    hp = kt.HyperParameters()
    hp.Fixed("width", 12)
    model = hm.build(hp)
    assert model.layers[0].output_shape == (None, 12)
    assert "width" in hp.values and hp.values["loss"] == "lmsoftmax"


def test_describe_reads_a_trial():
    hm = tuning.MarginHyperModel(_backbone, NUM_CLASSES)
    values = {"loss": "cosface", "learning_rate": 0.002, "cosface_scale": 30.0,
              "cosface_margin": 0.35, "cosface_sample_margin_weight": 0.0,
              "head_lr_multiplier": 3.0}
    assert hm.loss_values(values) == (
        "cosface", {"scale": 30.0, "margin": 0.35, "sample_margin_weight": 0.0})
    assert hm.describe(values) == (
        "CosFace(scale=30, margin=0.35, sample_margin_weight=0) learning_rate=0.002 "
        "head_lr_multiplier=3")


def test_modules_along_their_jobs_and_the_old_names():
    from keras_margins.tuning import digits, hypermodel, search

    assert tuning.MarginHyperModel is hypermodel.MarginHyperModel
    assert tuning.make_tuner is search.make_tuner and tuning.trial_rows is search.trial_rows
    assert tuning.digits_search_data is digits.digits_search_data
    assert tuning.held_out_score is digits.held_out_score
    assert tuning.LossFamily is registry.LossFamily and tuning.Param is registry.Param
    assert set(tuning.TUNERS) == set(registry.TUNERS)
    for name in tuning.__all__:
        assert hasattr(tuning, name), name


def test_models_are_margin_models_and_defaults_can_come_from_the_loss():
    """Every trial model is a MarginModel; a Param without a default starts at the loss
    constructor's own default."""
    family = registry.LossFamily(km.losses.CosFace, km.layers.LargestMarginHead,
                                 (registry.Param("margin", 0.1, 0.6),))
    hm = tuning.MarginHyperModel(_backbone, NUM_CLASSES, losses=("cosface",),
                                 families={"cosface": family})
    hp = kt.HyperParameters()
    model = hm.build(hp)
    assert isinstance(model, km.models.MarginModel)
    assert hp.values["cosface_margin"] == pytest.approx(km.losses.CosFace().margin)
    assert model.loss.margin == pytest.approx(km.losses.CosFace().margin)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_classes": 1}, "num_classes"),
        ({"losses": ("softmaxx",)}, "losses"),
        ({"losses": ()}, "losses"),
        ({"losses": ("circle_pair",)}, "no class head"),
        ({"losses": ("arcface", "ensemble")}, "no class head"),
        ({"learning_rate": (0.1, 0.01)}, "learning_rate"),
        ({"head_lr_multiplier": 3.0}, "head_lr_multiplier"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    args = {"build_backbone": _backbone, "num_classes": NUM_CLASSES, **kwargs}
    with pytest.raises(ValueError, match=match):
        tuning.MarginHyperModel(**args)


def test_bad_helpers_raise():
    with pytest.raises(ValueError, match="build_backbone"):
        tuning.MarginHyperModel(None, NUM_CLASSES)
    with pytest.raises(ValueError, match="layer_lr_multipliers"):
        tuning.LayerLRAdam(layer_lr_multipliers={"head": 0.0})
    with pytest.raises(ValueError, match="task"):
        tuning.objective_and_callbacks("ranking")
    with pytest.raises(ValueError, match="validation_data"):
        tuning.objective_and_callbacks("retrieval")
    hm = tuning.MarginHyperModel(_backbone, NUM_CLASSES)
    with pytest.raises(ValueError, match="kind"):
        tuning.make_tuner(hm, "val_accuracy", "grid")


def test_tune_subcommand_end_to_end(tmp_path, capsys):
    export_dir = tmp_path / "saved" / "digits"
    argv = ["tune", "--losses", "cosface", "--max-trials", "1", "--epochs", "1",
            "--directory", str(tmp_path / "runs"), "--export-dir", str(export_dir)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "| trial | loss | scale | margin | val_map_at_r |" in out
    assert "| cosface |" in out and "best: CosFace(scale=" in out
    assert "map_at_r = " in out
    assert (export_dir / "1" / "saved_model.pb").is_file()  # TensorFlow or JAX (jax2tf)
    assert cli.main(["tune", "--losses", "softmaxx", "--directory", str(tmp_path), "--export-dir", ""]) == 2
    assert "softmaxx" in capsys.readouterr().err
    assert cli.main(["tune", "--losses", "circle_pair", "--directory", str(tmp_path / "p"),
                     "--export-dir", ""]) == 2
    assert "no class head" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("loss", ["pod", "virtual_softmax"])
def test_checkpoint_reload_for_task_model_losses(loss, tmp_path):
    """What the tuner does for the best trial (save_weights, then build(hp) + load_weights)
    also restores MarginModel (POD, with its δ variable) and the Virtual Softmax head."""
    hm = tuning.MarginHyperModel(_backbone, NUM_CLASSES)
    hp = kt.HyperParameters()
    hp.Fixed("loss", loss)
    model = hm.build(hp)
    x, y = _data(32)
    model.train_on_batch(x, y)
    for weight in model.non_trainable_weights:  # e.g. POD's δ: give it a recognisable value
        if "delta" in weight.path:
            weight.assign(0.123)
    path = str(tmp_path / "checkpoint.weights.h5")
    model.save_weights(path)
    fresh = hm.build(hp)
    assert not np.allclose(np.array(fresh(x)), np.array(model(x)))
    fresh.load_weights(path)
    np.testing.assert_array_equal(np.array(fresh(x)), np.array(model(x)))
    for a, b in zip(fresh.weights, model.weights):
        np.testing.assert_array_equal(np.array(a), np.array(b))
