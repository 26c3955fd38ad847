"""km.data.glyphs: characters every chosen font really contains (cmaps read here with
fontTools), labels that match an independent render, the protocols' splits, determinism, the
atomic on-disk cache, seeded augmentation checked against NumPy filters, verification pairs and
the errors. Tests that need CJK fonts skip (with the packages to install) when none is found;
.ci/run installs them."""

import importlib
import os

import numpy as np
import pytest

import keras_margins as km

G = importlib.import_module("keras_margins.data.glyphs")
#: small Debian font packages (fonts-arphic-uming, fonts-wqy-microhei, fonts-ipafont-mincho,
#: fonts-hanazono): three are enough for every test
CANDIDATES = ("arphic_uming", "wqy_microhei", "ipa_mincho", "hanazono", "noto_sans_regular",
              "noto_serif_regular", "wqy_zenhei")


def _installed():
    files = G._find_files()
    return [n for n in CANDIDATES if G._resolve_font(n, files)[0] is not None]


INSTALLED = _installed()
INSTALL = ("apt-get install fonts-arphic-uming fonts-wqy-microhei fonts-ipafont-mincho "
           "fonts-hanazono")
#: .ci/run sets it: there the font tests must run, not skip
REQUIRED = os.environ.get("KM_GLYPHS_REQUIRE_FONTS") == "1"
needs_fonts = pytest.mark.skipif(
    len(INSTALLED) < 3 and not REQUIRED,
    reason=f"needs 3 CJK fonts; install e.g. `{INSTALL}` (scripts/setup.sh does as root)",
)
FONTS = INSTALLED[:3]
C = 150


def test_fonts_are_installed_where_required():
    if REQUIRED:
        assert len(INSTALLED) >= 3, f"KM_GLYPHS_REQUIRE_FONTS=1 but found {INSTALLED}; `{INSTALL}`"


@pytest.fixture
def cache(tmp_path):
    return str(tmp_path / "cache")


def _get(cache, split="train", protocol="closed_set", **kw):
    kw.setdefault("num_classes", C)
    kw.setdefault("fonts", FONTS)
    return km.data.glyphs(split, protocol=protocol, cache_dir=cache, return_info=True, **kw)


def _reference_render(path, index, ch, size):
    """The documented rule, written again: em = 85 % of the side, ink box centred."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(path, size=round(0.85 * size), index=index)
    left, top, right, bottom = font.getbbox(ch)
    image = Image.new("L", (size, size), 0)
    ImageDraw.Draw(image).text((round((size - (right - left)) / 2 - left),
                                round((size - (bottom - top)) / 2 - top)), ch, fill=255, font=font)
    return np.asarray(image)


@needs_fonts
def test_every_character_is_in_every_fonts_cmap_and_matches_a_fresh_render(cache):
    from fontTools.ttLib import TTFont

    (x, y), info = _get(cache, test_fonts=())
    assert x.dtype == np.uint8 and x.shape == (3 * C, 32, 32, 1) and y.dtype == np.int32
    chars = info["characters"]
    assert len(set(chars)) == C and all(0x4E00 <= ord(c) <= 0x9FFF for c in chars)
    files = G._find_files()
    rng = np.random.default_rng(0)
    for f, name in enumerate(info["fonts"]):
        path, index, _ = G._resolve_font(name, files)
        font = TTFont(path, fontNumber=index, lazy=True)
        cmap = font.getBestCmap()
        font.close()
        assert all(cmap.get(ord(c)) not in (None, ".notdef") for c in chars), name
        rows = np.flatnonzero(info["font"] == f)
        assert np.all(x[rows].reshape(len(rows), -1).max(axis=1) > 0)  # no blank glyph
        for i in rng.choice(rows, 5, replace=False):
            np.testing.assert_array_equal(x[i, ..., 0],
                                          _reference_render(path, index, chars[y[i]], 32))


@needs_fonts
def test_coverage_is_the_intersection_and_bounds_num_classes(cache):
    files = G._find_files()
    cover = {n: set(G._coverage(*G._resolve_font(n, files)[:2], "cjk", cache)) for n in FONTS}
    common = set.intersection(*cover.values())
    assert len(common) < len(set.union(*cover.values()))  # the fonts differ in coverage
    (_, _), info = _get(cache, test_fonts=())
    assert {ord(c) for c in info["characters"]} <= common
    smallest = min(cover, key=lambda n: len(cover[n]))
    with pytest.raises(ValueError, match=f"`num_classes`.*share only {len(common)} .*{smallest}"):
        _get(cache, num_classes=len(common) + 1)


@needs_fonts
def test_closed_set_splits_share_classes_and_hold_out_fonts(cache):
    (x, y), info = _get(cache, test_fonts=[FONTS[1]])
    (xt, yt), info_t = _get(cache, "test", test_fonts=[FONTS[1]])
    assert info["train_fonts"] == [FONTS[0], FONTS[2]] and info["test_fonts"] == [FONTS[1]]
    assert sorted(set(y.tolist())) == sorted(set(yt.tolist())) == list(range(C))
    assert np.bincount(y).tolist() == [2] * C and np.bincount(yt).tolist() == [1] * C
    assert set(info["font"].tolist()) == {0, 2} and set(info_t["font"].tolist()) == {1}


@needs_fonts
def test_unseen_protocol_gallery_probe_and_train_are_as_documented(cache):
    kw = dict(protocol="unseen", test_fonts=[FONTS[2]], gallery_font=FONTS[1])
    (x, y), info = _get(cache, **kw)
    (xg, yg), gi = _get(cache, "gallery", **kw)
    (xp, yp), pi = _get(cache, "probe", **kw)
    (xt, yt), _ = _get(cache, "test", **kw)
    assert len(info["characters"]) == 2 * C
    assert set(y.tolist()) == set(yt.tolist()) == set(range(C))
    assert sorted(yg.tolist()) == list(range(C, 2 * C))  # each unseen character once
    assert set(gi["font"].tolist()) == {1}
    assert set(yp.tolist()) == set(range(C, 2 * C)) and set(pi["font"].tolist()) == {0, 2}
    # the same character in the same font is the same image in every split and protocol
    (xc, yc), ci = _get(cache, num_classes=2 * C, test_fonts=())
    # closed set with 2C classes picks its characters by the same rule from the same list
    assert ci["characters"] == info["characters"]
    same = np.flatnonzero((ci["font"] == 1) & (yc >= C))
    order = np.argsort(yc[same])
    np.testing.assert_array_equal(xc[same][order], xg[np.argsort(yg)])


@needs_fonts
def test_deterministic_and_second_build_loads_the_cache(cache, monkeypatch):
    (x1, y1), _ = _get(cache)
    files = [f for f in os.listdir(cache) if f.startswith("glyphs-")]
    assert len(files) == 1 and files[0].endswith(".npz")
    monkeypatch.setattr(G, "_render", lambda *a: pytest.fail("rendered again"))
    (x2, y2), _ = _get(cache)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    monkeypatch.undo()
    (x3, _), _ = _get(str(cache) + "-fresh")  # a fresh render: the same pixels
    np.testing.assert_array_equal(x1, x3)


@needs_fonts
def test_a_failed_write_leaves_nothing_in_the_cache(cache, monkeypatch):
    def broken(file, **arrays):
        file.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        _get(cache)
    left = os.listdir(cache)
    assert not [f for f in left if f.startswith(("glyphs-", ".tmp"))], left


@needs_fonts
def test_bad_arguments_raise_naming_the_argument_and_write_nothing(cache):
    cases = [
        (dict(split="validation"), "`split`"),
        (dict(split="gallery"), "`split`"),  # closed set has no gallery
        (dict(protocol="open"), "`protocol`"),
        (dict(script="klingon"), "`script`"),
        (dict(fonts=[FONTS[0], "no_such_font"]), "`fonts`"),
        (dict(fonts=[FONTS[0]]), "`fonts`"),
        (dict(num_classes=10 ** 6), "`num_classes`"),
        (dict(num_classes=0), "`num_classes`"),
        (dict(test_fonts=["hanazono-x"]), "`test_fonts`"),
        (dict(test_fonts=FONTS), "`test_fonts`"),
        (dict(protocol="unseen", gallery_font="nope"), "`gallery_font`"),
        (dict(image_size=4), "`image_size`"),
        (dict(batch_size=0), "`batch_size`"),
    ]
    for kw, name in cases:
        args = dict(split="train", protocol="closed_set", num_classes=C, fonts=FONTS, cache_dir=cache)
        args.update(kw)
        with pytest.raises(ValueError, match=name):
            km.data.glyphs(args.pop("split"), **args)
    assert not os.path.exists(cache) or not [f for f in os.listdir(cache)
                                             if f.startswith(("glyphs-", ".tmp"))]


def test_no_font_found_names_the_packages(tmp_path, monkeypatch):
    monkeypatch.setenv("KM_FONT_DIRS", str(tmp_path / "empty"))
    monkeypatch.setenv("KM_FONT_DIRS_ONLY", "1")
    for script in ("cjk", "hangul"):
        with pytest.raises(ValueError, match="`fonts`.*apt-get install .*fonts-"):
            km.data.glyphs(script=script, cache_dir=str(tmp_path / "cache"))
        assert km.data.glyph_fonts(script, cache_dir=str(tmp_path / "cache")) == {}
    with pytest.raises(ValueError, match="not installed.*fonts-hanazono"):
        km.data.glyphs(fonts=["hanazono", "wqy_zenhei"], cache_dir=str(tmp_path / "cache"))
    assert not os.path.exists(tmp_path / "cache")


@needs_fonts
def test_glyph_fonts_reports_coverage_from_the_cmap():
    from fontTools.ttLib import TTFont

    report = km.data.glyph_fonts("cjk")
    for name in FONTS:
        entry = report[name]
        font = TTFont(entry["path"], fontNumber=entry["index"], lazy=True)
        want = sum(1 for c in font.getBestCmap() if 0x4E00 <= c <= 0x9FFF)
        font.close()
        assert entry["coverage"] == want


# ---- augmentation: NumPy references of its parts ---------------------------------------

def _np_max3(x):
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    return np.max([p[:, i:i + x.shape[1], j:j + x.shape[2]] for i in range(3) for j in range(3)], 0)


def _np_min3(x):
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=np.inf)
    return np.min([p[:, i:i + x.shape[1], j:j + x.shape[2]] for i in range(3) for j in range(3)], 0)


def _np_blur(x):
    k = np.outer([1, 2, 1], [1, 2, 1]) / 16.0
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros_like(x)
    for i in range(3):
        for j in range(3):
            out += k[i, j] * p[:, i:i + x.shape[1], j:j + x.shape[2]]
    return out


def _images(n=12, size=20, margin=3, seed=0):
    """A cross of two random strokes per image, ``margin`` pixels from the border."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, size, size, 1), "float32")
    for i in range(n):
        r, c = rng.integers(margin + 1, size - margin - 1, 2)
        x[i, r, margin:size - margin] = 255.0
        x[i, margin:size - margin, c] = rng.uniform(100, 255)
    return x


OFF = dict(max_shift=0.0, max_rotate=0.0, max_scale=0.0, stroke=0.0, blur=0.0, noise=0.0)


def _blend_weights(out, x, target):
    """Per image w with out − x = w·(target − x), and the largest residual."""
    d, t = (out - x).reshape(len(x), -1), (target - x).reshape(len(x), -1)
    w = np.sum(d * t, 1) / np.maximum(np.sum(t * t, 1), 1e-12)
    return w, np.max(np.abs(d - w[:, None] * t))


@pytest.mark.tf_only
def test_augmentation_parts_match_numpy_references():
    x = _images()
    seed = np.array([3, 4])
    aug = lambda **kw: km.data.augment_glyphs(x, seed, **{**OFF, **kw}).numpy()  # noqa: E731
    np.testing.assert_allclose(aug(), x, atol=1e-3)  # everything off: identity
    out = aug(blur=1.0)
    w, res = _blend_weights(out, x, _np_blur(x))
    assert res < 1e-2 and np.all((w >= 0) & (w <= 1)) and np.ptp(w) > 0.1
    out = aug(stroke=1.0)
    dil, ero = _np_max3(x), _np_min3(x)
    wd, rd = _blend_weights(out, x, dil)
    we, re_ = _blend_weights(out, x, ero)
    per_image = [min(a, b) for a, b in zip(
        np.abs((out - x) - wd[:, None, None, None] * (dil - x)).reshape(len(x), -1).max(1),
        np.abs((out - x) - we[:, None, None, None] * (ero - x)).reshape(len(x), -1).max(1))]
    assert max(per_image) < 1e-2  # each image: a blend with its dilation or its erosion
    assert np.any(wd > 0.05) and np.any(we > 0.05)  # both directions occur
    noisy = aug(noise=8.0)
    assert 0.5 < np.std(noisy - x) < 8.0 and noisy.min() >= 0 and noisy.max() <= 255


