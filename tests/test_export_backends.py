"""km.export on the running backend (TensorFlow, or JAX through jax2tf), what it refuses
before writing anything, what a failed export leaves behind (nothing), and the
``models.config`` lock under two writers held between their read and their write."""

import contextlib
import importlib.util
import os
import threading

import keras
import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

import keras_margins as km
from keras_margins.export import models_config

D_IN, D_EMB, C = 6, 4, 3


def _backbone():
    return keras.Sequential([keras.Input((D_IN,)), keras.layers.Dense(D_EMB)], name="backbone")


def _normalize(e):
    e = np.asarray(e, "float64")
    return e / np.sqrt((e * e).sum(axis=1, keepdims=True))


def _x(n=5):
    return np.random.default_rng(0).normal(size=(n, D_IN)).astype("float32")


@pytest.mark.parametrize("kind", ["sequential", "margin_model"])
def test_export_on_this_backend_serves_what_the_model_computes(tmp_path, kind):
    """The backend's own path (tf.function on TensorFlow, jax2tf on JAX), with the scores
    signature, checked in a process that cannot import keras_margins."""
    backbone = _backbone()
    if kind == "sequential":
        model = keras.Sequential([backbone, km.layers.LargestMarginHead(C)])
    else:
        model = km.models.MarginModel(backbone, km.layers.PEDCCHead(C, seed=0))
    x = _x()
    path = km.export.export_embedding_model(model, tmp_path / "m", include_scores=True)
    served = km.export.outputs_without_keras_margins(path, x)
    np.testing.assert_allclose(served["embedding"], _normalize(backbone.predict(x, verbose=0)),
                               atol=1e-5)
    np.testing.assert_allclose(served["scores"], model.predict(x, verbose=0), atol=1e-5)


def _backend_is(name):
    return lambda: name


def test_backend_without_savedmodel_support_is_refused_before_any_folder(tmp_path, monkeypatch):
    model = keras.Sequential([_backbone(), km.layers.LargestMarginHead(C)])
    base = tmp_path / "saved_models" / "m"
    monkeypatch.setattr(keras.backend, "backend", _backend_is("torch"))
    with pytest.raises(ValueError, match="KERAS_BACKEND=torch.*KERAS_BACKEND=tensorflow"):
        km.export.export_embedding_model(model, base)
    monkeypatch.undo()
    real = importlib.util.find_spec

    def no_tensorflow(name, *args, **kwargs):
        return None if name == "tensorflow" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", no_tensorflow)
    with pytest.raises(ValueError, match="needs TensorFlow installed"):
        km.export.export_embedding_model(model, base)
    assert not (tmp_path / "saved_models").exists()


@keras.saving.register_keras_serializable(package="test_export_backends")
class _FailsWhenTraced(keras.layers.Layer):
    """Builds symbolically, raises on the tensors of a real trace (tf.function or jax)."""

    def call(self, x):
        raise RuntimeError("this layer cannot be traced")

    def compute_output_shape(self, input_shape):  # so building needs no trace
        return input_shape


def test_a_failed_export_leaves_no_folder(tmp_path):
    inputs = keras.Input((D_IN,))
    features = _FailsWhenTraced()(keras.layers.Dense(D_EMB)(inputs))
    model = keras.Model(inputs, km.layers.LargestMarginHead(C)(features))
    base = tmp_path / "new" / "deeper" / "m"
    with pytest.raises(RuntimeError, match="cannot be traced"):
        km.export.export_embedding_model(model, base, include_scores=True)
    assert os.listdir(tmp_path) == []
    # An existing base_dir and its versions are kept as they were.
    (tmp_path / "kept" / "1").mkdir(parents=True)
    with pytest.raises(RuntimeError, match="cannot be traced"):
        km.export.export_embedding_model(model, tmp_path / "kept")
    assert os.listdir(tmp_path / "kept") == ["1"]


# ----------------------------------------------------------------------------- models.config lock
def _fake_export(root, name):
    folder = root / name / "1"
    folder.mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"")


def _listed(root):
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse((root / "models.config").read_text(), config)
    return sorted(entry.name for entry in config.model_config_list.config)


def _two_writers(root, monkeypatch):
    """Writer A reads models.config and lists the exports (only ``a`` exists), then waits;
    ``b`` is exported and writer B updates the config; A writes only once B has finished or
    is blocked on the lock. Returns the models listed in the final file.

    Without the lock B reads and writes in A's pause and A's write then drops ``b`` (a lost
    update); with it B waits for A, then re-reads A's file. The schedule is forced by events,
    not by timing; ``fcntl.flock`` is only observed (a non-blocking try first, to tell when B
    would block), never replaced.
    """
    import fcntl

    a_has_read, b_done, b_blocked = threading.Event(), threading.Event(), threading.Event()
    real_list, real_flock = models_config._exported_models, fcntl.flock

    def listing(folder):
        names = real_list(folder)
        if threading.current_thread().name == "A":
            a_has_read.set()
            while not (b_done.is_set() or b_blocked.is_set()):
                b_done.wait(0.01)
        return names

    def observed_flock(fd, operation):
        if operation == fcntl.LOCK_EX and threading.current_thread().name == "B":
            try:
                return real_flock(fd, operation | fcntl.LOCK_NB)
            except BlockingIOError:
                b_blocked.set()
        return real_flock(fd, operation)

    monkeypatch.setattr(models_config, "_exported_models", listing)
    monkeypatch.setattr(fcntl, "flock", observed_flock)
    errors = []

    def run(done=None):
        try:
            km.export.update_models_config(root)
        except Exception as err:  # reported below
            errors.append(err)
        finally:
            if done is not None:
                done.set()

    _fake_export(root, "a")
    writer_a = threading.Thread(target=run, name="A")
    writer_a.start()
    assert a_has_read.wait(60)
    _fake_export(root, "b")
    writer_b = threading.Thread(target=run, args=(b_done,), name="B")
    writer_b.start()
    writer_a.join(60)
    writer_b.join(60)
    assert not writer_a.is_alive() and not writer_b.is_alive() and not errors, errors
    return _listed(root), b_blocked.is_set()


def test_models_config_lock_keeps_both_writers_updates(tmp_path, monkeypatch):
    listed, b_waited = _two_writers(tmp_path, monkeypatch)
    assert b_waited  # B reached the lock while A held it
    assert listed == ["a", "b"]


def test_without_the_lock_the_same_schedule_loses_an_update(tmp_path, monkeypatch):
    """The schedule above is a real race: with the lock removed, B's update is lost, which
    is what the previous test would then report."""
    monkeypatch.setattr(models_config, "_locked", lambda path: contextlib.nullcontext())
    listed, b_waited = _two_writers(tmp_path, monkeypatch)
    assert not b_waited
    assert listed == ["a"]
