import numpy as np
import pytest
from references import sample_margin as _ref_margins

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


def test_min_sample_margin_honours_sample_weight():
    rng = np.random.default_rng(0)
    cos = rng.uniform(-1, 1, (12, 4)).astype("float32")
    labels = rng.integers(0, 4, 12)
    margins = _ref_margins(labels, cos)
    weights = rng.uniform(0.5, 2.0, 12).astype("float32")
    weights[np.argsort(margins)[:3]] = 0.0  # the three smallest margins are left out
    metric = km.metrics.MinSampleMargin()
    metric.update_state(labels, cos, sample_weight=weights)
    assert float(metric.result()) == pytest.approx(margins[weights > 0].min(), abs=1e-6)
    # positive weights count alike (a minimum has nothing to weigh); (N, 1) weights work too
    other = km.metrics.MinSampleMargin()
    other.update_state(labels, cos, sample_weight=(weights > 0).astype("float32")[:, None] * 7.0)
    assert float(other.result()) == float(metric.result())
    # a batch whose weights are all 0 changes nothing, also as the very first batch
    metric.update_state(labels, cos, sample_weight=np.zeros(12, "float32"))
    assert float(metric.result()) == pytest.approx(margins[weights > 0].min(), abs=1e-6)
    fresh = km.metrics.MinSampleMargin()
    fresh.update_state(labels, cos, sample_weight=np.zeros(12, "float32"))
    fresh.update_state(labels[:2], cos[:2])
    assert float(fresh.result()) == pytest.approx(margins[:2].min(), abs=1e-6)


def test_min_sample_margin_sample_weight_in_fit_and_evaluate():
    """Through Keras (``weighted_metrics``: Keras passes sample weights to those only), eager
    and under XLA; as a plain metric the weights are not passed and every sample counts."""
    import keras

    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 4)).astype("float32")
    labels = rng.integers(0, 3, 16)
    head = km.layers.LargestMarginHead(3)
    model = keras.Sequential([keras.Input((4,)), head])
    cos = np.asarray(model.predict(x, verbose=0))
    margins = _ref_margins(labels, cos)
    weights = np.ones(16, "float32")
    weights[np.argmin(margins)] = 0.0
    for jit in (False, True):
        model.compile("sgd", loss=km.losses.NormFace(), jit_compile=jit,
                      metrics=[km.metrics.MinSampleMargin(name="plain")],
                      weighted_metrics=[km.metrics.MinSampleMargin(name="weighted")])
        logs = model.evaluate(x, labels, sample_weight=weights, batch_size=16, verbose=0,
                              return_dict=True)
        assert logs["weighted"] == pytest.approx(np.sort(margins)[1], abs=1e-5)
        assert logs["plain"] == pytest.approx(margins.min(), abs=1e-5)


@pytest.mark.parametrize(
    "weights", [np.full(3, -1.0), np.array([1.0, np.nan, 1.0]), np.ones(4), np.ones((3, 2))]
)
def test_min_sample_margin_bad_sample_weight(weights):
    cos = np.array([[0.9, 0.1], [0.2, 0.5], [0.3, 0.0]], "float32")
    with pytest.raises(ValueError, match="sample_weight"):
        km.metrics.MinSampleMargin().update_state([0, 1, 0], cos, sample_weight=weights)
