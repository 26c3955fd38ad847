"""Adam with per-layer learning-rate multipliers (a faster-learning margin head)."""

import keras


@keras.saving.register_keras_serializable(package="keras_margins")
class LayerLRAdam(keras.optimizers.Adam):
    """Adam with per-layer learning-rate multipliers.

    A variable whose path (``"model/margin_head/kernel"``) has a segment named in
    ``layer_lr_multipliers`` is updated with ``learning_rate × multiplier``; every other
    variable with ``learning_rate``. Adam's step does not depend on the gradient's scale, so
    scaling the head's gradients could not do this. Works on the TensorFlow and JAX backends,
    under XLA, and round-trips through ``.keras`` files.

    Args:
        learning_rate: the base learning rate (float or schedule). Default 0.001.
        layer_lr_multipliers: ``{layer name: positive multiplier}``. Default None (plain Adam).
        **kwargs: other ``keras.optimizers.Adam`` arguments.

    Example:
        >>> import keras_margins as km
        >>> opt = km.optimizers.LayerLRAdam(1e-3, layer_lr_multipliers={"margin_head": 10.0})
        >>> opt.layer_lr_multipliers
        {'margin_head': 10.0}
    """

    def __init__(self, learning_rate=0.001, layer_lr_multipliers=None, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        multipliers = dict(layer_lr_multipliers or {})
        for name, value in multipliers.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(
                    "`layer_lr_multipliers` values must be positive numbers; "
                    f"got {name!r}: {value!r}."
                )
        self.layer_lr_multipliers = {name: float(v) for name, v in multipliers.items()}

    def _multiplier(self, variable):
        if not self.layer_lr_multipliers:
            return 1.0
        keras_variable = self._trainable_variables[self._get_variable_index(variable)]
        for segment in keras_variable.path.split("/")[:-1]:
            if segment in self.layer_lr_multipliers:
                return self.layer_lr_multipliers[segment]
        return 1.0

    def update_step(self, gradient, variable, learning_rate):
        multiplier = self._multiplier(variable)
        if multiplier != 1.0:
            learning_rate = learning_rate * multiplier
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["layer_lr_multipliers"] = dict(self.layer_lr_multipliers)
        return config
