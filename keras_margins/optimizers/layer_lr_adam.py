"""Adam with per-layer learning-rate multipliers (a faster-learning margin head)."""

import warnings

import keras

from keras_margins._arguments import constructor_arguments, reject_unknown

#: The keyword arguments ``keras.optimizers.Adam`` takes (what ``**kwargs`` may hold).
_ADAM_ARGUMENTS = tuple(constructor_arguments(keras.optimizers.Adam, exclude=()))


def _update_path(variable):
    """The path of the variable ``update_step`` is given: the Keras variable's ``path``
    (JAX and most backends), or the name of the backend variable TensorFlow's optimizer hands
    over (``"model/margin_head/kernel:0"``; under ``tf.distribute``, replica copies add a
    ``/replica_<i>`` segment), without its ``:<index>`` suffix."""
    path = getattr(variable, "path", None)
    if path is None:
        path = str(variable.name).rsplit(":", 1)[0]
    return path


@keras.saving.register_keras_serializable(package="keras_margins")
class LayerLRAdam(keras.optimizers.Adam):
    """Adam with per-layer learning-rate multipliers.

    A variable whose path (``"model/margin_head/kernel"``) has a segment, before the variable's
    own name, named in ``layer_lr_multipliers`` is updated with ``learning_rate × multiplier``
    (the first such segment from the left decides); every other variable with
    ``learning_rate``. Adam's step does not depend on the gradient's scale, so scaling the
    head's gradients could not do this. The multipliers are looked up from the variables'
    public paths (``build`` maps the model's variables; ``update_step`` reads the path of the
    variable it is given), so it works on the TensorFlow and JAX backends and under XLA, and
    round-trips through ``.keras`` files. A name that matches no trainable variable warns at
    ``build`` (a misspelt layer name would otherwise train at the base rate).

    Args:
        learning_rate: the base learning rate (float or schedule). Default 0.001.
        layer_lr_multipliers: ``{layer name: positive multiplier}``. Default None (plain Adam).
        **kwargs: other ``keras.optimizers.Adam`` arguments (anything else is a
            ``TypeError``).

    Example:
        >>> import keras_margins as km
        >>> opt = km.optimizers.LayerLRAdam(1e-3, layer_lr_multipliers={"margin_head": 10.0})
        >>> opt.layer_lr_multipliers
        {'margin_head': 10.0}

    Reference:
        Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015 (Algorithm 1).
    """

    def __init__(self, learning_rate=0.001, layer_lr_multipliers=None, **kwargs):
        reject_unknown(type(self), [k for k in kwargs if k not in _ADAM_ARGUMENTS], _ADAM_ARGUMENTS)
        super().__init__(learning_rate=learning_rate, **kwargs)
        if layer_lr_multipliers is not None and not isinstance(layer_lr_multipliers, dict):
            raise ValueError(
                "`layer_lr_multipliers` must be None or a dict {layer name: multiplier}; "
                f"got {layer_lr_multipliers!r}."
            )
        multipliers = dict(layer_lr_multipliers or {})
        for name, value in multipliers.items():
            if not isinstance(name, str) or not name or "/" in name:
                raise ValueError(
                    f"`layer_lr_multipliers` keys must be layer names (no '/'); got {name!r}."
                )
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(
                    "`layer_lr_multipliers` values must be positive numbers; "
                    f"got {name!r}: {value!r}."
                )
        self.layer_lr_multipliers = {name: float(v) for name, v in multipliers.items()}
        self._multiplier_by_path = {}

    def multiplier_for(self, path):
        """The learning-rate multiplier of the variable at ``path`` (1.0 when no layer on its
        path is named in ``layer_lr_multipliers``)."""
        for segment in str(path).split("/")[:-1]:
            if segment in self.layer_lr_multipliers:
                return self.layer_lr_multipliers[segment]
        return 1.0

    def build(self, var_list):
        if not self.built and self.layer_lr_multipliers:
            table = {}
            for variable in var_list:
                multiplier = self.multiplier_for(variable.path)
                table[variable.path] = multiplier
                handle = variable.value  # TensorFlow's optimizer hands update_step this tf.Variable
                if getattr(handle, "name", None) is not None:
                    table[_update_path(handle)] = multiplier
            self._multiplier_by_path = table
            used = {segment for path in table for segment in str(path).split("/")[:-1]}
            unused = sorted(set(self.layer_lr_multipliers) - used)
            if unused:
                warnings.warn(
                    f"`layer_lr_multipliers`: no trainable variable lies under a layer named "
                    f"{unused}; those multipliers have no effect.",
                    stacklevel=2,
                )
        super().build(var_list)

    def update_step(self, gradient, variable, learning_rate):
        if self.layer_lr_multipliers:
            path = _update_path(variable)
            multiplier = self._multiplier_by_path.get(path)
            if multiplier is None:  # e.g. a replica copy under tf.distribute
                multiplier = self.multiplier_for(path)
            if multiplier != 1.0:
                learning_rate = learning_rate * multiplier
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["layer_lr_multipliers"] = dict(self.layer_lr_multipliers)
        return config
