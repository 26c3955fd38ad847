"""``keras-margins evaluate``: the results table of a saved ``.keras`` model."""

import os

from keras_margins.cli.common import evaluate_dataset, format_table, load_model_file, positive_int
from keras_margins.cli.datasets import DATASETS, DIGITS, open_dataset

HELP = "accuracy, MAP@R, P@1 and class margin of a saved .keras model"


def add_parser(subparsers):
    """Add the ``evaluate`` sub-parser."""
    p = subparsers.add_parser("evaluate", help=HELP, description=HELP + ".")
    p.add_argument("model", help="path of a .keras model (e.g. from `keras-margins train`)")
    p.add_argument("--dataset", choices=DATASETS, default="digits")
    p.add_argument("--data-dir", default=None,
                   help="TFDS data directory holding the prepared dataset (TFDS datasets)")
    p.add_argument("--image-size", type=positive_int, default=None,
                   help="resize images to this side (default: the model's input size)")
    p.set_defaults(func=run)
    return p


def run(args):
    """Run ``keras-margins evaluate`` from parsed arguments; returns the exit code."""
    from keras_margins.models import split_head

    model = load_model_file(args.model)
    embedder, head, scorer = split_head(model)
    image_size = args.image_size
    if image_size is None and args.dataset not in DIGITS:
        image_size = _image_side(model, embedder, getattr(model, "backbone", None))
    dataset = open_dataset(args.dataset, args.data_dir, image_size)
    results = evaluate_dataset(embedder, scorer, head, dataset)
    print(format_table(results, f"{os.path.basename(args.model)} on {args.dataset}"))
    return 0


def _image_side(*models):
    """The image side a model was built for (its first image input), else None."""
    for model in models:
        try:
            inputs = model.inputs
        except (AttributeError, ValueError):
            continue
        if inputs and len(inputs[0].shape) == 4:
            return inputs[0].shape[1]
    return None
