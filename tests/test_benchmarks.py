"""Smoke tests of benchmarks/*.py (tiny sizes) so the scripts never rot, plus the timing helpers."""

import json
import sys

import pytest
from repo_scripts import BENCHMARKS, load_script


def _load(name):
    if name in sys.modules:
        return sys.modules[name]
    return load_script(BENCHMARKS / f"{name}.py", name, on_path=True, register=True)


def _common(tmp_path):
    return ["--repeats", "2", "--warmup", "1", "--out-dir", str(tmp_path / "results"),
            "--markdown", str(tmp_path / "RESULTS.md")]


def _check_reports(tmp_path, name):
    payload = json.loads((tmp_path / "results" / f"{name}_latest.json").read_text())
    text = (tmp_path / "RESULTS.md").read_text()
    assert f"<!-- {name}:start -->" in text and f"<!-- {name}:end -->" in text
    assert "cores" in text and payload["machine"]["tensorflow"] in text
    return payload


# ----------------------------------------------------------------------------- _timing helpers


def test_summarize_and_paired_ratio():
    timing = _load("_timing")
    stats = timing.summarize([4.0, 1.0, 3.0, 2.0, 5.0])
    assert stats["median"] == 3.0 and stats["min"] == 1.0 and stats["max"] == 5.0
    assert stats["q1"] == 2.0 and stats["q3"] == 4.0
    assert stats["rel_iqr"] == pytest.approx(2.0 / 3.0)
    results = {"a": {"times": [2.0, 4.0, 9.0]}, "b": {"times": [1.0, 4.0, 3.0]}}
    ratio = timing.paired_ratio(results, "a", "b")
    assert ratio["median"] == 2.0  # per-round ratios 2, 1, 3


def test_measure_interleaves_and_counts_calls():
    timing = _load("_timing")
    calls = []
    cases = {"x": lambda: calls.append("x"), "y": lambda: calls.append("y")}
    out = timing.measure(cases, repeats=4, warmup=2, seed=1)
    assert calls.count("x") == calls.count("y") == 2 + 1 + 4  # warm-up, probe, rounds
    timed = calls[6:]
    assert all({timed[2 * i], timed[2 * i + 1]} == {"x", "y"} for i in range(4))
    assert out["x"]["n"] == 4 and len(out["y"]["times"]) == 4


def test_update_markdown_replaces_only_its_section(tmp_path):
    timing = _load("_timing")
    md = tmp_path / "R.md"
    timing.update_markdown(md, "a", "first A")
    timing.update_markdown(md, "b", "only B")
    timing.update_markdown(md, "a", "second A")
    text = md.read_text()
    assert "second A" in text and "first A" not in text and "only B" in text
    assert text.count("<!-- a:start -->") == 1 and text.index("second A") < text.index("only B")


def test_markdown_table_shape():
    timing = _load("_timing")
    table = timing.markdown_table(["h1", "h2"], [[1, 2], [3, 4]]).splitlines()
    assert table == ["| h1 | h2 |", "|---|---|", "| 1 | 2 |", "| 3 | 4 |"]


# ----------------------------------------------------------------------------- scripts


@pytest.mark.tf_only  # benchmarks/ time TensorFlow graphs (tf.function, XLA buffer assignment)
def test_step_time_smoke(tmp_path):
    step_time = _load("step_time")
    argv = ["--classes", "12", "--batch", "8", "--dim", "6",
            "--losses", "ArcFace", "CircleLoss (class-level)"] + _common(tmp_path)
    payload = step_time.main(argv)
    assert not payload["skipped"], payload["skipped"]
    names = [r["loss"] for r in payload["rows"]]
    assert names == ["softmax", "ArcFace", "CircleLoss (class-level)"]
    for row in payload["rows"]:
        for mode in ("on", "off"):
            assert row[f"time_xla_{mode}"]["median"] > 0
            assert row[f"ratio_xla_{mode}"]["cpu"]["median"] > 0
    base = payload["rows"][0]
    assert base["ratio_xla_on"]["wall"]["median"] == pytest.approx(1.0)
    assert _check_reports(tmp_path, "step_time")["rows"][1]["loss"] == "ArcFace"


