"""km.models.EnsembleModel (multi-embedding ensemble of losses, Zabihzadeh et al.): loss value,
test embedding and compressed embedding against NumPy references; fit under XLA; .keras."""

import keras
import numpy as np
import pytest

import keras_margins as km
from keras_margins.models.ensemble_terms import diversity_term

F_IN, F, D, C = 6, 5, 4, 3
PENALTY = 100.0 * 100.0


def _backbone():
    return keras.Sequential([keras.Input((F_IN,)), keras.layers.Dense(F, activation="tanh")])


def _members():
    return [
        (keras.losses.SparseCategoricalCrossentropy(from_logits=True), keras.layers.Dense(C)),
        (km.losses.BinomialDevianceLoss(alpha=2.0, beta=0.5, cost=3.0), None),
    ]


def _batch(seed=0, per_class=4):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(C), per_class)
    return rng.normal(size=(len(y), F_IN)).astype("float32"), y


def _np(v):
    return np.asarray(keras.ops.convert_to_numpy(v), "float64")


def _unit(v):
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _dense(layer, v, activation=None):
    out = v @ _np(layer.kernel) + _np(layer.bias)
    return np.tanh(out) if activation == "tanh" else out


def _softmax_ce(labels, logits):
    logits = logits - logits.max(1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return -np.mean([log_probs[i, labels[i]] for i in range(len(labels))])


def _binomial(labels, emb, alpha, beta, cost):
    u = _unit(emb)
    n = len(labels)
    total = 0.0
    for i in range(n):
        same = [j for j in range(n) if j != i and labels[j] == labels[i]]
        other = [j for j in range(n) if labels[j] != labels[i]]
        pos = [np.log1p(np.exp(-alpha * (u[i] @ u[j] - beta))) for j in same]
        neg = [np.log1p(np.exp(alpha * cost * (u[i] @ u[j] - beta))) for j in other]
        total += (np.mean(pos) if pos else 0.0) + (np.mean(neg) if neg else 0.0)
    return total / n


def _reference_embeddings(model, x):
    features = _dense(model.backbone.layers[0], x.astype("float64"), "tanh")
    return [_dense(head, features) for head in model.embedding_heads]


def _compression(model, z):
    g = _dense(model.compress_out, _dense(model.compress_hidden, z, "tanh"))

    def s(v):
        d = np.array([[np.sum((a - b) ** 2) for b in v] for a in v])
        return d / d.sum()

    return len(z) ** 2 * np.sqrt(np.sum((s(g) - s(z)) ** 2))


def test_loss_value_matches_reference():
    x, y = _batch()
    model = km.models.EnsembleModel(_backbone(), _members(), embedding_dim=D, prior=[3, 1],
                                    diversity_weight=0.5)
    model.compile("adam")
    outputs = model(x, training=True)
    got = float(model.compute_loss(x, y, outputs, training=True))

    e0, e1 = _reference_embeddings(model, x)
    raw = np.array([_softmax_ce(y, _dense(model.heads[0], e0)), _binomial(y, e1, 2.0, 0.5, 3.0)])
    c = _np(model.coefficients)
    np.testing.assert_allclose(c, [0.75, 0.25], rtol=1e-5)  # prior 3:1
    mean_distance = np.mean(np.linalg.norm(_unit(e0) - _unit(e1), axis=1))
    diversity = max(2.0 - mean_distance, 0.0)
    # first step: the running means are the batch values, so each term is c_k * mean(raw)
    want = np.sum(c * raw.mean()) + PENALTY * (c.sum() - 1) ** 2 + 0.5 * diversity
    np.testing.assert_allclose(got, want, rtol=2e-5)
    np.testing.assert_allclose(float(model.diversity_tracker.result()), diversity, rtol=2e-5)
    z = np.concatenate([np.sqrt(c[0]) * _unit(e0), np.sqrt(c[1]) * _unit(e1)], axis=1)
    np.testing.assert_allclose(float(model.compression_tracker.result()), _compression(model, z), rtol=1e-4)
    # evaluation mode leaves the running means alone
    before = _np(model.ensemble.running_mean_variable)
    model.compute_loss(x, y, model(x, training=False), training=False)
    np.testing.assert_allclose(_np(model.ensemble.running_mean_variable), before, rtol=0)


def test_predict_is_the_weighted_concatenation_and_compress_matches():
    x, y = _batch(1)
    model = km.models.EnsembleModel(_backbone(), _members(), embedding_dim=D, prior=[1, 3])
    got = model.predict(x, verbose=0)
    e0, e1 = _reference_embeddings(model, x)
    c = _np(model.coefficients)
    want = np.concatenate([np.sqrt(c[0]) * _unit(e0), np.sqrt(c[1]) * _unit(e1)], axis=1)
    assert got.shape == (len(y), 2 * D)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.sum(got**2, axis=1), c.sum(), rtol=1e-5)  # norm² = Σ c_k
    compressed = model.compress(got)
    assert compressed.shape == (len(y), 2 * D)
    hidden = _dense(model.compress_hidden, want, "tanh")
    np.testing.assert_allclose(compressed, _dense(model.compress_out, hidden),
                               rtol=1e-4, atol=1e-5)


