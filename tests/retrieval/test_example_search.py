"""examples/search_and_match.py runs end to end (few epochs) and its numbers hang together."""

import os

import keras
import pytest
from repo_scripts import EXAMPLES, load_script


def load():
    return load_script(EXAMPLES / "search_and_match.py", "search_and_match")


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