@pytest.mark.tf_only  # benchmarks/ time TensorFlow graphs (tf.function, XLA buffer assignment)
def test_step_time_label_check_smoke(tmp_path):
    step_time = _load("step_time")
    argv = ["--label-check", "--classes", "12", "--batch", "8", "--dim", "6",
            "--losses", "ArcFace", "CircleLoss (class-level)"] + _common(tmp_path)
    payload = step_time.main(argv)
    assert [r["loss"] for r in payload["rows"]] == ["ArcFace", "CircleLoss (class-level)"]
    for row in payload["rows"]:
        assert row["time_checked"]["median"] > 0 and row["time_unchecked"]["median"] > 0
        assert row["ratio"]["cpu"]["median"] > 0
    _check_reports(tmp_path, "step_time_label_check")
    # the switch really removes the check while tracing, and restores it afterwards
    import numpy as np

    import keras_margins.ops._numerics as common

    y, cos = np.array([0, 2], "int32"), np.zeros((2, 3), "float32")  # label 2 invalid for C = 2
    with step_time.label_check(False):
        assert np.isfinite(np.asarray(common.take_target(cos, y, num_classes=2))).all()
    assert np.isnan(np.asarray(common.take_target(cos, y, num_classes=2))[1])


def test_step_time_covers_every_landed_loss():
    step_time = _load("step_time")
    names = set(step_time.case_builders(10, 4))
    assert {"softmax", "ArcFace", "CosFace", "LMSoftmax", "CircleLoss (class-level)"} <= names


@pytest.mark.tf_only  # benchmarks/ time TensorFlow graphs (tf.function, XLA buffer assignment)
def test_pair_losses_smoke(tmp_path):
    pair_losses = _load("pair_losses")
    payload = pair_losses.main(["--sizes", "16", "--dim", "8", "--no-xla-off"]
                               + _common(tmp_path))
    names = {r["loss"] for r in payload["rows"]}
    assert {"PairCircleLoss", "keras.losses.Circle"} <= names
    assert any("MultiSimilarityMiner" in n for n in names)
    values = payload["values"][16]
    assert values["ours"] == pytest.approx(values["keras"], rel=1e-4)
    assert all(r["xla_bytes"] > 0 for r in payload["rows"])  # all XLA-on here
    _check_reports(tmp_path, "pair_losses")


@pytest.mark.tf_only  # benchmarks/ time TensorFlow graphs (tf.function, XLA buffer assignment)
def test_xla_memory_counts_one_n_by_n_matrix():
    pair_losses = _load("pair_losses")
    import tensorflow as tf
    x = tf.ones((512, 64))

    @tf.function(jit_compile=True)
    def gram_sum(v):
        return tf.reduce_sum(tf.exp(tf.matmul(v, v, transpose_b=True)), axis=1)

    size = pair_losses.xla_buffer_bytes(gram_sum, x)
    # the (512, 512) float32 product, the (512,) output, a few scalars; not the input
    assert 512 * 512 * 4 <= size < 512 * 512 * 4 + 64 * 1024


@pytest.mark.tf_only  # benchmarks/ time TensorFlow graphs (tf.function, XLA buffer assignment)
def test_vs_pml_smoke(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("pytorch_metric_learning")
    vs_pml = _load("vs_pml")
    argv = ["--classes", "12", "--batch", "8", "--dim", "6", "--pair-sizes", "16",
            "--pair-dim", "8", "--no-xla-off"] + _common(tmp_path)
    payload = vs_pml.main(argv)
    assert len(payload["rows"]) == 4
    for row in payload["rows"]:
        assert row["agree"], row
        assert row["ratio_xla_on"]["wall"]["median"] > 0
    _check_reports(tmp_path, "vs_pml")


@pytest.mark.tf_only  # benchmarks/ time TensorFlow graphs (tf.function, XLA buffer assignment)
def test_head_cost_smoke(tmp_path):
    head_cost = _load("head_cost")
    payload = head_cost.main(["--classes", "12", "--batch", "8", "--dim", "6"]
                             + _common(tmp_path))
    names = [r["case"] for r in payload["rows"]]
    assert names[0] == "softmax" and "LargestMarginHead" in names and len(names) == 6
    assert all(r["ratio"]["cpu"]["median"] > 0 for r in payload["rows"])
    _check_reports(tmp_path, "head_cost")


@pytest.mark.tf_only  # benchmarks/ time TensorFlow graphs (tf.function, XLA buffer assignment)
def test_scale_classes_smoke(tmp_path):
    scale = _load("scale_classes")
    payload = scale.main(["--quick", "--no-memory", "--parts"] + _common(tmp_path))
    entry = payload["sizes"][2000]
    assert set(entry["cases"]) == {"full", "pfc0.3", "pfc0.1"}
    assert entry["ratios"]["full"]["median"] == pytest.approx(1.0)
    assert all(r["median"] > 0 for r in entry["ratios"].values())
    assert payload["floor_s"] > 0 and len(payload["parts"]) == 5
    assert scale.sharded_mb(8 * 2**20) == pytest.approx(1024.0)  # 2^20 classes/device × 128 × 4 B × 2
    _check_reports(tmp_path, "scale_classes")
