"""Losses defined on cosines refuse values outside [−1, 1] beyond rounding.

Raw embeddings or logits given where a loss expects a cosine head's (N, C) output used to
return a number. Now (``km.losses._base.check_cosine_range`` / ``poison_out_of_range``):
eager calls raise a ``ValueError`` naming ``y_pred``; inside compiled graphs (a jitted call,
``fit`` with ``jit_compile=True``) the values cannot be read, and the rows out of range make
the loss NaN. Values within the documented slack (|cos| <= 1 + 1e-3, float16 heads round up)
are accepted. Every loss class that declares ``score_kind = "cosine"`` and takes the head's
scores is in the table, found through its declaration.

Also here: invalid labels under XLA must make the *gradient* NaN too (not only the loss), so
that a wrong label cannot train on with finite weights.
"""

import keras
import numpy as np
import pytest

import keras_margins as km
from keras_margins.losses._base import COSINE_SLACK
from keras_margins.testing import jit

N, C, D = 6, 5, 4
RNG = np.random.default_rng(0)
LABELS = (np.arange(N) % C).astype("int32")
COS = np.tanh(RNG.normal(size=(N, C))).astype("float32")
RAW = (3.0 * RNG.normal(size=(N, C))).astype("float32")  # embeddings / logits: |v| up to ~8


def _cosine_losses():
    found = {}
    for name in sorted(dir(km.losses)):
        cls = getattr(km.losses, name)
        if (isinstance(cls, type) and issubclass(cls, keras.losses.Loss)
                and getattr(cls, "needs", "scores") == "scores"
                and getattr(cls, "score_kind", None) == "cosine"):
            found[cls.__name__] = cls
    return found


COSINE_LOSSES = _cosine_losses()
NAMES = sorted(COSINE_LOSSES)


def test_the_table_holds_the_losses_of_the_issue():
    for name in ("ArcFace", "CosFace", "SphereFace", "NormFace", "MarginSoftmax", "LargestMarginSoftmax",
                 "CircleLoss", "ProxyNCALoss"):
        assert name in COSINE_LOSSES, name


@pytest.mark.parametrize("name", NAMES)
def test_eager_values_outside_the_range_raise(name):
    loss = COSINE_LOSSES[name]()
    assert np.isfinite(float(loss(LABELS, COS)))  # control: cosines are fine
    with pytest.raises(ValueError, match=r"y_pred.*cosines"):
        loss(LABELS, RAW)
    one_row = COS.copy()
    one_row[3, 1] = -1.0 - 2 * COSINE_SLACK  # one value just beyond the slack
    with pytest.raises(ValueError, match="y_pred"):
        loss(LABELS, one_row)


@pytest.mark.parametrize("name", NAMES)
def test_rounding_within_the_slack_is_accepted(name):
    loss = COSINE_LOSSES[name]()
    edge = COS.copy()
    edge[0, 0], edge[1, 2] = 1.0 + 0.5 * COSINE_SLACK, -1.0 - 0.5 * COSINE_SLACK
    assert np.isfinite(float(loss(LABELS, edge)))
    # float16 heads: the first float16 above 1 is 1 + 2^-10 < 1 + slack
    keras.mixed_precision.set_global_policy("mixed_float16")
    half = COS.astype("float16")
    half[0, 0] = np.float16(1.0) + np.float16(2.0**-10)
    assert np.isfinite(float(COSINE_LOSSES[name]()(LABELS, half)))


@pytest.mark.parametrize("name", NAMES)
def test_jitted_call_is_nan_outside_the_range(name):
    loss = COSINE_LOSSES[name]()
    compiled = jit(lambda y, c: loss(y, c))
    np.testing.assert_allclose(float(compiled(LABELS, COS)), float(loss(LABELS, COS)), rtol=1e-5)
    assert np.isnan(float(compiled(LABELS, RAW)))
    one_row = COS.copy()
    one_row[2, 4] = 1.0 + 2 * COSINE_SLACK
    per_row = jit(lambda y, c: COSINE_LOSSES[name](reduction=None)(y, c))(LABELS, one_row)
    per_row = np.asarray(keras.ops.convert_to_numpy(per_row))
    assert np.isnan(per_row[2]) and np.all(np.isfinite(np.delete(per_row, 2))), per_row


