import matplotlib.image
import numpy as np
import pytest

import keras_margins as km


def _clusters(dim, n=200, c=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    centres = rng.normal(size=(c, dim))
    return centres[y] * 3 + rng.normal(size=(n, dim)), y, centres.T


def _check_png(fig, path):
    fig.savefig(path)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.std() > 0.01  # not blank


@pytest.mark.parametrize("dim", [2, 3])
def test_plot_embeddings_has_axes_legend_title(dim, tmp_path):
    emb, y, w = _clusters(dim)
    fig = km.plots.plot_embeddings(emb, y, w, title=f"features {dim}d")
    ax = fig.axes[0]
    assert ax.get_title() == f"features {dim}d"
    assert ax.get_xlabel() == "z1" and ax.get_ylabel() == "z2"
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["class 0", "class 1", "class 2", "class 3", "class prototypes"]
    # Points are drawn normalised onto the circle / sphere.
    offsets = np.asarray(ax.collections[-2].get_offsets())
    if dim == 2:
        np.testing.assert_allclose(np.linalg.norm(offsets, axis=1), 1.0, atol=1e-9)
    _check_png(fig, tmp_path / "emb.png")


def test_grid_and_margin_histogram(tmp_path):
    panels = {name: _clusters(3, seed=s)[:2] + (None,) for s, name in enumerate(["a", "b", "c"])}
    fig = km.plots.embedding_grid(panels, title="three losses", ncols=2)
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "c"]
    assert fig.get_suptitle() == "three losses"
    _check_png(fig, tmp_path / "grid.png")

    rng = np.random.default_rng(0)
    fig = km.plots.plot_margin_histogram({"x": rng.normal(0.5, 0.2, 300), "y": rng.normal(size=9)})
    ax = fig.axes[0]
    assert ax.get_title() == "Sample margins" and "sample margin" in ax.get_xlabel()
    assert len(ax.get_legend().get_texts()) == 3  # two series + the γ = 0 line
    heights = sum(p.get_height() for p in ax.patches)
    assert heights == 309  # every margin is counted once
    _check_png(fig, tmp_path / "hist.png")


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: km.plots.plot_embeddings(np.zeros((5, 4)), np.zeros(5)), "embeddings"),
        (lambda: km.plots.plot_embeddings(np.ones((5, 2)), np.zeros(4)), "labels"),
        (lambda: km.plots.plot_embeddings(np.ones((5, 2)), np.zeros(5), np.ones((3, 2))),
         "class_vectors"),
        (lambda: km.plots.plot_margin_histogram({"a": [np.nan]}), "finite"),
        (lambda: km.plots.embedding_grid({}), "panels"),
        (lambda: km.plots.embedding_grid({"a": (np.ones((3, 2)), [0, 1, 2], None),
                                          "b": (np.ones((3, 3)), [0, 1, 2], None)}), "mixes"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
