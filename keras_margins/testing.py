"""Test utilities for code built on keras_margins (used by our own test-suite too).

Small public equivalents of Keras' private layer-test helpers.
"""

import os
import tempfile

import keras
import numpy as np


def config_roundtrip(obj):
    """Serialise ``obj`` with Keras and back (``safe_mode=True``); assert the config survives.

    Args:
        obj: a Keras-serialisable object (layer, loss, regulariser, miner...).

    Returns:
        The deserialised clone.
    """
    serialized = keras.saving.serialize_keras_object(obj)
    clone = keras.saving.deserialize_keras_object(serialized, safe_mode=True)
    assert type(clone) is type(obj), (type(clone), type(obj))
    assert clone.get_config() == obj.get_config(), (clone.get_config(), obj.get_config())
    return clone


def assert_save_load_identical(model, x, directory=None, atol=0.0):
    """``model.save(".keras")`` then ``load_model(safe_mode=True)``: predictions must match.

    Args:
        model: a built Keras model.
        x: inputs to predict on.
        directory: where to write ``model.keras`` (default None: a new temporary folder).
        atol: allowed absolute difference (default 0.0: bit-identical outputs).

    Returns:
        The reloaded model.
    """
    directory = directory or tempfile.mkdtemp(prefix="km_roundtrip_")
    path = os.path.join(str(directory), "model.keras")
    before = model.predict(x, verbose=0)
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    after = reloaded.predict(x, verbose=0)
    for b, a in zip(_flatten(before), _flatten(after)):
        np.testing.assert_allclose(a, b, rtol=0, atol=atol)
    return reloaded


def _flatten(value):
    if isinstance(value, dict):
        return [value[k] for k in sorted(value)]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def finite_difference_grad(fn, x, eps=1e-6):
    """Central finite differences of a scalar NumPy function ``fn`` at a float64 array ``x``.

    Args:
        fn: function of one float64 array returning a float.
        x: the point (array-like).
        eps: step (default 1e-6).

    Returns:
        A float64 array shaped like ``x``.
    """
    x = np.array(x, dtype="float64")
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        idx = it.multi_index
        orig = x[idx]
        x[idx] = orig + eps
        plus = fn(x)
        x[idx] = orig - eps
        minus = fn(x)
        x[idx] = orig
        grad[idx] = (plus - minus) / (2 * eps)
    return grad


def value_and_grad(fn, *arrays):
    """Value of the scalar ``fn(*tensors)`` and its gradient with respect to every argument.

    Backend-agnostic: ``tf.GradientTape`` on TensorFlow, ``jax.value_and_grad`` on JAX,
    ``torch.autograd`` on PyTorch. Each array goes through ``keras.ops.convert_to_tensor``
    (its dtype is kept). Returns ``(value, grads)``: a float and one NumPy array per argument
    (zeros where the value does not depend on it).

        value, (gx, gw) = value_and_grad(
            lambda x, w: keras.ops.sum(km.ops.cosine_similarity(x, w)), x, w)
    """
    tensors = [keras.ops.convert_to_tensor(a) for a in arrays]
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(tensors)
            value = _scalar(fn(*tensors))
        grads = tape.gradient(value, tensors, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    elif backend == "jax":
        import jax

        value, grads = jax.value_and_grad(
            lambda *t: _scalar(fn(*t)), argnums=tuple(range(len(tensors)))
        )(*tensors)
    elif backend == "torch":
        import torch

        tensors = [t.detach().requires_grad_(True) for t in tensors]
        value = _scalar(fn(*tensors))
        grads = torch.autograd.grad(value, tensors, allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads)]
    else:
        raise NotImplementedError(f"value_and_grad: no gradient support for backend {backend!r}.")
    return float(keras.ops.convert_to_numpy(value)), [
        np.asarray(keras.ops.convert_to_numpy(g)) for g in grads
    ]


def value_and_grad_of_variables(fn, variables):
    """Value of the scalar ``fn()`` and its gradient with respect to Keras ``variables``.

    ``fn`` reads the variables (a model's forward pass and loss, say); it runs in a
    ``keras.StatelessScope`` whose variable values are the differentiated inputs, so
    assignments ``fn`` makes to variables are discarded on every backend.

        loss, grads = value_and_grad_of_variables(
            lambda: model.compute_loss(x, y, model(x, training=True)), model.trainable_weights)
    """
    variables = list(variables)

    def stateless(*values):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn()

    return value_and_grad(stateless, *[v.value for v in variables])


def assert_finite_training_step(model, x, y, what=None):
    """One training-mode forward pass and loss of a built ``model`` on ``(x, y)``: the loss and
    every gradient of its trainable weights are finite, and some gradient is non-zero (the
    loss reaches the weights). ``what`` names the case in the assertion messages."""

    def step():
        return model.compute_loss(x, y, model(x, training=True), training=True)

    value, grads = value_and_grad_of_variables(step, model.trainable_weights)
    assert np.isfinite(value), (what, value)
    assert all(np.all(np.isfinite(g)) for g in grads), what
    assert any(np.any(g != 0) for g in grads), what
    return value, grads


def _scalar(value):
    if tuple(value.shape) != ():
        raise ValueError(f"value_and_grad: `fn` must return a scalar; got shape {tuple(value.shape)}.")
    return value


def jit(fn):
    """``fn`` compiled with XLA on the active backend.

    ``tf.function(jit_compile=True)`` on TensorFlow, ``jax.jit`` on JAX; PyTorch gets ``fn``
    unchanged (it has no XLA path). Used to check that ops trace without dynamic shapes.

        fast = jit(lambda y, c: km.ops.margin_softmax(y, c, 64.0, m2=0.5))
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn
