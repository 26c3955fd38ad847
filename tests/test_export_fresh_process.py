"""Exports checked from outside: a fresh Python process that cannot import keras_margins, and
``saved_model_cli show --all``. Both subprocesses run concurrently, once for the module, over
one export per head type (LargestMargin, VirtualSoftmax, PEDCC, MarginModel)."""

import json
import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_margins as km

D_IN, D_EMB, C, N = 64, 16, 10, 9

_CHILD = textwrap.dedent(
    """
    import json, os, sys

    class _BlockKerasMargins:
        def find_spec(self, name, path=None, target=None):
            if name == "keras_margins" or name.startswith("keras_margins."):
                raise ImportError(f"{name} is blocked in this process")
            return None

    sys.meta_path.insert(0, _BlockKerasMargins())
    for module in [m for m in sys.modules if m.split(".")[0] == "keras_margins"]:
        del sys.modules[module]
    try:
        import keras_margins  # noqa: F401
        blocked = False
    except ImportError:
        blocked = True

    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    work = sys.argv[1]
    cases = json.load(open(os.path.join(work, "cases.json")))
    x = np.load(os.path.join(work, "x.npy"))
    report, arrays = {"blocked": blocked}, {}
    for name, case in cases.items():
        loaded = tf.saved_model.load(case["path"])
        fn = loaded.signatures["serving_default"]
        report[name] = {
            "signatures": sorted(loaded.signatures),
            "inputs": {k: [s.dtype.name, s.shape.as_list()]
                       for k, s in fn.structured_input_signature[1].items()},
            "outputs": {k: [s.dtype.name, s.shape.as_list()]
                        for k, s in fn.structured_outputs.items()},
        }
        arrays[name + "/embedding"] = fn(inputs=tf.constant(x))["embedding"].numpy()
        # Serve the JSON REST body and the serialized gRPC request like the server would.
        body = json.load(open(case["rest"]))
        rest_fn = loaded.signatures[body["signature_name"]]
        arrays[name + "/rest"] = (
            list(rest_fn(inputs=tf.constant(body["instances"], tf.float32)).values())[0].numpy()
        )
        request = predict_pb2.PredictRequest.FromString(open(case["grpc"], "rb").read())
        grpc_fn = loaded.signatures[request.model_spec.signature_name]
        fed = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        arrays[name + "/grpc"] = list(grpc_fn(**fed).values())[0].numpy()
    report["keras_margins_loaded"] = any(m.startswith("keras_margins") for m in sys.modules)
    np.savez(os.path.join(work, "child.npz"), **{k.replace("/", "__"): v for k, v in arrays.items()})
    json.dump(report, open(os.path.join(work, "child.json"), "w"))
    """
)


