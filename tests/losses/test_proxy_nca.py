"""km.losses.ProxyNCALoss against the NumPy loop references of tests/references.py:
pytorch-metric-learning's ProxyNCALoss (NCA on squared distances of normalised embeddings and
proxies), the ensemble authors' scaled + label-smoothed form and the paper's positive-excluded
form."""

import keras
import numpy as np
import pytest
import references as ref

import keras_margins as km
from keras_margins.testing import config_roundtrip, jit


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({}, {}),                                                       # PML defaults
        ({"softmax_scale": 4.0}, {"t": 4.0}),
        ({"proxy_scale": 3.0, "label_smoothing": 0.1}, {"b": 3.0, "eps": 0.1}),   # ensemble authors
        ({"embedding_scale": 2.0, "exclude_positive": True}, {"a": 2.0, "exclude": True}),  # paper
    ],
)
def test_matches_reference_through_a_cosine_head(seed, kwargs, expected):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, 9)
    emb = rng.normal(size=(9, 6)).astype("float32")
    head = km.layers.LargestMarginHead(5)
    cos = head(emb)
    proxies = keras.ops.convert_to_numpy(head.kernel).T.astype("float64")
    got = float(km.losses.ProxyNCALoss(**kwargs)(labels, cos))
    want = np.mean(ref.proxy_nca(labels, emb.astype("float64"), proxies, **expected))
    np.testing.assert_allclose(got, want, rtol=2e-5)


def test_invalid_labels_eager_and_xla():
    cos = np.random.default_rng(0).uniform(-1, 1, (4, 3)).astype("float32")
    loss = km.losses.ProxyNCALoss()
    with pytest.raises(ValueError, match="labels"):
        loss(np.array([0, 1, 3, 2]), cos)
    compiled = jit(lambda y, c: loss(y, c))
    assert np.isnan(float(compiled(np.array([0, 1, 3, 2]), cos)))
    assert np.isnan(float(compiled(np.array([0, -1, 2, 2]), cos)))
    valid = np.array([0, 1, 2, 2])
    np.testing.assert_allclose(float(compiled(valid, cos)), float(loss(valid, cos)), rtol=1e-5)


def test_trains_with_largest_margin_head_and_roundtrips():
    (x, y), _ = km.data.digits_classification()
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32), km.layers.LargestMarginHead(10)])
    model.compile(keras.optimizers.Adam(1e-2),
                  loss=km.losses.ProxyNCALoss(proxy_scale=3.0, label_smoothing=0.1),
                  metrics=["accuracy"], jit_compile=True)
    history = model.fit(x[:512], y[:512], batch_size=64, epochs=3, verbose=0)
    assert history.history["accuracy"][-1] > 0.8
    clone = config_roundtrip(km.losses.ProxyNCALoss(2.0, 1.5, 3.0, 0.1))
    got = (clone.softmax_scale, clone.embedding_scale, clone.proxy_scale, clone.label_smoothing)
    assert got == (2.0, 1.5, 3.0, 0.1)
