import numpy as np
import pytest

import keras_margins as km


def test_sample_margin_metric_mean_and_min_over_batches():
    cos1 = np.array([[0.9, 0.1, -0.2], [0.5, -0.5, 0.4]], "float32")
    cos2 = np.array([[0.0, 0.3, 0.6]], "float32")
    mean, minimum = km.metrics.SampleMargin(), km.metrics.MinSampleMargin()
    for labels, cos in (([0, 1], cos1), ([2], cos2)):
        mean.update_state(labels, cos)
        minimum.update_state(labels, cos)
    assert float(mean.result()) == pytest.approx((0.8 - 1.0 + 0.3) / 3, abs=1e-6)
    assert float(minimum.result()) == pytest.approx(-1.0, abs=1e-6)
    minimum.reset_state()
    minimum.update_state([2], cos2)
    assert float(minimum.result()) == pytest.approx(0.3, abs=1e-6)


def test_metric_config_roundtrip():
    km.testing.config_roundtrip(km.metrics.SampleMargin(name="sm"))
    km.testing.config_roundtrip(km.metrics.MinSampleMargin())
