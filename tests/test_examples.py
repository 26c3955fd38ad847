"""Smoke run of every script in examples/ (tiny epoch/trial counts, outputs under tmp_path).

Each example's ``main(argv)`` runs in-process with the working directory set to a temporary
folder, so nothing is written into the repository. Examples with a test module of their own
(``tests/test_examples_circle_retrieval.py``, ...) are not repeated here, but
``test_every_example_has_a_smoke_run`` fails for a new example that nobody runs.
"""

import sys

import numpy as np
import pytest
from repo_scripts import EXAMPLES, ROOT, load_script


def _load(name):
    return load_script(EXAMPLES / f"{name}.py", f"example_{name}")


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(EXAMPLES)] + sys.path)  # examples import each other
    return tmp_path


def _run_quickstart(tmp):
    results = _load("quickstart").main(["--epochs", "1", "--out", str(tmp / "q.keras")])
    assert 0.0 <= results["accuracy"] <= 1.0 and np.isfinite(results["sample_margin"])
    assert (tmp / "q.keras").stat().st_size > 0


def _run_compare(name, key):
    def run(tmp):
        results = _load(name).main(["--epochs", "1", "--out", str(tmp / f"{name}.keras")])
        assert set(results) == {"softmax", key}
        for row in results.values():
            assert 0.0 <= row["accuracy"] <= 1.0
            assert 0.0 < row["class_margin"] <= 180.0 and np.isfinite(row["sample_margin"])
        assert (tmp / f"{name}.keras").stat().st_size > 0

    return run


def _run_plot_embeddings(tmp):
    _load("plot_embeddings").main(["--epochs", "1", "--out", str(tmp / "figures")])
    for figure in ("features_2d.png", "features_3d.png", "margins.png"):
        assert (tmp / "figures" / figure).stat().st_size > 10_000, figure


def _run_export_for_serving(tmp):
    out = tmp / "saved_models" / "quickstart"
    results = _load("export_for_serving").main(
        ["--model", str(tmp / "q.keras"), "--epochs", "1", "--out", str(out)])
    assert results["embedding_error"] < 1e-5 and results["score_error"] < 1e-4
    assert (out / "1" / "saved_model.pb").exists()
    assert (tmp / "saved_models" / "models.config").exists()


def _run_tune_margins(tmp):
    tuner = _load("tune_margins").main(
        ["--max-trials", "2", "--epochs", "1", "--directory", str(tmp / "tuner"),
         "--export-dir", str(tmp / "saved_models" / "tune_margins")])
    assert len(tuner.oracle.trials) == 2
    assert (tmp / "saved_models" / "tune_margins" / "1" / "saved_model.pb").exists()


SMOKE = {
    "quickstart": _run_quickstart,
    "virtual_softmax": _run_compare("virtual_softmax", "virtual_softmax"),
    "pedcc_pod": _run_compare("pedcc_pod", "pedcc_pod"),
}
# Several trainings (plot_embeddings: 5 losses x 2 dims), TF-only SavedModel exports: slow set.
SLOW = {
    "plot_embeddings": _run_plot_embeddings,
    "export_for_serving": _run_export_for_serving,
    "tune_margins": _run_tune_margins,
}
TF_ONLY = {"export_for_serving", "tune_margins"}


def _params():
    for name in sorted(SMOKE) + sorted(SLOW):
        marks = [pytest.mark.slow] if name in SLOW else []
        marks += [pytest.mark.tf_only] if name in TF_ONLY else []
        yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", _params())
def test_example_runs(name, in_tmp):
    {**SMOKE, **SLOW}[name](in_tmp)


def test_every_example_has_a_smoke_run():
    """An example without a smoke run here or a test module naming it fails this test."""
    other_tests = [p for p in ROOT.joinpath("tests").rglob("test_*.py") if p.name != "test_examples.py"]
    text = "\n".join(p.read_text() for p in other_tests)
    for path in sorted(EXAMPLES.glob("*.py")):
        covered = path.stem in SMOKE or path.stem in SLOW or f"{path.stem}.py" in text
        assert covered, f"examples/{path.name} has no smoke run (add it to tests/test_examples.py)"
