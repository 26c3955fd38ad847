"""Characters rendered from installed fonts: a many-class image dataset that needs no download.

Every character of a script is a class; every typeface is one "sample" of it (printed-character
recognition across typefaces, and an Omniglot-like setting for unseen classes). With the CJK
fonts of the Debian packages ``fonts-noto-cjk`` / ``fonts-noto-cjk-extra`` (Noto Sans and Serif
CJK in 14 weights), ``fonts-hanazono`` and ``fonts-wqy-zenhei`` / ``-microhei``, more than
20 000 ideographs are covered by every font. Only characters that every chosen font really
contains are kept: each font's character map (``cmap``) is read with fontTools, so that no
class is the ``.notdef`` box that a font draws for a missing glyph, and glyphs that render
blank are dropped too.

Protocols (``protocol``):

* ``"closed_set"``: C characters; ``"train"`` holds them in the training fonts, ``"test"`` in
  the held-out fonts (``test_fonts``): recognition of known characters in unseen typefaces
  (accuracy).
* ``"unseen"``: 2·C characters (C = ``num_classes``, the training classes); ``"train"`` / ``"test"``
  hold the first C characters in the training / held-out fonts, as above; the other C
  characters are never trained on: ``"gallery"`` holds each of them once, in
  ``gallery_font``, and ``"probe"`` holds them in every other font (retrieval:
  Recall@1, MAP@R; verification pairs: ``glyph_pairs``).

Images are uint8 (N, S, S, 1), white ink on black, each glyph drawn with its em size at 85 % of
the side and its ink box centred; labels are int32 indices into ``info["characters"]``.
Rendering is deterministic (same arguments and fonts, same pixels) and cached on disk as
uint8 (``cache_dir``; files written atomically), so a second call loads in a fraction of a
second. Training augmentation (``augment_glyphs``): small affine jitter, stroke weight, blur
and noise, a pure function of its seed.
"""

import hashlib
import json
import os
import tempfile
import time
import unicodedata

import numpy as np

#: Render version: part of every cache key (bump when the pixels of a render change).
_RENDER_VERSION = 1

_CJK = ((0x4E00, 0x9FFF),)  # CJK Unified Ideographs
#: script -> (code point ranges, inclusive)
SCRIPTS = {
    "cjk": _CJK,
    "hangul": ((0xAC00, 0xD7A3),),
    "kana": ((0x3041, 0x3096), (0x30A1, 0x30FA)),
    "latin": ((0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)),
}

_NOTO_SANS = ("Thin", "Light", "DemiLight", "Regular", "Medium", "Bold", "Black")
_NOTO_SERIF = ("ExtraLight", "Light", "Regular", "Medium", "SemiBold", "Bold", "Black")


