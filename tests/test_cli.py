import json
import os
import shutil
import subprocess
import sys
import time

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
    emb = model.layers[0].predict(xt, verbose=0)
    assert saved["map_at_r"] == pytest.approx(km.metrics.retrieval_scores(emb, yt)["map_at_r"])
    margin = float(keras.ops.convert_to_numpy(km.ops.class_margin(model.layers[-1].kernel)))
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
    assert model.output_shape == (None, 5)  # head over the 5 training classes


def test_bad_arguments_exit_with_message(tmp_path, capsys):
    assert cli.main(["train", "--loss", "softmax", "--scale", "3", "--output-dir",
                     str(tmp_path)]) == 2
    assert "--scale" in capsys.readouterr().err
    assert cli.main(["evaluate", str(tmp_path / "missing.keras")]) == 2
    assert "not a file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--loss", "no-such-loss"])


def test_parser_has_the_four_subcommands_and_reads_the_registry():
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) == {"train", "evaluate", "export", "tune"}
    train_options = {a.dest: a for a in commands["train"]._actions}
    assert tuple(train_options["loss"].choices) == tuple(registry.FAMILIES)
    assert tuple(train_options["head"].choices) == tuple(registry.HEADS)
    # Every family the CLI offers is a real class of the library (no name lookups).
    for name, family in registry.FAMILIES.items():
        assert family.loss is None or getattr(km.losses, family.loss.__name__) is family.loss
        assert family.head is None or getattr(km.layers, family.head.__name__) is family.head


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
def test_console_script_default_train_under_a_minute(tmp_path):
    exe = shutil.which("keras-margins") or os.path.join(os.path.dirname(sys.executable),
                                                        "keras-margins")
    start = time.time()
    proc = subprocess.run([exe, "train", "--output-dir", str(tmp_path)], capture_output=True,
                          text=True, timeout=300)
    elapsed = time.time() - start
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _table_value(proc.stdout, "test accuracy") > 0.95
    assert _table_value(proc.stdout, "MAP@R") > 0.85
    assert elapsed < 60, elapsed


@pytest.mark.tf_only  # SavedModel export
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


@pytest.mark.tf_only  # SavedModel export
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
