"""Common plumbing of the class heads (private)."""

import keras
from keras import ops

from keras_margins._arguments import LAYER_ARGUMENTS, reject_unknown
from keras_margins.ops._validation import as_float, static_shape


class ClassHead(keras.layers.Layer):
    """Base of the heads: (N, D) features -> (N, C) class scores, kernel (D, C) at ``.kernel``.

    A head declares what it outputs (``score_kind``: ``"cosine"``, ``"logits"`` or
    ``"log_probs"``), whether its class vectors are trained (``fixed_centers``) and gives them
    at ``class_vectors()`` (D, C): the declarations ``km.protocols`` reads (``docs/extend.md``).

    Heads compute in float32 even under a mixed-precision policy (scores feed a softmax with
    scales up to 64, which overflows float16), unless an explicit ``dtype`` is given.

    Args:
        num_classes: C >= 2.
        **kwargs: base ``keras.layers.Layer`` arguments (``dtype`` defaults to float32).
    """

    #: What the output is (``km.protocols.SCORE_KINDS``); subclasses set it.
    score_kind = None
    #: True when the class vectors are not trained.
    fixed_centers = False

    def __init__(self, num_classes, **kwargs):
        reject_unknown(type(self), {k: v for k, v in kwargs.items() if k not in LAYER_ARGUMENTS},
                       accepted=LAYER_ARGUMENTS)
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise ValueError(f"`num_classes` must be an integer >= 2; got {num_classes!r}.")
        self.num_classes = num_classes

    def class_vectors(self):
        """The (D, C) class vectors (one column per class): ``.kernel``."""
        return self.kernel

    def _feature_dim(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) != 2:
            raise ValueError(
                f"{type(self).__name__} expects features of shape (N, D); got input shape {shape}."
            )
        if shape[-1] is None:
            raise ValueError(f"{type(self).__name__} needs a known feature size D; got {shape}.")
        return shape[-1]

    def _check_features(self, features):
        """Validated float features (N, D) matching the kernel's D (what ``call`` should use)."""
        features = as_float(features, "features", 2, "(N, D)")
        shape = static_shape(features)
        expected = self.kernel.shape[0]
        if shape[1] is not None and shape[1] != expected:
            raise ValueError(
                f"`features` has D={shape[1]} but {type(self).__name__} was built for D={expected}."
            )
        return features

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config["num_classes"] = self.num_classes
        return config


#: Storage layouts of a ``PrototypeHead``'s class vectors.
KERNEL_LAYOUTS = ("feature_major", "class_major")


