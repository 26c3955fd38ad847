"""The few Keras internals (``keras.src``) the library uses, in one place.

Checked on Keras 3.15.1 (with TensorFlow 2.21 and JAX). Each has a fallback for Keras versions
that lack or move it; when upgrading Keras, re-check this file first.
"""

try:  # Keras >= 3.0: divides by the replica count under tf.distribute, as Loss.__call__ does
    from keras.src.losses.loss import scale_loss_for_distribution
except ImportError:  # pragma: no cover - depends on the Keras version

    def scale_loss_for_distribution(value):
        """Fallback: no scaling (single replica)."""
        return value


try:  # Keras >= 3.6
    from keras.src.backend import set_keras_mask
except ImportError:  # pragma: no cover - depends on the Keras version

    def set_keras_mask(tensor, mask):
        """Fallback of Keras < 3.6: masks were a plain attribute."""
        tensor._keras_mask = mask


try:  # Keras >= 3.6: attributes on tensors (an id-keyed table where a type refuses them)
    from keras.src.backend.common.tensor_attributes import get_tensor_attr, set_tensor_attr
except ImportError:  # pragma: no cover - depends on the Keras version

    def set_tensor_attr(tensor, attr, value):
        """Fallback: a plain attribute."""
        setattr(tensor, attr, value)

    def get_tensor_attr(tensor, attr):
        """Fallback: a plain attribute (None when absent)."""
        return getattr(tensor, attr, None)


__all__ = [
    "StateAfterBuild", "get_tensor_attr", "scale_loss_for_distribution", "set_keras_mask",
    "set_tensor_attr",
]


class StateAfterBuild:
    """Mixin for a ``keras.Model`` subclass whose losses add state (``model.add_weight``) at
    ``compile``, after the model was built, as Keras' own Functional and Sequential models
    allow: a built layer otherwise refuses new variables. Keras has no public switch for it
    (Keras 3.x: ``Layer._lock_state`` is the hook Functional/Sequential override)."""

    def _lock_state(self):
        pass
