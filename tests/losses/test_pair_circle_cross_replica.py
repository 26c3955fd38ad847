"""PairCircleLoss(cross_replica=True) under tf.distribute.MirroredStrategy (two logical CPUs).

Runs in a child process: logical devices must be configured before TensorFlow initialises.
XLA is off in the child for the reason given in tests/test_distribute.py (TF 2.21 cannot
jit-compile multi-replica steps on logical CPU devices). The reference values are computed
here in NumPy from Sun et al.'s Eq. 1 (log(1 + Σ_n e^{...} Σ_p e^{...})), not from the library.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import keras_margins as km

MARGIN, GAMMA = 0.25, 32.0
X = np.random.default_rng(0).normal(size=(8, 5)).astype("float32")
LABELS = {
    "split": [0, 1, 2, 3, 0, 1, 2, 3],  # every positive pair is split across the replicas
    "mixed": [0, 0, 1, 2, 1, 2, 0, 3],  # some local positives; anchor 7 has none anywhere
}

CHILD = textwrap.dedent(
    """
    import os, sys, json
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    import keras_margins as km

    args = json.loads(sys.argv[1])
    x = np.asarray(args["x"], "float32")
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    out = {"replicas": strategy.num_replicas_in_sync}

    def local(array, dtype):
        def fn(ctx):
            r = ctx.replica_id_in_sync_group
            return tf.constant(np.asarray(array)[4 * r: 4 * r + 4], dtype)
        return strategy.experimental_distribute_values_from_function(fn)

    miners = {"none": None, "batch_hard": km.miners.BatchHardMiner}
    for labels_name, labels in args["labels"].items():
        for cross in (False, True):
            for miner_name, miner in miners.items():
                loss = km.losses.PairCircleLoss(
                    margin=args["margin"], gamma=args["gamma"], cross_replica=cross,
                    miner=None if miner is None else miner())

                def step(xl, yl):
                    with tf.GradientTape() as tape:
                        tape.watch(xl)
                        value = loss(yl, xl)
                    return value, tape.gradient(value, xl)

                value, grad = strategy.run(step, args=(local(x, tf.float32), local(labels, tf.int32)))
                key = f"{labels_name}/{cross}/{miner_name}"
                out[key] = {
                    "values": [float(v) for v in strategy.experimental_local_results(value)],
                    "grad": np.concatenate(
                        [g.numpy() for g in strategy.experimental_local_results(grad)]).tolist(),
                }
        # Through Keras: evaluate a headless MarginModel on the batch of 8 (one step).
        for cross in (False, True):
            with strategy.scope():
                model = km.models.MarginModel(keras.Sequential([keras.Input((5,)), keras.layers.Identity()]))
                model.compile("sgd", loss=km.losses.PairCircleLoss(
                    margin=args["margin"], gamma=args["gamma"], cross_replica=cross), jit_compile=False)
            out[f"{labels_name}/{cross}/evaluate"] = model.evaluate(
                x, np.asarray(labels), batch_size=8, verbose=0)

    # A short fit on class-balanced digits batches: finite, decreasing loss.
    (xd, yd), _ = km.data.digits_zero_shot()
    keras.utils.set_random_seed(0)
    with strategy.scope():
        backbone = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"),
                                     keras.layers.Dense(16)])
        model = km.models.MarginModel(backbone)
        model.compile(keras.optimizers.Adam(3e-3), loss=km.losses.PairCircleLoss(
            cross_replica=True, miner=km.miners.MultiSimilarityMiner()), jit_compile=False)
    history = model.fit(km.data.pk_batches((xd, yd), p=4, k=8, seed=0, steps_per_epoch=10),
                        epochs=3, verbose=0)
    out["fit"] = history.history["loss"]
    print("RESULT" + json.dumps(out))
    """
)


def _anchor_loss_np(x, labels, anchor, refs, margin, gamma, miner=None):
    """Eq. 1 of Sun et al. for one anchor against the reference rows ``refs`` (None: no pair)."""
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    pos = [j for j in refs if labels[j] == labels[anchor] and j != anchor]
    neg = [j for j in refs if labels[j] != labels[anchor]]
    if not pos or not neg:
        return None
    s = {j: float(unit[anchor] @ unit[j]) for j in refs}
    if miner == "batch_hard":  # hardest positive (lowest), hardest negative (highest)
        pos = [min(pos, key=lambda j: (s[j], j))]
        neg = [max(neg, key=lambda j: (s[j], -j))]
    sum_p = sum(np.exp(-gamma * max(1 + margin - s[j], 0) * (s[j] - (1 - margin))) for j in pos)
    sum_n = sum(np.exp(gamma * max(s[j] + margin, 0) * (s[j] - margin)) for j in neg)
    return float(np.log1p(sum_n * sum_p))


def _replica_value_np(x, labels, replica, cross, miner=None):
    """One replica's reported value: mean over its valid anchors, divided by 2 replicas."""
    rows = range(4 * replica, 4 * replica + 4)
    refs = range(8) if cross else rows
    losses = [_anchor_loss_np(x, labels, i, refs, MARGIN, GAMMA, miner) for i in rows]
    valid = [v for v in losses if v is not None]
    return (sum(valid) / len(valid) if valid else 0.0) / 2.0


