import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_margins as km
from keras_margins import cli, registry


def _table_value(text, label):
    for line in text.splitlines():
        if line.startswith(label + "  "):
            return float(line[len(label):].split()[0])
    raise AssertionError(f"{label!r} not in:\n{text}")


def test_train_then_evaluate_digits(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["train", "--loss", "arcface", "--scale", "16", "--margin", "0.3",
                     "--epochs", "4", "--verbose", "0", "--output-dir", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    for label in ("test accuracy", "MAP@R", "P@1", "class margin", "mean sample margin"):
        assert label in text
    accuracy = _table_value(text, "test accuracy")
    assert accuracy > 0.85  # 4 epochs of ArcFace on digits already classify well
    # Artifacts: a reloadable model, TensorBoard event files, the numbers as JSON.
    model = keras.models.load_model(out / "model.keras", safe_mode=True)
    events = [f for _, _, files in os.walk(out / "logs") for f in files if "tfevents" in f]
    assert events
    saved = json.loads((out / "results.json").read_text())["results"]
    (_, _), (xt, yt) = km.data.digits_classification()
    pred = np.argmax(model.predict(xt, verbose=0), axis=1)
    assert saved["accuracy"] == pytest.approx(np.mean(pred == yt))
    assert saved["accuracy"] == pytest.approx(accuracy, abs=5e-5)
    assert isinstance(model, km.models.MarginModel)  # the recipe's task model
    emb = model.backbone.predict(xt, verbose=0)
    assert saved["map_at_r"] == pytest.approx(km.metrics.retrieval_scores(emb, yt)["map_at_r"])
    margin = float(keras.ops.convert_to_numpy(km.ops.class_margin(model.head.kernel)))
    assert saved["class_margin"] == pytest.approx(margin, abs=1e-6)

    assert cli.main(["evaluate", str(out / "model.keras")]) == 0
    again = capsys.readouterr().out
    assert _table_value(again, "MAP@R") == pytest.approx(saved["map_at_r"], abs=5e-5)
    assert _table_value(again, "test accuracy") == pytest.approx(accuracy)


def test_zero_shot_and_plain_softmax(tmp_path, capsys):
    code = cli.main(["train", "--dataset", "digits-zero-shot", "--loss", "softmax", "--epochs",
                     "2", "--verbose", "0", "--no-jit", "--output-dir", str(tmp_path)])
    assert code == 0
    text = capsys.readouterr().out
    assert "test accuracy" not in text  # unseen classes: retrieval only
    assert 0.0 < _table_value(text, "MAP@R") <= 1.0
    model = keras.models.load_model(tmp_path / "model.keras")
    assert model.head.units == 5  # a Dense head over the 5 training classes
    (_, _), (x_test, _) = km.data.digits_zero_shot()
    assert model.predict(x_test[:2], verbose=0).shape == (2, 5)


def test_bad_arguments_exit_with_message(tmp_path, capsys):
    assert cli.main(["train", "--loss", "softmax", "--scale", "3", "--output-dir",
                     str(tmp_path)]) == 2
    assert "--scale" in capsys.readouterr().err
    assert cli.main(["evaluate", str(tmp_path / "missing.keras")]) == 2
    assert "not a file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--loss", "no-such-loss"])


def test_parser_has_the_five_subcommands_and_reads_the_registry():
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) == {"train", "evaluate", "export", "tune", "index"}
    train_options = {a.dest: a for a in commands["train"]._actions}
    assert tuple(train_options["loss"].choices) == tuple(registry.FAMILIES)
    assert tuple(train_options["head"].choices) == tuple(registry.HEADS)
    assert tuple(train_options["backbone"].choices) == ("auto", "mlp", *km.models.BACKBONES)
    assert set(train_options["dataset"].choices) == {"digits", "digits-zero-shot",
                                                     *km.data.TFDS_DATASETS}
    tune_options = {a.dest: a for a in commands["tune"]._actions}
    assert set(tune_options["tuner"].choices) == set(km.tuning.TUNERS)


def test_every_registry_entry_resolves_to_the_library_class():
    """The tables name classes by import path: each one is the library's public class."""
    for name, family in registry.FAMILIES.items():
        assert family.loss is None or getattr(km.losses, family.loss.__name__) is family.loss, name
        assert family.head is None or getattr(km.layers, family.head.__name__) is family.head, name
        for callback in family.train_callbacks:
            assert getattr(km.callbacks, callback.__name__) is callback
        assert family.model is None or callable(family.model)
    for name, head in registry.HEADS.items():
        cls = registry.resolve(head)
        assert cls is None or getattr(km.layers, cls.__name__) is cls, name
    assert km.tuning.TUNERS == {
        "random": __import__("keras_tuner").RandomSearch,
        "bayesian": __import__("keras_tuner").BayesianOptimization,
    }


