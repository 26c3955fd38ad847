"""Invalid label values under XLA (``jit_compile=True``) poison every class-level loss/metric.

Eager calls raise ``ValueError`` (``as_labels`` reads the values). Inside a compiled graph
the values cannot be read and XLA's gather clamps / wraps an out-of-range index, so the
library multiplies each gathered target value by 1 (valid label) or NaN (label < 0 or >= C):
one table of every class-level loss and metric, three bad labels (−1, C, 100), checked in a
direct jitted call and in ``fit``'s logs. Valid labels give finite values (the control that
lets these tests fail).
"""

import keras
import numpy as np
import pytest

import keras_margins as km
from keras_margins.testing import jit

C = 5
D = 8
N = 6
BAD_LABELS = (-1, C, 100)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, 4)).astype("float32")
    y = (np.arange(N) % C).astype("int32")
    return x, y


def _backbone():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(D)])


HEADS = {
    "cosine": lambda: km.layers.LargestMarginHead(C),
    "virtual": lambda: km.layers.VirtualSoftmaxHead(C),
    "pedcc": lambda: km.layers.PEDCCHead(C),
}

# name -> (loss factory, head kind, needs MarginModel)
LOSSES = {
    "CosFace": (lambda: km.losses.CosFace(scale=16.0), "cosine", False),
    "ArcFace": (lambda: km.losses.ArcFace(scale=16.0), "cosine", False),
    "SphereFace": (lambda: km.losses.SphereFace(scale=16.0), "cosine", False),
    "NormFace": (lambda: km.losses.NormFace(), "cosine", False),
    "MarginSoftmax": (lambda: km.losses.MarginSoftmax(16.0, m2=0.2, m3=0.1), "cosine", False),
    "LMSoftmax": (lambda: km.losses.LMSoftmax(), "cosine", False),
    "LMSoftmax+sample_margin": (
        lambda: km.losses.LMSoftmax(sample_margin_weight=1.0), "cosine", False),
    "CircleLoss": (lambda: km.losses.CircleLoss(), "cosine", False),
    "VirtualSoftmax": (lambda: km.losses.VirtualSoftmax(), "virtual", False),
    "POD": (lambda: km.losses.POD(), "pedcc", True),
    "LossEnsemble[ArcFace,PairCircle]": (
        lambda: km.losses.LossEnsemble([km.losses.ArcFace(scale=16.0), km.losses.PairCircleLoss()]),
        "cosine", True),
    "LossEnsemble[CircleLoss,LMSoftmax]": (
        lambda: km.losses.LossEnsemble([km.losses.CircleLoss(), km.losses.LMSoftmax()]),
        "cosine", True),
    "LossEnsemble[POD,NormFace]": (
        lambda: km.losses.LossEnsemble([km.losses.POD(), km.losses.NormFace()]), "pedcc", True),
}

METRICS = {
    "SampleMargin": km.metrics.SampleMargin,
    "MinSampleMargin": km.metrics.MinSampleMargin,
}

# Per-sample ops that gather the target column: (fn(labels, a, b), inputs kind)
OPS = {
    "margin_softmax": lambda y, s, w: km.ops.margin_softmax(y, s, 16.0, m2=0.3),
    "sphereface": lambda y, s, w: km.ops.margin_softmax(y, s, 16.0, m1=1.5),
    "largest_margin_softmax": lambda y, s, w: km.ops.largest_margin_softmax(y, s, 5.0),
    "circle_class_level": lambda y, s, w: km.ops.circle_class_level(y, s),
    "sample_margin": lambda y, s, w: km.ops.sample_margin(y, s),
    "virtual_softmax": lambda y, s, w: km.ops.virtual_softmax(y, s, w),
    "pod_nac": lambda y, s, w: km.ops.pod_terms(y, s, w)[0],
}


def _op_inputs(seed=0):
    rng = np.random.default_rng(seed)
    cos = np.tanh(rng.normal(size=(N, C))).astype("float32")
    feats = rng.normal(size=(N, C)).astype("float32")  # D = C so one array serves both
    kernel = rng.normal(size=(C, C)).astype("float32")
    return cos, feats, kernel


@pytest.mark.parametrize("name", sorted(OPS))
def test_jitted_op_is_nan_exactly_on_invalid_rows(name):
    fn = OPS[name]
    cos, feats, kernel = _op_inputs()
    scores = feats if name in ("virtual_softmax", "pod_nac") else cos
    compiled = jit(lambda y, s, w: fn(y, s, w))
    y = (np.arange(N) % C).astype("int32")
    good = np.asarray(keras.ops.convert_to_numpy(compiled(y, scores, kernel)))
    assert good.shape == (N,) and np.all(np.isfinite(good)), good
    for bad in BAD_LABELS:
        y_bad = y.copy()
        y_bad[2] = bad
        out = np.asarray(keras.ops.convert_to_numpy(compiled(y_bad, scores, kernel)))
        assert np.isnan(out[2]), (bad, out)
        # every other row keeps its exact value (valid rows are multiplied by 1.0)
        np.testing.assert_array_equal(np.delete(out, 2), np.delete(good, 2))
        # eager calls keep raising ValueError
        with pytest.raises(ValueError, match="labels"):
            fn(y_bad, scores, kernel)