@pytest.mark.tf_only
def test_augmentation_affine_moves_ink_as_bounded_and_is_seeded():
    x = _images(size=32, margin=9)
    mass = lambda a: a[..., 0].sum((1, 2))  # noqa: E731

    def centroid(a):
        r = np.arange(a.shape[1])
        return np.stack([(a[..., 0].sum(2) * r).sum(1), (a[..., 0].sum(1) * r).sum(1)], 1) / mass(a)[:, None]

    shifted = km.data.augment_glyphs(x, np.array([1, 2]), **{**OFF, "max_shift": 0.1}).numpy()
    move = np.abs(centroid(shifted) - centroid(x))
    assert move.max() <= 0.1 * 32 + 0.5 and move.max() > 0.5
    rotated = km.data.augment_glyphs(x, np.array([1, 2]), **{**OFF, "max_rotate": 0.3}).numpy()
    assert np.abs(centroid(rotated) - centroid(x)).max() < 3.5  # turns about the centre
    np.testing.assert_allclose(mass(rotated), mass(x), rtol=0.15)
    a = km.data.augment_glyphs(x, np.array([5, 6])).numpy()
    b = km.data.augment_glyphs(x, np.array([5, 6])).numpy()
    c = km.data.augment_glyphs(x, np.array([5, 7])).numpy()
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 10


@needs_fonts
@pytest.mark.tf_only
def test_tf_data_batches_and_seeded_augmentation(cache):
    ds = km.data.glyphs("train", num_classes=C, fonts=FONTS, cache_dir=cache, batch_size=64,
                        augment=True, seed=1)
    batches = list(ds.as_numpy_iterator())
    again = list(km.data.glyphs("train", num_classes=C, fonts=FONTS, cache_dir=cache,
                                batch_size=64, augment=True, seed=1).as_numpy_iterator())
    (x, y) = km.data.glyphs("train", num_classes=C, fonts=FONTS, cache_dir=cache)
    assert sum(len(b[1]) for b in batches) == len(y)
    assert sorted(np.concatenate([b[1] for b in batches]).tolist()) == sorted(y.tolist())
    assert batches[0][0].dtype == np.float32 and batches[0][0].shape[1:] == (32, 32, 1)
    for (a, la), (b, lb) in zip(batches, again):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    plain = next(iter(km.data.glyphs("test", num_classes=C, fonts=FONTS, cache_dir=cache,
                                     batch_size=1000)))
    (xt, yt) = km.data.glyphs("test", num_classes=C, fonts=FONTS, cache_dir=cache)
    np.testing.assert_array_equal(plain[0].numpy(), xt[:1000].astype("float32"))  # test: unshuffled


def test_glyph_pairs_are_balanced_cross_font_and_seeded():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(40), 5)
    font = np.tile(np.arange(5), 40)
    perm = rng.permutation(len(labels))
    labels, font = labels[perm], font[perm]
    i, j, same = km.data.glyph_pairs(labels, font, num_pairs=400, seed=3)
    assert same.sum() == 200
    assert np.all(labels[i[same]] == labels[j[same]]) and np.all(font[i[same]] != font[j[same]])
    assert np.all(labels[i[~same]] != labels[j[~same]])
    i2, j2, s2 = km.data.glyph_pairs(labels, font, num_pairs=400, seed=3)
    np.testing.assert_array_equal(i, i2)
    np.testing.assert_array_equal(s2, same)
    with pytest.raises(ValueError, match="`num_pairs`"):
        km.data.glyph_pairs(labels, font, num_pairs=3)
    with pytest.raises(ValueError, match="`font`"):
        km.data.glyph_pairs(labels, font[:-1])
    with pytest.raises(ValueError, match="`font`"):
        km.data.glyph_pairs(labels, np.zeros_like(font))
