"""Figures of the papers: learned features on the unit circle / sphere, and the distribution of
sample margins (Zhou et al., ICLR 2022).

matplotlib is imported on first use (``import keras_margins`` stays light), and figures are
plain ``matplotlib.figure.Figure`` objects drawn with the Agg canvas: no pyplot, no GUI, no
global backend change, so they work on headless machines and inside notebooks alike.
"""

import numpy as np


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _unit_rows(x, name):
    x = np.asarray(x, dtype="float64")
    if x.ndim != 2 or x.shape[1] not in (2, 3):
        raise ValueError(f"`{name}` must have shape (N, 2) or (N, 3) to plot; got {x.shape}.")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"`{name}` contains NaN or inf values.")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _draw_reference(ax, dim):
    t = np.linspace(0, 2 * np.pi, 200)
    if dim == 2:
        ax.plot(np.cos(t), np.sin(t), color="0.75", lw=0.8, zorder=0)
        ax.set_aspect("equal")
        ax.set_xlim(-1.3, 1.3)
        ax.set_ylim(-1.3, 1.3)
        ax.grid(alpha=0.3)
        return
    u, v = np.meshgrid(np.linspace(0, 2 * np.pi, 24), np.linspace(0, np.pi, 12))
    ax.plot_wireframe(
        np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v), color="0.85", lw=0.4
    )
    ax.set_box_aspect((1, 1, 1), zoom=0.85)
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
        axis.set_ticks([-1.0, 0.0, 1.0])
    ax.set_zlabel("z3")


def plot_embeddings(
    embeddings, labels, class_vectors=None, ax=None, title=None, legend=True, max_points=2000
):
    """Scatter of L2-normalised 2-D (circle) or 3-D (sphere) embeddings coloured by class.

    Args:
        embeddings: (N, 2) or (N, 3) array (normalised here).
        labels: (N,) class ids.
        class_vectors: optional (D, C) prototypes, e.g. ``head.kernel``, drawn normalised as
            black stars (default None).
        ax: optional matplotlib axes to draw on, 3-D for 3-D embeddings (default None: a new
            figure).
        title: axes title (default None: "normalised D-D features").
        legend: draw the legend (default True).
        max_points: at most this many points are drawn, a fixed random subset (default 2000).

    Returns:
        The matplotlib ``Figure``.

    Example:
        >>> fig = km.plots.plot_embeddings(backbone.predict(x), y, head.kernel, title="ArcFace")
        >>> fig.savefig("arcface_circle.png")

    Reference:
        - Zhou et al., 2022. [Learning Towards the Largest Margins](https://arxiv.org/abs/2206.11589), ICLR
          2022 (features on the unit circle / sphere).
    """
    emb = _unit_rows(embeddings, "embeddings")
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(emb):
        raise ValueError(f"`labels` must have {len(emb)} entries; got {len(labels)}.")
    dim = emb.shape[1]
    if ax is None:
        fig = _figure(5.0, 5.0)
        ax = fig.add_subplot(projection="3d" if dim == 3 else None)
    elif (dim == 3) != (getattr(ax, "name", "") == "3d"):
        raise ValueError("`ax` must be a 3-D axes for 3-D embeddings and a 2-D one otherwise.")
    if len(emb) > max_points:
        keep = np.random.default_rng(0).choice(len(emb), max_points, replace=False)
        emb, labels = emb[keep], labels[keep]
    _draw_reference(ax, dim)
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(np.unique(labels)) <= 10 else "tab20"]
    for i, c in enumerate(np.unique(labels)):
        pts = emb[labels == c]
        ax.scatter(*pts.T, s=8, alpha=0.7, color=cmap(i % cmap.N), label=f"class {c}")
    if class_vectors is not None:
        w = _unit_rows(np.asarray(class_vectors, dtype="float64").T, "class_vectors")
        if w.shape[1] != dim:
            raise ValueError(f"`class_vectors` must be ({dim}, C); got {w.T.shape}.")
        extra = {"depthshade": False} if dim == 3 else {}
        ax.scatter(*w.T, marker="*", s=160, color="black", label="class prototypes", **extra)
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    ax.set_title(title or f"normalised {dim}-D features")
    if legend:
        ax.legend(fontsize=6, loc="upper right", markerscale=1.5, ncols=2, framealpha=0.8)
    return ax.figure


def plot_margin_histogram(margins, ax=None, title="Sample margins", bins=40):
    """Histogram of sample margins γ = cos θ_y − max_{j≠y} cos θ_j.

    A dashed line marks γ = 0 (left of it: misclassified).

    Args:
        margins: an array, or a dict ``{name: array}`` to overlay several losses.
        ax: optional matplotlib axes (default None: a new figure).
        title: axes title (default ``"Sample margins"``).
        bins: number of bins (default 40).

    Returns:
        The matplotlib ``Figure``.

    Example:
        >>> gamma = km.ops.sample_margin(y, model.predict(x))
        >>> km.plots.plot_margin_histogram({"ArcFace": gamma}).savefig("margins.png")

    Reference:
        - Zhou et al., 2022. [Learning Towards the Largest Margins](https://arxiv.org/abs/2206.11589), ICLR
          2022 (sample margin).
    """
    series = margins if isinstance(margins, dict) else {"sample margin": margins}
    if not series:
        raise ValueError("`margins` is empty.")
    series = {k: np.asarray(v, dtype="float64").reshape(-1) for k, v in series.items()}
    for name, values in series.items():
        if not values.size or not np.all(np.isfinite(values)):
            raise ValueError(f"`margins[{name!r}]` must be a non-empty array of finite values.")
    if ax is None:
        ax = _figure(6.0, 4.0).add_subplot()
    edges = np.linspace(min(-0.5, *(v.min() for v in series.values())), 2.0, bins + 1)
    for name, values in series.items():
        ax.hist(values, bins=edges, alpha=0.5, label=f"{name} (mean {values.mean():.2f})")
    ax.axvline(0.0, color="black", ls="--", lw=1, label="γ = 0")
    ax.set_xlabel("sample margin γ = cos θ_y − max_{j≠y} cos θ_j")
    ax.set_ylabel("number of samples")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax.figure


def embedding_grid(panels, title=None, ncols=None):
    """One figure with ``plot_embeddings`` for each entry of ``panels``.

    Args:
        panels: dict ``{name: (embeddings, labels, class_vectors or None)}``, all 2-D or all
            3-D.
        title: figure title (default None).
        ncols: panels per row (default None: all in one row).

    Returns:
        The matplotlib ``Figure``.

    Example:
        >>> fig = km.plots.embedding_grid({"softmax": (e1, y, w1), "ArcFace": (e2, y, w2)})
        >>> fig.savefig("features_2d.png")
    """
    if not panels:
        raise ValueError("`panels` is empty.")
    dims = {np.shape(p[0])[1] for p in panels.values()}
    if len(dims) != 1:
        raise ValueError(f"`panels` mixes embedding sizes {sorted(dims)}; use one per figure.")
    dim = dims.pop()
    ncols = ncols or len(panels)
    nrows = -(-len(panels) // ncols)
    fig = _figure(4.0 * ncols, 4.0 * nrows + 0.4)
    for i, (name, (emb, labels, vectors)) in enumerate(panels.items()):
        ax = fig.add_subplot(nrows, ncols, i + 1, projection="3d" if dim == 3 else None)
        plot_embeddings(emb, labels, vectors, ax=ax, title=name, legend=False)
    handles, names = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=min(len(names), 11),
               fontsize=8, markerscale=1.5)
    if title:
        fig.suptitle(title)
    return fig
