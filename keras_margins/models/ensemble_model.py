"""``EnsembleModel``: one embedding head per loss on a shared backbone, with learned loss
weights, a diversity term and the weighted concatenated test embedding (Zabihzadeh et al.).

The members (their checks and the paper's preset) live in ``ensemble_members``, the authors'
forms of two member losses in ``ensemble_member_losses``, the diversity and distance-matching
formulas in ``ensemble_terms``; ``PAPER_PRIOR`` and ``paper_members`` stay importable from here.
"""

import keras
import numpy as np
from keras import ops

from keras_margins._arguments import LAYER_ARGUMENTS, reject_unknown
from keras_margins._compat import scale_loss_for_distribution
from keras_margins.losses.ensemble import LossEnsemble
from keras_margins.metrics.last_value import LastValue
from keras_margins.models.ensemble_members import PAPER_PRIOR, MemberLoss, as_member, paper_members
from keras_margins.models.ensemble_terms import distance_matching_loss, diversity_term
from keras_margins.models.one_pass import OnePassOutputs
from keras_margins.ops.normalize import l2_normalize
from keras_margins.protocols import check_composition, loss_value

__all__ = ["PAPER_PRIOR", "EnsembleModel", "paper_members"]


@keras.saving.register_keras_serializable(package="keras_margins")
class EnsembleModel(OnePassOutputs, keras.Model):
    """Ensemble of losses on several embedding heads of one backbone (WEDL of Zabihzadeh
    et al.).

    The backbone's features go through m embedding heads (``Dense(embedding_dim)``, one per
    member; a single shared one with ``shared_embedding=True``). Member k's loss L_k sees its
    embedding e_k (pair losses, ``head=None``) or the class scores of its head on e_k. The
    training loss is

        L = Σ_k c_k · (mean_j L̄_j / L̄_k) · L_k + penalty_scale · η · (Σ_k c_k − 1)²
            + diversity_weight · R_div + L_compress,
        c_k = a_k² + 1/(4m),

    the learned weighting of ``km.losses.LossEnsemble`` (which the model uses as is: trainable
    a_k initialised from ``prior``, running means L̄_k of |L_k|; each member's loss is
    evaluated through ``km.protocols.loss_value`` on its own outputs), and the diversity term
    of the authors' code (``ensemble_terms.diversity_term``), on the L2-normalised embeddings
    ê_k of each sample i of the batch (N rows):

        R_div = relu(2 − D),   D = 2 / (m (m − 1)) · Σ_{k<l} (1/N) Σ_i ‖ê_k,i − ê_l,i‖₂,

    which pushes the heads' embeddings of the same sample apart (2 is the largest distance
    between unit vectors). The default ``diversity_weight`` 0.01 is the authors' λ.

    Test-time embedding (``predict``, ``model(x)``): concat_k √c_k · ê_k, shape (N, m·D); its
    squared distances are the c_k-weighted sums of the members' squared distances, and its
    norm is √Σ c_k ≈ 1. With ``shared_embedding=True`` it is ê (N, D).

    Compressed single embedding (WEDL_C): a small network g (``Dense(2·embedding_dim,
    tanh)`` then ``Dense(compressed_dim)``, the authors' shape) maps the concatenation z to
    one embedding. It is trained in the same steps on L_compress = N² · ‖S(g(z)) − S(z)‖_F
    (``ensemble_terms.distance_matching_loss``),
    where S(v) is the (N, N) matrix of squared Euclidean distances divided by its sum and z is
    a constant (stop-gradient), so the term only trains g. ``model.compress(model.predict(x))``
    returns g(z) (N, compressed_dim); compare those with Euclidean distances (they match
    distances, not angles). Off with ``compress=False`` (and always with a shared embedding).

    Logs: ``c_<loss name>`` for every member (the c_k used in the last step), ``diversity``
    (R_div, epoch mean) and ``compression_loss`` (epoch mean). The returned and logged
    ``loss`` is the ensemble objective with the diversity term; L_compress contributes its
    gradient (to g only) but not its value.
    Compiled metrics (``"accuracy"``) see the class scores of the first member with a head.

    Members are checked through what their losses and heads declare (``km.protocols``): a
    loss on class scores needs a head whose scores it is defined on, a loss on the embedding
    takes ``None``; model-aware losses (``needs="model"``) cannot be members. The paper's four
    members: ``paper_members(num_classes)`` with ``prior=PAPER_PRIOR``.

    Train with class-balanced P×K batches (``km.data.pk_batches``) when a member is a pair
    loss. ``compile`` takes no loss: the losses are the members'.

    Args:
        backbone: a Keras layer or model mapping inputs to features (N, F).
        members: a non-empty list of ``(loss, head_or_None)`` pairs: a head (e.g.
            ``km.layers.LargestMarginHead(C)``, ``keras.layers.Dense(C)``) for a loss on class
            scores, ``None`` for a loss on the embedding (``needs="embedding"``).
        embedding_dim: D of every embedding head (default 64, the authors').
        shared_embedding: one embedding for all members (``LossEnsemble``'s setting;
            default False).
        diversity_weight: λ of R_div (default 0.01, the authors'). Must be >= 0.
        prior: optional positive numbers, one per member: initial c_k ∝ prior (default equal).
        eta: η of the penalty (default 100). Must be > 0.
        penalty_scale: factor of the penalty (default 100, the published 100·η). Must be > 0.
        normalize_by_running_mean: divide each L_k by its running mean (default True).
        compress: train the compressed embedding (default True).
        compressed_dim: its size (default None: 2·embedding_dim, the authors').
        **kwargs: ``keras.Model`` arguments (``name``, ``trainable``, ``dtype``, ...); any other
            keyword is a ``TypeError`` naming the closest valid argument.

    Example:
        >>> members = [(keras.losses.SparseCategoricalCrossentropy(from_logits=True), keras.layers.Dense(5)),
        ...            (km.losses.TripletMarginLoss(1.0, miner=km.miners.SemiHardMiner()), None),
        ...            (km.losses.BinomialDevianceLoss(), None),
        ...            (km.losses.ProxyNCALoss(proxy_scale=3.0), km.layers.LargestMarginHead(5))]
        >>> model = km.models.EnsembleModel(backbone, members, embedding_dim=64, prior=[2, 1, 2, 3])
        >>> model.compile(keras.optimizers.Adam(1e-3), jit_compile=True)
        >>> model.fit(km.data.pk_batches((x, y), p=8, k=4, seed=0), epochs=5)  # logs c_<loss>
        >>> model.predict(x_test).shape      # (N, 4 * 64)
        >>> model.compress(model.predict(x_test)).shape   # (N, 128)

    Reference:
        Zabihzadeh, Alitbi & Mousavirad, "Ensemble of Loss Functions to Improve
        Generalizability of Deep Metric Learning Methods", arXiv 2107.01130 (2021),
        Multimedia Tools and Applications (2023); authors' code ``WEL_DML.py`` (WEDL,
        DistLoss, Last_Embedding).
    """


    def __init__(
        self,
        backbone,
        members,
        embedding_dim=64,
        shared_embedding=False,
        diversity_weight=0.01,
        prior=None,
        eta=100.0,
        penalty_scale=100.0,
        normalize_by_running_mean=True,
        compress=True,
        compressed_dim=None,
        **kwargs,
    ):
        reject_unknown(type(self), kwargs, accepted=LAYER_ARGUMENTS)
        super().__init__(**kwargs)
        if not isinstance(backbone, keras.layers.Layer):
            raise ValueError(
                f"`backbone` must be a Keras layer or model producing (N, F) features; "
                f"got {type(backbone).__name__}."
            )
        if not isinstance(members, (list, tuple)) or not members:
            raise ValueError(
                f"`members` must be a non-empty list of (loss, head_or_None) pairs; got {members!r}."
            )
        parsed = [as_member(item, k) for k, item in enumerate(members)]
        if isinstance(embedding_dim, bool) or not isinstance(embedding_dim, int) or embedding_dim < 1:
            raise ValueError(f"`embedding_dim` must be a positive integer; got {embedding_dim!r}.")
        if not isinstance(shared_embedding, bool):
            raise ValueError(f"`shared_embedding` must be True or False; got {shared_embedding!r}.")
        if (isinstance(diversity_weight, bool) or not isinstance(diversity_weight, (int, float))
                or not diversity_weight >= 0):
            raise ValueError(f"`diversity_weight` must be a number >= 0; got {diversity_weight!r}.")
        if not isinstance(compress, bool):
            raise ValueError(f"`compress` must be True or False; got {compress!r}.")
        if compressed_dim is not None and (
            isinstance(compressed_dim, bool) or not isinstance(compressed_dim, int) or compressed_dim < 1
        ):
            raise ValueError(f"`compressed_dim` must be None or a positive integer; got {compressed_dim!r}.")

        self.backbone = backbone
        self.member_losses = [loss for loss, _ in parsed]
        self.embedding_dim = embedding_dim
        self.shared_embedding = shared_embedding
        self.diversity_weight = float(diversity_weight)
        self.compress_enabled = compress and not shared_embedding and len(parsed) > 1
        self.compressed_dim = compressed_dim or 2 * embedding_dim
        count = 1 if shared_embedding else len(parsed)
        self.embedding_heads = [
            keras.layers.Dense(embedding_dim, name=f"embedding_{k}") for k in range(count)
        ]
        # Heads of score losses (no None in a tracked list); member k -> index or None.
        self.heads = [head for _, head in parsed if head is not None]
        self._head_index, j = [], 0
        for _, head in parsed:
            self._head_index.append(None if head is None else j)
            j += head is not None
        if self.compress_enabled:
            self.compress_hidden = keras.layers.Dense(
                2 * embedding_dim, activation="tanh", name="compress_hidden"
            )
            self.compress_out = keras.layers.Dense(self.compressed_dim, name="compress_out")
        # The learned weighting is LossEnsemble's, on adapters routing member k's outputs.
        self.ensemble = LossEnsemble(
            [MemberLoss(k, loss) for k, loss in enumerate(self.member_losses)],
            prior=prior,
            eta=eta,
            penalty_scale=penalty_scale,
            normalize_by_running_mean=normalize_by_running_mean,
        )
        self.ensemble.build_state(self)  # a_k, running means: variables of this model
        # The values of the ensemble's logs (the c_k) that each step used, kept in metrics of
        # this model: Keras resets and reports them, and on JAX only metric variables reach
        # compute_metrics.
        self.loss_log_trackers = [LastValue(name) for name in self.ensemble.logs(self)]
        multiple = len(self.embedding_heads) > 1
        self.diversity_tracker = keras.metrics.Mean(name="diversity") if multiple else None
        self.compression_tracker = (
            keras.metrics.Mean(name="compression_loss") if self.compress_enabled else None
        )
        self._dict_in_inference = False
        self._ensemble_config = dict(
            prior=self.ensemble.prior,
            eta=self.ensemble.eta,
            penalty_scale=self.ensemble.penalty_scale,
            normalize_by_running_mean=self.ensemble.normalize_by_running_mean,
        )
        self._compress_arg = compress
        self._compressed_dim_arg = compressed_dim

    # ----------------------------------------------------------------------------- forward
    @property
    def coefficients(self):
        """Current c_k = a_k² + 1/(4m), shape (m,)."""
        return self.ensemble.coefficients

    def build(self, input_shape):
        features = self.backbone(keras.KerasTensor(tuple(input_shape)))
        embeddings = [head(features) for head in self.embedding_heads]
        for k, j in enumerate(self._head_index):
            if j is not None:
                self.heads[j](embeddings[0 if self.shared_embedding else k])
                # Again now that the head is built (a bias-free Dense declares its logits
                # through its kernel).
                check_composition(self.member_losses[k], self.heads[j], f"`members`[{k}]")
        if self.compress_enabled:
            hidden = self.compress_hidden(
                keras.KerasTensor((input_shape[0], self.embedding_dim * len(self.embedding_heads)))
            )
            self.compress_out(hidden)

    def member_embeddings(self, inputs, training=False):
        """The embedding heads' outputs e_k (one (N, D) tensor per head) of ``inputs``."""
        features = self.backbone(inputs, training=training)
        return [head(features, training=training) for head in self.embedding_heads]

    def weighted_concatenation(self, embeddings):
        """concat_k √c_k · ê_k (N, m·D) of the member embeddings (ê (N, D) when shared)."""
        units = [l2_normalize(ops.cast(e, "float32"), axis=1) for e in embeddings]
        if self.shared_embedding:
            return units[0]
        weights = ops.sqrt(self.coefficients)
        return ops.concatenate([weights[k] * u for k, u in enumerate(units)], axis=1)

    def call(self, inputs, training=None):
        embeddings = self.member_embeddings(inputs, training)
        if not (training or self._dict_in_inference):
            return self.weighted_concatenation(embeddings)
        scores = []
        for k, j in enumerate(self._head_index):
            if j is not None:
                embedding = embeddings[0 if self.shared_embedding else k]
                scores.append(self.heads[j](embedding, training=training))
        return {"embeddings": tuple(embeddings), "scores": tuple(scores)}

    def compress(self, embeddings):
        """The compressed single embedding g(z) (N, compressed_dim) of test embeddings z
        (N, m·D) from ``predict``; NumPy in, NumPy out (batched for large N)."""
        if not self.compress_enabled:
            raise ValueError(
                "`compress`: this EnsembleModel has no compressed embedding (compress=False, "
                "a shared embedding or a single member)."
            )
        z = ops.convert_to_tensor(embeddings, "float32")
        expected = self.embedding_dim * len(self.embedding_heads)
        if len(z.shape) != 2 or z.shape[1] != expected:
            raise ValueError(
                f"`embeddings` must be (N, {expected}) test embeddings from predict(); got {tuple(z.shape)}."
            )
        outputs = [
            ops.convert_to_numpy(self.compress_out(self.compress_hidden(z[i : i + 1024])))
            for i in range(0, int(z.shape[0]), 1024)
        ]
        return np.concatenate(outputs, axis=0) if outputs else np.zeros((0, self.compressed_dim), "float32")

    # ------------------------------------------------------------------------------- losses
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not isinstance(y_pred, dict):  # called by hand with the test embedding
            y_pred = self._with_outputs(True, self.__call__, x, training=training)
        embeddings = list(y_pred["embeddings"])
        scores = list(y_pred["scores"])
        members = [
            {
                "embedding": embeddings[0 if self.shared_embedding else k],
                "scores": None if j is None else scores[j],
            }
            for k, j in enumerate(self._head_index)
        ]
        outputs = {"embedding": None, "scores": None, "members": members}
        total = loss_value(self.ensemble, y, outputs, self, sample_weight, training=training)
        logs = self.ensemble.logs(self)  # the c_k this step used (before the update)
        for tracker in self.loss_log_trackers:
            tracker.update_state(logs[tracker.name])
        if self.diversity_tracker is not None:
            diversity = diversity_term(embeddings)
            self.diversity_tracker.update_state(diversity)
            if self.diversity_weight > 0:
                total = total + scale_loss_for_distribution(self.diversity_weight * diversity)
        if self.compress_enabled:
            z = ops.stop_gradient(self.weighted_concatenation(embeddings))
            compression = distance_matching_loss(self.compress_out(self.compress_hidden(z)), z)
            self.compression_tracker.update_state(compression)
            # Its gradient (which reaches only g) joins the step; its value stays out of the
            # returned loss, so "loss" / "val_loss" remain the ensemble's objective.
            compression = scale_loss_for_distribution(compression)
            total = total + (compression - ops.stop_gradient(compression))
        # Regulariser and add_loss terms of the layers, summed as Keras' own compute_loss does.
        for extra in self.losses:
            total = total + ops.sum(ops.cast(extra, "float32"))
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        # Compiled metrics see the first member head's scores (else the first embedding); the
        # trackers above are metrics of this model, reported by Keras with them.
        if isinstance(y_pred, dict):
            y_pred = y_pred["scores"][0] if y_pred["scores"] else y_pred["embeddings"][0]
        return super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    # ------------------------------------------------------------------------------ compile
    def compile(self, optimizer="rmsprop", loss=None, *args, **kwargs):
        if loss is not None:
            raise ValueError(
                "`loss`: an EnsembleModel trains the losses of its `members`; call "
                "compile(optimizer, metrics=...) without a loss."
            )
        super().compile(optimizer, None, *args, **kwargs)

    def compile_from_config(self, config):
        # Keras' loader does not call an overridden compile(): the same steps here.
        config = keras.saving.deserialize_keras_object(config)
        config.pop("loss", None)
        self.compile(**config)
        if self.optimizer is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    # ------------------------------------------------------------------------ serialisation
    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "members": [
                [keras.saving.serialize_keras_object(loss),
                 None if j is None else keras.saving.serialize_keras_object(self.heads[j])]
                for loss, j in zip(self.member_losses, self._head_index)
            ],
            "embedding_dim": self.embedding_dim,
            "shared_embedding": self.shared_embedding,
            "diversity_weight": self.diversity_weight,
            **self._ensemble_config,
            "compress": self._compress_arg,
            "compressed_dim": self._compressed_dim_arg,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        backbone = keras.saving.deserialize_keras_object(config.pop("backbone"))
        members = [
            (keras.saving.deserialize_keras_object(loss),
             None if head is None else keras.saving.deserialize_keras_object(head))
            for loss, head in config.pop("members")
        ]
        return cls(backbone, members, **config)