def _build(loss_name):
    factory, head_kind, needs_model = LOSSES[loss_name]
    head = HEADS[head_kind]()
    if needs_model:
        model = km.models.MarginModel(_backbone(), head)
    else:
        model = keras.Sequential([_backbone(), head])
    model.compile(keras.optimizers.SGD(0.01), loss=factory(), jit_compile=True)
    return model


def _fit_loss(model, x, y, snapshot):
    for v, value in zip(model.variables, snapshot):
        v.assign(value)
    for v in model.optimizer.variables:
        v.assign(np.zeros(v.shape, v.dtype))
    history = model.fit(x, y, batch_size=N // 2, epochs=1, shuffle=False, verbose=0)
    return history.history["loss"][-1]


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_fit_logs_nan_loss_for_invalid_labels(loss_name):
    x, y = _data()
    model = _build(loss_name)
    model(x[:2])  # build the variables
    snapshot = [np.array(keras.ops.convert_to_numpy(v)) for v in model.variables]
    assert np.isfinite(_fit_loss(model, x, y, snapshot))
    for bad in BAD_LABELS:
        y_bad = y.copy()
        y_bad[-1] = bad  # in the second (last) batch of the epoch
        assert np.isnan(_fit_loss(model, x, y_bad, snapshot)), (loss_name, bad)
    # the train function was compiled once: the bad labels went through XLA, not eager checks
    assert np.isfinite(_fit_loss(model, x, y, snapshot))


@pytest.mark.parametrize("loss_name", sorted(n for n, v in LOSSES.items() if not v[2]))
def test_direct_jitted_loss_call_is_nan(loss_name):
    factory, head_kind, _ = LOSSES[loss_name]
    loss = factory()
    x, y = _data()
    head = HEADS[head_kind]()
    emb = _backbone()(x)
    scores = head(emb, training=True)
    compiled = jit(lambda yy, ss: loss(yy, ss))
    assert np.isfinite(float(compiled(y, scores)))
    for bad in BAD_LABELS:
        y_bad = y.copy()
        y_bad[0] = bad
        assert np.isnan(float(compiled(y_bad, scores))), (loss_name, bad)
        with pytest.raises(ValueError, match="labels"):
            loss(y_bad, scores)


@pytest.mark.parametrize("metric_name", sorted(METRICS))
def test_jitted_metrics_are_nan(metric_name):
    cos, _, _ = _op_inputs()
    y = (np.arange(N) % C).astype("int32")
    for bad in (None,) + BAD_LABELS:
        metric = METRICS[metric_name]()
        y_in = y.copy()
        if bad is not None:
            y_in[1] = bad

        def update(yy, ss, metric=metric):
            state = [v.value for v in metric.variables]
            new_state = metric.stateless_update_state(state, yy, ss)
            return metric.stateless_result(new_state)

        value = float(jit(update)(y_in, cos))
        assert np.isfinite(value) if bad is None else np.isnan(value), (metric_name, bad, value)


@pytest.mark.parametrize("metric_name", sorted(METRICS))
def test_metrics_in_compiled_fit_are_nan(metric_name):
    x, y = _data()
    model = keras.Sequential([_backbone(), km.layers.LargestMarginHead(C)])
    model.compile(keras.optimizers.SGD(0.0), loss=km.losses.NormFace(),
                  metrics=[METRICS[metric_name]()], jit_compile=True)
    key = METRICS[metric_name]().name
    logs = model.evaluate(x, y, batch_size=N // 2, verbose=0, return_dict=True)
    assert np.isfinite(logs[key])
    y_bad = y.copy()
    y_bad[0] = C
    logs = model.evaluate(x, y_bad, batch_size=N // 2, verbose=0, return_dict=True)
    assert np.isnan(logs[key]) and np.isnan(logs["loss"]), logs


def test_pair_losses_accept_any_integer_label():
    """PairCircleLoss compares labels for equality only: −1 or 100 are ordinary classes."""
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(N, D)).astype("float32")
    y = np.array([0, 0, 1, 1, 2, 2])
    relabelled = np.array([-1, -1, 100, 100, 7, 7])
    loss = km.losses.PairCircleLoss()
    compiled = jit(lambda yy, ee: loss(yy, ee))
    a = float(compiled(y, emb))
    b = float(compiled(relabelled, emb))
    assert np.isfinite(a) and a > 0
    np.testing.assert_allclose(b, a, rtol=1e-6)
    np.testing.assert_allclose(float(loss(relabelled, emb)), a, rtol=1e-6)