def test_embedding_model_of_an_ensemble_is_its_normalised_concatenation():
    """What km.export serves for an EnsembleModel: the test-time embedding, L2-normalised
    (a Dense member head inside the ensemble must not be taken for the model's class head)."""
    x, _ = _batch(2)
    model = km.models.EnsembleModel(_backbone(), _members(), embedding_dim=D, prior=[1, 3])
    part, head, scorer = km.models.split_head(model)
    assert part is model and head is None and scorer is None
    served = km.models.embedding_model(model)
    assert served.input_shape == (None, F_IN)
    np.testing.assert_allclose(served.predict(x, verbose=0), _unit(_np(model.predict(x, verbose=0))),
                               rtol=1e-5, atol=1e-6)


def test_shared_embedding_is_loss_ensemble_on_one_embedding():
    x, y = _batch(2)
    model = km.models.EnsembleModel(_backbone(), _members(), embedding_dim=D, shared_embedding=True)
    model.compile("adam")
    assert len(model.embedding_heads) == 1 and not model.compress_enabled
    got = float(model.compute_loss(x, y, model(x, training=True)))
    (e,) = _reference_embeddings(model, x)
    raw = np.array([_softmax_ce(y, _dense(model.heads[0], e)), _binomial(y, e, 2.0, 0.5, 3.0)])
    c = _np(model.coefficients)
    np.testing.assert_allclose(got, np.sum(c * raw.mean()) + PENALTY * (c.sum() - 1) ** 2, rtol=2e-5)
    np.testing.assert_allclose(model.predict(x, verbose=0), _unit(e), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="compress"):
        model.compress(np.zeros((2, D), "float32"))


def test_fit_under_xla_logs_coefficients_and_roundtrips(tmp_path):
    (x, y), _ = km.data.digits_zero_shot()
    rng = np.random.default_rng(0)
    # P×K batches by hand (every backend): each batch of 20 holds 4 samples of each digit 0–4
    idx = np.concatenate([rng.permutation(np.flatnonzero(y == k))[:40] for k in range(5)])
    idx = idx.reshape(5, 10, 4).transpose(1, 0, 2).reshape(-1)
    x, y = x[idx], y[idx]
    backbone = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu")])
    members = [
        (keras.losses.SparseCategoricalCrossentropy(from_logits=True), keras.layers.Dense(5)),
        (km.losses.TripletMarginLoss(1.0, miner=km.miners.SemiHardMiner()), None),
        (km.losses.BinomialDevianceLoss(), None),
        (km.losses.ProxyNCALoss(proxy_scale=3.0), km.layers.LargestMarginHead(5)),
    ]
    model = km.models.EnsembleModel(backbone, members, embedding_dim=8, prior=[2, 1, 2, 3])
    model.compile(keras.optimizers.Adam(3e-3), metrics=["accuracy"], jit_compile=True)
    model.build((None, 64))
    c0 = _np(model.coefficients)
    g0 = _np(model.compress_out.kernel)
    history = model.fit(x, y, batch_size=20, epochs=4, shuffle=False, verbose=0).history
    names = ["c_sparse_categorical_crossentropy", "c_triplet_margin_loss", "c_binomial_deviance_loss",
             "c_proxy_nca_loss"]
    for name in names + ["diversity", "compression_loss", "loss", "accuracy"]:
        assert name in history and np.all(np.isfinite(history[name])), name
    c1 = _np(model.coefficients)
    assert np.abs(c1 - c0).max() > 1e-5 and np.all(c1 >= 1.0 / 16.0)
    np.testing.assert_allclose([history[n][-1] for n in names], c1, atol=5e-3)
    assert np.abs(_np(model.compress_out.kernel) - g0).max() > 0  # the compressor trains
    assert history["loss"][-1] < history["loss"][0]
    means = _np(model.ensemble.running_mean_variable)
    logs = model.evaluate(x[:40], y[:40], batch_size=40, verbose=0, return_dict=True)
    assert np.isfinite(logs["loss"]) and 0.0 <= logs["accuracy"] <= 1.0 and "c_proxy_nca_loss" in logs
    np.testing.assert_array_equal(_np(model.ensemble.running_mean_variable), means)  # evaluate: no update
    reloaded = km.testing.assert_save_load_identical(model, x[:30], tmp_path)
    z = model.predict(x[:30], verbose=0)
    np.testing.assert_array_equal(reloaded.compress(z), model.compress(z))
    np.testing.assert_array_equal(_np(reloaded.coefficients), c1)


