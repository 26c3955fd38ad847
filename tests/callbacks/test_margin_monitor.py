import keras
import numpy as np
import pytest

import keras_margins as km


def test_margin_monitor_logs_class_margin():
    head = km.layers.LargestMarginHead(3)
    model = keras.Sequential([keras.Input((4,)), head])
    model.compile("adam", loss=km.losses.CosFace(), jit_compile=True)
    x = np.random.default_rng(0).normal(size=(12, 4)).astype("float32")
    hist = model.fit(x, np.arange(12) % 3, epochs=2, verbose=0, callbacks=[km.callbacks.MarginMonitor(head)])
    assert len(hist.history["class_margin"]) == 2
    w = np.asarray(head.kernel)
    w = w / np.linalg.norm(w, axis=0)
    best = min(np.arccos(np.clip(w[:, a] @ w[:, b], -1, 1)) for a in range(3) for b in range(3) if a != b)
    assert hist.history["class_margin"][-1] == pytest.approx(best, abs=1e-5)
    assert "zero_centroid" in hist.history


def test_margin_monitor_rejects_non_head():
    with pytest.raises(ValueError, match="head"):
        km.callbacks.MarginMonitor(keras.layers.ReLU())
