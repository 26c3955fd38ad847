"""docs/extend.md's examples run as written: a user's own head and loss that declare
themselves compose with MarginModel, PartialFC and the composition checks like the library's."""

import os
import re

import keras
import numpy as np
import pytest

import keras_margins as km

DOC = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "extend.md")


def _blocks():
    return re.findall(r"```python\n(.*?)```", open(DOC).read(), flags=re.S)


def _namespace():
    backbone = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16)])
    namespace = {"backbone": backbone}
    for block in _blocks():
        exec(compile(block, DOC, "exec"), namespace)
    return namespace


def test_user_head_trains_with_partial_fc():
    ns = _namespace()
    model = ns["model"]
    assert isinstance(model.loss, km.losses.PartialFC)
    (x, y), _ = km.data.digits_classification()
    history = model.fit(x[:96].astype("float32"), y[:96], batch_size=32, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    assert model.predict(x[:4], verbose=0).shape == (4, 1000)


def test_user_loss_matches_a_numpy_loop_and_composes():
    ns = _namespace()
    loss = ns["SquaredCosineMargin"](margin=0.2, reduction=None)
    rng = np.random.default_rng(0)
    cos = rng.uniform(-1, 1, (5, 4)).astype("float32")
    labels = rng.integers(0, 4, 5)
    expected = [np.mean([max(0.0, cos[i, j] - cos[i, labels[i]] + 0.2) ** 2 if j != labels[i] else 0.0
                         for j in range(4)]) for i in range(5)]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loss(labels, cos)), expected, rtol=1e-5, atol=1e-7)
    with pytest.raises(TypeError, match="margn"):
        ns["SquaredCosineMargin"](margn=0.3)
    # Declared cosine: PartialFC wraps it; a log-probability head is refused at compile.
    km.losses.PartialFC(ns["SquaredCosineMargin"]())
    model = km.models.MarginModel(keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)]),
                                  km.layers.VirtualSoftmaxHead(3))
    with pytest.raises(ValueError, match="cosine"):
        model.compile("adam", loss=ns["SquaredCosineMargin"]())
