"""TensorFlow Datasets loaders for the papers' datasets, as ``tf.data`` pipelines of
``(image float32 (H, W, C), label int32)``.

Retrieval sets use the standard class-disjoint split of the deep-metric-learning papers
(Musgrave et al. 2020): the images of TFDS's own train and test splits are pooled and
the first half of the classes trains, the second half is retrieved. Labels keep their
original ids (like ``digits_zero_shot``).

=========================== ================== ==================== ==================
dataset                     train classes      test classes         default image size
=========================== ================== ==================== ==================
``cars196``                 0–97               98–195               224
``caltech_birds2011``       0–99               100–199              224
``stanford_online_products`` 0–11317 (TFDS     11318–22633 (TFDS    224
                            ``train``)         ``test``)
``mnist``, ``cifar10``,     all (TFDS          all (TFDS ``test``)  native (28 / 32)
``cifar100``                ``train``)
=========================== ================== ==================== ==================

Nothing is downloaded unless ``download=True``: point ``data_dir`` at prepared TFDS data.
"""

import numpy as np

#: name -> (label feature, number of classes, first test class or None for the TFDS splits)
TFDS_DATASETS = {
    "cars196": ("label", 196, 98),
    "caltech_birds2011": ("label", 200, 100),
    "stanford_online_products": ("class_id", 22634, 11318),
    "mnist": ("label", 10, None),
    "cifar10": ("label", 10, None),
    "cifar100": ("label", 100, None),
}
_RETRIEVAL_IMAGE_SIZE = 224
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_NORMALIZATIONS = ("unit", "symmetric", "imagenet", None)


def split_classes(name, split="train"):
    """The class ids of ``split`` of dataset ``name``, as a range.

    Args:
        name: one of ``TFDS_DATASETS``.
        split: ``"train"`` or ``"test"`` (default ``"train"``).

    Returns:
        A ``range`` of class ids.

    Example:
        >>> km.data.split_classes("cars196", "test")     # range(98, 196)
    """
    _check_name(name)
    if split not in ("train", "test"):
        raise ValueError(f"`split` must be 'train' or 'test'; got {split!r}.")
    _, num_classes, first_test = TFDS_DATASETS[name]
    if first_test is None:
        return range(num_classes)
    return range(0, first_test) if split == "train" else range(first_test, num_classes)


def _check_name(name):
    if name not in TFDS_DATASETS:
        raise ValueError(f"`name` must be one of {sorted(TFDS_DATASETS)}; got {name!r}.")


def _preprocess(image_size, normalize):
    import tensorflow as tf

    def fn(image, label):
        image = tf.cast(image, "float32")
        if image_size is not None:
            image = tf.image.resize(image, image_size)
        if normalize == "unit":
            image = image / 255.0
        elif normalize == "symmetric":
            image = image / 127.5 - 1.0
        elif normalize == "imagenet":
            image = (image / 255.0 - _IMAGENET_MEAN) / _IMAGENET_STD
        return image, tf.cast(label, "int32")

    return fn


def load_tfds(
    name,
    split="train",
    image_size="default",
    normalize="unit",
    data_dir=None,
    batch_size=None,
    shuffle=False,
    seed=0,
    download=False,
):
    """A ``tf.data.Dataset`` of ``(image, label)`` for one of ``TFDS_DATASETS``.

    Args:
        name: ``cars196``, ``caltech_birds2011``, ``stanford_online_products``, ``mnist``,
            ``cifar10`` or ``cifar100``.
        split: ``"train"`` or ``"test"``, class-disjoint for the retrieval sets, see above
            (default ``"train"``).
        image_size: ``int`` or ``(height, width)`` for a bilinear resize; ``None`` keeps the
            stored size; ``"default"`` (the default) is 224 for the retrieval sets, native
            otherwise.
        normalize: ``"unit"`` ([0, 1], default), ``"symmetric"`` ([-1, 1]), ``"imagenet"``
            (ImageNet mean/std of RGB, 3-channel data only) or ``None`` (0–255 floats).
        data_dir: TFDS data directory holding the prepared dataset (default None: TFDS's).
        batch_size: batch the dataset, images must then share a size (default None).
        shuffle: shuffle the examples (file and example order) with ``seed`` (default False).
        seed: shuffling seed (default 0).
        download: let TFDS download and prepare the data if missing (default False).

    Returns:
        A ``tf.data.Dataset`` of ``(image float32 (H, W, C), label int32)``.

    Example:
        >>> train = km.data.load_tfds("cars196", "train", data_dir="~/tensorflow_datasets")
        >>> test = km.data.load_tfds("cars196", "test", batch_size=64)
        >>> for images, labels in test.take(1): print(images.shape)   # (64, 224, 224, 3)
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    classes = split_classes(name, split)
    if normalize not in _NORMALIZATIONS:
        raise ValueError(f"`normalize` must be one of {_NORMALIZATIONS}; got {normalize!r}.")
    if normalize == "imagenet" and name == "mnist":
        raise ValueError("`normalize='imagenet'` needs RGB images; mnist is grey-scale.")
    label_key, _, first_test = TFDS_DATASETS[name]
    if isinstance(image_size, str):
        if image_size != "default":
            raise ValueError("`image_size` must be an int, a pair, None or 'default'.")
        image_size = _RETRIEVAL_IMAGE_SIZE if first_test is not None else None
    if image_size is not None:
        size = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
        if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
            raise ValueError(f"`image_size` must be a positive int or (height, width); got {image_size!r}.")
        image_size = tuple(int(s) for s in size)
    if batch_size is not None and image_size is None and first_test is not None:
        raise ValueError(f"`batch_size` needs an `image_size`: {name} images differ in size.")

    tfds_split = "train+test" if first_test is not None else split
    ds = tfds.load(
        name,
        split=tfds_split,
        data_dir=data_dir,
        download=download,
        shuffle_files=shuffle,
        read_config=tfds.ReadConfig(shuffle_seed=seed) if shuffle else None,
    )
    ds = ds.map(lambda ex: (ex["image"], ex[label_key]))
    if first_test is not None:
        lo, hi = classes.start, classes.stop
        ds = ds.filter(lambda image, label: (label >= lo) & (label < hi))
    if shuffle:
        ds = ds.shuffle(4096, seed=seed)
    ds = ds.map(_preprocess(image_size, normalize), num_parallel_calls=tf.data.AUTOTUNE)
    if batch_size is not None:
        ds = ds.batch(int(batch_size))
    return ds.prefetch(tf.data.AUTOTUNE)


def _named(name):
    def loader(split="train", **kwargs):
        return load_tfds(name, split, **kwargs)

    loader.__name__ = loader.__qualname__ = name
    loader.__doc__ = (
        f"``load_tfds({name!r}, split, **kwargs)``: the {name} {{train, test}} split as "
        f"(image, label) pairs; see ``km.data.load_tfds`` for the arguments.\n\n"
        f"    Example:\n"
        f"        >>> ds = km.data.{name}('train', data_dir='~/tensorflow_datasets')\n"
        f"        >>> test = km.data.{name}('test', batch_size=64)\n"
        f"        >>> model.fit(ds.batch(32))\n"
    )
    return loader


cars196 = _named("cars196")
caltech_birds2011 = _named("caltech_birds2011")
stanford_online_products = _named("stanford_online_products")
mnist = _named("mnist")
cifar10 = _named("cifar10")
cifar100 = _named("cifar100")