@pytest.mark.parametrize("name", ["ArcFace", "ProxyNCALoss", "CircleLoss", "LargestMarginSoftmax"])
def test_compiled_fit_on_logits_is_nan(name):
    """A plain Dense head (logits, not cosines) compiled with a cosine loss: the compiled
    step's loss is NaN (a cosine head trains normally: the control)."""
    x = RNG.normal(size=(N, D)).astype("float32") * 5.0
    losses = {}
    for head in ("dense", "cosine"):
        keras.utils.set_random_seed(0)
        last = (keras.layers.Dense(C, use_bias=False, kernel_initializer=keras.initializers.Constant(2.0))
                if head == "dense" else km.layers.LargestMarginHead(C))
        model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(8), last])
        model.compile(keras.optimizers.SGD(0.01), loss=COSINE_LOSSES[name](), jit_compile=True)
        losses[head] = model.fit(x, LABELS, batch_size=N, epochs=1, verbose=0).history["loss"][0]
    assert np.isnan(losses["dense"]) and np.isfinite(losses["cosine"]), losses


# ------------------------------------------------ invalid labels: the gradient must be NaN too
# A label >= C used to lose the NaN in the target gather's backward (the out-of-range index is
# dropped), and CircleLoss's invalid row in a where(valid, ..., 0.0); now the gather reads a
# clipped index and CircleLoss poisons through an anchor (``poison_invalid_labels``).
@pytest.mark.parametrize(
    "name, bad",
    [("CircleLoss", C), ("CircleLoss", 100), ("CircleLoss", -1), ("ArcFace", C), ("ArcFace", -1),
     ("LargestMarginSoftmax", C), ("ProxyNCALoss", C)],
)
def test_invalid_label_under_xla_makes_loss_and_weights_nan(name, bad):
    """One compiled SGD step with an invalid label: the loss is NaN and so is the step's
    update (NaN weights), instead of a finite step that trains on."""
    x = RNG.normal(size=(N, D)).astype("float32")
    y = LABELS.copy()
    y[-1] = bad
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(8), km.layers.LargestMarginHead(C)])
    model.compile(keras.optimizers.SGD(0.1), loss=COSINE_LOSSES[name](), jit_compile=True)
    loss = model.fit(x, y, batch_size=N, epochs=1, verbose=0, shuffle=False).history["loss"][0]
    weights = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    assert np.isnan(loss)
    assert not all(np.all(np.isfinite(w)) for w in weights), "the invalid label trained with finite weights"


# ------------------------------------------------------------- benchmarks/cosine_check.py
def _load_benchmark():
    from repo_scripts import BENCHMARKS, load_script

    return load_script(BENCHMARKS / "cosine_check.py", "cosine_check", on_path=True)


@pytest.mark.tf_only  # the step_time.py harness (tf.function)
def test_benchmark_arms_differ_only_by_the_check(tmp_path):
    """The 'without' arm really traces without the check (raw values pass), the functions
    come back afterwards, and the script runs end to end at tiny sizes."""
    bench = _load_benchmark()
    loss = km.losses.ArcFace()
    with bench.cosine_check(False):
        unchecked = jit(lambda y, c: loss(y, c))
        assert np.isfinite(float(unchecked(LABELS, RAW)))
        assert np.isfinite(float(loss(LABELS, RAW)))  # eager: no ValueError either
    assert np.isnan(float(jit(lambda y, c: loss(y, c))(LABELS, RAW)))
    with pytest.raises(ValueError, match="y_pred"):
        loss(LABELS, RAW)
    payload = bench.main(["--classes", "10", "--losses", "ArcFace", "--batch", "8", "--dim", "4",
                          "--repeats", "2", "--warmup", "1", "--out-dir", str(tmp_path / "out"),
                          "--markdown", str(tmp_path / "RESULTS.md")])
    (row,) = payload["rows"]
    assert row["loss"] == "ArcFace" and row["ratio"]["cpu"]["n"] == 2
    assert row["first_losses"][0] == pytest.approx(row["first_losses"][1], rel=1e-6)
    assert "<!-- cosine_check:start -->" in (tmp_path / "RESULTS.md").read_text()
