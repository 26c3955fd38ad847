"""Virtual Softmax (Chen, Deng & Shen, NeurIPS 2018). Details: ``docs/papers.md`` §2."""

from keras import ops

from keras_margins.ops._common import (
    as_labels,
    features_and_kernel,
    safe_norm,
    static_shape,
    take_target,
)


def virtual_log_probs(features, kernel, virtual_clip=None):
    """u_ij = z_ij − log(Σ_k e^{z_ik} + e^{||W_j||·||x_i||}), shape (N, C), with z = x·W.

    u_ij is log p(class j | x_i) under the Virtual Softmax model *if j were the label*: the
    virtual class W_virt = ||W_j||·x/||x|| then adds the logit ||W_j||·||x||. Computed as
    z − logaddexp(logsumexp(z), z_virt), stable without clipping; gradients flow through
    ||W_j|| and ||x|| as in the paper. ``-u[i, y_i]`` is the Virtual Softmax loss of sample i,
    which lets ``VirtualSoftmaxHead`` work in a plain ``keras.Sequential``.

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
    log_probs = virtual_log_probs(features, kernel, virtual_clip)
    labels = as_labels(labels, static_shape(kernel)[1], static_shape(features)[0])
    return -take_target(log_probs, labels)
