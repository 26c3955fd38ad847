"""benchmarks/search.py at tiny sizes, so the script never rots: it reports every case, the
bars and a markdown section."""

import json

import keras
import pytest
from repo_scripts import BENCHMARKS, load_script


def test_search_benchmark_smoke(tmp_path):
    module = load_script(BENCHMARKS / "search.py", "search_benchmark", on_path=True)
    argv = ["--sizes", "3000", "--queries", "100", "--batch", "16", "--nprobes", "2", "64",
            "--lists", "64", "--kmeans-iterations", "2", "--chunk-size", "512", "--repeats", "2",
            "--warmup", "1", "--out-dir", str(tmp_path / "results"),
            "--markdown", str(tmp_path / "RESULTS.md")]
    if keras.backend.backend() != "tensorflow":
        argv.append("--no-saved-model")
    module.main(argv)
    payload = json.loads((tmp_path / "results" / "search_latest.json").read_text())
    cases = {row[3] for row in payload["rows"]}
    assert {"km exact (XLA)", "matmul + top_k (XLA)", "NumPy brute force", "km IVF (in-process)"} <= cases
    floors = payload["floors"]["clustered/3000"]
    assert floors["exact_recall"] == pytest.approx(1.0)
    assert floors["ivf"][-1]["recall"] == pytest.approx(1.0)  # nprobe = lists: exact
    text = (tmp_path / "RESULTS.md").read_text()
    assert "<!-- search:start -->" in text and "bar ≤ 1.25" in text
