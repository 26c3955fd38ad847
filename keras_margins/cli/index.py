"""``keras-margins index``: enrol a gallery from a trained model and a dataset, search it,
calibrate its match threshold, export the search model.

    keras-margins index build runs/digits/model.keras gallery.keras --dataset digits-zero-shot
    keras-margins index search gallery.keras runs/digits/model.keras --dataset digits-zero-shot
    keras-margins index calibrate gallery.keras runs/digits/model.keras --far 0.01
    keras-margins index export gallery.keras runs/digits/model.keras saved_models/digits_search

The gallery is enrolled from the dataset's test split: per class, the normalised mean
embedding of its first ``--enrol`` examples is the class's template (id = the class label),
except for the last ``--unenrolled`` classes, which stay out of the gallery (their examples
are searches of people who are not enrolled). Every other test example is a probe of
``search`` and ``calibrate`` (pass the same ``--enrol`` to them). The gallery is a ``.keras``
file holding a ``km.retrieval`` index alone; ``calibrate`` writes its threshold back into it.

Usage errors (missing files, a gallery path without ``.keras``, a rate outside (0, 1)) are
answered before Keras or TensorFlow is imported.
"""

import os

from keras_margins.cli.common import non_negative_int, positive_int, rate
from keras_margins.cli.datasets import DATASETS, DIGITS

HELP = "enrol a gallery from a model and a dataset; search, calibrate, export it"


def _data_options(parser):
    parser.add_argument("--dataset", choices=DATASETS, default="digits-zero-shot",
                        help="whose test split is enrolled and searched (default digits-zero-shot)")
    parser.add_argument("--data-dir", default=None, help="TFDS data directory (TFDS datasets)")
    parser.add_argument("--image-size", type=positive_int, default=None,
                        help="resize images to this side (default: the model's input size)")
    parser.add_argument("--enrol", type=positive_int, default=5,
                        help="examples averaged into each class's template (default 5)")


def _on_gallery(actions, name, help, gallery_help):
    """An action on an existing gallery: positional GALLERY and MODEL (the model that embedded
    it), both checked to be files before Keras is imported (``check_existing``)."""
    parser = actions.add_parser(name, help=help)
    parser.add_argument("gallery", help=gallery_help)
    parser.add_argument("model", help="the .keras model that embedded the gallery")
    parser.set_defaults(check=check_existing)
    return parser


def add_parser(subparsers):
    """Add the ``index`` sub-parser and its own subcommands."""
    parser = subparsers.add_parser("index", help=HELP, description=__doc__.split("\n\n")[0])
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    build = actions.add_parser("build", help="enrol a gallery; write it as GALLERY.keras")
    build.add_argument("model", help="a trained .keras model (its embedding part is used)")
    build.add_argument("gallery", help="the .keras file to write (the index alone)")
    _data_options(build)
    build.add_argument("--unenrolled", type=non_negative_int, default=0,
                       help="leave the last N classes out of the gallery (default 0)")
    build.add_argument("--ivf", type=positive_int, default=None, metavar="LISTS",
                       help="an inverted-file index with LISTS lists (default: exact search)")
    build.add_argument("--nprobe", type=positive_int, default=8, help="IVF lists probed (default 8)")
    build.set_defaults(func=run_build, check=check_build)

    search = _on_gallery(actions, "search", "search the probes; print the best matches",
                         "a gallery .keras file from `index build`")
    _data_options(search)
    search.add_argument("-k", type=positive_int, default=5, help="results per probe (default 5)")
    search.add_argument("--show", type=non_negative_int, default=5,
                        help="probes whose results are printed (default 5)")
    search.set_defaults(func=run_search)

    calibrate = _on_gallery(actions, "calibrate", "choose the match threshold for a FAR",
                            "a gallery .keras file (its threshold is rewritten)")
    _data_options(calibrate)
    calibrate.add_argument("--far", type=rate, default=0.01,
                           help="target false-accept rate (default 0.01)")
    calibrate.add_argument("--bootstrap", type=non_negative_int, default=1000,
                           help="bootstrap resamples of the intervals (default 1000)")
    calibrate.set_defaults(func=run_calibrate)

    export = _on_gallery(actions, "export", "write the search model for TF Serving",
                         "a calibrated gallery .keras file")
    export.add_argument("base_dir", help="model folder, e.g. saved_models/digits_search")
    export.add_argument("--version", type=positive_int, default=None,
                        help="default: the next free integer")
    export.add_argument("--serving-root", default="/models",
                        help="BASE_DIR's parent as the server sees it (default /models)")
    export.add_argument("--no-config", dest="models_config", action="store_const", const=False,
                        default=None, help="do not write models.config")
    export.set_defaults(func=run_export)
    return parser


# ----------------------------------------------------------------------------- checks (no Keras)
def _existing_file(path, name):
    if not os.path.isfile(path):
        raise ValueError(f"`{name}` {path!r} is not a file.")


def check_existing(args):
    _existing_file(args.gallery, "gallery")
    _existing_file(args.model, "model")
    if getattr(args, "dataset", None) in DIGITS and getattr(args, "image_size", None):
        raise ValueError("`--image-size` applies to the TFDS datasets, not to digits.")


def check_build(args):
    _existing_file(args.model, "model")
    if not args.gallery.endswith(".keras"):
        raise ValueError(f"`gallery` {args.gallery!r} must end in .keras.")
    folder = os.path.dirname(os.path.abspath(args.gallery))
    if os.path.isdir(args.gallery) or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise ValueError(f"`gallery` {args.gallery!r}: cannot write a file there.")
    if args.dataset in DIGITS and args.image_size:
        raise ValueError("`--image-size` applies to the TFDS datasets, not to digits.")


