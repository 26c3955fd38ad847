"""Virtual Softmax (Chen, Deng & Shen, NeurIPS 2018). Details: ``docs/papers.md`` §2."""

from keras import ops

from keras_margins._compat import get_tensor_attr, set_tensor_attr
from keras_margins.ops._numerics import safe_norm, take_target
from keras_margins.ops._validation import as_labels, features_and_kernel, static_shape


def virtual_log_probs(features, kernel, virtual_clip=None):
    """u_ij = z_ij − log(Σ_k e^{z_ik} + e^{||W_j||·||x_i||}), shape (N, C), with z = x·W.

    u_ij is log p(class j | x_i) under the Virtual Softmax model *if j were the label*: the
    virtual class W_virt = ||W_j||·x/||x|| then adds the logit ||W_j||·||x||. Computed as
    z − logaddexp(logsumexp(z), z_virt), stable without clipping; gradients flow through
    ||W_j|| and ||x|| as in the paper. ``-u[i, y_i]`` is the Virtual Softmax loss of sample i
    (``virtual_softmax`` computes only that column, in O(N·D) beyond the softmax).

    Args:
        features: (N, D) float tensor.
        kernel: (D, C) bias-free linear weights, C >= 2.
        virtual_clip: optional cap on the virtual logit, > 0 (default None; some public ports
            clamp it at 15 or 50).

    Returns:
        (N, C) float tensor.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> x, w = np.array([[1.0, 2.0]]), np.array([[1.0, 0.0, -1.0], [0.0, 1.0, 1.0]])
    >>> print(np.round(np.asarray(km.ops.virtual_log_probs(x, w)), 4))
    [[-2.0993 -1.0993 -2.5959]]

    Reference:
        - Chen, Deng & Shen, 2018. Virtual Class Enhanced Discriminative Embedding Learning, NeurIPS 2018.
    """
    if virtual_clip is not None and not virtual_clip > 0:
        raise ValueError(f"`virtual_clip` must be > 0 or None; got {virtual_clip}.")
    features, kernel = features_and_kernel(features, kernel)
    logits = ops.matmul(features, kernel)
    virtual = ops.expand_dims(safe_norm(features, 1), 1) * ops.expand_dims(safe_norm(kernel, 0), 0)
    if virtual_clip is not None:
        virtual = ops.minimum(virtual, virtual_clip)
    return logits - ops.logaddexp(ops.logsumexp(logits, axis=1, keepdims=True), virtual)


def virtual_softmax(labels, features, kernel, virtual_clip=None):
    """Per-sample Virtual Softmax loss.

    L_i = −log( e^{z_y} / (Σ_{j=1..C} e^{z_j} + e^{||W_y||·||x_i||}) ), z_j = W_jᵀx_i:
    cross-entropy over the C logits plus a virtual negative class W_virt = ||W_y||·x/||x||
    built from the sample itself. Never below the plain softmax loss; no hyper-parameters.
    x = 0 gives log(C + 1).

    Args:
        labels: (N,) or (N, 1) integer class ids in [0, C).
        features: (N, D) float tensor.
        kernel: (D, C) bias-free linear weights, C >= 2.
        virtual_clip: optional cap on the virtual logit, > 0 (default None).

    Returns:
        (N,) float tensor.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> x, w = np.array([[1.0, 2.0]]), np.array([[1.0, 0.0, -1.0], [0.0, 1.0, 1.0]])
    >>> print(np.round(np.asarray(km.ops.virtual_softmax([1], x, w)), 4))   # softmax CE: 0.5514
    [1.0993]
    >>> loss = km.ops.virtual_softmax([0], np.zeros((1, 4)), np.ones((4, 3)))
    >>> print(round(float(loss[0]), 4))   # log 4
    1.3863

    Reference:
        - Chen, Deng & Shen, 2018. Virtual Class Enhanced Discriminative Embedding Learning, NeurIPS 2018.
    """
    if virtual_clip is not None and not virtual_clip > 0:
        raise ValueError(f"`virtual_clip` must be > 0 or None; got {virtual_clip}.")
    features, kernel = features_and_kernel(features, kernel)
    labels = as_labels(labels, static_shape(kernel)[1], static_shape(features)[0])
    logits = ops.matmul(features, kernel)
    lse = ops.logsumexp(logits, axis=1, keepdims=True)
    terms = {
        "lse": lse,
        "feature_norm": safe_norm(features, 1),
        "kernel_norm": safe_norm(kernel, 0),
    }
    return virtual_nll(labels, logits - lse, terms, virtual_clip)


# ------------------------------------------------------------------------------------------
# The head/loss hand-off. In training, ``VirtualSoftmaxHead`` outputs the class
# log-probabilities log_softmax(x·W) (what compiled metrics such as "accuracy" must see) and
# attaches to that tensor the per-row log-sum-exp, ||x_i|| and the column norms ||W_j||, the
# way Keras attaches masks to tensors (Keras' tensor attributes, via ``_compat``: an attribute,
# or an id-keyed table where the tensor type refuses attributes). ``VirtualSoftmax`` reads
# them and adds the virtual class of the target column only:
#   L_i = −log_softmax(z)_{i,y} + softplus(||x_i||·||W_y|| − lse_i)
#       = −z_y + log(Σ_j e^{z_j} + e^{||W_y||·||x_i||})       (Chen et al. 2018, Eq. 3),
# O(D·C + N) on top of the softmax (the column norms and a gather) instead of exp/log over
# all N × C entries.
_TERMS_ATTR = "_keras_margins_virtual_terms"


def attach_virtual_terms(log_probs, lse, features, kernel, virtual_clip=None):
    """Attach what the virtual logit needs to the head's training output (private)."""
    terms = {
        "lse": lse,
        "feature_norm": safe_norm(features, 1),
        "kernel_norm": safe_norm(kernel, 0),
    }
    if virtual_clip is not None:
        terms["virtual_clip"] = float(virtual_clip)
    set_tensor_attr(log_probs, _TERMS_ATTR, terms)
    return log_probs


def virtual_terms(log_probs):
    """The terms attached by :func:`attach_virtual_terms`, or None (inference output)."""
    return get_tensor_attr(log_probs, _TERMS_ATTR)


def virtual_nll(labels, log_probs, terms, virtual_clip=None):
    """−log_probs[i, y_i] + softplus(min(||x_i||·||W_{y_i}||, clip) − lse_i), shape (N,).

    ``log_probs`` = log_softmax(x·W) (N, C); ``terms`` holds ``lse`` (N, 1), ``feature_norm``
    (N,) and ``kernel_norm`` (C,), the column norms ||W_j||, of which only the targets' are
    used (a gather from the (C,) vector: cheaper under XLA on CPU than gathering (D,) kernel
    columns, whose backward is a scatter into the (D, C) kernel). Invalid labels give NaN rows
    (through :func:`take_target`).
    """
    clip = terms.get("virtual_clip", virtual_clip)
    kernel_norm = ops.cast(terms["kernel_norm"], log_probs.dtype)
    num_classes = static_shape(kernel_norm)[0] or ops.shape(kernel_norm)[0]
    virtual = terms["feature_norm"] * ops.take(kernel_norm, ops.clip(labels, 0, num_classes - 1))
    if clip is not None:
        virtual = ops.minimum(virtual, ops.cast(clip, virtual.dtype))
    return -take_target(log_probs, labels) + ops.softplus(virtual - ops.squeeze(terms["lse"], 1))
