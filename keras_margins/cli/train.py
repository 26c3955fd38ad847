"""``keras-margins train``: train a backbone + head with a margin loss on digits, print the
results table, save the model and optionally export it for TF Serving."""

import itertools
import json
import os
import time

from keras_margins.cli.common import (
    DATASETS,
    check_export_target,
    evaluate_model,
    format_table,
    load_dataset,
    positive_float,
    positive_int,
)

#: The files a run writes; a folder holding one of them holds an earlier run.
RUN_FILES = ("model.keras", "results.json")

HELP = "train a margin head on a dataset and report accuracy, MAP@R, margins"


def add_parser(subparsers):
    """Add the ``train`` sub-parser (its ``--loss``/``--head`` choices come from the registry)."""
    from keras_margins.registry import FAMILIES, HEADS

    p = subparsers.add_parser(
        "train", help=HELP,
        description="Train an MLP embedding + head with a margin loss (XLA), print accuracy, "
        "MAP@R, P@1 and the class margin, write model.keras and TensorBoard logs.",
    )
    p.add_argument("--dataset", choices=DATASETS, default="digits")
    p.add_argument("--loss", choices=tuple(FAMILIES), default="lmsoftmax")
    p.add_argument("--head", choices=tuple(HEADS), default=None,
                   help="default: the loss's own head")
    p.add_argument("--scale", type=float, default=None,
                   help="s (gamma for circle); default: the loss's")
    p.add_argument("--margin", type=float, default=None,
                   help="m (the initial delta for pod); default: the loss's")
    p.add_argument("--epochs", type=positive_int, default=30)
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--learning-rate", type=positive_float, default=3e-3)
    p.add_argument("--embedding-dim", type=positive_int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", default=None,
                   help="folder of model.keras, results.json and logs/ (default: "
                   "runs/<dataset>-<loss>, or runs/<dataset>-<loss>-2, -3, ... when taken)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in the output folder instead of refusing "
                   "(or, without --output-dir, of starting a new numbered folder)")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                   help="Keras fit verbosity (1: progress bar)")
    p.add_argument("--no-jit", action="store_true", help="train without XLA")
    p.add_argument("--export", default=None, metavar="BASE_DIR",
                   help="also export the embedding model for TF Serving to BASE_DIR/<version>/ "
                   "(with a 'scores' signature) and check it in a process without keras_margins")
    p.set_defaults(func=run)
    return p


def build_loss_and_head(loss_name, head_name, num_classes, scale=None, margin=None):
    """``(loss, head, family)`` for the command-line choices; unset hyper-parameters keep the
    loss's paper defaults."""
    from keras_margins.registry import FAMILIES, HEADS, make_head

    family = FAMILIES[loss_name]
    for option, value in (("scale", scale), ("margin", margin)):
        if value is not None and option not in family.option_map():
            raise ValueError(f"`--{option}` does not apply to --loss {loss_name}.")
    loss = family.make_loss(**family.loss_arguments(scale=scale, margin=margin))
    head = family.make_head(num_classes) if head_name is None else make_head(
        HEADS[head_name], num_classes
    )
    return loss, head, family


def run_folder(output_dir, dataset, loss, overwrite=False, root="runs"):
    """The folder a training run writes to, created; never one holding an earlier run.

    With ``output_dir``: that folder, unless it holds ``model.keras``/``results.json`` of an
    earlier run and ``overwrite`` is False (``ValueError``). Without: ``<root>/<dataset>-<loss>``
    if it does not exist yet, else the first free ``<root>/<dataset>-<loss>-2``, ``-3``, ...
    (created atomically, so two runs started together never share one); with ``overwrite``
    always ``<root>/<dataset>-<loss>``.
    """
    if output_dir:
        if os.path.exists(output_dir) and not os.path.isdir(output_dir):
            raise ValueError(f"`--output-dir` {output_dir!r} exists and is not a directory.")
        held = [name for name in RUN_FILES if os.path.exists(os.path.join(output_dir, name))]
        if held and not overwrite:
            raise ValueError(
                f"`--output-dir` {output_dir!r} already holds a run ({', '.join(held)}); pass "
                "--overwrite to replace it, or choose another folder."
            )
        _make_dirs(output_dir)
        return output_dir
    base = os.path.join(root, f"{dataset}-{loss}")
    if overwrite:
        _make_dirs(base)
        return base
    _make_dirs(root)
    for n in itertools.count(1):
        candidate = base if n == 1 else f"{base}-{n}"
        try:
            os.mkdir(candidate)
        except FileExistsError:
            continue
        except OSError as err:
            raise ValueError(f"cannot create the run folder {candidate!r}: {err}") from err
        return candidate


def _make_dirs(path):
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create the run folder {path!r}: {err}") from err


def run(args):
    """Run ``keras-margins train`` from parsed arguments; returns the exit code."""
    import keras

    from keras_margins import callbacks as km_callbacks
    from keras_margins.models import MarginModel, mlp_backbone

    # Everything that can be checked is checked before training.
    if args.export:
        check_export_target(args.export)
    keras.utils.set_random_seed(args.seed)
    (x, y), (x_test, y_test), zero_shot = load_dataset(args.dataset)
    num_classes = int(y.max()) + 1
    backbone = mlp_backbone(x.shape[1], args.embedding_dim)
    loss, head, family = build_loss_and_head(
        args.loss, args.head, num_classes, args.scale, args.margin
    )
    if family.needs == "scores":
        model = keras.Sequential([backbone, head], name=f"{args.loss}_model")
    else:
        model = MarginModel(backbone, head, name=f"{args.loss}_model")
    model(x[:1])  # build, so the head's kernel exists for MarginMonitor
    model.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate),
        loss=loss,
        metrics=["accuracy"],
        jit_compile=not args.no_jit,
    )
    out_dir = run_folder(args.output_dir, args.dataset, args.loss, args.overwrite)
    callbacks = [cls() for cls in family.train_callbacks]  # e.g. POD's delta schedule
    callbacks.append(km_callbacks.RetrievalEvaluation((x_test, y_test), embedding_model=backbone))
    if getattr(head, "kernel", None) is not None:
        callbacks.append(km_callbacks.MarginMonitor(head))
    callbacks.append(keras.callbacks.TensorBoard(os.path.join(out_dir, "logs")))
    start = time.time()
    model.fit(
        x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=args.verbose,
        callbacks=callbacks,
    )
    train_seconds = time.time() - start
    embeddings = backbone.predict(x_test, verbose=0)
    results = evaluate_model(model, head, x_test, y_test, embeddings, zero_shot)
    results["train_seconds"] = train_seconds
    model_path = os.path.join(out_dir, "model.keras")
    model.save(model_path)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump({"args": vars(args) | {"func": None}, "results": results}, f, indent=2)
    title = (f"{args.loss} on {args.dataset} ({args.epochs} epochs, "
             f"{'unseen classes' if zero_shot else 'test split'})")
    print(format_table(results, title))
    print(f"model: {model_path}\nTensorBoard logs: {os.path.join(out_dir, 'logs')}")
    if args.export:
        export_and_check(model, args.export, x_test)
    return 0


def export_and_check(model, base_dir, x_test):
    """Export ``model``'s embedding (and scores) for TF Serving and check it in a process
    without keras_margins; prints both results."""
    from keras_margins import export

    path = export.export_embedding_model(model, base_dir, include_scores=True)
    errors = export.check_export(path, model, x_test)
    print(f"exported for TF Serving: {path} (signatures serving_default: inputs -> embedding, "
          f"scores: inputs -> scores)")
    print("checked in a fresh process without keras_margins: max |diff| "
          + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