def test_config_roundtrip():
    model = km.models.EnsembleModel(_backbone(), _members(), embedding_dim=D, diversity_weight=0.1,
                                    prior=[1, 2],
                                    compressed_dim=3)
    clone = km.models.EnsembleModel.from_config(model.get_config())
    assert clone.get_config()["members"][1][1] is None
    assert (clone.embedding_dim, clone.diversity_weight, clone.compressed_dim) == (D, 0.1, 3)
    assert clone.ensemble.prior == [1.0, 2.0]


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"members": []}, "members"),
        ({"members": [km.losses.TripletMarginLoss()]}, "members"),
        ({"members": [(km.losses.ArcFace(), None)]}, "members"),
        ({"members": [(km.losses.TripletMarginLoss(), km.layers.LargestMarginHead(C))]}, "members"),
        ({"members": [(km.losses.POD(), km.layers.PEDCCHead(C))]}, "members"),
        ({"members": [(km.losses.TripletMarginLoss(), "not a head")]}, "members"),
        ({"members": [("not a loss name", None)]}, "not a loss name"),
        ({"embedding_dim": 0}, "embedding_dim"),
        ({"diversity_weight": -1.0}, "diversity_weight"),
        ({"prior": [1.0]}, "prior"),
        ({"compressed_dim": 0}, "compressed_dim"),
    ],
)
def test_bad_arguments(kwargs, argument):
    kwargs = {"members": _members(), **kwargs}
    with pytest.raises(ValueError, match=argument):
        km.models.EnsembleModel(_backbone(), **kwargs)


def test_a_cosine_loss_on_a_linear_head_is_refused_once_the_head_is_built():
    members = [(km.losses.ArcFace(), keras.layers.Dense(C, use_bias=False)), _members()[1]]
    model = km.models.EnsembleModel(_backbone(), members, embedding_dim=D)
    with pytest.raises(ValueError, match=r"members`\[0\].*cosine"):
        model.build((None, F_IN))


def test_compile_rejects_a_loss():
    model = km.models.EnsembleModel(_backbone(), _members(), embedding_dim=D)
    with pytest.raises(ValueError, match="loss"):
        model.compile("adam", loss="mse")


def test_diversity_gradient_moves_the_heads_apart():
    x, _ = _batch(3)
    model = km.models.EnsembleModel(_backbone(), _members(), embedding_dim=D)
    model.build((None, F_IN))
    heads = [v for head in model.embedding_heads for v in head.trainable_variables]

    def mean_distance():
        e0, e1 = _reference_embeddings(model, x)
        return np.mean(np.linalg.norm(_unit(e0) - _unit(e1), axis=1))

    before = mean_distance()
    value, grads = km.testing.value_and_grad_of_variables(
        lambda: diversity_term(model.member_embeddings(x)), heads)
    np.testing.assert_allclose(value, max(2.0 - before, 0.0), rtol=1e-5)
    for variable, grad in zip(heads, grads):
        variable.assign(_np(variable) - 0.05 * grad)
    assert mean_distance() > before


class _SquaredNormLoss(keras.losses.Loss):
    """A user's loss on the embedding, declared as such: mean squared norm of the rows."""

    needs = "embedding"

    def call(self, y_true, y_pred):
        return keras.ops.sum(keras.ops.square(y_pred), axis=1)


