"""``keras-margins evaluate``: the results table of a saved ``.keras`` model."""

import os

from keras_margins.cli.common import (
    DATASETS,
    evaluate_model,
    format_table,
    load_dataset,
    load_model_file,
)

HELP = "accuracy, MAP@R, P@1 and class margin of a saved .keras model"


def add_parser(subparsers):
    """Add the ``evaluate`` sub-parser."""
    p = subparsers.add_parser("evaluate", help=HELP, description=HELP + ".")
    p.add_argument("model", help="path of a .keras model (e.g. from `keras-margins train`)")
    p.add_argument("--dataset", choices=DATASETS, default="digits")
    p.set_defaults(func=run)
    return p


def run(args):
    """Run ``keras-margins evaluate`` from parsed arguments; returns the exit code."""
    import numpy as np

    from keras_margins.models import split_head

    model = load_model_file(args.model)
    backbone, head, scorer = split_head(model)
    _, (x_test, y_test), zero_shot = load_dataset(args.dataset)
    embeddings = np.asarray(backbone.predict(x_test, verbose=0))
    results = evaluate_model(scorer, head, x_test, y_test, embeddings, zero_shot)
    print(format_table(results, f"{os.path.basename(args.model)} on {args.dataset}"))
    return 0