def test_which_recipes_train_a_head_is_read_from_the_loss():
    """km.protocols.wants_head decides: pair losses and the ensemble train on P×K batches."""
    from keras_margins.protocols import wants_head

    pairs = {name for name, family in registry.FAMILIES.items() if family.pair_batches}
    assert pairs == {"circle_pair", "ensemble"}
    for name, family in registry.FAMILIES.items():
        if family.loss is not None and family.model is None:
            assert family.wants_head == wants_head(family.loss), name
    # PairCircleLoss' own defaults, not a copy in the table or the command line.
    circle_pair = registry.FAMILIES["circle_pair"]
    loss = circle_pair.make_loss(**circle_pair.loss_arguments(scale=None, margin=None))
    default = km.losses.PairCircleLoss()
    assert (loss.gamma, loss.margin) == (default.gamma, default.margin)
    assert {p.name: circle_pair.param_default(p) for p in circle_pair.params} == {
        "gamma": default.gamma, "margin": default.margin}
    with pytest.raises(ValueError, match="no class head"):
        circle_pair.make_head(10)
    assert registry.FAMILIES["ensemble"].model_options == ("head_dim",)


@pytest.mark.parametrize(
    "loss, scale, margin, expected",
    [
        ("arcface", 16.0, 0.3, {"scale": 16.0, "margin": 0.3}),
        ("circle", 64.0, 0.2, {"gamma": 64.0, "margin": 0.2}),  # --scale is Circle's gamma
        ("pod", None, 0.1, {"delta": 0.1}),                      # --margin is POD's delta
        ("lmsoftmax", 7.0, None, {"scale": 7.0}),
    ],
)
def test_scale_and_margin_reach_the_right_loss_arguments(loss, scale, margin, expected):
    from keras_margins.cli.train import build_loss_and_head

    loss_object, head, family = build_loss_and_head(loss, None, 10, scale, margin)
    assert type(loss_object) is family.loss is registry.FAMILIES[loss].loss
    config = loss_object.get_config()
    for key, value in expected.items():
        assert config[key] == pytest.approx(value), key
    assert isinstance(head, family.head) and head.num_classes == 10
    with pytest.raises(ValueError, match="--scale"):
        build_loss_and_head("pod", None, 10, 3.0, None)
    with pytest.raises(ValueError, match="--margin"):
        build_loss_and_head("normface", None, 10, None, 0.2)


def test_registry_rejects_what_is_not_a_class():
    with pytest.raises(ValueError, match="loss"):
        registry.LossFamily("ArcFace", km.layers.LargestMarginHead)
    with pytest.raises(ValueError, match="head"):
        registry.LossFamily(km.losses.ArcFace, "LargestMarginHead")
    with pytest.raises(ValueError, match="head"):
        registry.LossFamily(km.losses.ArcFace, km.losses.CosFace)
    wrong = registry.LossFamily("keras_margins.layers:LargestMarginHead")  # resolved on use
    with pytest.raises(ValueError, match="loss"):
        wrong.make_loss()
    with pytest.raises(ValueError, match="default"):
        registry.Param("scale", 1.0, 2.0, 3.0)


def test_library_modules_never_import_the_command_line():
    root = os.path.dirname(km.__file__)
    offenders = []
    for folder, _, files in os.walk(root):
        if os.path.relpath(folder, root).split(os.sep)[0] == "cli":
            continue
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path) as f:
                    if "keras_margins.cli" in f.read():
                        offenders.append(os.path.relpath(path, root))
    assert offenders == []


