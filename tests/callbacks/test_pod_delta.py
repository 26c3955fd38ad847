"""km.callbacks.PODDelta: δ = α·(e+1)·mean norm after epoch e (Zhu & Zu's schedule)."""

import keras
import numpy as np
import pytest

import keras_margins as km


def _model():
    backbone = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8)])
    return km.models.MarginModel(backbone, km.layers.PEDCCHead(4))


def _data(n=24):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 6)).astype("float32"), (np.arange(n) % 4).astype("int32")


@pytest.mark.parametrize("source", ["logits", "features"])
def test_schedule_with_frozen_weights(source):
    x, y = _data()
    model = _model()
    loss = km.losses.POD(delta=0.05)
    # lr = 0: the features stay fixed, so the epoch mean norm is known exactly
    model.compile(keras.optimizers.SGD(0.0), loss=loss, jit_compile=True)
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: seen.append(float(loss.state["delta"]))
    )
    history = model.fit(
        x, y, batch_size=8, epochs=3, verbose=0,
        callbacks=[record, km.callbacks.PODDelta(alpha=0.01, norm_source=source)],
    )
    features = keras.ops.convert_to_numpy(model.backbone(x))
    vectors = features @ model.head.kernel.numpy() if source == "logits" else features
    mean_norm = np.mean([np.linalg.norm(v) for v in vectors])
    expected = [0.01 * (e + 1) * mean_norm for e in range(3)]
    assert seen == pytest.approx([0.05] + expected[:2], rel=1e-5)  # δ = 0.05 during epoch 0
    assert history.history["pod_delta"] == pytest.approx(expected, rel=1e-5)
    assert float(loss.state["count"]) == len(x)  # reset at each epoch start


def test_errors():
    with pytest.raises(ValueError, match="alpha"):
        km.callbacks.PODDelta(alpha=0.0)
    with pytest.raises(ValueError, match="norm_source"):
        km.callbacks.PODDelta(norm_source="weights")
    x, y = _data()
    model = _model()
    model.compile("adam", loss=km.losses.ArcFace())
    with pytest.raises(ValueError, match="POD"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[km.callbacks.PODDelta()])
