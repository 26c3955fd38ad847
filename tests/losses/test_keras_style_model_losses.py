"""Keras-style test cases of the losses that need the model (``needs = "model"``): POD,
SampleMarginRegularizer and PartialFC through ``km.models.MarginModel`` (LossEnsemble's are in
``test_ensemble.py``). As for the plain losses (``test_keras_style.py``): the value against the
loop references of ``tests/references.py`` (never ``km.ops``), the reductions, sample weights
including zeros, float64 honoured, configuration and ``.keras`` round trips.
"""

import keras
import numpy as np
import pytest
import references as ref

import keras_margins as km
from keras_margins.testing import assert_save_load_identical, config_roundtrip

N, IN, D, C = 8, 6, 5, 4
RNG = np.random.default_rng(0)
X = RNG.normal(size=(N, IN))
Y = np.array([0, 1, 2, 3, 0, 1, 2, 3])
WEIGHTS = np.array([1.0, 0.0, 2.0, 0.5, 0.0, 1.5, 1.0, 0.25])


def _model(head, dtype="float32"):
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential([keras.Input((IN,)), keras.layers.Dense(D, dtype=dtype)])
    return km.models.MarginModel(backbone, head)


def _features_and_kernel(model):
    features = keras.ops.convert_to_numpy(model.backbone(X)).astype("float64")
    kernel = keras.ops.convert_to_numpy(model.head.kernel).astype("float64")
    return features, kernel


class Case:
    def __init__(self, name, head, make, reference, training=False):
        self.name, self.head, self.make, self.reference = name, head, make, reference
        self.training = training  # PartialFC samples classes in training steps only

    def __repr__(self):
        return self.name

    def build(self, dtype="float32", **kwargs):
        model = _model(self.head(dtype), dtype)
        loss = self.make(dtype=dtype, **kwargs)
        model.compile(keras.optimizers.SGD(0.0), loss=loss)
        return model, loss

    def value(self, model, loss, sample_weight=None, dtype="float32"):
        # what MarginModel's step passes: the backbone's embedding and the head's scores
        embedding = model.backbone(np.asarray(X, dtype), training=self.training)
        outputs = {"embedding": embedding, "scores": model.head(embedding, training=self.training)}
        return loss.compute_model_loss(Y, outputs, model, sample_weight, training=self.training)

    def expected(self, model):
        """Per-sample values (N,), or ``(base (N,), penalty (N,))`` reduced separately."""
        return self.reference(*_features_and_kernel(model))


def _pod_reference(features, kernel):
    # δ is a float32 weight of the model (the PODDelta schedule changes it): 0.2 rounded
    nac, decorrelation = ref.pod_terms(Y, features, kernel, float(np.float32(0.2)))
    return nac + 0.5 * decorrelation  # each sample's share NaC_i + w·L_sc


def _smr_reference(features, kernel):
    cos = ref.cosine(features, kernel)
    return ref.margin_softmax(Y, cos, 16.0, m2=0.3), -ref.sample_margin(Y, cos)


CASES = [
    Case("POD", lambda dtype: km.layers.PEDCCHead(C, dtype=dtype),
         lambda **kw: km.losses.POD(delta=0.2, decorrelation_weight=0.5, **kw),
         _pod_reference),
    Case("SampleMarginRegularizer", lambda dtype: km.layers.LargestMarginHead(C, dtype=dtype),
         lambda reduction="sum_over_batch_size", **kw: km.losses.SampleMarginRegularizer(
             km.losses.ArcFace(16.0, 0.3, reduction=reduction, dtype=kw.get("dtype")), 1.5,
             reduction=reduction, **kw),
         _smr_reference),
    Case("PartialFC", lambda dtype: km.layers.LargestMarginHead(C, dtype=dtype),
         lambda reduction="sum_over_batch_size", **kw: km.losses.PartialFC(
             km.losses.ArcFace(16.0, 0.3, reduction=reduction, dtype=kw.get("dtype")), sample_rate=1.0,
             seed=3, **kw),
         lambda f, k: ref.margin_softmax(Y, ref.cosine(f, k), 16.0, m2=0.3), training=True),
]
IDS = [case.name for case in CASES]


def _reduce(expected, sample_weight=None, reduction="sum_over_batch_size"):
    if isinstance(expected, tuple):  # SampleMarginRegularizer: loss + λ·R_sm, each reduced
        base, penalty = expected
        return (ref.keras_reduce(base, sample_weight, reduction)
                + 1.5 * ref.keras_reduce(penalty, sample_weight, reduction))
    return ref.keras_reduce(expected, sample_weight, reduction)


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x), "float64")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_value_equals_the_loop_reference(case):
    model, loss = case.build()
    got = case.value(model, loss)
    np.testing.assert_allclose(float(got), _reduce(case.expected(model)), rtol=1e-5, atol=1e-6)
    assert keras.backend.standardize_dtype(got.dtype) == "float32"
    # the model's own loss computation (evaluate) gives the same value
    if not case.training:
        logs = model.evaluate(X.astype("float32"), Y, batch_size=N, verbose=0, return_dict=True)
        assert logs["loss"] == pytest.approx(_reduce(case.expected(model)), rel=1e-5)


@pytest.mark.parametrize("reduction", [None, "sum", "sum_over_batch_size"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_reductions(case, reduction):
    if case.name == "PartialFC" and reduction is None:
        pytest.skip("PartialFC returns the step's scalar loss (its wrapped loss reduces)")
    model, loss = case.build(reduction=reduction)
    got = _np(case.value(model, loss))
    want = _reduce(case.expected(model), reduction=reduction)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if reduction is None:
        assert got.shape == (N,)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_sample_weight_with_zeros(case):
    model, loss = case.build()
    expected = case.expected(model)
    got = float(case.value(model, loss, WEIGHTS.astype("float32")))
    np.testing.assert_allclose(got, _reduce(expected, WEIGHTS), rtol=1e-5, atol=1e-6)
    zero = float(case.value(model, loss, np.zeros(N, "float32")))
    assert zero == pytest.approx(0.0, abs=1e-6)


@pytest.mark.float64
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float64_is_honoured(case):
    model, loss = case.build(dtype="float64")
    got = case.value(model, loss, dtype="float64")
    assert keras.backend.standardize_dtype(got.dtype) == "float64"
    np.testing.assert_allclose(float(got), _reduce(case.expected(model)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_config_and_keras_file_round_trip(case, tmp_path):
    model, loss = case.build(name="custom")
    clone = config_roundtrip(loss)
    assert clone.get_config() == loss.get_config() and clone.name == "custom"
    reloaded = assert_save_load_identical(model, X.astype("float32"), tmp_path)
    assert type(reloaded.loss) is type(loss) and reloaded.loss.get_config() == loss.get_config()
    np.testing.assert_allclose(float(case.value(reloaded, reloaded.loss)), float(case.value(model, loss)),
                               rtol=1e-6)
