"""Loss classes of the margin-softmax family: values, presets, config, training."""

import warnings

import keras
import numpy as np
import pytest
import references as ref

import keras_margins as km

PRESETS = [
    (km.losses.NormFace(), (16.0, 1.0, 0.0, 0.0)),
    (km.losses.SphereFace(), (30.0, 1.5, 0.0, 0.0)),
    (km.losses.CosFace(), (64.0, 1.0, 0.0, 0.35)),
    (km.losses.ArcFace(), (64.0, 1.0, 0.5, 0.0)),
]


@pytest.mark.parametrize("loss,params", PRESETS, ids=lambda p: getattr(p, "name", ""))
def test_presets_use_paper_defaults_and_mean_of_reference(loss, params):
    s, m1, m2, m3 = params
    assert (loss.scale, loss.m1, loss.m2, loss.m3) == (s, m1, m2, m3)
    rng = np.random.default_rng(0)
    cos = rng.uniform(-1, 1, (10, 4)).astype("float32")
    y = rng.integers(0, 4, 10)
    per = ref.margin_softmax(y, cos.astype("float64"), s, m1, m2, m3)  # loops, not km.ops
    want = np.mean(per)
    assert float(loss(y, cos)) == pytest.approx(want, rel=1e-5)
    assert float(loss(y[:, None], cos)) == pytest.approx(want, rel=1e-5)  # (N, 1) labels
    sw = rng.uniform(0, 1, 10)
    assert float(loss(y, cos, sample_weight=sw)) == pytest.approx(np.sum(per * sw) / 10, rel=1e-5)


def test_sample_margin_weight_adds_lambda_times_rsm():
    rng = np.random.default_rng(1)
    cos = rng.uniform(-1, 1, (8, 5)).astype("float32")
    y = rng.integers(0, 5, 8)
    rsm = 0.0
    for i in range(8):
        rsm += max(cos[i, j] for j in range(5) if j != y[i]) - cos[i, y[i]]
    rsm /= 8
    for base, reg in (
        (km.losses.LMSoftmax(5.0), km.losses.LMSoftmax(5.0, sample_margin_weight=2.0)),
        (km.losses.ArcFace(), km.losses.ArcFace(sample_margin_weight=2.0)),
    ):
        assert float(reg(y, cos)) == pytest.approx(float(base(y, cos)) + 2.0 * rsm, rel=1e-5)


def test_lm_softmax_divide_by_scale_and_alias():
    assert km.losses.LMSoftmax is km.losses.LargestMarginSoftmax
    cos = np.random.default_rng(2).uniform(-1, 1, (6, 3)).astype("float32")
    y = np.array([0, 1, 2, 0, 1, 2])
    a = float(km.losses.LMSoftmax(8.0)(y, cos))
    b = float(km.losses.LMSoftmax(8.0, divide_by_scale=True)(y, cos))
    assert b == pytest.approx(a / 8.0, rel=1e-6)


@pytest.mark.parametrize(
    "loss",
    [
        km.losses.MarginSoftmax(32.0, m1=1.2, m2=0.1, m3=0.05, sample_margin_weight=0.3),
        km.losses.NormFace(8.0),
        km.losses.SphereFace(20.0, 1.35),
        km.losses.CosFace(30.0, 0.2),
        km.losses.ArcFace(30.0, 0.3, sample_margin_weight=1.0),
        km.losses.LargestMarginSoftmax(6.0, sample_margin_weight=0.5, divide_by_scale=True),
    ],
)
def test_config_roundtrip(loss):
    clone = km.testing.config_roundtrip(loss)
    cos = np.random.default_rng(3).uniform(-1, 1, (5, 4)).astype("float32")
    y = np.array([0, 1, 2, 3, 0])
    assert float(clone(y, cos)) == pytest.approx(float(loss(y, cos)), rel=1e-7)


