"""``keras-margins index``: build a gallery from a trained model and digits' unseen classes,
search it, calibrate it, export it; usage errors answered before TensorFlow is imported."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_margins as km
from keras_margins import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("index_cli")
    (x, y), _ = km.data.digits_zero_shot()
    model = keras.Sequential([km.models.mlp_backbone(64, 16, hidden=64),
                              km.layers.LargestMarginHead(5)])
    model.compile("adam", loss=km.losses.ArcFace(scale=16.0, margin=0.2), jit_compile=True)
    model.fit(x, y, batch_size=64, epochs=8, verbose=0)
    path = folder / "model.keras"
    model.save(path)
    return folder, str(path)


def test_build_search_calibrate(trained, capsys):
    folder, model = trained
    gallery = str(folder / "gallery.keras")
    assert cli.main(["index", "build", model, gallery, "--enrol", "5", "--unenrolled", "1"]) == 0
    out = capsys.readouterr().out
    assert "enrolled 4 templates" in out
    index = keras.saving.load_model(gallery, safe_mode=True)
    assert sorted(index.ids().tolist()) == [5, 6, 7, 8]  # digits 5-8; 9 left out
    assert index.name_of([5]) == ["class 5"]

    assert cli.main(["index", "search", gallery, model, "-k", "2", "--show", "1"]) == 0
    out = capsys.readouterr().out
    rank1 = float(out.split("rank-1 identification rate ")[1].split()[0].rstrip(","))
    # The same rate computed here from the gallery and the probes.
    embed = km.models.embedding_model(keras.saving.load_model(model))
    _, (xt, yt) = km.data.digits_zero_shot()
    first = np.zeros(len(yt), bool)
    for label in np.unique(yt):
        first[np.flatnonzero(yt == label)[:5]] = True
    probes, labels = embed.predict(xt[~first], verbose=0), yt[~first]
    found, _ = index.search(probes, 1)
    mated = labels < 9
    assert rank1 == pytest.approx(np.mean(found[mated, 0] == labels[mated]), abs=1e-4)
    assert rank1 > 0.5  # chance: 0.25

    assert cli.main(["index", "calibrate", gallery, model, "--far", "0.05",
                     "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    assert "FAR" in out and "TAR" in out and "threshold written" in out
    calibrated = keras.saving.load_model(gallery, safe_mode=True)
    expected = index.calibrate(probes, labels, target_far=0.05, n_bootstrap=0)
    assert calibrated.threshold == pytest.approx(expected.threshold)
    assert not [f for f in os.listdir(folder) if ".tmp-" in f]


@pytest.mark.tf_only
def test_export_from_the_command_line(trained, capsys):
    folder, model = trained
    gallery = str(folder / "ivf.keras")
    assert cli.main(["index", "build", model, gallery, "--ivf", "2", "--nprobe", "2"]) == 0
    assert cli.main(["index", "calibrate", gallery, model, "--far", "0.1", "--bootstrap", "0"]) == 0
    capsys.readouterr()
    base = str(folder / "serving" / "digits_search")
    assert cli.main(["index", "export", gallery, model, base, "--no-config"]) == 0
    assert "exported" in capsys.readouterr().out
    assert os.path.isfile(os.path.join(base, "1", "saved_model.pb"))


def test_usage_errors(trained, capsys, tmp_path):
    folder, model = trained
    assert cli.main(["index", "build", str(tmp_path / "none.keras"), str(tmp_path / "g.keras")]) == 2
    assert "`model`" in capsys.readouterr().err
    assert cli.main(["index", "build", model, str(tmp_path / "gallery.h5")]) == 2
    assert "`gallery`" in capsys.readouterr().err
    assert cli.main(["index", "search", str(tmp_path / "none.keras"), model]) == 2
    assert "`gallery`" in capsys.readouterr().err
    for argv in (["index", "calibrate", model, model, "--far", "1.5"],
                 ["index", "search", model, model, "-k", "0"],
                 ["index"]):
        with pytest.raises(SystemExit) as exit:
            cli.main(argv)
        assert exit.value.code == 2
    assert os.listdir(tmp_path) == []


def test_usage_errors_do_not_import_tensorflow(tmp_path):
    code = textwrap.dedent(f"""
        import json, sys
        sys.argv = ["keras-margins", "index", "build", {str(tmp_path / 'none.keras')!r},
                    {str(tmp_path / 'g.keras')!r}]
        from keras_margins.cli import main
        code = main(sys.argv[1:])
        print(json.dumps({{"code": code, "loaded": sorted(
            m for m in ("tensorflow", "keras", "jax") if m in sys.modules)}}))
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"code": 2, "loaded": []}
    assert "`model`" in proc.stderr
