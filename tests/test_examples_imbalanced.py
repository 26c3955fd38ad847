"""Smoke test of examples/imbalanced.py (--smoke: one seed, ratio 10, a few steps)."""

import pathlib

import numpy as np
import pytest
from repo_scripts import load_script

_PATH = pathlib.Path(__file__).resolve().parents[1] / "examples" / "imbalanced.py"


@pytest.fixture(scope="module")
def example():
    return load_script(_PATH, "imbalanced_example")


def test_smoke_run_prints_the_table_and_draws_the_figure(example, tmp_path, capsys):
    figure = tmp_path / "directions.png"
    tables = example.main(["--smoke", "--figure", str(figure)])
    assert list(tables) == [10.0]
    results = tables[10.0]
    assert list(results) == list(example.METHODS)
    for runs in results.values():
        assert len(runs) == 1
        for column in example.COLUMNS:
            assert np.isfinite(runs[0][column]), column
        assert 0.0 <= runs[0]["overall acc %"] <= 100.0
        assert 0.0 < runs[0]["class margin"] <= 180.0
        assert runs[0]["min tail margin"] >= runs[0]["class margin"]
    out = capsys.readouterr().out
    assert "training images per class [134, 106, 82, 63, 49, 38, 29, 22, 17, 13]" in out
    for column in example.COLUMNS:
        assert column in out
    assert figure.stat().st_size > 10_000


def test_tail_margin_is_the_smallest_angle_of_a_few_shot_class(example):
    # three unit vectors in the plane at 0°, 90° and 135°: class 2 (the tail) is 45° from class 1
    kernel = np.array([[1.0, 0.0, -1.0], [0.0, 2.0, 1.0]])
    angles = example.angles_deg(kernel)
    np.testing.assert_allclose(angles[2, 1], 45.0, atol=1e-9)
    np.testing.assert_allclose(angles.min(), 45.0, atol=1e-9)
    assert np.isinf(angles[0, 0])


def test_printed_spread_is_the_sample_standard_deviation(example, capsys):
    # three seeds with values 1, 2, 3: sample std (ddof = 1) is 1.0; the population std 0.8
    results = {m: [{c: float(v) for c in example.COLUMNS} for v in (1, 2, 3)] for m in example.METHODS}
    example.print_table(10.0, results, [0, 1, 2], np.array([3, 2, 1]))
    out = capsys.readouterr().out
    assert "mean ± std (ddof = 1) over 3 seed(s)" in out
    rows = [line for line in out.splitlines() if line.startswith(example.METHODS[0])]
    assert rows and rows[0].count("2.0 ± 1.0") == len(example.COLUMNS), rows