def _registry():
    """name -> (Debian package, file name, face index in a collection, scripts)."""
    fonts = {}
    for weight in _NOTO_SANS:
        pkg = "fonts-noto-cjk" if weight in ("Regular", "Bold") else "fonts-noto-cjk-extra"
        # face 2 of the collection: the Simplified Chinese (SC) design
        fonts[f"noto_sans_{weight.lower()}"] = (pkg, f"NotoSansCJK-{weight}.ttc", 2,
                                                 ("cjk", "hangul", "kana", "latin"))
    for weight in _NOTO_SERIF:
        pkg = "fonts-noto-cjk" if weight in ("Regular", "Bold") else "fonts-noto-cjk-extra"
        fonts[f"noto_serif_{weight.lower()}"] = (pkg, f"NotoSerifCJK-{weight}.ttc", 2,
                                                  ("cjk", "hangul", "kana", "latin"))
    fonts.update({
        "arphic_ukai": ("fonts-arphic-ukai", "ukai.ttc", 0, ("cjk", "kana", "latin")),
        "arphic_uming": ("fonts-arphic-uming", "uming.ttc", 0, ("cjk", "kana", "latin")),
        "wqy_zenhei": ("fonts-wqy-zenhei", "wqy-zenhei.ttc", 0, ("cjk", "hangul", "kana", "latin")),
        "wqy_microhei": ("fonts-wqy-microhei", "wqy-microhei.ttc", 0,
                         ("cjk", "hangul", "kana", "latin")),
        "ipa_gothic": ("fonts-ipafont-gothic", "ipag.ttf", 0, ("cjk", "kana", "latin")),
        "ipa_mincho": ("fonts-ipafont-mincho", "ipam.ttf", 0, ("cjk", "kana", "latin")),
        "ipaex_gothic": ("fonts-ipaexfont-gothic", "ipaexg.ttf", 0, ("cjk", "kana", "latin")),
        "ipaex_mincho": ("fonts-ipaexfont-mincho", "ipaexm.ttf", 0, ("cjk", "kana", "latin")),
        "hanazono": ("fonts-hanazono", "HanaMinA.ttf", 0, ("cjk", "kana", "latin")),
    })
    for style in ("", "-Bold", "-Oblique", "-BoldOblique"):
        for family in ("DejaVuSans", "DejaVuSansMono", "DejaVuSansCondensed"):
            key = family[len("DejaVu"):].lower() + style.replace("-", "_").lower()
            fonts[f"dejavu_{key}"] = ("fonts-dejavu-core", f"{family}{style}.ttf", 0, ("latin",))
    for style in ("", "-Bold", "-Italic", "-BoldItalic"):
        for family in ("DejaVuSerif", "DejaVuSerifCondensed"):
            key = family[len("DejaVu"):].lower() + style.replace("-", "_").lower()
            fonts[f"dejavu_{key}"] = ("fonts-dejavu-core", f"{family}{style}.ttf", 0, ("latin",))
    return fonts


#: Known fonts: name -> (Debian package, file name, face index, scripts it can serve).
KNOWN_FONTS = _registry()
#: The Debian packages that provide fonts for each script.
PACKAGES = {
    script: sorted({pkg for pkg, _, _, scripts in KNOWN_FONTS.values() if script in scripts})
    for script in SCRIPTS
}
PROTOCOLS = ("closed_set", "unseen")
SPLITS = {"closed_set": ("train", "test"), "unseen": ("train", "test", "gallery", "probe")}
_EM = 0.85  # em size as a fraction of the image side


def _font_dirs():
    dirs = [d for d in os.environ.get("KM_FONT_DIRS", "").split(os.pathsep) if d]
    if os.environ.get("KM_FONT_DIRS_ONLY") != "1":
        dirs += ["/usr/share/fonts", "/usr/local/share/fonts",
                 os.path.expanduser("~/.local/share/fonts"), os.path.expanduser("~/.fonts")]
    return dirs


def _find_files():
    """file name -> first path found under the font directories."""
    found = {}
    for root in _font_dirs():
        for folder, _, files in sorted(os.walk(root)):
            for name in sorted(files):
                found.setdefault(name, os.path.join(folder, name))
    return found


