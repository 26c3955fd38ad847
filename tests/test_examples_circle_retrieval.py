"""Smoke test of examples/circle_retrieval.py (tiny step counts) and checks of its pieces."""

import pathlib

import numpy as np
import pytest
from repo_scripts import load_script

import keras_margins as km

pytestmark = pytest.mark.tf_only  # the example feeds tf.data pipelines (km.data.pk_batches)

_PATH = pathlib.Path(__file__).resolve().parents[1] / "examples" / "circle_retrieval.py"
_KEYS = {"precision_at_1", "recall_at_5", "map_at_r", "r_precision"}


@pytest.fixture(scope="module")
def example():
    return load_script(_PATH, "circle_retrieval_example")


def test_table_with_validation(example, capsys):
    """Whole pipeline (validation folds -> steps -> table) with 2 steps, one seed."""
    table = example.main(["--seeds", "0", "--max-steps", "2", "--eval-every", "1",
                          "--backbone", "linear", "--no-shift"])
    labels = ["raw pixels", "untrained backbone", "softmax", "circle (miner=none)", "ensemble",
              "multi_ensemble", "  compressed (Euclidean)"]
    assert list(table) == labels
    for scores in table.values():
        assert set(scores) == _KEYS
        assert all(len(v) == 1 for v in scores.values())  # one seed
        assert all(0.0 <= s <= 1.0 for v in scores.values() for s in v)
    (_, _), (xt, yt) = km.data.digits_zero_shot()
    raw = km.metrics.retrieval_scores(xt, yt)
    for key in _KEYS:
        assert table["raw pixels"][key] == pytest.approx([raw[key]], abs=1e-12)
        # an orthogonal linear map keeps every cosine: untrained embedding = raw pixels
        assert table["untrained backbone"][key] == pytest.approx([raw[key]], abs=1e-6)
    out = capsys.readouterr().out
    for column in ("P@1", "R@5", "MAP@R", "R-Prec"):
        assert column in out
    assert "-> 1 steps" in out or "-> 2 steps" in out


def test_fixed_steps_cnn_with_miner(example):
    table = example.main(["--seeds", "0", "--steps", "2", "--miner", "multi_similarity"])
    assert "circle (miner=multi_similarity)" in table
    assert set(table["ensemble"]) == _KEYS
    assert set(table["multi_ensemble"]) == _KEYS


def test_authors_members_for_the_multi_embedding_ensemble_only(example, capsys):
    table = example.main(["--seeds", "0", "--steps", "2", "--methods", "multi_ensemble",
                          "--authors-members", "--backbone", "linear"])
    assert list(table) == ["raw pixels", "untrained backbone", "multi_ensemble",
                           "  compressed (Euclidean)"]
    assert "authors' member forms" in capsys.readouterr().out


def test_shift_moves_each_image_by_at_most_one_pixel(example):
    rng = np.random.default_rng(0)
    x = rng.random((32, 64)).astype("float32")
    y = np.arange(32)
    shifted, labels = example._shift(x, y)
    shifted = np.asarray(shifted)
    np.testing.assert_array_equal(np.asarray(labels), y)
    padded = np.pad(x.reshape(-1, 8, 8), ((0, 0), (1, 1), (1, 1)))
    for i in range(len(x)):
        views = [padded[i, a : a + 8, b : b + 8].reshape(64) for a in range(3) for b in range(3)]
        assert any(np.array_equal(shifted[i], v) for v in views)


def test_printed_spread_is_the_sample_standard_deviation(example, capsys):
    # three seeds 0.1, 0.2, 0.3: sample std (ddof = 1) 0.100, population std 0.082; one value
    # (raw pixels) has no spread
    keys = [key for _, key in example.METRICS]
    rows = [("raw pixels", {key: [0.5] for key in keys}, 0, 0.0),
            ("softmax", {key: [0.1, 0.2, 0.3] for key in keys}, 10, 1.0)]
    example.print_table(rows)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].count("0.5000 ± 0.000") == len(keys), lines[1]
    assert lines[2].count("0.2000 ± 0.100") == len(keys), lines[2]
    assert example.spread([0.1, 0.2, 0.3]) == pytest.approx(np.std([0.1, 0.2, 0.3], ddof=1))
