"""The inference-output switch shared by ``MarginModel`` and ``EnsembleModel``."""


class OnePassOutputs:
    """Mixin for a ``keras.Model`` whose ``call`` returns a dict of outputs in training (handed
    by Keras' train step to ``compute_loss`` / ``compute_metrics``) and a single tensor in
    inference. ``evaluate`` / ``test_on_batch`` set ``_dict_in_inference`` while the step is
    traced so the loss sees the same dict from one forward pass; ``predict`` /
    ``predict_on_batch`` clear it. ``call`` reads ``self._dict_in_inference``.
    """

    _dict_in_inference = False

    def _with_outputs(self, structured, method, *args, **kwargs):
        previous = self._dict_in_inference
        self._dict_in_inference = structured
        try:
            return method(*args, **kwargs)
        finally:
            self._dict_in_inference = previous

    def evaluate(self, *args, **kwargs):
        return self._with_outputs(True, super().evaluate, *args, **kwargs)

    def test_on_batch(self, *args, **kwargs):
        return self._with_outputs(True, super().test_on_batch, *args, **kwargs)

    def predict(self, *args, **kwargs):
        return self._with_outputs(False, super().predict, *args, **kwargs)

    def predict_on_batch(self, *args, **kwargs):
        return self._with_outputs(False, super().predict_on_batch, *args, **kwargs)
