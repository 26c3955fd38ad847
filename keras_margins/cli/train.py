"""``keras-margins train``: train a backbone + head with a margin loss on digits, print the
results table, save the model and optionally export it for TF Serving.

The ``--loss`` choices are the recipes of ``keras_margins.registry.FAMILIES``: class-level
losses train ``MarginModel(backbone, head)`` on shuffled batches; the pair-wise recipes
(``circle_pair``: ``km.losses.PairCircleLoss`` with its own defaults; ``ensemble``: the
four-loss ``km.models.EnsembleModel`` of Zabihzadeh et al.) train on P×K batches without a
class head. Which is which is read from the loss (``km.protocols.wants_head``).

Arguments are checked in two rounds before anything is created: ``check_args`` (argument
values and the registry's tables; no Keras, so a usage error answers at once), then, in
``run``, what needs the library (the loss's declarations, the dataset, the export target).
"""

import itertools
import json
import os
import time

from keras_margins.cli.common import (
    check_export_target,
    evaluate_dataset,
    format_table,
    non_negative_int,
    positive_float,
    positive_int,
)
from keras_margins.cli.datasets import (
    BACKBONE_CHOICES,
    DATASETS,
    DIGITS,
    build_backbone,
    check_backbone,
    open_dataset,
    train_classes,
)
from keras_margins.registry import FAMILIES, HEAD_OPTIONS, HEADS, OPTIONS

#: The files a run writes; a folder holding one of them holds an earlier run.
RUN_FILES = ("model.keras", "results.json")
#: Defaults of the batch options (``--batch-size``; ``--samples-per-class`` K of P×K batches).
BATCH_SIZE = 64
SAMPLES_PER_CLASS = 4

HELP = "train a margin head on a dataset and report accuracy, MAP@R, margins"


def samples_per_class(text):
    """argparse type of ``--samples-per-class``: an integer >= 2 (K = 1 gives no positive
    pair)."""
    value = positive_int(text)
    if value < 2:
        import argparse

        raise argparse.ArgumentTypeError(
            f"must be at least 2 (a P×K batch with K = {value} holds no positive pair)"
        )
    return value


def add_parser(subparsers):
    """Add the ``train`` sub-parser (its choices come from ``keras_margins.registry``)."""
    p = subparsers.add_parser(
        "train", help=HELP,
        description="Train an MLP embedding + head with a margin loss (XLA), print accuracy, "
        "MAP@R, P@1 and the class margin, write model.keras and TensorBoard logs.",
    )
    p.add_argument("--dataset", choices=DATASETS, default="digits",
                   help="digits (embedded) or a TFDS dataset read from --data-dir; the "
                   "retrieval sets (caltech_birds2011, cars196, stanford_online_products) train "
                   "on the first half of the classes and retrieve among the second")
    p.add_argument("--data-dir", default=None,
                   help="TFDS data directory holding the prepared dataset (never downloaded)")
    p.add_argument("--loss", choices=tuple(FAMILIES), default="lmsoftmax",
                   help="circle_pair and ensemble train on P×K batches without a class head")
    p.add_argument("--head", choices=tuple(HEADS), default=None,
                   help="default: the loss's own head (class-level losses only)")
    p.add_argument("--sub-centers", type=positive_int, default=None, metavar="K",
                   help="sub-centres per class of the cosine head (sub-center ArcFace; "
                   "default: 3 for --loss subcenter_arcface, else 1)")
    p.add_argument("--scale", type=float, default=None,
                   help="s (gamma for circle and circle_pair); default: the loss's")
    p.add_argument("--margin", type=float, default=None,
                   help="m (the initial delta for pod); default: the loss's")
    p.add_argument("--backbone", choices=BACKBONE_CHOICES, default="auto",
                   help="auto: mlp on digits, small_cnn on MNIST/CIFAR, resnet50 on the "
                   "retrieval sets; the others are keras.applications architectures")
    p.add_argument("--weights", default=None, metavar="FILE",
                   help="local weights file of the keras.applications backbone without its "
                   "top (e.g. ImageNet *_notop.h5); default: random initialisation")
    p.add_argument("--image-size", type=positive_int, default=None,
                   help="image side for TFDS datasets (default: 224 for the retrieval sets, "
                   "native for MNIST/CIFAR)")
    p.add_argument("--head-dim", type=positive_int, default=None,
                   help="--loss ensemble: the size of each member's embedding head on the "
                   "backbone's output (default: the paper's 64; the test embedding is 4 × this)")
    p.add_argument("--samples-per-class", type=samples_per_class, default=None, metavar="K",
                   help=f"pair-wise losses (circle_pair, ensemble): K >= 2 of the P×K batches, "
                   f"P = batch size // K (default {SAMPLES_PER_CLASS}; with the default batch "
                   "size P is capped at the training classes)")
    p.add_argument("--steps-per-epoch", type=positive_int, default=None,
                   help="training steps per epoch (default: one pass over the training split)")
    p.add_argument("--eval-every", type=non_negative_int, default=None, metavar="N",
                   help="retrieval metrics on the test split every N epochs in the logs "
                   "(0: never; default 1 on digits, 0 on TFDS datasets)")
    p.add_argument("--epochs", type=positive_int, default=30)
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help=f"default {BATCH_SIZE}")
    p.add_argument("--learning-rate", type=positive_float, default=3e-3)
    p.add_argument("--embedding-dim", type=positive_int, default=None,
                   help="default: 64 on digits, 128 on MNIST/CIFAR, 512 on the retrieval sets")
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
                   "(with a 'scores' signature; magface and adaface also serve the feature "
                   "norm as 'norm') and check it in a process without keras_margins")
    p.set_defaults(func=run, check=check_args)
    return p


