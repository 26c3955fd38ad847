"""Several processes exporting at once (km.export): no model lost, versions distinct,
``models.config`` lists each model once.

Each worker process builds a tiny model whose embedding of the zero input is its own id
(a Dense bias, ``normalize=False``), waits until every worker is ready, then exports it to
one shared ``base_dir`` (no explicit version: they all start by claiming version 1) and to a
folder of its own, so four writers update one ``models.config`` concurrently.
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

WORKERS = 4

WORKER = textwrap.dedent(
    """
    import os, sys, time
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import keras
    import keras_margins as km

    root, k, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    model = keras.Sequential([
        keras.Input((3,)),
        keras.layers.Dense(2, kernel_initializer="zeros",
                           bias_initializer=keras.initializers.Constant(float(k + 1))),
    ])
    open(os.path.join(root, f".ready-{k}"), "w").close()
    deadline = time.time() + 300
    while sum(os.path.exists(os.path.join(root, f".ready-{j}")) for j in range(n)) < n:
        if time.time() > deadline:
            sys.exit("workers never all started")
        time.sleep(0.01)
    shared = km.export.export_embedding_model(model, os.path.join(root, "shared"), normalize=False)
    own = km.export.export_embedding_model(model, os.path.join(root, f"own{k}"), normalize=False)
    print(f"RESULT {k} {shared} {own}")
    """
)


def test_concurrent_exports_each_model_exactly_once(tmp_path):
    tf = pytest.importorskip("tensorflow")
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2 as pb

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    root = tmp_path / "models"
    root.mkdir()
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())  # exports on either backend
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(root), str(k), str(WORKERS)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for k in range(WORKERS)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]

    # every worker published its model once in the shared folder, under distinct versions
    published = {}
    for out, _ in outputs:
        _, k, shared, own = [line for line in out.splitlines() if line.startswith("RESULT")][0].split()
        published[int(k)] = (shared, own)
    versions = sorted(int(os.path.basename(shared)) for shared, _ in published.values())
    assert versions == list(range(1, WORKERS + 1))
    on_disk = sorted(n for n in os.listdir(root / "shared") if not n.startswith("."))
    assert on_disk == [str(v) for v in range(1, WORKERS + 1)]
    assert not [n for n in os.listdir(root / "shared") if n.startswith(".staging")]

    # each version holds the model of the worker that reported it (its id as the embedding)
    seen = []
    for k, (shared, own) in published.items():
        for path in (shared, own):
            served = tf.saved_model.load(path).signatures["serving_default"]
            out = served(inputs=tf.zeros((1, 3)))["embedding"].numpy()
            np.testing.assert_array_equal(out, np.full((1, 2), k + 1.0))
        seen.append(k)
    assert sorted(seen) == list(range(WORKERS))

    # models.config: every model exactly once, nothing lost to a concurrent writer
    config = pb.ModelServerConfig()
    text_format.Parse((root / "models.config").read_text(), config)
    names = [entry.name for entry in config.model_config_list.config]
    assert sorted(names) == sorted(["shared"] + [f"own{k}" for k in range(WORKERS)])
    assert not [n for n in os.listdir(root) if n.startswith(".models.config-")]


def test_explicit_version_that_lost_the_race_raises(tmp_path, monkeypatch):
    """An explicit version is never bumped: if another export published it meanwhile, the
    rename fails and the export raises (nothing overwritten)."""
    import keras

    import keras_margins as km
    from keras_margins.export import saved_model

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    base = tmp_path / "m"
    real = saved_model._version_dir

    def racing(base_dir, version):  # another process publishes the version after the check
        out = real(base_dir, version)
        os.makedirs(os.path.join(out[2], "variables"))
        return out

    monkeypatch.setattr(saved_model, "_version_dir", racing)
    with pytest.raises(ValueError, match="version 3 already exists"):
        km.export.export_embedding_model(model, base, version=3, models_config=False)
    # without an explicit version the same race just moves the export to the next number
    path = km.export.export_embedding_model(model, base, models_config=False)
    assert os.path.basename(path) == "5" and os.path.isfile(os.path.join(path, "saved_model.pb"))
    assert sorted(os.listdir(base)) == ["3", "4", "5"]