@pytest.mark.slow
def test_console_script_default_train(tmp_path):
    exe = shutil.which("keras-margins") or os.path.join(os.path.dirname(sys.executable),
                                                        "keras-margins")
    proc = subprocess.run([exe, "train", "--output-dir", str(tmp_path)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _table_value(proc.stdout, "test accuracy") > 0.95
    assert _table_value(proc.stdout, "MAP@R") > 0.85


def test_train_with_export_writes_and_checks_serving_model(tmp_path, capsys):
    """The README's main job: train, export for TF Serving, check in a fresh process."""
    base = tmp_path / "saved_models" / "digits"
    code = cli.main(["train", "--loss", "pod", "--epochs", "2", "--verbose", "0",
                     "--output-dir", str(tmp_path / "run"), "--export", str(base)])
    assert code == 0
    text = capsys.readouterr().out
    assert (base / "1" / "saved_model.pb").is_file()
    assert (tmp_path / "saved_models" / "models.config").is_file()
    assert "checked in a fresh process without keras_margins" in text
    line = [l for l in text.splitlines() if l.startswith("checked in a fresh process")][0]
    diffs = [float(tok.rstrip(",")) for tok in line.split("|diff|")[1].split()[1::2]]
    assert len(diffs) == 2 and max(diffs) <= 1e-5


def test_check_export_rejects_a_different_model(tmp_path):
    keras.utils.set_random_seed(0)
    make = lambda: keras.Sequential(  # noqa: E731
        [keras.Input((64,)), keras.layers.Dense(8), km.layers.LargestMarginHead(10)]
    )
    exported, other = make(), make()
    path = km.export.export_embedding_model(exported, tmp_path / "m", models_config=False)
    x = np.random.default_rng(0).uniform(size=(4, 64)).astype("float32")
    assert km.export.check_export(path, exported, x)["embedding"] <= 1e-6
    with pytest.raises(ValueError, match="disagrees"):
        km.export.check_export(path, other, x)
    with pytest.raises(ValueError, match="export_dir"):
        km.export.outputs_without_keras_margins(str(tmp_path), x)


# ----------------------------------------------------------------------------- losing no work
@pytest.mark.parametrize(
    "argv, option",
    [
        (["train", "--epochs", "0"], "--epochs"),
        (["train", "--epochs", "-3"], "--epochs"),
        (["train", "--batch-size", "0"], "--batch-size"),
        (["train", "--batch-size", "two"], "--batch-size"),
        (["train", "--learning-rate", "0"], "--learning-rate"),
        (["tune", "--max-trials", "0"], "--max-trials"),
        (["tune", "--epochs", "0"], "--epochs"),
        (["train", "--eval-every", "-1"], "--eval-every"),
    ],
)
def test_non_positive_counts_are_rejected_by_the_parser(argv, option, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(argv)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert option in err and ("positive" in err or ">= 0" in err)


def test_bad_export_target_fails_before_training(tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    run = tmp_path / "run"
    for target in (a_file, a_file / "digits"):
        code = cli.main(["train", "--epochs", "1", "--output-dir", str(run), "--export",
                         str(target)])
        assert code == 2
        err = capsys.readouterr().err
        assert "--export" in err
        assert "not a directory" in err or "is a file" in err
        assert not run.exists()  # nothing was trained or written


def test_run_folders_are_never_reused(tmp_path):
    from keras_margins.cli.train import run_folder

    root = tmp_path / "runs"
    first = run_folder(None, "digits", "arcface", root=str(root))
    assert first == str(root / "digits-arcface")
    (root / "digits-arcface" / "model.keras").write_text("earlier run")
    second = run_folder(None, "digits", "arcface", root=str(root))
    third = run_folder(None, "digits", "arcface", root=str(root))
    assert (second, third) == (str(root / "digits-arcface-2"), str(root / "digits-arcface-3"))
    assert run_folder(None, "digits", "arcface", overwrite=True, root=str(root)) == first
    # An explicit folder that holds a run is refused unless --overwrite.
    with pytest.raises(ValueError, match="--overwrite"):
        run_folder(first, "digits", "arcface")
    assert run_folder(first, "digits", "arcface", overwrite=True) == first
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_folder(str(empty), "digits", "arcface") == str(empty)
    with pytest.raises(ValueError, match="not a directory"):
        run_folder(str(root / "digits-arcface" / "model.keras"), "digits", "arcface")
    assert (root / "digits-arcface" / "model.keras").read_text() == "earlier run"


def test_second_train_goes_to_a_new_folder_and_keeps_the_first(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--loss", "normface", "--epochs", "1", "--verbose", "0", "--no-jit"]
    assert cli.main(argv) == 0
    first = tmp_path / "runs" / "digits-normface"
    saved = (first / "results.json").read_text()
    assert cli.main(argv + ["--seed", "1"]) == 0
    second = tmp_path / "runs" / "digits-normface-2"
    assert (second / "model.keras").is_file() and (second / "results.json").is_file()
    assert (first / "results.json").read_text() == saved
    assert json.loads((second / "results.json").read_text())["args"]["seed"] == 1
    out = capsys.readouterr().out
    assert "model: runs/digits-normface/model.keras" in out
    assert "model: runs/digits-normface-2/model.keras" in out
    # An explicit --output-dir holding a run is refused before training, files untouched.
    assert cli.main(argv + ["--output-dir", str(first)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (first / "results.json").read_text() == saved


def test_tune_refuses_to_wipe_an_earlier_search(tmp_path, capsys):
    (tmp_path / "digits-zero-shot").mkdir()
    code = cli.main(["tune", "--directory", str(tmp_path), "--export-dir", ""])
    assert code == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "--overwrite" in err
    assert cli.main(["tune", "--directory", str(tmp_path), "--resume", "--overwrite"]) == 2


def _string_constants(path):
    import ast

    return [node.value for node in ast.walk(ast.parse(open(path).read()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_examples_export_to_their_own_serving_names():
    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
    targets = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            for value in _string_constants(os.path.join(folder, name)):
                if value.startswith("saved_models/") and not value.endswith(".keras"):
                    targets.setdefault(value.rstrip("/"), []).append(name)
    assert "saved_models/digits" not in targets  # the main job's serving name
    assert "saved_models/tuned_digits" not in targets  # keras-margins tune's
    assert targets, "the export examples should name their serving folders"
    for target, users in targets.items():
        assert len(users) == 1, f"{target} is used by {users}"


@pytest.mark.parametrize("loss, dim", [("circle_pair", 32), ("ensemble", 4 * 8)])
def test_pair_methods_on_digits_zero_shot(tmp_path, loss, dim):
    """circle_pair / ensemble train on P×K batches of the training digits and are scored by
    retrieval among the unseen digits only (no head, so no accuracy or class margin)."""
    out = tmp_path / "run"
    head_dim = ["--head-dim", "8"] if loss == "ensemble" else []
    code = cli.main(["train", "--dataset", "digits-zero-shot", "--loss", loss, "--epochs", "1",
                     "--steps-per-epoch", "3", "--batch-size", "20", "--samples-per-class", "4",
                     "--embedding-dim", "32", *head_dim, "--verbose", "0",
                     "--output-dir", str(out)])
    assert code == 0
    with open(out / "results.json") as f:
        results = json.load(f)["results"]
    assert set(results) == {"map_at_r", "precision_at_1", "recall_at_5", "train_seconds"}
    model = keras.models.load_model(out / "model.keras")
    (_, _), (x_test, _) = km.data.digits_zero_shot()
    assert model.predict(x_test[:3], verbose=0).shape == (3, dim)


# ----------------------------------------------------------------------------- every --loss
@pytest.mark.parametrize("loss", ["circle_pair", "ensemble"])
def test_pair_recipes_run_with_their_defaults_on_the_default_dataset(tmp_path, monkeypatch,
                                                                    capsys, loss):
    """No --batch-size / --samples-per-class: P is capped at digits' 10 classes (10 × 4)."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--loss", loss, "--epochs", "1", "--steps-per-epoch", "2",
                     "--verbose", "0", "--no-jit"]) == 0
    out = capsys.readouterr().out
    assert "P×K batches: 10 classes × 4 samples" in out
    assert (tmp_path / "runs" / f"digits-{loss}" / "model.keras").is_file()


def test_samples_per_class_1_is_refused_by_the_parser(tmp_path, monkeypatch, capsys):
    """K = 1: a P×K batch without a single positive pair."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit:
        cli.main(["train", "--loss", "circle_pair", "--samples-per-class", "1"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "--samples-per-class" in err and "at least 2" in err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "argv, named",
    [
        # more classes per batch than the training split has, or fewer than 2
        (["--loss", "circle_pair", "--batch-size", "64"], ["--batch-size 40", "--samples-per-class"]),
        (["--loss", "ensemble", "--batch-size", "6", "--samples-per-class", "4"],
         ["--batch-size 8"]),
        (["--loss", "circle_pair", "--dataset", "digits-zero-shot", "--batch-size", "24"],
         ["--batch-size 20"]),
        # options that do not apply to the chosen loss
        (["--loss", "arcface", "--samples-per-class", "4"], ["--samples-per-class", "arcface"]),
        (["--loss", "softmax", "--head-dim", "8"], ["--head-dim"]),
        (["--loss", "circle_pair", "--head", "cosine"], ["--head"]),
        (["--loss", "ensemble", "--margin", "0.2"], ["--margin"]),
        (["--loss", "circle_pair", "--head-dim", "8"], ["--head-dim"]),
    ],
)
def test_refused_before_anything_is_created(tmp_path, monkeypatch, capsys, argv, named):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--epochs", "1", "--verbose", "0", *argv]) == 2
    err = capsys.readouterr().err
    for text in named:
        assert text in err, (text, err)
    assert os.listdir(tmp_path) == []  # no run folder, nothing written
