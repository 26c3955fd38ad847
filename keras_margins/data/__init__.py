"""Data: the embedded digits dataset, long-tailed subsets, P×K sampling, TFDS loaders."""

from keras_margins.data.digits import digits_classification, digits_zero_shot
from keras_margins.data.glyphs import augment_glyphs, glyph_batches, glyph_fonts, glyph_pairs, glyphs
from keras_margins.data.long_tailed import long_tailed, long_tailed_counts
from keras_margins.data.pk_sampler import pk_batches
from keras_margins.data.tfds_loaders import (
    TFDS_DATASETS,
    caltech_birds2011,
    cars196,
    cifar10,
    cifar100,
    load_tfds,
    mnist,
    split_classes,
    stanford_online_products,
    tfds_pk_batches,
)