class PrototypeHead(ClassHead):
    """Base of the heads with trainable class vectors, stored (D, C) or (C, D).

    The prototypes are read at ``.kernel`` with shape (D, C) (one column per class) and at
    ``.centers`` with shape (C, D) (one row per class), whatever the storage.
    ``kernel_layout`` chooses how the trainable variable is stored:

    * ``"class_major"`` (default): a (C, D) variable named ``class_centers``; ``.centers`` is
      that variable and ``.kernel`` its (D, C) transpose (a tensor: assign through
      ``.centers``). Every class is a contiguous row, so a step that touches a few classes
      (``km.losses.PartialFC``) updates rows instead of scattering into a dense (D, C)
      gradient;
    * ``"feature_major"``: a (D, C) variable named ``class_kernel``; ``.kernel`` is that
      variable (``head.kernel.assign(...)`` works) and ``.centers`` its transpose.

    Both layouts give the same outputs, and ``kernel_regularizer`` / ``kernel_constraint``
    always see the (D, C) view. A config without ``kernel_layout`` (files written before the
    option existed) loads feature-major, the storage those files hold. The variable names are
    what ``km.distribution.class_parallel`` matches to split the classes over devices.
    """

    #: Default storage of the class vectors.
    default_kernel_layout = "class_major"
    #: Storage of a config that names no ``kernel_layout`` (written before the option).
    legacy_kernel_layout = "feature_major"

    def __init__(
        self,
        num_classes,
        kernel_initializer="glorot_normal",
        kernel_regularizer=None,
        kernel_constraint=None,
        kernel_layout=None,
        **kwargs,
    ):
        super().__init__(num_classes, **kwargs)
        kernel_layout = self.default_kernel_layout if kernel_layout is None else kernel_layout
        if kernel_layout not in KERNEL_LAYOUTS:
            raise ValueError(
                f"`kernel_layout` must be one of {KERNEL_LAYOUTS}; got {kernel_layout!r}."
            )
        self.kernel_layout = kernel_layout
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.storage = None

    @property
    def class_major(self):
        """True when the variable is stored (C, D) (``kernel_layout="class_major"``)."""
        return self.kernel_layout == "class_major"

    def build(self, input_shape):
        dim = self._feature_dim(input_shape)
        if not self.class_major:
            self.storage = self.add_weight(
                name="class_kernel",
                shape=(dim, self.num_classes),
                initializer=self.kernel_initializer,
                regularizer=self.kernel_regularizer,
                constraint=self.kernel_constraint,
            )
            return
        self.storage = self._add_class_centers(self.num_classes, dim)

    def _add_class_centers(self, rows, dim):
        """The class-major variable ``class_centers`` of shape (rows, D): its initial values
        are ``kernel_initializer``'s (D, rows) draw transposed, and the regulariser and the
        constraint see the (D, rows) view (``OnTranspose``)."""
        initializer = self.kernel_initializer

        def transposed_init(shape, dtype=None):
            return ops.transpose(initializer((shape[1], shape[0]), dtype=dtype))

        return self.add_weight(
            name="class_centers",
            shape=(rows, dim),
            initializer=transposed_init,
            regularizer=None if self.kernel_regularizer is None
            else OnTranspose(self.kernel_regularizer),
            constraint=None if self.kernel_constraint is None
            else OnTranspose(self.kernel_constraint, transpose_back=True),
        )

    @property
    def kernel(self):
        """The (D, C) prototypes: the variable (feature-major) or its transpose (class-major)."""
        if self.storage is None:
            raise AttributeError(f"{self.name} is not built yet: it has no kernel.")
        return ops.transpose(self.storage) if self.class_major else self.storage

    @property
    def centers(self):
        """The (C, D) prototypes: the variable (class-major) or its transpose (feature-major)."""
        if self.storage is None:
            raise AttributeError(f"{self.name} is not built yet: it has no centers.")
        return self.storage if self.class_major else ops.transpose(self.storage)

    def gather_class_vectors(self, class_ids):
        """(K, D) rows of the prototypes of ``class_ids`` (K,) (what ``km.losses.PartialFC``
        trains on): a row gather of a class-major variable, whose gradient only touches
        those rows (TensorFlow: ``IndexedSlices``)."""
        if self.class_major:
            return ops.take(self.storage, class_ids, axis=0)
        return ops.transpose(ops.take(self.storage, class_ids, axis=1))

    #: Former name of ``gather_class_vectors``.
    gather_centers = gather_class_vectors

    def _check_features(self, features):
        if not self.class_major:
            return super()._check_features(features)
        features = as_float(features, "features", 2, "(N, D)")
        dim, expected = static_shape(features)[1], self.storage.shape[1]
        if dim is not None and dim != expected:
            raise ValueError(
                f"`features` has D={dim} but {type(self).__name__} was built for D={expected}."
            )
        return features

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
                "kernel_layout": self.kernel_layout,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.setdefault("kernel_layout", cls.legacy_kernel_layout)
        return super().from_config(config)


class OnTranspose:
    """Applies a (D, C) regulariser / constraint to a class-major (C, D) variable."""

    def __init__(self, fn, transpose_back=False):
        self.fn = fn
        self.transpose_back = transpose_back

    def __call__(self, centers):
        out = self.fn(ops.transpose(centers))
        return ops.transpose(out) if self.transpose_back else out