# ----------------------------------------------------------------------------- checks
def check_args(args):
    """What can be checked from the arguments and the registry's tables alone (no Keras):
    ``ValueError`` naming the option."""
    family = FAMILIES[args.loss]
    for option in OPTIONS:
        if getattr(args, option) is not None and option not in family.option_map():
            takes = sorted(f"--{o}" for o in family.option_map()) or ["neither --scale nor --margin"]
            raise ValueError(
                f"`--{option}` does not apply to --loss {args.loss} (it takes {', '.join(takes)})."
            )
    for option in HEAD_OPTIONS:
        if getattr(args, option, None) is None:
            continue
        head = args.head if args.head is not None else family.head_name
        if not family.wants_head or head not in HEAD_OPTIONS[option]:
            flag = "--" + option.replace("_", "-")
            raise ValueError(
                f"`{flag}` applies to the {' / '.join(HEAD_OPTIONS[option])} head; --loss "
                f"{args.loss} trains " + (f"the {head} head." if family.wants_head and head
                                          else "no such head.")
            )
    if args.head_dim is not None and "head_dim" not in family.model_options:
        raise ValueError(f"`--head-dim` applies to --loss ensemble, not to --loss {args.loss}.")
    if args.image_size is not None and args.dataset in DIGITS:
        raise ValueError("`--image-size` applies to the TFDS datasets, not to digits.")
    check_backbone(args.dataset, args.backbone, args.weights)


def check_recipe(args, family):
    """What needs the loss's declaration (``km.protocols.wants_head``): ``--head`` only for
    losses that train a head, ``--samples-per-class`` only for those that do not."""
    if family.wants_head:
        if args.samples_per_class is not None:
            raise ValueError(
                f"`--samples-per-class` applies to the pair-wise losses (P×K batches: "
                f"{', '.join(pair_recipes())}); --loss {args.loss} trains a class head on "
                "shuffled batches."
            )
    elif args.head is not None:
        raise ValueError(f"`--head` does not apply to --loss {args.loss} (it trains no class head).")


def pair_recipes():
    """The ``--loss`` choices that train on P×K batches."""
    return tuple(name for name, family in FAMILIES.items() if family.pair_batches)


