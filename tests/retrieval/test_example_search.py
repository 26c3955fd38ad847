"""examples/search_and_match.py runs end to end (few epochs) and its numbers hang together."""

import importlib.util
import os

import keras
import pytest

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       "examples", "search_and_match.py")


def load():
    spec = importlib.util.spec_from_file_location("search_and_match", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_runs_and_calibrates(tmp_path):
    export = str(tmp_path / "saved_models" / "digits_search")
    out = load().main(["--epochs", "4", "--export-dir", export])
    cal, held_out = out["calibration"], out["held_out"]
    assert cal.far <= 0.1 and cal.far_interval[0] <= cal.far <= cal.far_interval[1]
    assert 0.0 <= held_out["far"] <= 0.3 and 0.0 < held_out["tar"] <= 1.0
    assert out["rank1"] > 0.4  # chance: 0.25 among the four enrolled digits
    if keras.backend.backend() == "tensorflow":
        assert os.path.isfile(os.path.join(out["export"], "saved_model.pb"))
    else:
        pytest.skip("the search SavedModel is exported on the TensorFlow backend only")