def test_invalid_hyperparameters():
    with pytest.raises(ValueError, match="scale"):
        km.losses.ArcFace(scale=-1.0)
    with pytest.raises(ValueError, match="m1"):
        km.losses.SphereFace(margin=0.5)
    with pytest.raises(ValueError, match="sample_margin_weight"):
        km.losses.LMSoftmax(sample_margin_weight=-1.0)


def test_eager_out_of_range_labels_raise():
    with pytest.raises(ValueError, match="labels"):
        km.losses.ArcFace()(np.array([0, 5]), np.zeros((2, 3), "float32"))


def test_mixed_precision_fit_has_no_nan():
    keras.mixed_precision.set_global_policy("mixed_float16")
    (x, y), _ = km.data.digits_classification()
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32), km.layers.LargestMarginHead(10)])
    model.compile("adam", loss=km.losses.ArcFace(), jit_compile=True)
    hist = model.fit(x[:256], y[:256], epochs=2, batch_size=64, verbose=0)
    assert np.all(np.isfinite(hist.history["loss"]))


def _digits_accuracy(loss, epochs):
    keras.utils.set_random_seed(0)
    (x, y), (xt, yt) = km.data.digits_classification()
    backbone = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(256, activation="relu"), keras.layers.Dense(64)]
    )
    model = keras.Sequential([backbone, km.layers.LargestMarginHead(10)])
    model.compile(keras.optimizers.Adam(3e-3), loss=loss, metrics=["accuracy"], jit_compile=True)
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    return model.evaluate(xt, yt, verbose=0, return_dict=True)["accuracy"]


def test_fast_fit_learns_digits():
    assert _digits_accuracy(km.losses.ArcFace(), epochs=6) > 0.90


# README, feature table: "digits >= 97 % with CosFace/LM-Softmax/SphereFace/NormFace, >= 96.5 %
# with ArcFace" (paper defaults, LargestMarginHead, seed 0, 20 epochs). Measured on seed 0:
# 97.3-98.2 %; ArcFace (s = 64, m = 0.5) 96.7 % here, 97.8 % when the 20 epochs are split
# over several fit calls (another shuffling): it does not reliably clear 97 %.
DIGITS_THRESHOLDS = {"arcface": 0.965, "cosface": 0.97, "lm_softmax": 0.97, "sphereface": 0.97,
                     "normface": 0.97, "lm_softmax_rsm": 0.97}


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, loss",
    [("arcface", km.losses.ArcFace()), ("cosface", km.losses.CosFace()),
     ("lm_softmax", km.losses.LMSoftmax()), ("sphereface", km.losses.SphereFace()),
     ("normface", km.losses.NormFace()),
     ("lm_softmax_rsm", km.losses.LMSoftmax(sample_margin_weight=1.0))],
    ids=["arcface", "cosface", "lm_softmax", "sphereface", "normface", "lm_softmax_rsm"],
)
def test_paper_defaults_reach_the_readme_accuracy_on_digits(name, loss):
    assert _digits_accuracy(loss, epochs=20) >= DIGITS_THRESHOLDS[name]


def test_margin_in_degrees_warns_or_raises():
    """pytorch-metric-learning's ArcFaceLoss takes degrees (28.6); ours takes radians."""
    with pytest.raises(ValueError, match="math.radians"):
        km.losses.ArcFace(margin=28.6)
    for make in (lambda: km.losses.ArcFace(margin=2.0),
                 lambda: km.losses.MarginSoftmax(30.0, m2=1.6, m3=0.1)):
        with pytest.warns(UserWarning, match=r"degrees.*math\.radians") as record:
            loss = make()
        assert record[0].filename == __file__  # points at the caller, not the library
        assert loss.m2 > 1.5  # a warning, not a change: the value is kept
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # radian margins up to 1.5, and other margins: silent
        km.losses.ArcFace(margin=1.5)
        km.losses.ArcFace()
        km.losses.CosFace(margin=0.9)
        km.losses.SphereFace(margin=4.0)
        km.testing.config_roundtrip(km.losses.ArcFace(margin=0.5))
