"""Preemption: ``keras.callbacks.BackupAndRestore`` with a ``MarginModel`` and a stateful loss.

A run interrupted after epoch k and resumed from the backup must end exactly where the
uninterrupted run ends: same predictions, and the same loss state (``LossEnsemble``'s a_k /
c_k and running means, ``POD``'s δ and norm sums under ``PODDelta``, ``PartialFC``'s sampler
step). ``MarginModel`` builds at construction when the backbone has a ``keras.Input`` (as
``keras.Sequential`` does), which ``BackupAndRestore`` requires on TensorFlow.
"""

import keras
import numpy as np
import pytest

import keras_margins as km

EPOCHS, INTERRUPT_AFTER = 4, 2  # epochs in all; the first run stops after epoch 2 (1-based)
N, D, C = 32, 6, 4


class _Interrupt(keras.callbacks.Callback):
    """Raises at the end of epoch ``after`` (1-based), like a preempted job."""

    def __init__(self, after):
        super().__init__()
        self.after = after

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.after:
            raise RuntimeError("preempted")


def _data():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(C), N // C)  # batches of 8 in order: pairs of every class present
    y = y.reshape(C, -1).T.reshape(-1).astype("int32")
    x = (rng.normal(size=(N, 5)) + y[:, None]).astype("float32")
    return x, y


def _backbone():
    return keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(D)]
    )


def _ensemble():
    return km.losses.LossEnsemble(
        [km.losses.ArcFace(scale=16.0, margin=0.2), km.losses.PairCircleLoss()]
    ), km.layers.LargestMarginHead(C)


def _pod():
    return km.losses.POD(delta=0.05), km.layers.PEDCCHead(C)


def _pod_ensemble():
    return km.losses.LossEnsemble([km.losses.POD(), km.losses.NormFace()]), km.layers.PEDCCHead(C)


def _partial_fc():
    loss = km.losses.PartialFC(km.losses.CosFace(scale=16.0), sample_rate=0.5, seed=3)
    return loss, km.layers.LargestMarginHead(C)


CASES = {
    "LossEnsemble": _ensemble,
    "POD": _pod,
    "LossEnsemble[POD,NormFace]": _pod_ensemble,
    "PartialFC": _partial_fc,
}


def _model(case, seed):
    keras.utils.set_random_seed(seed)
    loss, head = CASES[case]()
    model = km.models.MarginModel(_backbone(), head)
    assert model.built  # built at construction: the backbone has an Input
    model.compile(keras.optimizers.Adam(1e-2), loss=loss, jit_compile=True)
    return model, loss


def _callbacks(loss):
    has_pod = isinstance(loss, km.losses.POD) or any(
        isinstance(m, km.losses.POD) for m in getattr(loss, "members", [])
    )
    # PODDelta first: δ must be updated before BackupAndRestore saves the epoch.
    return [km.callbacks.PODDelta()] if has_pod else []


def _state(model, loss):
    """Every variable of the model (weights + loss state) and, for ensembles, c_k."""
    out = [(v.name, np.array(keras.ops.convert_to_numpy(v))) for v in model.variables]
    out += [(v.name, np.array(keras.ops.convert_to_numpy(v))) for v in model.optimizer.variables]
    if isinstance(loss, km.losses.LossEnsemble):
        out.append(("c_k", np.array(keras.ops.convert_to_numpy(loss.coefficients))))
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_resume_after_interruption_equals_uninterrupted_run(case, tmp_path):
    x, y = _data()
    fit = dict(batch_size=8, shuffle=False, verbose=0)

    model, loss = _model(case, seed=1)
    model.fit(x, y, epochs=EPOCHS, callbacks=_callbacks(loss), **fit)
    expected_pred, expected_state = model.predict(x, verbose=0), _state(model, loss)

    backup = str(tmp_path / "backup")
    model, loss = _model(case, seed=1)
    with pytest.raises(RuntimeError, match="preempted"):
        model.fit(
            x, y, epochs=EPOCHS,
            callbacks=_callbacks(loss) + [
                keras.callbacks.BackupAndRestore(backup), _Interrupt(INTERRUPT_AFTER)],
            **fit,
        )

    # a new process would build a fresh model (other initial weights) and resume from the backup
    model, loss = _model(case, seed=2)
    history = model.fit(
        x, y, epochs=EPOCHS,
        callbacks=_callbacks(loss) + [keras.callbacks.BackupAndRestore(backup)], **fit
    )
    assert len(history.history["loss"]) == EPOCHS - INTERRUPT_AFTER  # resumed, not restarted
    np.testing.assert_array_equal(model.predict(x, verbose=0), expected_pred)
    state = _state(model, loss)
    assert len(state) == len(expected_state)  # same variables, same order (names differ by model)
    for (key, got), (_, want) in zip(state, expected_state):
        np.testing.assert_array_equal(got, want, err_msg=key)
    if "POD" in case:  # δ moved off its start value, and the norm sums are the last epoch's
        pod = loss if isinstance(loss, km.losses.POD) else loss.members[0]
        assert float(keras.ops.convert_to_numpy(pod.state["delta"])) != pytest.approx(0.05)
        assert float(keras.ops.convert_to_numpy(pod.state["count"])) == N


def test_margin_model_builds_at_construction_only_with_a_known_input_shape():
    built = km.models.MarginModel(_backbone(), km.layers.LargestMarginHead(C))
    assert built.built and len(built.weights) == 5  # 2 Dense layers + the head's kernel
    unbuilt = km.models.MarginModel(
        keras.Sequential([keras.layers.Dense(D)]), km.layers.LargestMarginHead(C)
    )
    assert not unbuilt.built
    x, _ = _data()
    np.testing.assert_array_equal(unbuilt(x).shape, (N, C))
