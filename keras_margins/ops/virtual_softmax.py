"""Virtual Softmax (Chen, Deng & Shen, NeurIPS 2018; SPEC §5)."""

from keras import ops

from keras_margins.ops._common import EPS, as_float, as_labels, static_shape, take_target


def features_and_kernel(features, kernel, kernel_what="(D, C) with one column per class"):
    """Validated float (N, D) features and (D, C) kernel with matching D, in one dtype."""
    features = as_float(features, "features", 2, "(N, D)")
    kernel = ops.cast(as_float(kernel, "kernel", 2, kernel_what), features.dtype)
    d_x, (d_w, num_classes) = static_shape(features)[1], static_shape(kernel)
    if d_x is not None and d_w is not None and d_x != d_w:
        raise ValueError(f"`features` has D={d_x} but `kernel` has D={d_w} rows; expected (D, C).")
    if num_classes is not None and num_classes < 2:
        raise ValueError(f"`kernel` must have at least 2 class columns; got {num_classes}.")
    return features, kernel


def safe_norm(x, axis):
    """||x|| with a floor inside the square root: finite gradient at x = 0."""
    return ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=axis), EPS * EPS))


def virtual_log_probs(features, kernel, virtual_clip=None):
    """u_ij = z_ij − log(Σ_k e^{z_ik} + e^{||W_j||·||x_i||}), shape (N, C), with z = x·W.

    u_ij is log p(class j | x_i) under the Virtual Softmax model *if j were the label*: the
    virtual class W_virt = ||W_j||·x/||x|| then adds the logit z_virt = ||W_j||·||x|| (SPEC §5).
    Computed as z − logaddexp(logsumexp(z), z_virt) (stable without clipping); gradients flow
    through ||W_j|| and ||x|| as in the paper. ``virtual_clip`` caps z_virt (some public ports
    clamp it at 15 or 50; off by default).

    Example:
        >>> u = km.ops.virtual_log_probs(features, head.kernel)    # (N, C)
        >>> loss = -u[np.arange(N), labels]                        # = virtual_softmax(...)
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
    """Per-sample Virtual Softmax loss, shape (N,) (Chen et al. 2018, Eq. 3; SPEC §5).

    L_i = −log( e^{z_y} / (Σ_{j=1..C} e^{z_j} + e^{z_virt}) ),  z_j = W_jᵀx,
    z_virt = ||W_y||·||x||: cross-entropy over the C logits plus a virtual negative class
    W_virt = ||W_y||·x/||x|| built from the sample itself. Always ≥ the softmax loss; no
    hyper-parameters. x = 0 gives log(C + 1).

    Example:
        >>> loss = km.ops.virtual_softmax(labels, features, head.kernel)   # (N,)
        >>> float(km.ops.virtual_softmax([0], np.zeros((1, 4)), np.ones((4, 3)))[0])  # log 4
    """
    log_probs = virtual_log_probs(features, kernel, virtual_clip)
    labels = as_labels(labels, static_shape(kernel)[1], static_shape(features)[0])
    return -take_target(log_probs, labels)
