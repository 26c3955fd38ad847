"""In-process checks of km.export: model surgery, versions, errors, models.config, requests, CLI.

The fresh-process (keras_margins blocked) and saved_model_cli checks live in
test_export_fresh_process.py.
"""

import argparse
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from references import unit_rows as _np_normalize
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.config import model_server_config_pb2

import keras_margins as km
from keras_margins import cli

# SavedModel export runs on the TensorFlow backend and on JAX (through jax2tf); both need
# TensorFlow and the TF Serving protos installed, which the test environment has.

D_IN, D_EMB, C = 12, 5, 4


def _backbone(name="backbone"):
    return keras.Sequential(
        [keras.Input((D_IN,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(D_EMB)],
        name=name,
    )


def _head_model():
    backbone = _backbone()
    return keras.Sequential([backbone, km.layers.LargestMarginHead(C)]), backbone


def _x(n=6, seed=1):
    return np.random.default_rng(seed).normal(size=(n, D_IN)).astype("float32")


# ----------------------------------------------------------------------------- surgery
def test_embedding_model_sequential_functional_and_built_from_data():
    x = _x()
    model, backbone = _head_model()
    ref = _np_normalize(backbone.predict(x, verbose=0))
    emb = km.export.embedding_model(model)
    np.testing.assert_allclose(emb.predict(x, verbose=0), ref, atol=1e-6)
    raw = km.export.embedding_model(model, normalize=False)
    np.testing.assert_allclose(raw.predict(x, verbose=0), backbone.predict(x, verbose=0), atol=1e-6)
    assert not any(isinstance(layer, km.layers.ClassHead) for layer in emb.layers)

    inputs = keras.Input((D_IN,))
    features = keras.layers.Dense(D_EMB, name="feat")(inputs)
    functional = keras.Model(inputs, km.layers.LargestMarginHead(C)(features))
    feat_model = keras.Model(inputs, features)
    np.testing.assert_allclose(
        km.export.embedding_model(functional).predict(x, verbose=0),
        _np_normalize(feat_model.predict(x, verbose=0)),
        atol=1e-6,
    )

    # Sequential without keras.Input, built by calling it on a batch of one.
    lazy = keras.Sequential([keras.layers.Dense(D_EMB), km.layers.LargestMarginHead(C)])
    lazy(x[:1])
    np.testing.assert_allclose(
        km.export.embedding_model(lazy).predict(x, verbose=0),
        _np_normalize(keras.ops.convert_to_numpy(lazy.layers[0](x))),
        atol=1e-6,
    )


def test_plain_embedding_model_is_exported_as_is(tmp_path):
    backbone = _backbone()
    path = km.export.export_embedding_model(backbone, tmp_path / "plain")
    assert path == str(tmp_path / "plain" / "1")
    loaded = tf.saved_model.load(path).signatures["serving_default"]
    out = loaded(inputs=tf.constant(_x()))["embedding"].numpy()
    np.testing.assert_allclose(out, _np_normalize(backbone.predict(_x(), verbose=0)), atol=1e-5)
    with pytest.raises(ValueError, match="include_scores"):
        km.export.export_embedding_model(backbone, tmp_path / "plain", include_scores=True)


def test_mixed_precision_model_exports_float32(tmp_path):
    keras.mixed_precision.set_global_policy("mixed_float16")
    model, backbone = _head_model()
    path = km.export.export_embedding_model(model, tmp_path / "mp")
    keras.mixed_precision.set_global_policy("float32")
    fn = tf.saved_model.load(path).signatures["serving_default"]
    assert fn.structured_input_signature[1]["inputs"].dtype == tf.float32
    out = fn(inputs=tf.constant(_x()))["embedding"]
    assert out.dtype == tf.float32
    ref = _np_normalize(np.asarray(backbone.predict(_x(), verbose=0), "float32"))
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-5)


# ----------------------------------------------------------------------------- versions, errors
def test_export_twice_gives_versions_1_and_2_and_never_overwrites(tmp_path):
    model, _ = _head_model()
    base = tmp_path / "saved_models" / "digits"
    first = km.export.export_embedding_model(model, base)
    second = km.export.export_embedding_model(model, base)
    assert (first, second) == (str(base / "1"), str(base / "2"))
    assert sorted(os.listdir(base)) == ["1", "2"]  # no staging folder left behind
    for path in (first, second):
        assert os.path.isfile(os.path.join(path, "saved_model.pb"))
    stamp = os.path.getmtime(os.path.join(first, "saved_model.pb"))
    with pytest.raises(ValueError, match="already exists"):
        km.export.export_embedding_model(model, base, version=1)
    assert os.path.getmtime(os.path.join(first, "saved_model.pb")) == stamp
    assert km.export.export_embedding_model(model, base, version=7) == str(base / "7")
    assert km.export.export_embedding_model(model, base) == str(base / "8")


def test_bad_paths_and_models_without_embedding_part(tmp_path):
    model, _ = _head_model()
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="base_dir.*not a directory"):
        km.export.export_embedding_model(model, a_file)
    with pytest.raises(ValueError, match="cannot create `base_dir`"):
        km.export.export_embedding_model(model, a_file / "digits")
    with pytest.raises(ValueError, match="base_dir"):
        km.export.export_embedding_model(model, "")
    for version in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="version"):
            km.export.export_embedding_model(model, tmp_path / "v", version=version)

    inputs = keras.Input((D_IN,))
    no_part = [
        (km.layers.LargestMarginHead(C), "head .* alone"),
        (keras.Sequential([keras.Input((D_IN,)), km.layers.LargestMarginHead(C)]), "no embedding part"),
        (keras.Model(inputs, km.layers.LargestMarginHead(C)(inputs)), "no embedding part"),
        ("model.keras", "must be a Keras model"),
        (
            keras.Sequential([_backbone("b2"), km.layers.LargestMarginHead(C), keras.layers.Dense(3)]),
            "does not end in it",
        ),
    ]
    for bad, match in no_part:
        with pytest.raises(ValueError, match=match):
            km.export.export_embedding_model(bad, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()

    two_in = [keras.Input((3,)), keras.Input((3,))]
    with pytest.raises(ValueError, match="exactly one input"):
        km.export.embedding_model(keras.Model(two_in, keras.layers.Add()(two_in)))
    seq_in = keras.Input((4, 3))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        km.export.embedding_model(keras.Model(seq_in, keras.layers.Dense(2)(seq_in)))


# ----------------------------------------------------------------------------- models.config
def _read_config(path):
    config = model_server_config_pb2.ModelServerConfig()
    with open(path) as f:
        text_format.Parse(f.read(), config)
    return {e.name: (e.base_path, e.model_platform) for e in config.model_config_list.config}


def test_models_config_lists_every_export_and_keeps_foreign_entries(tmp_path):
    model, backbone = _head_model()
    root = tmp_path / "saved_models"
    km.export.export_embedding_model(model, root / "digits")
    config_path = root / "models.config"
    assert _read_config(config_path) == {"digits": ("/models/digits", "tensorflow")}

    # A hand-added entry survives; a second model is appended; re-export keeps one entry each.
    text = config_path.read_text().rstrip()
    assert text.endswith("}")
    config_path.write_text(
        text[:-1] + '  config {\n    name: "remote"\n    base_path: "/elsewhere/remote"\n  }\n}\n'
    )
    km.export.export_embedding_model(backbone, root / "faces")
    km.export.export_embedding_model(model, root / "digits")
    assert _read_config(config_path) == {
        "digits": ("/models/digits", "tensorflow"),
        "remote": ("/elsewhere/remote", ""),
        "faces": ("/models/faces", "tensorflow"),
    }
    (root / "not_a_model").mkdir()
    path = km.export.update_models_config(root, serving_root=None)
    assert _read_config(path)["faces"] == (str(root / "faces"), "tensorflow")
    assert "not_a_model" not in _read_config(path)

    config_path.write_text("this is { not a config")
    with pytest.raises(ValueError, match="config_path"):
        km.export.update_models_config(root)
    with pytest.raises(ValueError, match="root"):
        km.export.update_models_config(tmp_path / "missing")
    skipped = tmp_path / "quiet"
    km.export.export_embedding_model(backbone, skipped / "m", models_config=False)
    assert not (skipped / "models.config").exists()


# ----------------------------------------------------------------------------- requests
def _check_rest_row_format(body):
    """TF Serving REST predict, row format (https://www.tensorflow.org/tfx/serving/api_rest):
    ``{"signature_name": <string, optional>, "instances": <list>}``; each instance is a value,
    a (nested) list of one shape shared by all instances, or an object {input_name: value}
    with the same keys in every instance. No NaN/Infinity (not JSON)."""
    parsed = json.loads(json.dumps(body, allow_nan=False))
    assert set(parsed) <= {"signature_name", "instances"} and "instances" in parsed
    assert isinstance(parsed.get("signature_name", ""), str)
    rows = parsed["instances"]
    assert isinstance(rows, list) and rows
    if isinstance(rows[0], dict):
        keys = set(rows[0])
        assert all(isinstance(r, dict) and set(r) == keys for r in rows)
        rows = [r[k] for k in sorted(keys) for r in rows]
    shapes = {np.asarray(r).shape for r in rows}
    assert len(shapes) == 1, shapes
    assert all(np.asarray(r).dtype.kind in "fi" for r in rows)
    return parsed


def test_rest_and_grpc_requests_match_the_signature(tmp_path):
    model, backbone = _head_model()
    path = km.export.export_embedding_model(model, tmp_path / "digits", include_scores=True)
    loaded = tf.saved_model.load(path)
    x = _x(3)

    body = km.export.rest_request(x)
    parsed = _check_rest_row_format(body)
    assert parsed["signature_name"] == "serving_default"
    np.testing.assert_array_equal(np.asarray(parsed["instances"], "float32"), x)
    named = _check_rest_row_format(km.export.rest_request(x, "scores", input_name="inputs"))
    assert named["signature_name"] == "scores"
    assert [list(r) for r in named["instances"]] == [["inputs"]] * 3
    with pytest.raises(ValueError, match="NaN"):
        km.export.rest_request(np.full((1, D_IN), np.nan))
    with pytest.raises(ValueError, match="batch"):
        km.export.rest_request(1.0)
    assert km.export.rest_url("digits") == "http://localhost:8501/v1/models/digits:predict"
    assert km.export.rest_url("d", "h", 1, version=2) == "http://h:1/v1/models/d/versions/2:predict"

    for signature, output in (("serving_default", "embedding"), ("scores", "scores")):
        request = km.export.grpc_request(x, "digits", signature_name=signature, version=1)
        request = predict_pb2.PredictRequest.FromString(request.SerializeToString())
        assert (request.model_spec.name, request.model_spec.signature_name) == ("digits", signature)
        assert request.model_spec.version.value == 1
        fn = loaded.signatures[signature]
        _, specs = fn.structured_input_signature
        assert set(request.inputs) == set(specs) == {"inputs"}
        proto = request.inputs["inputs"]
        assert proto.dtype == specs["inputs"].dtype.as_datatype_enum == tf.float32.as_datatype_enum
        shape = [d.size for d in proto.tensor_shape.dim]
        assert shape == [3, D_IN] and specs["inputs"].shape.is_compatible_with(shape)
        # Serve the request the way the server does: by input name, into the named signature.
        fed = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        out = fn(**fed)
        assert set(out) == {output}
        want = model.predict(x, verbose=0) if output == "scores" else _np_normalize(
            backbone.predict(x, verbose=0))
        np.testing.assert_allclose(out[output].numpy(), want, atol=1e-5)
    with pytest.raises(ValueError, match="model_name"):
        km.export.grpc_request(x, "")


# ----------------------------------------------------------------------------- CLI
def _saved_head_model(tmp_path):
    model, backbone = _head_model()
    model_path = tmp_path / "m.keras"
    model.save(model_path)
    return str(model_path), backbone


def _check_cli_export(path, backbone, config_path, serving_root):
    loaded = tf.saved_model.load(str(path))
    assert set(loaded.signatures) == {"serving_default", "scores"}
    x = _x()
    out = loaded.signatures["serving_default"](inputs=tf.constant(x))["embedding"].numpy()
    np.testing.assert_allclose(out, _np_normalize(backbone.predict(x, verbose=0)), atol=1e-5)
    assert _read_config(config_path)["digits"][0] == f"{serving_root}/digits"


def test_old_import_paths_are_the_moved_helpers():
    assert km.export.split_head is km.models.split_head
    assert km.export.embedding_model is km.models.embedding_model
    assert km.tuning.LayerLRAdam is km.optimizers.LayerLRAdam


def test_export_subcommand_parser(tmp_path, capsys):
    model_path, backbone = _saved_head_model(tmp_path)
    base = tmp_path / "saved_models" / "digits"
    parser = argparse.ArgumentParser(prog="keras-margins")
    cli.export.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["export", model_path, str(base), "--scores", "--serving-root", "/srv"])
    assert args.func(args) == 0
    assert sorted(os.listdir(base)) == ["1"]
    assert "exported" in capsys.readouterr().out
    _check_cli_export(base / "1", backbone, tmp_path / "saved_models" / "models.config", "/srv")
    with pytest.raises(ValueError, match="not a file"):
        args.func(parser.parse_args(["export", str(tmp_path / "missing.keras"), str(base)]))


def test_keras_margins_cli_main_runs_export(tmp_path, capsys):
    model_path, backbone = _saved_head_model(tmp_path)
    base = tmp_path / "saved_models" / "digits"
    assert cli.main(["export", model_path, str(base), "--scores"]) in (0, None)
    assert sorted(os.listdir(base)) == ["1"]
    _check_cli_export(base / "1", backbone, tmp_path / "saved_models" / "models.config", "/models")
    assert cli.main(["export", model_path, str(base), "--version", "1"]) == 2  # never overwrite
    assert "already exists" in capsys.readouterr().err
    assert sorted(os.listdir(base)) == ["1"]