def default_cache_dir():
    """``$KM_GLYPHS_CACHE``, else ``$XDG_CACHE_HOME/keras_margins/glyphs`` (~/.cache by default)."""
    if os.environ.get("KM_GLYPHS_CACHE"):
        return os.environ["KM_GLYPHS_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "keras_margins", "glyphs")


def _atomic_write(path, write):
    """Call ``write(file object)`` on a temporary file beside ``path``, then rename it over
    ``path`` (readers never see a partial file; a failure leaves nothing behind)."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _file_key(path):
    st = os.stat(path)
    return f"{os.path.realpath(path)}|{st.st_size}|{int(st.st_mtime)}"


def _script_chars(script):
    return [c for lo, hi in SCRIPTS[script] for c in range(lo, hi + 1)]


def _read_coverage(path, index, script):
    """Code points of ``script`` that the font maps to a real glyph (not .notdef)."""
    from fontTools.ttLib import TTFont

    font = TTFont(path, fontNumber=index, lazy=True)
    try:
        cmap = font.getBestCmap() or {}
    finally:
        font.close()
    return [c for c in _script_chars(script) if cmap.get(c) not in (None, ".notdef")]


def _coverage(path, index, script, cache_dir):
    """Cached ``_read_coverage`` (cmaps of large CJK collections take seconds to parse)."""
    key = hashlib.sha1(f"{_file_key(path)}|{index}|{script}".encode()).hexdigest()[:20]
    file = os.path.join(cache_dir, f"cmap-{key}.json")
    if os.path.exists(file):
        with open(file) as f:
            return json.load(f)
    codes = _read_coverage(path, index, script)
    _atomic_write(file, lambda f: f.write(json.dumps(codes).encode()))
    return codes


def _resolve_font(name, files):
    """(path, face index, package) of a known font name or a font file path (``path#index``)."""
    if name in KNOWN_FONTS:
        pkg, file, index, _ = KNOWN_FONTS[name]
        return (files.get(file), index, pkg)
    path, _, idx = str(name).partition("#")
    if os.path.isfile(path) and (idx == "" or idx.isdigit()):
        return (path, int(idx or 0), None)
    return None


def glyph_fonts(script="cjk", cache_dir=None, verbose=False):
    """The known fonts installed for ``script`` and how many of its characters each covers.

    Args:
        script: one of ``SCRIPTS``: ``"cjk"`` (CJK Unified Ideographs U+4E00–U+9FFF, default),
            ``"hangul"`` (syllables), ``"kana"`` (hiragana and katakana), ``"latin"`` (ASCII
            letters and digits).
        cache_dir: where the coverage of each font is cached (default ``default_cache_dir()``).
        verbose: print one line per font.

    Returns:
        dict: font name -> ``{"path", "index", "package", "coverage"}`` (characters of the
        script in the font's character map), for the installed fonts covering at least one.

    Example:
        >>> km.data.glyph_fonts("cjk")["hanazono"]["coverage"]    # 20971 with fonts-hanazono
    """
    _check_script(script)
    cache_dir = cache_dir or default_cache_dir()
    files = _find_files()
    out = {}
    for name, (pkg, _, _, scripts) in KNOWN_FONTS.items():
        if script not in scripts:
            continue
        path, index, _ = _resolve_font(name, files)
        if path is None:
            continue
        count = len(_coverage(path, index, script, cache_dir))
        if count:
            out[name] = {"path": path, "index": index, "package": pkg, "coverage": count}
            if verbose:
                print(f"  {name:<24} {count:>6} characters  ({pkg}: {path})")
    return out


def _check_script(script):
    if script not in SCRIPTS:
        raise ValueError(f"`script` must be one of {sorted(SCRIPTS)}; got {script!r}.")


def _no_font_error(script):
    return ValueError(
        f"`fonts`: no font for script {script!r} was found in {_font_dirs()}. Install some, e.g. "
        f"`apt-get install {' '.join(PACKAGES[script])}` (Debian/Ubuntu), or pass font file "
        "paths, or add font folders to $KM_FONT_DIRS."
    )


def _choose_fonts(fonts, script, cache_dir):
    """[(name, path, index)] of the chosen fonts, in order."""
    files = _find_files()
    if fonts is None:
        names = [n for n, (_, _, _, s) in KNOWN_FONTS.items() if script in s]
        chosen = []
        for name in names:
            path, index, _ = _resolve_font(name, files)
            if path is not None and _coverage(path, index, script, cache_dir):
                chosen.append((name, path, index))
        if not chosen:
            raise _no_font_error(script)
        return chosen
    if isinstance(fonts, str) or not hasattr(fonts, "__iter__"):
        raise ValueError(f"`fonts` must be None or a sequence of font names / paths; got {fonts!r}.")
    fonts = list(fonts)
    if len(fonts) < 2 or len(set(fonts)) != len(fonts):
        raise ValueError(f"`fonts` must hold at least 2 distinct fonts; got {fonts!r}.")
    chosen = []
    for name in fonts:
        resolved = _resolve_font(name, files)
        if resolved is None:
            raise ValueError(
                f"`fonts`: unknown font {name!r}; use a name listed by km.data.glyph_fonts() or the "
                "path of a font file (optionally 'path#face_index')."
            )
        path, index, pkg = resolved
        if path is None:
            raise ValueError(
                f"`fonts`: font {name!r} is not installed; install it with `apt-get install {pkg}` "
                f"(searched {_font_dirs()})."
            )
        if name in KNOWN_FONTS and script not in KNOWN_FONTS[name][3]:
            raise ValueError(f"`fonts`: font {name!r} does not serve script {script!r}.")
        chosen.append((str(name), path, index))
    return chosen


def _render(path, index, chars, size):
    """uint8 (len(chars), size, size) renders of ``chars`` in one font, ink box centred."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(path, size=max(1, int(round(_EM * size))), index=index)
    out = np.zeros((len(chars), size, size), dtype="uint8")
    for i, ch in enumerate(chars):
        left, top, right, bottom = font.getbbox(ch)
        image = Image.new("L", (size, size), 0)
        x = (size - (right - left)) / 2.0 - left
        y = (size - (bottom - top)) / 2.0 - top
        ImageDraw.Draw(image).text((round(x), round(y)), ch, fill=255, font=font)
        out[i] = np.asarray(image)
    return out


def _pick(candidates, count):
    """``count`` candidates evenly spread over the list (deterministic), in list order."""
    if count >= len(candidates):
        return list(candidates)
    index = np.round(np.linspace(0, len(candidates) - 1, count)).astype(int)
    return [candidates[i] for i in index]


def _build(chosen, script, total, image_size, cache_dir, verbose):
    """(images uint8 (F, total, S, S), characters) for the chosen fonts, from the cache or rendered."""
    coverage = {name: set(_coverage(path, index, script, cache_dir)) for name, path, index in chosen}
    common = sorted(set.intersection(*coverage.values()))
    if verbose:
        print(f"glyphs: {len(chosen)} fonts, {len(common)} {script} characters in every one")
        for name, _, _ in chosen:
            print(f"  {name:<24} covers {len(coverage[name]):>6}")
    if total > len(common):
        limiting = sorted(chosen, key=lambda c: len(coverage[c[0]]))[0][0]
        raise ValueError(
            f"`num_classes`: {total} characters are needed but the {len(chosen)} chosen fonts "
            f"share only {len(common)} {script} characters (the smallest coverage is "
            f"{limiting!r}: {len(coverage[limiting])}); ask for fewer classes or choose other "
            "`fonts`."
        )
    ident = json.dumps([_RENDER_VERSION, script, image_size, total,
                        [(n, _file_key(p), i) for n, p, i in chosen], common[:1], len(common)])
    key = hashlib.sha1(ident.encode()).hexdigest()[:24]
    file = os.path.join(cache_dir, f"glyphs-{script}-{image_size}px-{total}-{key}.npz")
    if os.path.exists(file):
        with np.load(file) as data:
            return data["images"], [chr(c) for c in data["codes"]]
    start = time.time()
    rendered = {}  # (font, code) -> image
    blank = set()
    candidates = list(common)
    while True:
        picked = _pick(candidates, total)
        for f, (name, path, index) in enumerate(chosen):
            todo = [c for c in picked if (f, c) not in rendered]
            if not todo:
                continue
            images = _render(path, index, [chr(c) for c in todo], image_size)
            for c, image in zip(todo, images):
                rendered[(f, c)] = image
                if not image.any():
                    blank.add(c)
            if verbose:
                print(f"  rendered {len(todo)} glyphs of {name} ({time.time() - start:.0f} s)",
                      flush=True)
        if not blank.intersection(picked):
            break
        candidates = [c for c in candidates if c not in blank]
        if total > len(candidates):
            raise ValueError(
                f"`num_classes`: only {len(candidates)} characters render visibly in every chosen "
                f"font; {total} are needed."
            )
    images = np.stack([np.stack([rendered[(f, c)] for c in picked]) for f in range(len(chosen))])
    codes = np.asarray(picked, dtype="int64")
    _atomic_write(file, lambda f: np.savez(f, images=images, codes=codes))
    if verbose:
        print(f"  cached {images.shape} uint8 in {file} ({time.time() - start:.0f} s)")
    return images, [chr(c) for c in picked]


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")
    return int(value)


def _default_test_fonts(names):
    """Every fourth font, starting with the second: a spread of designs and weights."""
    return names[1::4]


def glyphs(split="train", protocol="closed_set", num_classes=1000, script="cjk", fonts=None,
           test_fonts=None, gallery_font=None, image_size=32, batch_size=None, shuffle=None,
           augment=False, seed=0, cache_dir=None, return_info=False, verbose=False):
    """Characters rendered from installed fonts, one class per character.

    Args:
        split: ``"train"`` or ``"test"`` (both protocols), ``"gallery"`` or ``"probe"``
            (``protocol="unseen"``); see the module docstring.
        protocol: ``"closed_set"`` (default) or ``"unseen"``.
        num_classes: C, the number of training classes (default 1000). ``"unseen"`` renders
            2·C characters: C seen, C unseen.
        script: ``"cjk"`` (default), ``"hangul"``, ``"kana"`` or ``"latin"`` (``SCRIPTS``).
        fonts: font names of ``KNOWN_FONTS`` or font file paths (``"path#face"`` for a face of a
            collection), at least 2 (default None: every known font installed for the script).
        test_fonts: the held-out fonts, a subset of the fonts (default None: every fourth
            font starting with the second; ``()`` holds none out, and the ``"test"`` split is
            then empty).
        gallery_font: the font of the gallery images of ``"unseen"`` (default the first font).
        image_size: S, the side of the square images in pixels (default 32).
        batch_size: None (default): NumPy arrays; an int: a ``tf.data.Dataset`` of batches
            ``(float32 (B, S, S, 1) in [0, 255], int32 (B,))``.
        shuffle: shuffle the tf.data batches (default: only the ``"train"`` split), reshuffled
            each epoch from ``seed``.
        augment: apply ``augment_glyphs`` to the tf.data batches (training augmentation).
        seed: integer seed of the shuffling and of the augmentation (default 0).
        cache_dir: cache folder (default ``default_cache_dir()``: ``$KM_GLYPHS_CACHE`` or
            ``~/.cache/keras_margins/glyphs``).
        return_info: also return a dict: ``characters`` (the character of each label),
            ``fonts`` (the chosen font names), ``font`` (the font index of each image),
            ``train_fonts``, ``test_fonts``, ``gallery_font``.
        verbose: print the fonts, their coverage and the rendering progress.

    Returns:
        ``(x, y)``: uint8 (N, S, S, 1) images and int32 (N,) labels (or the tf.data dataset);
        with ``return_info``, ``((x, y), info)``.

    Raises:
        ValueError: unknown ``split``, ``protocol``, ``script`` or font; no font installed
            (naming the Debian packages); more classes than the chosen fonts share.

    Example:
        >>> (x, y), info = km.data.glyphs("train", num_classes=1000, return_info=True)
        >>> x.shape, info["characters"][y[0]]
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"`protocol` must be one of {PROTOCOLS}; got {protocol!r}.")
    if split not in SPLITS[protocol]:
        raise ValueError(f"`split` must be one of {SPLITS[protocol]} for protocol {protocol!r}; "
                         f"got {split!r}.")
    _check_script(script)
    num_classes = _positive_int(num_classes, "num_classes")
    image_size = _positive_int(image_size, "image_size")
    if image_size < 8:
        raise ValueError(f"`image_size` must be at least 8; got {image_size}.")
    if batch_size is not None:
        batch_size = _positive_int(batch_size, "batch_size")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"`seed` must be an integer; got {seed!r}.")
    cache_dir = cache_dir or default_cache_dir()
    chosen = _choose_fonts(fonts, script, cache_dir)
    names = [c[0] for c in chosen]
    if test_fonts is None:
        test_fonts = _default_test_fonts(names)
    if isinstance(test_fonts, str) or not all(f in names for f in test_fonts):
        raise ValueError(f"`test_fonts` must be a subset of the fonts {names}; got {test_fonts!r}.")
    test_fonts = [n for n in names if n in set(test_fonts)]
    train_fonts = [n for n in names if n not in test_fonts]
    if not train_fonts:
        raise ValueError("`test_fonts` holds out every font; keep at least one for training.")
    gallery_font = names[0] if gallery_font is None else gallery_font
    if gallery_font not in names:
        raise ValueError(f"`gallery_font` must be one of the fonts {names}; got {gallery_font!r}.")
    total = num_classes * (2 if protocol == "unseen" else 1)
    images, characters = _build(chosen, script, total, image_size, cache_dir, verbose)

    if split in ("train", "test"):
        font_ids = [names.index(n) for n in (train_fonts if split == "train" else test_fonts)]
        classes = np.arange(num_classes)
    else:
        g = names.index(gallery_font)
        font_ids = [g] if split == "gallery" else [f for f in range(len(names)) if f != g]
        classes = np.arange(num_classes, total)
    font_ids = np.asarray(font_ids, dtype="int64")
    x = images[font_ids][:, classes].reshape(-1, image_size, image_size, 1)
    y = np.tile(classes, len(font_ids)).astype("int32")
    font = np.repeat(font_ids, len(classes)).astype("int32")
    info = {"characters": characters, "fonts": names, "font": font, "train_fonts": train_fonts,
            "test_fonts": test_fonts, "gallery_font": gallery_font}
    data = (x, y)
    if batch_size is not None:
        data = glyph_batches(x, y, batch_size, shuffle=split == "train" if shuffle is None else shuffle,
                             augment=augment, seed=seed)
    return (data, info) if return_info else data


