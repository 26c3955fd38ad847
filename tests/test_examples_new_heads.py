"""Smoke runs of examples/noisy_labels.py and examples/quality_norms.py (1 seed, 2 epochs;
slow: each trains three models under XLA)."""


import numpy as np
import pytest
from repo_scripts import EXAMPLES, load_script


def _load(name):
    return load_script(EXAMPLES / f"{name}.py", f"example_{name}")


@pytest.mark.slow
def test_noisy_labels_smoke(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    table = _load("noisy_labels").main(["--smoke"])
    (row,) = table[0.2]
    assert 0.0 <= row["flag precision"] <= 1.0 and 0.0 <= row["flag recall"] <= 1.0
    assert 0.0 < row["flagged %"] < 100.0
    for key in ("ArcFace acc %", "sub-center acc %", "cleaned acc %"):
        assert 10.0 < row[key] <= 100.0, key   # above chance on 10 classes


@pytest.mark.slow
def test_quality_norms_smoke(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    table = _load("quality_norms").main(["--smoke"])
    assert set(table) == {"ArcFace (control)", "MagFace", "AdaFace"}
    for runs in table.values():
        (row,) = runs
        for key in ("blur ρ", "occlusion ρ"):
            assert -1.0 <= row[key] <= 1.0 and np.isfinite(row[key])
        assert 10.0 < row["clean acc %"] <= 100.0


def test_spearman_and_degradations_of_quality_norms():
    module = _load("quality_norms")
    assert module.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert module.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert list(module.ranks(np.array([3.0, 1.0, 3.0]))) == [2.5, 1.0, 2.5]
    images = np.random.default_rng(0).uniform(size=(5, 64)).astype("float32")
    blurred = module.blur(images, 1.0)
    assert blurred.shape == images.shape and np.allclose(blurred.mean(), images.mean(), atol=0.05)
    assert blurred.std() < images.std()
    occluded = module.occlude(images, 3, np.random.default_rng(0))
    assert np.sum(occluded.reshape(5, 8, 8) == 0.0, axis=(1, 2)).min() >= 9


def test_flip_labels_changes_exactly_the_asked_share():
    module = _load("noisy_labels")
    y = np.arange(200) % 10
    noisy, flipped = module.flip_labels(y, 0.3, 10, np.random.default_rng(0))
    assert flipped.sum() == 60 and np.all(noisy[flipped] != y[flipped])
    assert np.all(noisy[~flipped] == y[~flipped]) and noisy.min() >= 0 and noisy.max() <= 9