def _single_device_np(x, labels, miner=None):
    losses = [_anchor_loss_np(x, labels, i, range(8), MARGIN, GAMMA, miner) for i in range(8)]
    valid = [v for v in losses if v is not None]
    return sum(valid) / len(valid)


@pytest.fixture(scope="module")
def child_results():
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    payload = json.dumps({"x": X.tolist(), "labels": LABELS, "margin": MARGIN, "gamma": GAMMA})
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, payload], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


@pytest.mark.tf_only  # tf.distribute.MirroredStrategy
@pytest.mark.parametrize("labels_name", sorted(LABELS))
@pytest.mark.parametrize("miner", ["none", "batch_hard"])
@pytest.mark.parametrize("cross", [False, True])
def test_per_replica_values_match_numpy(child_results, labels_name, miner, cross):
    assert child_results["replicas"] == 2
    labels = np.array(LABELS[labels_name])
    got = child_results[f"{labels_name}/{cross}/{miner}"]
    expected = [_replica_value_np(X, labels, r, cross, None if miner == "none" else miner) for r in (0, 1)]
    np.testing.assert_allclose(got["values"], expected, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(got["grad"]))


@pytest.mark.tf_only  # tf.distribute.MirroredStrategy
@pytest.mark.parametrize("miner", ["none", "batch_hard"])
def test_cross_replica_equals_single_device_loss_on_the_global_batch(child_results, miner):
    labels = np.array(LABELS["split"])
    m = None if miner == "none" else miner
    cross = child_results[f"split/True/{miner}"]
    within = child_results[f"split/False/{miner}"]
    # Every anchor is valid and each replica holds 4: the mean of the replica means is the
    # single-device mean over the 8 anchors.
    np.testing.assert_allclose(sum(cross["values"]), _single_device_np(X, labels, m), rtol=1e-5)
    # Within a replica no anchor has a positive: loss 0 and no gradient.
    assert sum(within["values"]) == 0.0 and not np.any(within["grad"])
    assert np.any(np.asarray(cross["grad"]) != 0)


@pytest.mark.tf_only  # tf.distribute.MirroredStrategy
def test_keras_step_under_the_strategy(child_results):
    labels = np.array(LABELS["split"])
    reference = _single_device_np(X, labels)
    np.testing.assert_allclose(child_results["split/True/evaluate"], reference, rtol=1e-5)
    assert abs(child_results["split/False/evaluate"] - reference) > 1e-3
    losses = child_results["fit"]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses


def test_no_op_without_a_strategy_and_config():
    rng = np.random.default_rng(1)
    x, labels = rng.normal(size=(12, 4)).astype("float32"), np.repeat(np.arange(4), 3)
    for miner in (None, km.miners.SemiHardMiner()):
        plain = km.losses.PairCircleLoss(miner=miner)
        cross = km.losses.PairCircleLoss(miner=miner, cross_replica=True)
        np.testing.assert_allclose(float(cross(labels, x)), float(plain(labels, x)), rtol=0, atol=0)
    clone = km.testing.config_roundtrip(km.losses.PairCircleLoss(cross_replica=True))
    assert clone.get_config()["cross_replica"] is True
    assert km.losses.PairCircleLoss().get_config()["cross_replica"] is False