def glyph_batches(x, y, batch_size, shuffle=True, augment=False, seed=0):
    """A ``tf.data.Dataset`` of ``(float32 images in [0, 255], int32 labels)`` batches.

    Shuffled each epoch from ``seed`` (``shuffle``); with ``augment``, ``augment_glyphs`` is
    applied with a seed derived from ``seed`` and the batch's position in the stream.
    """
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment:
        ds = ds.enumerate().map(
            lambda i, xy: (augment_glyphs(xy[0], tf.stack([tf.constant(seed, tf.int64), i])), xy[1]),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        ds = ds.map(lambda a, b: (tf.cast(a, tf.float32), b))
    return ds.prefetch(2)


def augment_glyphs(images, seed, max_shift=0.08, max_rotate=0.12, max_scale=0.1, stroke=1.0,
                   blur=1.0, noise=8.0):
    """Seeded training augmentation of a batch of glyphs (TensorFlow ops, a pure function of
    ``seed``): per image a random affine map (shift up to ``max_shift``·S pixels, rotation up to
    ``max_rotate`` radians, scale 1 ± ``max_scale``), a stroke-weight change (a blend with the
    3×3 grey dilation or erosion, weight uniform in [−``stroke``, ``stroke``]), a blur (a blend
    with a 3×3 binomial blur, weight uniform in [0, ``blur``]) and Gaussian noise (σ uniform in
    [0, ``noise``] grey levels); clipped to [0, 255].

    Args:
        images: (B, S, S, 1) uint8 or float images in [0, 255].
        seed: a shape-(2,) integer tensor (stateless random seed).

    Returns:
        float32 (B, S, S, 1) in [0, 255].
    """
    import tensorflow as tf

    x = tf.cast(images, tf.float32)
    b, s = tf.shape(x)[0], tf.cast(tf.shape(x)[1], tf.float32)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=6)
    u = lambda k, lo, hi: tf.random.stateless_uniform((b,), seeds[k], lo, hi)  # noqa: E731
    angle, scale = u(0, -max_rotate, max_rotate), 1.0 + u(1, -max_scale, max_scale)
    shift = tf.random.stateless_uniform((b, 2), seeds[2], -max_shift, max_shift) * s
    c = (s - 1.0) / 2.0
    # output pixel p maps to input A^-1 (p - c - t) + c, A = scale·rotation
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    tx, ty = shift[:, 0], shift[:, 1]
    a0, a1 = cos, sin
    b0, b1 = -sin, cos
    a2 = c - a0 * (c + tx) - a1 * (c + ty)
    b2 = c - b0 * (c + tx) - b1 * (c + ty)
    zeros = tf.zeros_like(a0)
    transform = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    x = tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=transform, output_shape=tf.shape(x)[1:3], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")
    weight = u(3, -stroke, stroke)[:, None, None, None]
    dilated = tf.nn.max_pool2d(x, 3, 1, "SAME")
    eroded = -tf.nn.max_pool2d(-x, 3, 1, "SAME")
    x = x + tf.where(weight > 0, weight * (dilated - x), -weight * (eroded - x))
    kernel = tf.constant([1.0, 2.0, 1.0])
    kernel = (kernel[:, None] * kernel[None, :] / 16.0)[:, :, None, None]
    blurred = tf.nn.conv2d(x, kernel, 1, "SAME")
    x = x + u(4, 0.0, blur)[:, None, None, None] * (blurred - x)
    sigma = tf.random.stateless_uniform((b, 1, 1, 1), seeds[5], 0.0, noise)
    x = x + sigma * tf.random.stateless_normal(tf.shape(x), seeds[5][::-1])
    return tf.clip_by_value(x, 0.0, 255.0)


