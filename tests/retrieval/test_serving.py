"""km.retrieval.export_search_model: the SavedModel answers in a fresh process that cannot
import keras_margins exactly as the model and index do in this one; saved_model_cli shows
the documented signatures; stock TensorFlow ops only; a new gallery is a new version of the
same model; concurrent exports keep every version."""

import concurrent.futures
import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_margins as km

pytestmark = pytest.mark.tf_only  # SavedModel export with `k` as a graph input

D_IN, D = 20, 8
RNG = np.random.default_rng(0)


def make_model():
    keras.utils.set_random_seed(7)
    backbone = keras.Sequential([keras.Input((D_IN,)), keras.layers.Dense(16, activation="relu"),
                                 keras.layers.Dense(D)], name="backbone")
    model = keras.Sequential([backbone, km.layers.LargestMarginHead(10)])
    model(np.zeros((1, D_IN), "float32"))
    return model


def reference(model, x, gallery_x, gallery_ids, k):
    """Brute force in NumPy from the backbone's embeddings: (embedding, ids, scores)."""
    embed = km.models.embedding_model(model)
    q = embed.predict(x, verbose=0).astype("float64")
    g = embed.predict(gallery_x, verbose=0).astype("float64")
    scores = q @ g.T
    order = np.argsort(-scores, axis=1)[:, :k]
    return q, gallery_ids[order], np.take_along_axis(scores, order, 1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("search_models")
    model = make_model()
    embed = km.models.embedding_model(model)
    gallery_x = RNG.normal(size=(300, D_IN)).astype("float32")
    ids = RNG.permutation(10**5)[:300]
    exact = km.retrieval.EmbeddingIndex(D, chunk_size=128)
    exact.add(embed.predict(gallery_x, verbose=0), ids)
    exact.threshold = 0.95
    exact.search(embed.predict(gallery_x[:2], verbose=0), 3)  # compiled searches are not exported
    first = km.retrieval.export_search_model(model, exact, root / "people")
    # A new gallery: same weights, more people -> version 2 of the same model.
    more_x = RNG.normal(size=(50, D_IN)).astype("float32")
    more_ids = np.arange(10**5, 10**5 + 50)
    exact.add(embed.predict(more_x, verbose=0), more_ids)
    second = km.retrieval.export_search_model(model, exact, root / "people", threshold=0.9)
    ivf = km.retrieval.IVFIndex(D, num_lists=8, nprobe=8, block_size=16)
    ivf.add(embed.predict(gallery_x, verbose=0), ids)
    third = km.retrieval.export_search_model(model, ivf, root / "people_ivf", threshold=0.95)
    x = np.concatenate([gallery_x[:4] + 0.01, more_x[:3], RNG.normal(size=(5, D_IN))]).astype("float32")
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        served = {name: pool.submit(km.retrieval.search_outputs_without_keras_margins, path, x, 6)
                  for name, path in (("first", first), ("third", third))}
        shown = pool.submit(subprocess.run, [cli, "show", "--dir", second, "--all"],
                            capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        served = {name: future.result() for name, future in served.items()}
        shown = shown.result()
    assert shown.returncode == 0, shown.stderr[-2000:]
    return dict(root=root, model=model, exact=exact, ivf=ivf, paths=(first, second, third), x=x,
                served=served, cli=shown.stdout, gallery_x=gallery_x, ids=ids,
                all_x=np.concatenate([gallery_x, more_x]), all_ids=np.concatenate([ids, more_ids]))


def test_versions_and_models_config(exported):
    first, second, third = exported["paths"]
    assert [os.path.basename(p) for p in (first, second, third)] == ["1", "2", "1"]
    config = (exported["root"] / "models.config").read_text()
    assert 'name: "people"' in config and 'name: "people_ivf"' in config


@pytest.mark.parametrize("case", ["first", "third"])
def test_fresh_process_equals_brute_force(exported, case):
    served = exported["served"][case]
    emb, ids, scores = reference(exported["model"], exported["x"], exported["gallery_x"],
                                 exported["ids"], 6)
    np.testing.assert_allclose(served["embedding"], emb, rtol=0, atol=1e-5)
    np.testing.assert_allclose(served["scores"], scores, rtol=0, atol=1e-5)
    assert served["ids"].dtype == np.int32 and served["ids"].shape == (len(exported["x"]), 6)
    assert np.mean(served["ids"] == ids) > 0.98  # ties aside
    np.testing.assert_array_equal(served["ids"][:4, 0], exported["ids"][:4])  # near-copies
    best = scores[:, 0]
    np.testing.assert_array_equal(served["matched"], best >= np.float32(0.95))
    np.testing.assert_array_equal(served["match_id"], np.where(best >= np.float32(0.95), ids[:, 0], -1))


def test_new_gallery_version_equals_the_index_in_process(exported):
    _, second, _ = exported["paths"]
    errors = km.retrieval.check_search_export(second, exported["model"], exported["exact"],
                                              exported["x"], k=6, threshold=0.9)
    assert errors["ids"] == 0 and errors["match_id"] == 0 and errors["scores"] <= 1e-5
    # The new people are found by version 2 only.
    found = exported["exact"].search(km.models.embedding_model(exported["model"]).predict(
        exported["x"][4:7], verbose=0), 1)[0]
    assert np.all(found[:, 0] >= 10**5)


def _block(text, name):
    match = re.search(rf"signature_def\['{name}'\]:\n(.*?)Method name is: (\S+)", text, re.S)
    assert match, text
    return match.group(1)


def _tensor(block, kind, name):
    match = re.search(rf"{kind}\['{name}'\] tensor_info:\s+dtype: (\S+)\s+shape: (\([^)]*\))", block)
    assert match, block
    return match.group(1), match.group(2)


def test_saved_model_cli_shows_the_contract(exported):
    text = exported["cli"]
    search = _block(text, "search")
    assert _tensor(search, "inputs", "inputs") == ("DT_FLOAT", f"(-1, {D_IN})")
    assert _tensor(search, "inputs", "k") == ("DT_INT32", "()")
    assert _tensor(search, "outputs", "ids") == ("DT_INT32", "(-1, -1)")
    assert _tensor(search, "outputs", "scores") == ("DT_FLOAT", "(-1, -1)")
    match = _block(text, "match")
    assert _tensor(match, "outputs", "id") == ("DT_INT32", "(-1)")
    assert _tensor(match, "outputs", "score") == ("DT_FLOAT", "(-1)")
    assert _tensor(match, "outputs", "matched") == ("DT_BOOL", "(-1)")
    for name in ("embed", "serving_default"):
        assert _tensor(_block(text, name), "outputs", "embedding") == ("DT_FLOAT", f"(-1, {D})")


def test_stock_ops_only_and_bad_requests_refused(exported):
    import tensorflow as tf

    first = exported["paths"][0]
    loaded = tf.saved_model.load(first)
    ops = set()
    for fn in loaded.signatures.values():
        graph = fn.graph.as_graph_def()
        functions = [graph.node] + [f.node_def for f in graph.library.function]
        for nodes in functions:
            for node in nodes:
                ops.add(node.op)
                assert "_XlaMustCompile" not in node.attr
    registered = set(tf.raw_ops.__dict__)
    graph_only = {"Placeholder", "Const", "NoOp", "Identity", "While", "StatelessWhile", "If",
                  "StatelessIf", "PartitionedCall", "StatefulPartitionedCall", "ReadVariableOp"}
    unknown = {op for op in ops if op not in registered and op not in graph_only}
    assert unknown == set(), unknown
    assert not any(op.startswith("Xla") for op in ops), ops
    x = tf.constant(exported["x"][:2])
    search = loaded.signatures["search"]
    for k in (0, 301):
        with pytest.raises(tf.errors.InvalidArgumentError, match="k"):
            search(inputs=x, k=tf.constant(k))
    bad = np.array(exported["x"][:2])
    bad[0, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN"):
        loaded.signatures["match"](inputs=tf.constant(bad))


def test_export_refuses_bad_arguments(tmp_path, exported):
    model, exact = exported["model"], exported["exact"]
    uncalibrated = km.retrieval.EmbeddingIndex(D, chunk_size=128)
    uncalibrated.add(np.eye(D), np.arange(D))
    wrong_dim = km.retrieval.EmbeddingIndex(D + 1, chunk_size=128)
    wrong_dim.add(np.eye(D + 1), np.arange(D + 1))
    wrong_dim.threshold = 0.5
    for call, name in (
        (lambda: km.retrieval.export_search_model(model, uncalibrated, tmp_path / "a"), "threshold"),
        (lambda: km.retrieval.export_search_model(model, wrong_dim, tmp_path / "a"), "index"),
        (lambda: km.retrieval.export_search_model(model, "index", tmp_path / "a"), "index"),
        (lambda: km.retrieval.export_search_model(model, exact, tmp_path / "a", version=0), "version"),
    ):
        with pytest.raises(ValueError, match=f"`{name}`"):
            call()
    assert not (tmp_path / "a").exists()


def test_lost_version_race_takes_the_next_number(tmp_path, exported, monkeypatch):
    """Another exporter published version 1 after this one chose it (``versions`` still
    reports none): the rename fails and the export takes version 2."""
    from keras_margins.export import saved_model

    base = tmp_path / "race"
    (base / "1").mkdir(parents=True)
    (base / "1" / "saved_model.pb").write_bytes(b"other exporter")
    real = saved_model.versions
    calls = {"n": 0}

    def stale(folder):
        calls["n"] += 1
        return [] if calls["n"] == 1 else real(folder)

    monkeypatch.setattr(saved_model, "versions", stale)
    path = km.retrieval.export_search_model(exported["model"], exported["exact"], base,
                                            models_config=False)
    assert os.path.basename(path) == "2"
    assert (base / "1" / "saved_model.pb").read_bytes() == b"other exporter"


WORKER = textwrap.dedent(
    """
    import os, sys, time
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import keras, keras_margins as km
    model_path, index_path, base, ready, n = sys.argv[1:6]
    model = keras.saving.load_model(model_path, safe_mode=True)
    index = keras.saving.load_model(index_path, safe_mode=True)
    open(f"{ready}.{os.getpid()}", "w").close()
    deadline = time.time() + 300
    while len([f for f in os.listdir(os.path.dirname(ready)) if f.startswith("ready.")]) < int(n):
        if time.time() > deadline:
            sys.exit("workers never all started")
        time.sleep(0.01)
    print("RESULT", km.retrieval.export_search_model(model, index, base))
    """
)


@pytest.mark.slow
def test_concurrent_exports_keep_every_version(tmp_path, exported):
    model_path, index_path = tmp_path / "model.keras", tmp_path / "index.keras"
    exported["model"].save(model_path)
    keras.saving.save_model(exported["exact"], index_path)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    workers = 3
    procs = [subprocess.Popen([sys.executable, str(script), str(model_path), str(index_path),
                               str(tmp_path / "models" / "shared"), str(tmp_path / "ready"),
                               str(workers)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(workers)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outputs]
    paths = sorted(line.split()[1] for out, _ in outputs for line in out.splitlines()
                   if line.startswith("RESULT"))
    assert [os.path.basename(p) for p in paths] == ["1", "2", "3"]
    assert all(os.path.isfile(os.path.join(p, "saved_model.pb")) for p in paths)
