"""The ``--dataset`` choices of ``keras-margins train`` / ``evaluate``: the embedded digits and
the papers' TFDS datasets (read from ``--data-dir``, never downloaded).

A ``Dataset`` knows what the commands need: its classes, image shape, the backbone and
embedding size that suit it, a training stream (plain shuffled batches for class-level losses,
P×K batches for pair losses) and the test split in batches. The retrieval sets (CUB-200-2011,
Cars196, Stanford Online Products) are class-disjoint: the head trains on the first half of
the classes and the second half is only retrieved (MAP@R, P@1, Recall@K), the protocol of the
deep-metric-learning papers.

Nothing here imports Keras or TensorFlow at module level (``keras-margins --help`` and usage
errors stay fast); the dataset names come from ``keras_margins.registry``.
"""

import dataclasses

from keras_margins.registry import IMAGE_BACKBONES, TFDS_DATASETS

DIGITS = ("digits", "digits-zero-shot")
#: The TFDS datasets (``keras_margins.registry.TFDS_DATASETS``, read by ``km.data.load_tfds``).
TFDS = tuple(TFDS_DATASETS)
#: ``--dataset`` choices.
DATASETS = DIGITS + TFDS
#: ``--backbone`` choices: "auto" picks the dataset's default (below), "mlp" is for the digits'
#: feature vectors, the others are ``km.models.image_backbone``'s (``registry.IMAGE_BACKBONES``).
BACKBONE_CHOICES = ("auto", "mlp", *IMAGE_BACKBONES)
#: Classes of the digits' training splits (``digits``: 0-9; ``digits-zero-shot``: 0-4).
DIGITS_TRAIN_CLASSES = {"digits": 10, "digits-zero-shot": 5}


def train_classes(name):
    """How many classes the training split of ``--dataset name`` has, without loading it."""
    if name in DIGITS:
        return DIGITS_TRAIN_CLASSES[name]
    _, num_classes, first_test = TFDS_DATASETS[name]
    return num_classes if first_test is None else first_test


def check_backbone(name, backbone, weights=None):
    """``ValueError`` naming ``--backbone`` / ``--weights`` when the choice cannot take the
    dataset's inputs (``mlp`` takes the digits' feature vectors, the others images)."""
    if backbone not in BACKBONE_CHOICES:
        raise ValueError(f"`--backbone` must be one of {BACKBONE_CHOICES}; got {backbone!r}.")
    chosen = ("mlp" if name in DIGITS else None) if backbone == "auto" else backbone
    if chosen == "mlp" and name not in DIGITS:
        raise ValueError(f"`--backbone mlp` takes feature vectors; {name} has images.")
    if chosen not in (None, "mlp") and name in DIGITS:
        raise ValueError(f"`--backbone {chosen}` takes images; {name} has feature vectors.")
    if chosen == "mlp" and weights is not None:
        raise ValueError("`--weights` applies to the keras.applications backbones.")


@dataclasses.dataclass
class Dataset:
    """One ``--dataset`` choice, opened.

    Attributes:
        name: the choice.
        zero_shot: the test classes are not the training classes (retrieval only).
        num_classes: classes of the training split (the head's C; labels are 0..C-1).
        input_shape: per-example input shape.
        backbone: the default ``--backbone`` (``mlp`` on digits features, ``small_cnn`` for
            MNIST/CIFAR, ``resnet50`` for the 224 px retrieval sets).
        embedding_dim: the default ``--embedding-dim`` (64, 128, 512 likewise).
    """

    name: str
    zero_shot: bool
    num_classes: int
    input_shape: tuple
    backbone: str
    embedding_dim: int
    arrays: tuple = None          # digits: ((x, y), (x_test, y_test))
    data_dir: str = None          # TFDS
    image_size: tuple = None      # TFDS

    @property
    def is_tfds(self):
        return self.arrays is None

    def _tfds_kwargs(self):
        # Raw pixels: the backbones scale them inside the model (and its export).
        return dict(image_size=self.image_size, normalize="raw", data_dir=self.data_dir)

    def train_stream(self, batch_size, seed, pk=None, steps_per_epoch=None):
        """``(fit_args, fit_kwargs)`` for ``model.fit``: shuffled (augmented) batches of
        ``batch_size``, or P×K batches when ``pk = (P, K)`` is given (checked by the caller:
        ``train.pk_shape``)."""
        from keras_margins import data

        if pk is not None:
            p, k = pk
            if self.is_tfds:
                stream = data.tfds_pk_batches(
                    self.name, p, k, seed=seed, augment=True,
                    steps_per_epoch=steps_per_epoch, **self._tfds_kwargs(),
                )
            else:
                stream = data.pk_batches(self.arrays[0], p, k, seed=seed,
                                         steps_per_epoch=steps_per_epoch)
            return (stream,), {"shuffle": False}
        if not self.is_tfds:
            (x, y), _ = self.arrays
            if steps_per_epoch is None:
                return (x, y), {"batch_size": batch_size}
            import tensorflow as tf

            stream = (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(y), seed=seed)
                      .repeat().batch(batch_size))
            return (stream,), {"steps_per_epoch": steps_per_epoch, "shuffle": False}
        stream = data.load_tfds(self.name, "train", batch_size=batch_size, shuffle=True,
                                seed=seed, augment=True, **self._tfds_kwargs())
        if steps_per_epoch is None:
            return (stream,), {"shuffle": False}  # shuffled (and augmented) by tf.data
        return (stream.repeat(),), {"steps_per_epoch": steps_per_epoch, "shuffle": False}

    def test_batches(self, batch_size=256):
        """An iterable of NumPy ``(x, y)`` batches of the test split (fixed order)."""
        if not self.is_tfds:
            _, (x, y) = self.arrays
            return ((x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(y), batch_size))
        from keras_margins import data

        test = data.load_tfds(self.name, "test", batch_size=batch_size, **self._tfds_kwargs())
        return test.as_numpy_iterator()

    def validation_data(self, batch_size=256):
        """The test split for ``km.callbacks.RetrievalEvaluation``: arrays or a tf.data set."""
        if not self.is_tfds:
            return self.arrays[1]
        from keras_margins import data

        return data.load_tfds(self.name, "test", batch_size=batch_size, **self._tfds_kwargs())

    def sample_inputs(self, n=64):
        """The first ``n`` test inputs (for checking an export)."""
        import numpy as np

        xs, count = [], 0
        for x, _ in self.test_batches(n):
            xs.append(x)
            count += len(x)
            if count >= n:
                break
        return np.concatenate(xs)[:n]


