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

Pixels are raw, float32 in [0, 255], by default (``normalize="raw"``): the backbones of
``km.models`` hold their own scaling as a layer, so the model and its export take raw pixels.
``normalize`` takes the other names of the same vocabulary (``km.models.backbones.PIXEL_SCALINGS``)
for a model that does not scale its inputs itself.

Nothing is downloaded unless ``download=True``: point ``data_dir`` at prepared TFDS data.
"""

import numpy as np

from keras_margins.models.backbones import PIXEL_SCALINGS, RGB_SCALINGS, scale_pixels
from keras_margins.registry import TFDS_DATASETS

_RETRIEVAL_IMAGE_SIZE = 224
_RETRIEVAL_IMAGE_SIZE_PAIR = (_RETRIEVAL_IMAGE_SIZE, _RETRIEVAL_IMAGE_SIZE)


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


def _normalise(image, normalize):
    """``image`` (float32, [0, 255]) scaled as ``normalize`` (a ``PIXEL_SCALINGS`` name)."""
    import tensorflow as tf

    return scale_pixels(image, normalize, constant=lambda v: tf.constant(v, tf.float32))


def _stored_size(name, image_size, augment):
    """The size images are resized to before the (random) crop: with ``augment`` the retrieval
    sets are resized to 8/7 of the crop (256 for 224, the papers' protocol), the others keep
    their size (padded in ``_augment``)."""
    if image_size is None or not augment or TFDS_DATASETS[name][2] is None:
        return image_size
    return tuple(int(round(s * 8 / 7)) for s in image_size)


def _augment(name, image_size):
    """Training augmentation ``fn(image, seed)`` of an image already at ``_stored_size``:
    random crop to ``image_size`` and a horizontal flip (the retrieval sets and CIFAR); a
    ±2 px shift for MNIST (digits are not flipped). Stateless: ``seed`` is a (2,) int tensor."""
    import tensorflow as tf

    if name == "mnist":
        flip, pad = False, 2
    elif TFDS_DATASETS[name][2] is None:  # CIFAR: 4 px padding, crop back, flip
        flip, pad = True, 4
    else:
        flip, pad = True, 0

    def fn(image, seed):
        crop = image_size if image_size is not None else tf.shape(image)[:2]
        if pad:
            image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
        seeds = tf.random.experimental.stateless_split(seed, num=2)
        size = tf.concat([crop, tf.shape(image)[2:]], 0)
        image = tf.image.stateless_random_crop(image, size, seed=seeds[0])
        return tf.image.stateless_random_flip_left_right(image, seed=seeds[1]) if flip else image

    return fn


def _random_seeds(ds, seed):
    """``ds`` zipped with a (2,) int64 seed per element: a pure function of ``seed``, fresh
    on each iteration (each Keras epoch augments differently, reproducibly)."""
    import tensorflow as tf

    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip((ds, draws))


def _preprocess(name, image_size, normalize, augment=False):
    """``fn(image, label[, seed])``: resize, (with ``augment``) random crop/flip, normalise."""
    import tensorflow as tf

    stored = _stored_size(name, image_size, augment)
    crop = _augment(name, image_size) if augment else None

    def fn(image, label, seed=None):
        image = tf.cast(image, "float32")
        if stored is not None:
            image = tf.image.resize(image, stored)
        if crop is not None:
            image = crop(image, seed)
        return _normalise(image, normalize), tf.cast(label, "int32")

    return fn


def _image_size(name, image_size):
    if isinstance(image_size, str):
        if image_size != "default":
            raise ValueError("`image_size` must be an int, a pair, None or 'default'.")
        return _RETRIEVAL_IMAGE_SIZE_PAIR if TFDS_DATASETS[name][2] is not None else None
    if image_size is None:
        return None
    size = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
    if len(size) != 2 or any(isinstance(s, (bool, str)) or int(s) != s or s < 1 for s in size):
        raise ValueError(f"`image_size` must be a positive int or (height, width); got {image_size!r}.")
    return tuple(int(s) for s in size)


def _check_normalize(name, normalize):
    """The scaling name of ``normalize`` (None is ``"raw"``); ``ValueError`` when unknown or
    when it needs RGB and the dataset is grey-scale."""
    normalize = "raw" if normalize is None else normalize
    if normalize not in PIXEL_SCALINGS:
        raise ValueError(f"`normalize` must be one of {PIXEL_SCALINGS} or None; got {normalize!r}.")
    if normalize in RGB_SCALINGS and name == "mnist":
        raise ValueError(f"`normalize={normalize!r}` needs RGB images; mnist is grey-scale.")
    return normalize


def _examples(name, split, data_dir, shuffle, seed, download):
    """The (image uint8, label) examples of ``split`` (class-disjoint for retrieval sets)."""
    import tensorflow_datasets as tfds

    classes = split_classes(name, split)
    label_key, _, first_test = TFDS_DATASETS[name]
    ds = tfds.load(
        name,
        split="train+test" if first_test is not None else split,
        data_dir=data_dir,
        download=download,
        shuffle_files=shuffle,
        read_config=tfds.ReadConfig(shuffle_seed=seed) if shuffle else None,
    )
    ds = ds.map(lambda ex: (ex["image"], ex[label_key]))
    if first_test is not None:
        lo, hi = classes.start, classes.stop
        ds = ds.filter(lambda image, label: (label >= lo) & (label < hi))
    return ds


def load_tfds(
    name,
    split="train",
    image_size="default",
    normalize="raw",
    data_dir=None,
    batch_size=None,
    shuffle=False,
    seed=0,
    download=False,
    augment=False,
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
        normalize: the pixel scaling, one of ``km.models.backbones.PIXEL_SCALINGS``:
            ``"raw"`` (default, or ``None``: floats in [0, 255], what ``km.models``'
            backbones take, their scaling being a layer of the model), ``"unit"`` ([0, 1]),
            ``"symmetric"`` ([-1, 1]), ``"imagenet"`` (ImageNet mean/std) or ``"caffe"``
            (BGR, ImageNet mean subtracted); the last two need RGB data. Scale here only
            for a model that does not scale its inputs itself.
        data_dir: TFDS data directory holding the prepared dataset (default None: TFDS's).
        batch_size: batch the dataset, images must then share a size (default None).
        shuffle: shuffle the examples (file and example order) with ``seed`` (default False).
        seed: shuffling and augmentation seed (default 0).
        download: let TFDS download and prepare the data if missing (default False).
        augment: training augmentation (default False): the retrieval sets are resized to 8/7
            of ``image_size`` (256 for 224), randomly cropped back and flipped; CIFAR is padded
            by 4 px, cropped and flipped; MNIST shifted by up to 2 px.

    Returns:
        A ``tf.data.Dataset`` of ``(image float32 (H, W, C), label int32)``.

    Example:
        >>> train = km.data.load_tfds("cars196", "train", data_dir="~/tensorflow_datasets")
        >>> test = km.data.load_tfds("cars196", "test", batch_size=64)
        >>> for images, labels in test.take(1): print(images.shape)   # (64, 224, 224, 3)
    """
    import tensorflow as tf

    split_classes(name, split)  # checks name and split
    normalize = _check_normalize(name, normalize)
    image_size = _image_size(name, image_size)
    if batch_size is not None and image_size is None and TFDS_DATASETS[name][2] is not None:
        raise ValueError(f"`batch_size` needs an `image_size`: {name} images differ in size.")
    ds = _examples(name, split, data_dir, shuffle, seed, download)
    if shuffle:
        ds = ds.shuffle(4096, seed=seed)
    preprocess = _preprocess(name, image_size, normalize, augment)
    if augment:
        ds = _random_seeds(ds, seed).map(lambda example, s: preprocess(*example, s),
                                         num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    if batch_size is not None:
        ds = ds.batch(int(batch_size))
    return ds.prefetch(tf.data.AUTOTUNE)


def tfds_pk_batches(
    name,
    p,
    k,
    split="train",
    image_size="default",
    normalize="raw",
    data_dir=None,
    seed=0,
    augment=True,
    steps_per_epoch=None,
    infinite=False,
    download=False,
):
    """P×K class-balanced batches (``km.data.pk_batches``) of a TFDS dataset, for pair losses.

    The split is read once and kept in memory compactly: MNIST/CIFAR as uint8 arrays, the
    retrieval sets resized (to 8/7 of ``image_size`` with ``augment``) and JPEG-encoded
    (quality 95). Each batch is then decoded, augmented and scaled inside tf.data.

    Args:
        name: one of ``TFDS_DATASETS``.
        p: classes per batch. Batch size = p·k.
        k: samples per class.
        split: ``"train"`` or ``"test"`` (default ``"train"``).
        image_size: as in ``load_tfds`` (default ``"default"``); the retrieval sets need one.
        normalize: the pixel scaling, as in ``load_tfds`` (default ``"raw"``: [0, 255]).
        data_dir: TFDS data directory (default None).
        seed: sampling and augmentation seed (default 0).
        augment: the training augmentation of ``load_tfds`` (default True).
        steps_per_epoch: batches per iteration (default None: examples // (p·k)).
        infinite: repeat forever (default False).
        download: let TFDS download the data if missing (default False).

    Returns:
        A ``tf.data.Dataset`` of ``(images float32 (p·k, H, W, C), labels int32 (p·k,))``.

    Example:
        >>> ds = km.data.tfds_pk_batches("cars196", p=32, k=4, data_dir="~/tensorflow_datasets")
        >>> model.fit(ds, epochs=50)   # model = backbone, loss = km.losses.PairCircleLoss()

    Reference:
        - Hermans, Beyer & Leibe, 2017. [In Defense of the Triplet Loss for Person
          Re-Identification](https://arxiv.org/abs/1703.07737) (P×K batches).
    """
    import tensorflow as tf

    from keras_margins.data.pk_sampler import pk_batches

    split_classes(name, split)
    normalize = _check_normalize(name, normalize)
    image_size = _image_size(name, image_size)
    retrieval = TFDS_DATASETS[name][2] is not None
    if retrieval and image_size is None:
        raise ValueError(f"`image_size`: {name} images differ in size; pass one.")
    stored = _stored_size(name, image_size, augment)  # = image_size for MNIST/CIFAR

    def compact(image, label):  # runs inside tf.data, in parallel
        if stored is not None:
            image = tf.cast(tf.round(tf.clip_by_value(tf.image.resize(image, stored), 0, 255)), "uint8")
        if retrieval:
            image = tf.io.encode_jpeg(image, quality=95)
        return image, label

    images, labels = [], []
    examples = _examples(name, split, data_dir, False, seed, download)
    for image, label in examples.map(compact, num_parallel_calls=tf.data.AUTOTUNE).as_numpy_iterator():
        images.append(image)
        labels.append(label)
    if not labels:
        raise ValueError(f"`split` {split!r} of {name} holds no examples.")
    images = np.array(images, dtype=object) if retrieval else np.stack(images)
    crop = _augment(name, image_size) if augment else None
    channels = 3 if retrieval else images.shape[-1]

    def decode(item):
        image, image_seed = item
        if retrieval:
            image = tf.io.decode_jpeg(image, channels=channels)
            image = tf.ensure_shape(image, (*stored, channels))
        image = tf.cast(image, "float32")
        if crop is not None:
            image = crop(image, image_seed)
        return _normalise(image, normalize)

    dtype = tf.string if retrieval else tf.uint8

    def gather(index):  # the images stay in host memory, out of the tf.data graph
        return images[index.numpy()]

    def finish(batch, seed_pair):
        index, batch_labels = batch
        images_batch = tf.py_function(gather, [index], Tout=dtype)
        seeds = tf.random.experimental.stateless_split(seed_pair, num=p * k)
        images_batch = tf.map_fn(decode, (images_batch, seeds), fn_output_signature=tf.float32)
        images_batch = tf.ensure_shape(images_batch, (p * k, None, None, channels))
        return images_batch, tf.cast(batch_labels, "int32")

    indices = np.arange(len(labels))
    batches = pk_batches((indices, np.asarray(labels, "int64")), p, k, seed=seed,
                         steps_per_epoch=steps_per_epoch, infinite=infinite)
    return _random_seeds(batches, seed + 1).map(
        finish, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    ).prefetch(tf.data.AUTOTUNE)


# ----------------------------------------------------------------------------- named loaders
def cars196(split="train", **kwargs):
    """Cars196 (Krause et al., 2013): 16 185 images of 196 car models. ``"train"`` is the
    first 98 classes, ``"test"`` the other 98 (images of TFDS's train and test pooled), at
    224 px by default. ``kwargs`` are those of ``km.data.load_tfds``.

    Example:
        >>> train = km.data.cars196("train", data_dir="~/tensorflow_datasets", batch_size=32)
        >>> model.fit(train, epochs=10)   # raw pixels: the backbone scales them
    """
    return load_tfds("cars196", split, **kwargs)


def caltech_birds2011(split="train", **kwargs):
    """CUB-200-2011 (Wah et al., 2011): 11 788 images of 200 bird species. ``"train"`` is
    classes 0–99, ``"test"`` classes 100–199 (TFDS's splits pooled), at 224 px by default.
    ``kwargs`` are those of ``km.data.load_tfds``.

    Example:
        >>> test = km.data.caltech_birds2011("test", batch_size=64)   # retrieval among 100 unseen species
    """
    return load_tfds("caltech_birds2011", split, **kwargs)


def stanford_online_products(split="train", **kwargs):
    """Stanford Online Products (Oh Song et al., 2016): 120 053 images of 22 634 products.
    ``"train"`` is classes 0–11317 (TFDS's ``train``), ``"test"`` classes 11318–22633
    (TFDS's ``test``), at 224 px by default. ``kwargs`` are those of ``km.data.load_tfds``.

    Example:
        >>> ds = km.data.stanford_online_products("train", shuffle=True, batch_size=32)
    """
    return load_tfds("stanford_online_products", split, **kwargs)


def mnist(split="train", **kwargs):
    """MNIST: 28×28 grey-scale digits, TFDS's own ``"train"`` (60 000) and ``"test"``
    (10 000) splits over the 10 classes. ``kwargs`` are those of ``km.data.load_tfds``.

    Example:
        >>> train = km.data.mnist("train", batch_size=128, shuffle=True, augment=True)
    """
    return load_tfds("mnist", split, **kwargs)


def cifar10(split="train", **kwargs):
    """CIFAR-10: 32×32 colour images of 10 classes, TFDS's own ``"train"`` (50 000) and
    ``"test"`` (10 000) splits. ``kwargs`` are those of ``km.data.load_tfds``.

    Example:
        >>> test = km.data.cifar10("test", batch_size=256)
    """
    return load_tfds("cifar10", split, **kwargs)


def cifar100(split="train", **kwargs):
    """CIFAR-100: 32×32 colour images of 100 classes, TFDS's own ``"train"`` (50 000) and
    ``"test"`` (10 000) splits. ``kwargs`` are those of ``km.data.load_tfds``.

    Example:
        >>> train = km.data.cifar100("train", batch_size=128, shuffle=True, augment=True)
    """
    return load_tfds("cifar100", split, **kwargs)
