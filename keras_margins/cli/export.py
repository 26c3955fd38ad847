"""``keras-margins export MODEL.keras BASE_DIR``: the embedding part of a model as a TF Serving
SavedModel (``km.export.export_embedding_model``)."""

from keras_margins.cli.common import load_model_file

HELP = "export the embedding part of a .keras model for TF Serving"


def add_parser(subparsers):
    """Add the ``export`` sub-parser."""
    parser = subparsers.add_parser(
        "export",
        help=HELP,
        description=(
            "Load a .keras model (head or MarginModel or embedding model), drop the head, add "
            "L2 normalisation and write a SavedModel to BASE_DIR/<next version>/ with signature "
            "'serving_default': 'inputs' -> 'embedding' (float32); update models.config in "
            "BASE_DIR's parent."
        ),
    )
    parser.add_argument("model", help="path of a .keras model")
    parser.add_argument("base_dir", help="model folder, e.g. saved_models/digits")
    parser.add_argument("--version", type=int, default=None, help="default: next free integer")
    parser.add_argument(
        "--no-normalize", dest="normalize", action="store_false", help="skip L2 normalisation"
    )
    parser.add_argument(
        "--scores", dest="include_scores", action="store_true",
        help="also export signature 'scores' (class scores of the head)",
    )
    parser.add_argument(
        "--serving-root", default="/models",
        help="BASE_DIR's parent as the server sees it, in models.config (default /models)",
    )
    parser.add_argument(
        "--no-config", dest="models_config", action="store_const", const=False, default=None,
        help="do not write models.config",
    )
    parser.set_defaults(func=run)
    return parser


def run(args):
    """Run ``keras-margins export`` from parsed arguments; prints the version folder."""

    from keras_margins import export

    model = load_model_file(args.model)
    path = export.export_embedding_model(
        model,
        args.base_dir,
        version=args.version,
        normalize=args.normalize,
        include_scores=args.include_scores,
        models_config=args.models_config,
        serving_root=args.serving_root,
    )
    signatures = export.SERVING_SIGNATURE + (
        f", {export.SCORES_SIGNATURE}" if args.include_scores else ""
    )
    print(f"exported {path} (signatures: {signatures}; input '{export.INPUT_NAME}', output "
          f"'{export.EMBEDDING_OUTPUT}')")
    return 0