def open_dataset(name, data_dir=None, image_size=None):
    """The ``Dataset`` of a ``--dataset`` choice; ``ValueError`` naming the option for a bad
    choice, a missing ``--data-dir`` where TFDS has no prepared copy, or a bad image size."""
    if name not in DATASETS:
        raise ValueError(f"`--dataset` must be one of {DATASETS}; got {name!r}.")
    if name in DIGITS:
        if image_size is not None:
            raise ValueError("`--image-size` applies to the TFDS datasets, not to digits.")
        from keras_margins import data

        zero_shot = name == "digits-zero-shot"
        arrays = data.digits_zero_shot() if zero_shot else data.digits_classification()
        (x, y), _ = arrays
        return Dataset(name, zero_shot, int(y.max()) + 1, tuple(x.shape[1:]), "mlp", 64,
                       arrays=arrays)
    from keras_margins.data import split_classes

    _, _, first_test = TFDS_DATASETS[name]
    retrieval = first_test is not None
    if image_size is not None and image_size < 1:
        raise ValueError(f"`--image-size` must be positive; got {image_size}.")
    native = {"mnist": (28, 28, 1)}.get(name, (32, 32, 3))
    size = image_size or (224 if retrieval else None)
    shape = (size, size, 3) if retrieval else ((size, size, native[2]) if size else native)
    _check_prepared(name, data_dir)
    return Dataset(
        name, retrieval, len(split_classes(name, "train")), shape,
        "resnet50" if retrieval else "small_cnn", 512 if retrieval else 128,
        data_dir=data_dir, image_size=(size, size) if size else None,
    )


def _check_prepared(name, data_dir):
    """``ValueError`` naming ``--data-dir`` when TFDS has no prepared copy (no download)."""
    import tensorflow_datasets as tfds

    try:
        tfds.load(name, split="train", data_dir=data_dir, download=False)
    except AssertionError as err:  # TFDS' "could not find data in ..."
        where = data_dir or "TFDS's default data directory (~/tensorflow_datasets)"
        raise ValueError(
            f"`--data-dir`: {name} is not prepared in {where} ({err}). Prepare it once with "
            f"`tfds build {name} --data_dir DIR` on a machine with internet access (or copy a "
            "prepared tensorflow_datasets folder), then pass --data-dir DIR."
        ) from None


def default_backbone(dataset, backbone):
    """The backbone choice for a dataset (``auto`` = the dataset's default)."""
    check_backbone(dataset.name, backbone)
    chosen = dataset.backbone if backbone == "auto" else backbone
    if chosen != "mlp" and len(dataset.input_shape) != 3:
        raise ValueError(f"`--backbone {chosen}` takes images; {dataset.name} has feature vectors.")
    return chosen


def build_backbone(dataset, backbone, embedding_dim, weights=None):
    """The embedding network for ``dataset`` (a ``km.models`` backbone)."""
    from keras_margins import models

    chosen = default_backbone(dataset, backbone)
    check_backbone(dataset.name, chosen, weights)
    if chosen == "mlp":
        return models.mlp_backbone(dataset.input_shape[0], embedding_dim)
    return models.image_backbone(chosen, dataset.input_shape, embedding_dim, weights=weights)
