"""Sub-center ArcFace (Deng et al., ECCV 2020): the loss on a sub-centre head's max-pooled
cosines, and the report of the training samples far from their class's dominant sub-centre."""

import dataclasses
import math

import keras
import numpy as np
from keras import ops

from keras_margins.losses.margin_softmax import ArcFace
from keras_margins.ops._validation import integer_label_array

#: The paper's angle beyond which a sample counts as noise (75°), in radians.
DEFAULT_DROP_ANGLE = math.radians(75.0)


@keras.saving.register_keras_serializable(package="keras_margins")
class SubCenterArcFace(ArcFace):
    """Sub-center ArcFace (Deng et al. 2020): ArcFace on the cosines of a head with K
    sub-centres per class, cos θ_j = max_k cos θ_{j,k}:

    L_i = −log e^{s·cos(θ_{i,y} + m)} / (e^{s·cos(θ_{i,y} + m)} + Σ_{j≠y} e^{s·cos θ_{i,j}}),
    θ_{i,j} = arccos max_k cos θ_{i,j,k}.

    The max pooling is the head's: ``km.layers.LargestMarginHead(C, sub_centers=K)`` (the
    paper uses K = 3). A sample only has to be close to one sub-centre of its class, so noisy
    and hard samples gather around non-dominant sub-centres instead of pulling the dominant
    one. After training, ``km.losses.subcenter_report(head, embeddings, labels)`` finds each
    class's dominant sub-centre and flags the samples farther than 75° from it (the paper's
    threshold); ``head.drop_subcenters(report.dominant)`` keeps the dominant sub-centres only,
    and training can go on without the flagged samples (``report.keep``), as in the paper.

    On a head with one centre per class it is exactly ``ArcFace``. Past π the target continues
    as cos θ − m·sin m.

    Args:
        scale: s > 0 (default 64.0).
        margin: additive angular margin m in radians, in [0, π) (default 0.5).
        sample_margin_weight: λ >= 0 of the sample-margin regulariser (default 0.0).
        **kwargs: ``keras.losses.Loss`` arguments (``name``, ``reduction``, ``dtype``).

    Example:
        >>> head = km.layers.LargestMarginHead(num_classes, sub_centers=3)
        >>> model = km.models.MarginModel(backbone, head)
        >>> model.compile("sgd", loss=km.losses.SubCenterArcFace(), jit_compile=True)
        >>> model.fit(x, y)
        >>> report = km.losses.subcenter_report(head, model.backbone.predict(x), y)
        >>> head.drop_subcenters(report.dominant)
        >>> model.fit(x[report.keep], y[report.keep])

    Reference:
        - Deng et al., 2020. [Sub-center ArcFace: Boosting Face Recognition by Large-scale
          Noisy Web Faces](https://www.ecva.net/papers/eccv_2020/papers_ECCV/papers/123560715.pdf),
          ECCV 2020.
    """


@dataclasses.dataclass
class SubCenterReport:
    """What ``subcenter_report`` found on a labelled set of embeddings.

    Attributes:
        dominant: (C,) int, the dominant sub-centre of each class (the one closest to most of
            its samples; 0 for a class without samples).
        counts: (C, K) int, how many samples of each class are closest to each sub-centre.
        nearest: (N,) int, the sub-centre of its own class each sample is closest to.
        angles: (N,) float, the angle (radians) between each sample and the dominant
            sub-centre of its labelled class.
        flagged: (M,) int, indices of the samples with ``angles > drop_angle`` (likely noisy
            labels), ascending.
        drop_angle: the threshold used (radians).
    """

    dominant: np.ndarray
    counts: np.ndarray
    nearest: np.ndarray
    angles: np.ndarray
    flagged: np.ndarray
    drop_angle: float

    @property
    def keep(self):
        """(N,) bool: the samples not flagged (the cleaned training set)."""
        mask = np.ones(self.angles.shape[0], bool)
        mask[self.flagged] = False
        return mask

    def summary(self):
        """One line: how many samples were flagged and how dominant the dominant sub-centres are."""
        total = max(int(self.counts.sum()), 1)
        dominant_share = self.counts[np.arange(len(self.dominant)), self.dominant].sum() / total
        return (f"{len(self.flagged)} of {self.angles.shape[0]} samples flagged (angle to the "
                f"dominant sub-centre > {math.degrees(self.drop_angle):.1f}°); "
                f"{100.0 * dominant_share:.1f} % of the samples are closest to their class's "
                "dominant sub-centre.")


def subcenter_report(head, embeddings, labels, drop_angle=DEFAULT_DROP_ANGLE, batch_size=4096):
    """Dominant sub-centres and flagged samples of a sub-centre head (Deng et al. 2020).

    For every class, the dominant sub-centre is the one most of its samples are closest to;
    a sample whose angle to the dominant sub-centre of its labelled class exceeds
    ``drop_angle`` is flagged (the paper drops them, 75° by default, and keeps the dominant
    sub-centres only: ``head.drop_subcenters(report.dominant)``).

    Args:
        head: a head with sub-centres: ``sub_centers``, ``num_classes`` and
            ``subcenter_cosines(features) -> (N, C, K)`` (``km.layers.LargestMarginHead(C,
            sub_centers=K)``).
        embeddings: (N, D) embeddings of the training samples (``model.backbone.predict(x)``).
        labels: (N,) or (N, 1) integer labels in [0, C).
        drop_angle: threshold in radians, in (0, π] (default math.radians(75)).
        batch_size: rows per head call (default 4096).

    Returns:
        A ``SubCenterReport``.

    Example:
        >>> report = km.losses.subcenter_report(head, model.backbone.predict(x), y)
        >>> print(report.summary()); x_clean, y_clean = x[report.keep], y[report.keep]
    """
    subcenter_cosines = getattr(head, "subcenter_cosines", None)
    if not callable(subcenter_cosines):
        raise ValueError(
            f"`head`: {type(head).__name__} has no sub-centres (subcenter_cosines); use "
            "km.layers.LargestMarginHead(C, sub_centers=K)."
        )
    if not 0.0 < drop_angle <= math.pi:
        raise ValueError(f"`drop_angle` (radians) must be in (0, π]; got {drop_angle}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer; got {batch_size!r}.")
    embeddings = np.asarray(embeddings, "float32")
    labels = integer_label_array(labels, "labels")
    if embeddings.ndim != 2 or embeddings.shape[0] != labels.shape[0]:
        raise ValueError(
            f"`embeddings` must be (N, D) with one row per label; got {embeddings.shape} for "
            f"{labels.shape[0]} labels."
        )
    num_classes, sub_centers = head.num_classes, head.sub_centers
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"`labels` must lie in [0, {num_classes - 1}].")
    own = np.zeros((labels.shape[0], sub_centers), "float64")  # cosines to own sub-centres
    for start in range(0, labels.shape[0], batch_size):
        rows = slice(start, start + batch_size)
        cos = ops.convert_to_numpy(subcenter_cosines(embeddings[rows]))
        own[rows] = cos[np.arange(cos.shape[0]), labels[rows]]
    nearest = own.argmax(axis=1)
    counts = np.zeros((num_classes, sub_centers), "int64")
    np.add.at(counts, (labels, nearest), 1)
    dominant = counts.argmax(axis=1)
    to_dominant = np.clip(own[np.arange(labels.shape[0]), dominant[labels]], -1.0, 1.0)
    angles = np.arccos(to_dominant)
    flagged = np.flatnonzero(angles > drop_angle)
    return SubCenterReport(dominant=dominant, counts=counts, nearest=nearest, angles=angles,
                           flagged=flagged, drop_angle=float(drop_angle))