def test_references_with_self_offset_match_the_square_form():
    """circle_pairwise against the batch itself given as references (self at offset 0)
    equals the in-batch form, and a shifted copy with self_offset equals it too."""
    rng = np.random.default_rng(2)
    x, labels = rng.normal(size=(6, 3)).astype("float32"), np.array([0, 0, 1, 1, 2, 0])
    square = np.asarray(km.ops.circle_pairwise(labels, x))
    refs = np.concatenate([rng.normal(size=(4, 3)).astype("float32"), x])
    ref_labels = np.concatenate([[3, 3, 4, 4], labels])
    got = np.asarray(km.ops.circle_pairwise(labels, x, ref_embeddings=refs, ref_labels=ref_labels,
                                            self_offset=4))
    # anchor i is reference row 4 + i: its own row is not a positive
    expected = [_anchor_loss_np(refs, ref_labels, 4 + i, range(10), 0.4, 80.0) for i in range(6)]
    np.testing.assert_allclose(got, [0.0 if e is None else e for e in expected], rtol=1e-5, atol=1e-6)
    assert np.all(got >= square * (1 - 1e-5))  # more negatives never lower an anchor's loss
    assert got[0] > square[0]
    with pytest.raises(ValueError, match="ref_labels"):
        km.ops.circle_pairwise(labels, x, ref_embeddings=refs)


def _replica_value_live_np(live, x, labels, replica):
    """Replica ``replica``'s value (no miner) as a function of its own rows ``live`` (4, D),
    float64. The other replica's rows are constants, and so are the pair weights α (computed
    from the unperturbed ``x``: Sun et al.'s weights are not differentiated through)."""
    rows = range(4 * replica, 4 * replica + 4)
    full = np.array(x, "float64")
    full[4 * replica: 4 * replica + 4] = live
    unit = full / np.linalg.norm(full, axis=1, keepdims=True)
    fixed = np.asarray(x, "float64") / np.linalg.norm(x, axis=1, keepdims=True)
    losses = []
    for i in rows:
        pos = [j for j in range(8) if labels[j] == labels[i] and j != i]
        neg = [j for j in range(8) if labels[j] != labels[i]]
        if not pos or not neg:
            continue
        sum_p = sum(np.exp(-GAMMA * max(1 + MARGIN - fixed[i] @ fixed[j], 0)
                           * (unit[i] @ unit[j] - (1 - MARGIN))) for j in pos)
        sum_n = sum(np.exp(GAMMA * max(fixed[i] @ fixed[j] + MARGIN, 0)
                           * (unit[i] @ unit[j] - MARGIN)) for j in neg)
        losses.append(np.log1p(sum_n * sum_p))
    return (sum(losses) / len(losses) if losses else 0.0) / 2.0


def _numerical_gradient(fn, point, step=1e-6):
    grad = np.zeros_like(point)
    for index in np.ndindex(point.shape):
        up, down = point.copy(), point.copy()
        up[index] += step
        down[index] -= step
        grad[index] = (fn(up) - fn(down)) / (2 * step)
    return grad


@pytest.mark.tf_only  # tf.distribute.MirroredStrategy
@pytest.mark.parametrize("labels_name", sorted(LABELS))
def test_cross_replica_gradient_routing(child_results, labels_name):
    """Each replica's gradient w.r.t. its rows = the gradient of its value computed against
    the global batch in which the other replica's rows are constants and its own are live
    (central differences of a NumPy reference, independent of the library)."""
    labels = np.array(LABELS[labels_name])
    got = np.asarray(child_results[f"{labels_name}/True/none"]["grad"])
    x64 = X.astype("float64")
    for r in (0, 1):
        rows = slice(4 * r, 4 * r + 4)
        value = _replica_value_live_np(x64[rows], x64, labels, r)
        # (rel 1e-6: the other reference normalises the float32 X in float32)
        assert value == pytest.approx(_replica_value_np(X, labels, r, cross=True), rel=1e-6)
        want = _numerical_gradient(
            lambda live: _replica_value_live_np(live, x64, labels, r), x64[rows])
        assert np.any(want != 0)
        np.testing.assert_allclose(got[rows], want, rtol=1e-3, atol=1e-5)