def _backbone():
    return keras.Sequential(
        [keras.Input((D_IN,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(D_EMB)],
        name="backbone",
    )


def _largest_margin():
    backbone = _backbone()
    model = keras.Sequential([backbone, km.layers.LargestMarginHead(C)])
    model.compile("adam", loss=km.losses.ArcFace(scale=16.0, margin=0.3), jit_compile=True)
    (x, y), _ = km.data.digits_classification()
    model.fit(x, y, batch_size=128, epochs=2, verbose=0)  # exported weights are trained ones
    return model, backbone


def _sequential_with(head_cls, **kwargs):
    def build():
        backbone = _backbone()
        return keras.Sequential([backbone, head_cls(C, **kwargs)]), backbone

    return build


def _margin_model():
    backbone = _backbone()
    model = km.models.MarginModel(backbone, km.layers.PEDCCHead(C))  # POD's pairing
    model(np.zeros((1, D_IN), "float32"))
    return model, backbone


CASES = {
    "largest_margin": _largest_margin,
    "virtual_softmax": _sequential_with(km.layers.VirtualSoftmaxHead),
    "pedcc": _sequential_with(km.layers.PEDCCHead, seed=0),
    "margin_model": _margin_model,
}


def _normalize(e):
    e = np.asarray(e, "float64")
    return e / np.maximum(np.sqrt((e * e).sum(axis=1, keepdims=True)), 1e-12)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Export every available case, then run the blocked child and saved_model_cli at once."""
    work = tmp_path_factory.mktemp("export_fresh")
    x = np.random.default_rng(3).uniform(size=(N, D_IN)).astype("float32")
    np.save(work / "x.npy", x)
    cases, expected = {}, {}
    for name, build in CASES.items():
        model, backbone = build()
        path = km.export.export_embedding_model(model, work / "saved_models" / name, include_scores=True)
        body = km.export.rest_request(x[:4], signature_name="scores")
        (work / f"{name}.json").write_text(json.dumps(body, allow_nan=False))
        request = km.export.grpc_request(x[:5], name)
        (work / f"{name}.pb").write_bytes(request.SerializeToString())
        cases[name] = {"path": path, "rest": str(work / f"{name}.json"), "grpc": str(work / f"{name}.pb")}
        expected[name] = {
            "embedding": _normalize(backbone.predict(x, verbose=0)),
            "scores": model.predict(x, verbose=0),
        }
    (work / "cases.json").write_text(json.dumps(cases))
    (work / "child.py").write_text(_CHILD)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    first = cases["largest_margin"]["path"]
    run = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    child = subprocess.Popen([sys.executable, str(work / "child.py"), str(work)], **run)
    shown = subprocess.Popen([cli, "show", "--dir", first, "--all"], **run)
    child_out, child_err = child.communicate(timeout=300)
    cli_out, cli_err = shown.communicate(timeout=300)
    assert child.returncode == 0, child_err[-3000:]
    assert shown.returncode == 0, cli_err[-3000:]
    report = json.loads((work / "child.json").read_text())
    with np.load(work / "child.npz") as npz:
        arrays = {k.replace("__", "/"): npz[k] for k in npz.files}
    return {"x": x, "expected": expected, "report": report,
            "arrays": arrays, "cli": cli_out}


def test_child_could_not_import_keras_margins(exported):
    assert exported["report"]["blocked"] is True
    assert exported["report"]["keras_margins_loaded"] is False


@pytest.mark.parametrize("name", sorted(CASES))
def test_fresh_process_embeddings_equal_in_process_predict(exported, name):
    report, arrays, want = exported["report"][name], exported["arrays"], exported["expected"][name]
    assert report["signatures"] == ["scores", "serving_default"]
    assert report["inputs"] == {"inputs": ["float32", [None, D_IN]]}
    assert report["outputs"] == {"embedding": ["float32", [None, D_EMB]]}
    emb = arrays[f"{name}/embedding"]
    assert emb.dtype == np.float32 and emb.shape == (N, D_EMB)
    np.testing.assert_allclose(emb, want["embedding"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(arrays[f"{name}/rest"], want["scores"][:4], rtol=0, atol=1e-5)
    np.testing.assert_allclose(arrays[f"{name}/grpc"], want["embedding"][:5], rtol=0, atol=1e-5)


def _signature_block(text, name):
    match = re.search(rf"signature_def\['{name}'\]:\n(.*?)Method name is: (\S+)", text, re.S)
    assert match, text
    return match.group(1), match.group(2)


def _tensor(block, kind, name):
    match = re.search(
        rf"{kind}\['{name}'\] tensor_info:\s+dtype: (\S+)\s+shape: (\([^)]*\))", block
    )
    assert match, block
    return match.group(1), match.group(2)


def test_saved_model_cli_shows_documented_signatures(exported):
    text = exported["cli"]
    assert "MetaGraphDef with tag-set: 'serve'" in text
    block, method = _signature_block(text, "serving_default")
    assert method == "tensorflow/serving/predict"
    assert _tensor(block, "inputs", "inputs") == ("DT_FLOAT", f"(-1, {D_IN})")
    assert _tensor(block, "outputs", "embedding") == ("DT_FLOAT", f"(-1, {D_EMB})")
    assert len(re.findall(r"(inputs|outputs)\['", block)) == 2
    block, method = _signature_block(text, "scores")
    assert method == "tensorflow/serving/predict"
    assert _tensor(block, "inputs", "inputs") == ("DT_FLOAT", f"(-1, {D_IN})")
    assert _tensor(block, "outputs", "scores") == ("DT_FLOAT", f"(-1, {C})")
