"""POD's cheaper forms equal the loop reference: the (N, N) Gram when N < D, the (D, D) one
otherwise, target centroids gathered (no (N, C) product), and the δ-schedule logit norms read
off the PEDCC head's cosines."""

import keras
import numpy as np
import pytest
import references as ref

import keras_margins as km
from keras_margins.testing import jit


@pytest.mark.float64
@pytest.mark.parametrize("n, d", [(4, 9), (9, 4), (6, 6)], ids=["n<d", "n>d", "n=d"])
@pytest.mark.parametrize("compiled", [False, True])
def test_terms_match_reference_both_gram_shapes(n, d, compiled):
    rng = np.random.default_rng(n * 10 + d)
    c = 3
    labels = rng.integers(0, c, n)
    x = rng.normal(size=(n, d)) * 1.5
    centroids = rng.normal(size=(d, c)) * 2.0  # not unit: normalised inside
    fn = jit(lambda l, f, k: km.ops.pod_terms(l, f, k, 0.3)) if compiled else (
        lambda l, f, k: km.ops.pod_terms(l, f, k, 0.3))
    nac, decorrelation = fn(labels.astype("int32"), x, centroids)
    ref_nac, ref_dec = ref.pod_terms(labels, x, centroids, 0.3)
    np.testing.assert_allclose(np.asarray(nac), ref_nac, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(float(decorrelation), ref_dec, rtol=1e-6, atol=1e-9)


def test_logit_norms_from_head_cosines_equal_the_product(tmp_path):
    """Training accumulates Σ||x·C|| from the PEDCCHead's cosines; equal to the direct form."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6)).astype("float32")
    y = (np.arange(16) % 5).astype("int32")
    backbone = keras.Sequential([keras.Input((6,)), keras.layers.Dense(7)])
    model = km.models.MarginModel(backbone, km.layers.PEDCCHead(5))
    loss = km.losses.POD()
    model.compile(keras.optimizers.SGD(0.0), loss=loss, jit_compile=True)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    features = keras.ops.convert_to_numpy(backbone(x)).astype("float64")
    logits = features @ keras.ops.convert_to_numpy(model.head.kernel).astype("float64")
    expected = sum(np.sqrt(sum(v**2 for v in row)) for row in logits)
    assert float(loss.state["logit_norm_sum"]) == pytest.approx(expected, rel=1e-5)
    assert float(loss.state["feature_norm_sum"]) == pytest.approx(
        np.linalg.norm(features, axis=1).sum(), rel=1e-5
    )
