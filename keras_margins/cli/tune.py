"""``keras-margins tune``: a KerasTuner search over the loss families on digits
(``km.tuning``), its table of trials, the best model's held-out score and its export."""

import os

from keras_margins.cli.common import check_export_target, positive_int
from keras_margins.registry import FAMILIES, TUNERS, tuned_families

HELP = "search loss, scale and margin with KerasTuner on digits"

#: ``--dataset`` -> the search task of ``km.tuning.digits_search_data``.
TASKS = {"digits-zero-shot": "retrieval", "digits": "classification"}


def add_parser(subparsers):
    """Add the ``tune`` sub-parser (``--losses`` and ``--tuner`` names come from the registry)."""
    parser = subparsers.add_parser(
        "tune",
        help=HELP,
        description=(
            "KerasTuner search over the margin losses, their scale s and margin m on the "
            "embedded digits data (XLA). Prints the table of trials, the best configuration "
            "and its score on an untouched test split, then exports the best embedding model "
            "for TF Serving."
        ),
    )
    parser.add_argument("--dataset", choices=tuple(TASKS), default="digits-zero-shot",
                        help="digits-zero-shot: train on 0-4, objective val_map_at_r on 5-9; "
                             "digits: 10 classes, objective val_accuracy")
    parser.add_argument("--losses", default=None,
                        help=f"comma-separated families (default: "
                             f"{','.join(tuned_families())}; known: {', '.join(FAMILIES)}; "
                             "not the pair-wise circle_pair / ensemble)")
    parser.add_argument("--tuner", choices=sorted(TUNERS), default="random")
    parser.add_argument("--max-trials", type=positive_int, default=10)
    parser.add_argument("--epochs", type=positive_int, default=10)
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--embedding-dim", type=positive_int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--directory", default="tuner_runs", help="KerasTuner directory")
    parser.add_argument("--project-name", default=None, help="default: the dataset name")
    parser.add_argument("--resume", action="store_true",
                        help="continue the search already in the directory")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the search already in the directory and start over "
                             "(without --resume or --overwrite an existing search is an error)")
    parser.add_argument("--export-dir", default="saved_models/tuned_digits",
                        help="TF Serving model folder of the best embedding model ('' skips)")
    parser.set_defaults(func=run, check=check_args)
    return parser


def check_args(args):
    """What can be checked without Keras: the family names, the search folder."""
    losses = args.losses.split(",") if args.losses else []
    unknown = [name for name in losses if name not in FAMILIES]
    if unknown:
        raise ValueError(f"`--losses` has unknown families {unknown}; known: {', '.join(FAMILIES)}.")
    project = args.project_name or args.dataset
    if args.resume and args.overwrite:
        raise ValueError("`--resume` and `--overwrite` exclude each other.")
    if os.path.exists(os.path.join(args.directory, project)) and not (
        args.resume or args.overwrite
    ):
        raise ValueError(
            f"`--directory` {args.directory!r} already holds the search {project!r}; pass "
            "--resume to continue it, --overwrite to start over, or another --directory / "
            "--project-name."
        )


def run(args):
    """Run ``keras-margins tune`` from parsed arguments; returns the exit code."""
    import keras

    from keras_margins import export, tuning
    from keras_margins.models import mlp_backbone

    check_args(args)
    project = args.project_name or args.dataset
    losses = args.losses.split(",") if args.losses else None
    for name in losses or ():
        if not FAMILIES[name].wants_head:
            raise ValueError(
                f"`--losses`: {name} trains no class head (a pair-wise recipe); the search "
                "covers losses that train one."
            )
    if args.export_dir:
        check_export_target(args.export_dir, "--export-dir")
    keras.utils.set_random_seed(args.seed)
    task = TASKS[args.dataset]
    train, validation, test, num_classes = tuning.digits_search_data(task, args.seed)
    hypermodel = tuning.MarginHyperModel(
        lambda: mlp_backbone(train[0].shape[1], args.embedding_dim, hidden=128),
        num_classes, losses=losses,
    )
    objective, callbacks = tuning.objective_and_callbacks(task, validation)
    tuner = tuning.make_tuner(
        hypermodel, objective, args.tuner, args.max_trials, args.seed,
        directory=args.directory, project_name=project, overwrite=args.overwrite,
    )
    print(f"searching {args.max_trials} trials ({args.tuner}) over {', '.join(hypermodel.losses)}"
          f" on {args.dataset}, objective {objective.name} ...", flush=True)
    # Retrieval validates held-out classes through the callback only (the head knows 0-4).
    tuner.search(*train, validation_data=validation if task == "classification" else None,
                 epochs=args.epochs, batch_size=args.batch_size, callbacks=callbacks, verbose=0)
    print(tuning.format_trials(tuning.trial_rows(tuner), objective.name))
    best = tuner.get_best_hyperparameters(1)[0]
    print(f"best: {hypermodel.describe(best.values)}")
    model = tuner.get_best_models(num_models=1)[0]
    name, value = tuning.held_out_score(model, task, test)
    print(f"best model on the untouched test split: {name} = {value:.4f}")
    if args.export_dir:
        print(f"exported the best embedding model to "
              f"{export.export_embedding_model(model, args.export_dir)}")
    return 0
