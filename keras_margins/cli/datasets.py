"""The ``--dataset`` choices of ``keras-margins train`` / ``evaluate``: the embedded digits and
the papers' TFDS datasets (read from ``--data-dir``, never downloaded).

A ``Dataset`` knows what the commands need: its classes, image shape, the backbone and
embedding size that suit it, a training stream (plain shuffled batches for class-level losses,
P×K batches for pair losses) and the test split in batches. The retrieval sets (CUB-200-2011,
Cars196, Stanford Online Products) are class-disjoint: the head trains on the first half of
the classes and the second half is only retrieved (MAP@R, P@1, Recall@K), the protocol of the
deep-metric-learning papers.

Nothing here imports Keras or TensorFlow at module level (``keras-margins --help`` stays fast).
"""

import dataclasses

DIGITS = ("digits", "digits-zero-shot")
TFDS = ("mnist", "cifar10", "cifar100", "caltech_birds2011", "cars196", "stanford_online_products")
#: ``--dataset`` choices.
DATASETS = DIGITS + TFDS
#: ``--backbone`` choices: "auto" picks the dataset's default (below).
BACKBONE_CHOICES = ("auto", "mlp", "small_cnn", "resnet50", "resnet101", "resnet50_v2",
                    "inception_v3", "densenet121", "mobilenet_v2", "efficientnet_b0")


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
        return dict(image_size=self.image_size, normalize=None, data_dir=self.data_dir)

    def train_stream(self, batch_size, seed, samples_per_class=None, steps_per_epoch=None):
        """``(fit_args, fit_kwargs)`` for ``model.fit``: shuffled (augmented) batches, or
        P×K batches (P = batch_size // samples_per_class) when ``samples_per_class`` is set."""
        from keras_margins import data

        if samples_per_class is not None:
            p = batch_size // samples_per_class
            if p < 2:
                raise ValueError(
                    f"`--batch-size` {batch_size} must hold at least 2 classes × "
                    f"{samples_per_class} samples (`--samples-per-class`) for a pair loss."
                )
            if self.is_tfds:
                stream = data.tfds_pk_batches(
                    self.name, p, samples_per_class, seed=seed, augment=True,
                    steps_per_epoch=steps_per_epoch, **self._tfds_kwargs(),
                )
            else:
                stream = data.pk_batches(self.arrays[0], p, samples_per_class, seed=seed,
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
    from keras_margins.data import TFDS_DATASETS, split_classes

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
    if backbone not in BACKBONE_CHOICES:
        raise ValueError(f"`--backbone` must be one of {BACKBONE_CHOICES}; got {backbone!r}.")
    chosen = dataset.backbone if backbone == "auto" else backbone
    if chosen == "mlp" and len(dataset.input_shape) != 1:
        raise ValueError(f"`--backbone mlp` takes feature vectors; {dataset.name} has images.")
    if chosen != "mlp" and len(dataset.input_shape) != 3:
        raise ValueError(f"`--backbone {chosen}` takes images; {dataset.name} has feature vectors.")
    return chosen


def build_backbone(dataset, backbone, embedding_dim, weights=None):
    """The embedding network for ``dataset`` (a ``km.models`` backbone)."""
    from keras_margins import models

    chosen = default_backbone(dataset, backbone)
    if chosen == "mlp":
        if weights is not None:
            raise ValueError("`--weights` applies to the keras.applications backbones.")
        return models.mlp_backbone(dataset.input_shape[0], embedding_dim)
    return models.image_backbone(chosen, dataset.input_shape, embedding_dim, weights=weights)