def glyph_pairs(labels, font, num_pairs=6000, seed=0):
    """Verification pairs among images (LFW-style, half same, half different), as indices.

    Same pairs: two images of one character in two different fonts; different pairs: two
    images of different characters (any fonts). Deterministic in ``seed``.

    Args:
        labels: (N,) int labels.
        font: (N,) font index of each image (``info["font"]`` of ``glyphs``).
        num_pairs: number of pairs (even; default 6000, LFW's count).
        seed: integer seed.

    Returns:
        ``(i, j, is_same)``: int64 (num_pairs,) index arrays and a bool (num_pairs,) array.
    """
    labels, font = np.asarray(labels), np.asarray(font)
    if labels.ndim != 1 or font.shape != labels.shape:
        raise ValueError(f"`font` must have the shape of `labels` {labels.shape}; got {font.shape}.")
    num_pairs = _positive_int(num_pairs, "num_pairs")
    if num_pairs % 2:
        raise ValueError(f"`num_pairs` must be even; got {num_pairs}.")
    rng = np.random.default_rng(seed)
    half = num_pairs // 2
    classes, inverse = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise ValueError("`labels` must hold at least 2 classes.")
    members = [np.flatnonzero(inverse == k) for k in range(len(classes))]
    usable = [k for k, m in enumerate(members) if len(np.unique(font[m])) >= 2]
    if not usable:
        raise ValueError("`font`: no class has images in two different fonts.")
    ii, jj = [], []
    for k in rng.choice(usable, size=half):
        m = members[k]
        a = rng.choice(m)
        others = m[font[m] != font[a]]
        ii.append(a)
        jj.append(rng.choice(others))
    a = rng.integers(0, len(labels), size=4 * half)
    b = rng.integers(0, len(labels), size=4 * half)
    keep = np.flatnonzero(labels[a] != labels[b])[:half]
    if len(keep) < half:
        raise ValueError("`labels`: too few different-class pairs could be drawn.")
    i = np.concatenate([np.asarray(ii), a[keep]]).astype("int64")
    j = np.concatenate([np.asarray(jj), b[keep]]).astype("int64")
    same = np.r_[np.ones(half, bool), np.zeros(half, bool)]
    order = rng.permutation(num_pairs)
    return i[order], j[order], same[order]


def character_names(characters):
    """Unicode names of characters (for figures and reports)."""
    return [unicodedata.name(c, f"U+{ord(c):04X}") for c in characters]