class _CosineHead(keras.layers.Layer):
    """A user's head that declares cosine scores and its class vectors."""

    score_kind = "cosine"

    def __init__(self, num_classes, kind="cosine", **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.score_kind = kind

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.num_classes), name="kernel")

    def call(self, x):
        return km.ops.cosine_similarity(x, self.kernel)

    def class_vectors(self):
        return self.kernel


def test_a_users_declared_loss_and_head_compose_as_members():
    x, y = _batch(4)
    members = [(_SquaredNormLoss(name="squared_norm"), None),
               (km.losses.ProxyNCALoss(), _CosineHead(C, name="user_head"))]
    model = km.models.EnsembleModel(_backbone(), members, embedding_dim=D, diversity_weight=0.0)
    model.compile("adam")
    got = float(model.compute_loss(x, y, model(x, training=True)))
    e0, e1 = _reference_embeddings(model, x)
    kernel = _np(model.heads[0].kernel)
    cos = _unit(e1) @ (kernel / np.linalg.norm(kernel, axis=0, keepdims=True))
    raw = np.array([np.mean(np.sum(e0**2, axis=1)), _softmax_ce(y, 2.0 * cos)])  # ProxyNCA: 2·cos
    c = _np(model.coefficients)
    np.testing.assert_allclose(got, np.sum(c * raw.mean()) + PENALTY * (c.sum() - 1) ** 2, rtol=2e-5)
    with pytest.raises(ValueError, match="cosine"):  # the head declares logits: refused
        km.models.EnsembleModel(_backbone(), [(km.losses.ProxyNCALoss(), _CosineHead(C, "logits"))])


def test_paper_members_are_the_authors_four_losses():
    from keras_margins.models.ensemble_model import PAPER_PRIOR, paper_members

    members = paper_members(7)
    (ce, dense), (triplet, none1), (binomial, none2), (proxy, proxies) = members
    assert isinstance(ce, keras.losses.SparseCategoricalCrossentropy) and dense.units == 7
    assert triplet.margin == 1.0 and isinstance(triplet.miner, km.miners.SemiHardMiner)
    assert (binomial.alpha, binomial.beta, binomial.cost) == (2.0, 0.5, 12.5)
    assert (proxy.proxy_scale, proxy.label_smoothing) == (3.0, 0.1)
    assert isinstance(proxies, km.layers.LargestMarginHead) and none1 is None and none2 is None
    assert tuple(PAPER_PRIOR) == (2, 1, 2, 3)
    assert paper_members(7)[0][1] is not dense   # new objects on each call
    model = km.models.EnsembleModel(_backbone(), paper_members(C), embedding_dim=D, prior=PAPER_PRIOR)
    np.testing.assert_allclose(_np(model.coefficients), np.array([2, 1, 2, 3]) / 8, rtol=1e-5)
    with pytest.raises(ValueError, match="num_classes"):
        paper_members(1)
    with pytest.raises(ValueError, match="authors"):
        paper_members(5, authors="yes")


def test_paper_members_in_the_authors_form_train_and_round_trip(tmp_path):
    from keras_margins.models.ensemble_member_losses import (
        SemiHardTripletHingeLoss,
        SmoothedCrossEntropy,
    )
    from keras_margins.models.ensemble_members import PAPER_PRIOR, paper_members

    members = paper_members(C, authors=True)
    (ce, dense), (triplet, none1), (binomial, _), (proxy, _) = members
    assert isinstance(ce, SmoothedCrossEntropy) and ce.label_smoothing == 0.15 and dense.units == C
    assert isinstance(triplet, SemiHardTripletHingeLoss) and (triplet.margin, triplet.window) == (1.0, 0.1)
    assert none1 is None and binomial.cost == 12.5 and proxy.proxy_scale == 3.0
    x, y = _batch(5, per_class=8)
    model = km.models.EnsembleModel(_backbone(), members, embedding_dim=D, prior=PAPER_PRIOR)
    model.compile(keras.optimizers.Adam(1e-2), jit_compile=True)
    history = model.fit(x, y, batch_size=len(y), epochs=3, verbose=0).history
    assert {"c_smoothed_cross_entropy", "c_semi_hard_triplet_hinge_loss"} <= set(history)
    assert np.all(np.isfinite(history["loss"]))
    reloaded = km.testing.assert_save_load_identical(model, x, tmp_path)
    assert [type(loss) for loss in reloaded.member_losses] == [type(loss) for loss, _ in members]
    reloaded.fit(x, y, batch_size=len(y), epochs=1, verbose=0)