def pk_shape(batch_size, k, num_classes, dataset):
    """``(P, K)`` of the P×K batches: ``P = batch_size // K`` (``batch_size`` None: the
    default batch size, P capped at ``num_classes``). ``ValueError`` naming the options to
    change when P < 2 or P exceeds the training classes."""
    k = SAMPLES_PER_CLASS if k is None else k
    if batch_size is None:
        p = min(BATCH_SIZE // k, num_classes)
        if p < 2:
            raise ValueError(
                f"`--samples-per-class` {k} leaves room for {p} class(es) in the default batch of "
                f"{BATCH_SIZE}; pass a smaller --samples-per-class or a larger --batch-size."
            )
        return p, k
    p = batch_size // k
    if p < 2:
        raise ValueError(
            f"`--batch-size` {batch_size} must hold at least 2 classes × {k} samples "
            f"(`--samples-per-class`) for a pair loss: pass --batch-size {2 * k} or more, or a "
            "smaller --samples-per-class."
        )
    if p > num_classes:
        raise ValueError(
            f"`--batch-size` {batch_size} with `--samples-per-class` {k} asks for P = {p} classes "
            f"per batch, but the training split of {dataset} has {num_classes}: pass "
            f"--batch-size {num_classes * k} or less, or a larger --samples-per-class."
        )
    return p, k


# ----------------------------------------------------------------------------- building
def build_loss_and_head(loss_name, head_name, num_classes, scale=None, margin=None,
                        sub_centers=None):
    """``(loss, head, family)`` of a recipe that trains a class head; unset hyper-parameters
    keep the loss's paper defaults (and the recipe's head arguments, e.g. sub-center
    ArcFace's 3 sub-centres)."""
    from keras_margins.registry import make_head

    family = FAMILIES[loss_name]
    for option, value in (("scale", scale), ("margin", margin)):
        if value is not None and option not in family.option_map():
            raise ValueError(f"`--{option}` does not apply to --loss {loss_name}.")
    loss = family.make_loss(**family.loss_arguments(scale=scale, margin=margin))
    options = {} if sub_centers is None else {"sub_centers": sub_centers}
    if head_name is None or head_name == family.head_name:
        head = family.make_head(num_classes, **options)
    else:
        head = make_head(HEADS[head_name], num_classes, **options)
    return loss, head, family


def run_folder(output_dir, dataset, loss, overwrite=False, root="runs"):
    """The folder a training run writes to, created; never one holding an earlier run.

    With ``output_dir``: that folder, unless it holds ``model.keras``/``results.json`` of an
    earlier run and ``overwrite`` is False (``ValueError``). Without: ``<root>/<dataset>-<loss>``
    if it does not exist yet, else the first free ``<root>/<dataset>-<loss>-2``, ``-3``, ...
    (created atomically, so two runs started together never share one); with ``overwrite``
    always ``<root>/<dataset>-<loss>``.
    """
    check_run_folder(output_dir, overwrite)
    if output_dir:
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


def check_run_folder(output_dir, overwrite=False):
    """``ValueError`` when ``--output-dir`` is a file or holds a run (without --overwrite)."""
    if not output_dir:
        return
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(f"`--output-dir` {output_dir!r} exists and is not a directory.")
    held = [name for name in RUN_FILES if os.path.exists(os.path.join(output_dir, name))]
    if held and not overwrite:
        raise ValueError(
            f"`--output-dir` {output_dir!r} already holds a run ({', '.join(held)}); pass "
            "--overwrite to replace it, or choose another folder."
        )


def _make_dirs(path):
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create the run folder {path!r}: {err}") from err


def run(args):
    """Run ``keras-margins train`` from parsed arguments; returns the exit code.

    Every check (arguments, the loss's declarations, the P×K shape, the dataset, the export
    target, the output folder) runs before anything is written.
    """
    import keras
    import numpy as np

    from keras_margins import callbacks as km_callbacks

    check_args(args)
    family = FAMILIES[args.loss]
    check_recipe(args, family)
    if args.export:
        check_export_target(args.export)
    check_run_folder(args.output_dir, args.overwrite)
    pk = None
    if family.pair_batches:
        pk = pk_shape(args.batch_size, args.samples_per_class, train_classes(args.dataset),
                      args.dataset)
    batch_size = BATCH_SIZE if args.batch_size is None else args.batch_size
    dataset = open_dataset(args.dataset, args.data_dir, args.image_size)
    keras.utils.set_random_seed(args.seed)
    embedding_dim = args.embedding_dim or dataset.embedding_dim
    backbone = build_backbone(dataset, args.backbone, embedding_dim, args.weights)
    head = None
    if family.wants_head:
        loss, head, family = build_loss_and_head(
            args.loss, args.head, dataset.num_classes, args.scale, args.margin,
            getattr(args, "sub_centers", None),
        )
    else:
        loss = family.make_loss(**family.loss_arguments(scale=args.scale, margin=args.margin))
    model_options = {} if args.head_dim is None else {"head_dim": args.head_dim}
    model = family.build_model(backbone, dataset.num_classes, head=head,
                               name=f"{args.loss}_model", **model_options)
    # The embedding: the backbone, or the ensemble's weighted concatenation of its members.
    embedder = backbone if head is not None or model is backbone else model
    model(np.zeros((1, *dataset.input_shape), "float32"))  # build: MarginMonitor reads the kernel
    compile_kwargs = {"loss": loss} if loss is not None else {}
    if head is not None:
        compile_kwargs["metrics"] = ["accuracy"]
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate), jit_compile=not args.no_jit,
                  **compile_kwargs)
    fit_args, fit_kwargs = dataset.train_stream(
        batch_size, args.seed, pk=pk, steps_per_epoch=args.steps_per_epoch,
    )
    if pk is not None:
        print(f"P×K batches: {pk[0]} classes × {pk[1]} samples", flush=True)
    out_dir = run_folder(args.output_dir, args.dataset, args.loss, args.overwrite)
    callbacks = [cls() for cls in family.train_callbacks]  # e.g. POD's delta schedule
    eval_every = args.eval_every if args.eval_every is not None else int(not dataset.is_tfds)
    if eval_every:
        callbacks.append(km_callbacks.RetrievalEvaluation(
            dataset.validation_data(), embedding_model=embedder, frequency=eval_every))
    if getattr(head, "kernel", None) is not None:
        callbacks.append(km_callbacks.MarginMonitor(head))
    callbacks.append(keras.callbacks.TensorBoard(os.path.join(out_dir, "logs")))
    start = time.time()
    model.fit(*fit_args, epochs=args.epochs, verbose=args.verbose, callbacks=callbacks,
              **fit_kwargs)
    train_seconds = time.time() - start
    results = evaluate_dataset(embedder, model if head is not None else None, head, dataset)
    results["train_seconds"] = train_seconds
    model_path = os.path.join(out_dir, "model.keras")
    model.save(model_path)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump({"args": vars(args) | {"func": None, "check": None}, "results": results}, f,
                  indent=2)
    title = (f"{args.loss} on {args.dataset} ({args.epochs} epochs, "
             f"{'unseen classes' if dataset.zero_shot else 'test split'})")
    print(format_table(results, title))
    print(f"model: {model_path}\nTensorBoard logs: {os.path.join(out_dir, 'logs')}")
    if args.export:
        export_and_check(model, args.export, dataset.sample_inputs(), scores=head is not None,
                         norm=family.norm_quality)
    return 0


def export_and_check(model, base_dir, x_test, scores=True, norm=False):
    """Export ``model``'s embedding (and, with ``scores``, its class scores; with ``norm``, the
    embedding's norm as a quality score) for TF Serving and check it in a process without
    keras_margins; prints both results."""
    from keras_margins import export

    path = export.export_embedding_model(model, base_dir, include_scores=scores,
                                         include_norm=norm)
    errors = export.check_export(path, model, x_test)
    signatures = "serving_default: inputs -> embedding" + (" + norm" if norm else "") + (
        ", scores: inputs -> scores" if scores else "")
    print(f"exported for TF Serving: {path} (signatures {signatures})")
    print("checked in a fresh process without keras_margins: max |diff| "
          + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