# ----------------------------------------------------------------------------- shared
def _embedded_split(args, model):
    """``(embeddings, labels)`` of the dataset's test split, embedded by ``model``."""
    import numpy as np

    from keras_margins.cli.common import embed_dataset
    from keras_margins.cli.datasets import open_dataset
    from keras_margins.models import embedding_model

    image_size = args.image_size
    if image_size is None and args.dataset not in DIGITS:
        shape = embedding_model(model).inputs[0].shape
        image_size = shape[1] if len(shape) == 4 else None
    dataset = open_dataset(args.dataset, args.data_dir, image_size)
    embeddings, _, labels = embed_dataset(embedding_model(model), None, dataset)
    return np.asarray(embeddings, "float32"), np.asarray(labels).astype("int64")


def _split(labels, enrol):
    """Boolean mask of the template examples: the first ``enrol`` of each class."""
    import numpy as np

    template = np.zeros(len(labels), bool)
    for label in np.unique(labels):
        template[np.flatnonzero(labels == label)[:enrol]] = True
    return template


def _load(args):
    import keras

    from keras_margins.cli.common import load_model_file
    from keras_margins.retrieval import GalleryIndex

    index = keras.saving.load_model(args.gallery, safe_mode=True)
    if not isinstance(index, GalleryIndex):
        raise ValueError(f"`gallery` {args.gallery!r} holds a {type(index).__name__}, not an index.")
    return index, load_model_file(args.model)


def _probes(args, model):
    embeddings, labels = _embedded_split(args, model)
    probe = ~_split(labels, args.enrol)
    if not probe.any():
        raise ValueError(f"`--enrol` {args.enrol}: no test example is left to search.")
    return embeddings[probe], labels[probe]


# ----------------------------------------------------------------------------- actions
def run_build(args):
    """``index build``: enrol the templates, write the gallery file."""
    import keras
    import numpy as np

    from keras_margins import retrieval
    from keras_margins.cli.common import load_model_file

    model = load_model_file(args.model)
    embeddings, labels = _embedded_split(args, model)
    classes = np.unique(labels)
    if args.unenrolled >= len(classes):
        raise ValueError(f"`--unenrolled` {args.unenrolled}: the test split has only "
                         f"{len(classes)} classes.")
    enrolled = classes[: len(classes) - args.unenrolled]
    template = _split(labels, args.enrol)
    means = []
    for label in enrolled:
        rows = embeddings[template & (labels == label)]
        rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        means.append(rows.mean(axis=0))
    dim = embeddings.shape[1]
    if args.ivf is not None:
        if args.ivf > len(enrolled):
            raise ValueError(f"`--ivf` {args.ivf}: more lists than the {len(enrolled)} templates.")
        index = retrieval.IVFIndex(dim, num_lists=args.ivf, nprobe=min(args.nprobe, args.ivf))
    else:
        index = retrieval.EmbeddingIndex(dim, capacity=len(enrolled))
    index.add(np.stack(means), enrolled, names=[f"class {c}" for c in enrolled])
    keras.saving.save_model(index, args.gallery)
    print(f"enrolled {index.size} templates ({type(index).__name__}, D={dim}, {args.enrol} "
          f"examples each; {args.unenrolled} classes left out) -> {args.gallery}")
    return 0


def run_search(args):
    """``index search``: top-k of every probe; rank-1 and rank-k identification rates."""
    import numpy as np

    index, model = _load(args)
    queries, labels = _probes(args, model)
    k = min(args.k, index.size)
    found, scores = index.search(queries, k)
    mated = np.isin(labels, index.ids())
    print(f"{len(queries)} probes ({int(mated.sum())} of enrolled classes), top {k}:")
    for row in range(min(args.show, len(queries))):
        hits = ", ".join(f"{i} ({s:.3f})" for i, s in zip(found[row], scores[row]))
        print(f"  probe {row} (class {labels[row]}): {hits}")
    if mated.any():
        rank1 = float(np.mean(found[mated, 0] == labels[mated]))
        rankk = float(np.mean(np.any(found[mated] == labels[mated, None], axis=1)))
        print(f"rank-1 identification rate {rank1:.4f}, rank-{k} {rankk:.4f} (enrolled classes)")
    return 0


def run_calibrate(args):
    """``index calibrate``: threshold at ``--far``; written back into the gallery file."""
    import keras

    index, model = _load(args)
    queries, labels = _probes(args, model)
    cal = index.calibrate(queries, labels, target_far=args.far, n_bootstrap=args.bootstrap)
    interval = (lambda pair: "" if pair is None else f" [{pair[0]:.4f}, {pair[1]:.4f}]")
    print(f"threshold {cal.threshold:.6f}{interval(cal.threshold_interval)}")
    print(f"FAR {cal.far:.4f}{interval(cal.far_interval)} (target {cal.target_far:g}, "
          f"{cal.n_impostor} impostor searches)")
    print(f"TAR {cal.tar:.4f}{interval(cal.tar_interval)} ({cal.n_genuine} genuine searches; "
          f"{cal.confidence:.0%} bootstrap intervals)")
    temporary = f"{args.gallery}.tmp-{os.getpid()}.keras"
    keras.saving.save_model(index, temporary)
    os.replace(temporary, args.gallery)
    print(f"threshold written to {args.gallery}")
    return 0


def run_export(args):
    """``index export``: ``km.retrieval.export_search_model``."""
    from keras_margins import retrieval

    index, model = _load(args)
    path = retrieval.export_search_model(model, index, args.base_dir, version=args.version,
                                         models_config=args.models_config,
                                         serving_root=args.serving_root)
    print(f"exported {path} (signatures: embed, search (inputs, k), match; threshold "
          f"{index.threshold:.6f})")
    return 0
