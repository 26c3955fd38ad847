"""``keras-margins train``: train a backbone + head with a margin loss on digits, print the
results table, save the model and optionally export it for TF Serving."""

import itertools
import json
import os
import time

from keras_margins.cli.common import (
    check_export_target,
    evaluate_dataset,
    format_table,
    positive_float,
    positive_int,
)
from keras_margins.cli.datasets import BACKBONE_CHOICES, DATASETS, build_backbone, open_dataset

#: The files a run writes; a folder holding one of them holds an earlier run.
RUN_FILES = ("model.keras", "results.json")

#: ``--loss`` choices beyond the registry's class-level families: pair losses trained on P×K
#: batches. ``circle_pair``: ``km.losses.PairCircleLoss`` on the embedding (Sun et al. 2020,
#: fine-grained retrieval: m = 0.4, γ = 80); ``ensemble``: ``km.models.EnsembleModel`` with the
#: four losses of Zabihzadeh et al. (softmax, semi-hard triplet, binomial deviance, ProxyNCA;
#: prior [2, 1, 2, 3]), one embedding head each.
PAIR_METHODS = ("circle_pair", "ensemble")

HELP = "train a margin head on a dataset and report accuracy, MAP@R, margins"


def add_parser(subparsers):
    """Add the ``train`` sub-parser (its ``--loss``/``--head`` choices come from the registry)."""
    from keras_margins.registry import FAMILIES, HEADS

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
    p.add_argument("--loss", choices=tuple(FAMILIES) + PAIR_METHODS, default="lmsoftmax")
    p.add_argument("--head", choices=tuple(HEADS), default=None,
                   help="default: the loss's own head")
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
    p.add_argument("--head-dim", type=positive_int, default=64,
                   help="--loss ensemble: the size of each member's embedding head on the "
                   "backbone's output (the paper's 64; the test embedding is 4 × this)")
    p.add_argument("--samples-per-class", type=positive_int, default=4, metavar="K",
                   help="K of the P×K batches of circle_pair / ensemble (P = batch size // K)")
    p.add_argument("--steps-per-epoch", type=positive_int, default=None,
                   help="training steps per epoch (default: one pass over the training split)")
    p.add_argument("--eval-every", type=int, default=None, metavar="N",
                   help="retrieval metrics on the test split every N epochs in the logs "
                   "(0: never; default 1 on digits, 0 on TFDS datasets)")
    p.add_argument("--epochs", type=positive_int, default=30)
    p.add_argument("--batch-size", type=positive_int, default=64)
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


def build_pair_method(loss_name, backbone, num_classes, head_dim=64, scale=None, margin=None):
    """``(model, loss)`` of a ``PAIR_METHODS`` choice on ``backbone`` (``loss`` is None for the
    ensemble, which computes its own; ``head_dim`` is its members' embedding size)."""
    from keras_margins import losses, models
    from keras_margins.models import ensemble_model

    if loss_name == "circle_pair":
        kwargs = {"margin": 0.4, "gamma": 80.0}
        if scale is not None:
            kwargs["gamma"] = scale
        if margin is not None:
            kwargs["margin"] = margin
        return backbone, losses.PairCircleLoss(**kwargs)
    if loss_name != "ensemble":
        raise ValueError(f"`--loss` {loss_name!r} is not one of {PAIR_METHODS}.")
    if scale is not None or margin is not None:
        raise ValueError("`--scale`/`--margin` do not apply to --loss ensemble (four losses).")
    model = models.EnsembleModel(backbone, ensemble_model.paper_members(num_classes),
                                 embedding_dim=head_dim, prior=ensemble_model.PAPER_PRIOR,
                                 name="ensemble_model")
    return model, None


def run(args):
    """Run ``keras-margins train`` from parsed arguments; returns the exit code."""
    import keras
    import numpy as np

    from keras_margins import callbacks as km_callbacks
    from keras_margins.models import MarginModel

    # Everything that can be checked is checked before training.
    if args.export:
        check_export_target(args.export)
    if args.eval_every is not None and args.eval_every < 0:
        raise ValueError(f"`--eval-every` must be >= 0; got {args.eval_every}.")
    pairs = args.loss in PAIR_METHODS
    if pairs and args.head is not None:
        raise ValueError(f"`--head` does not apply to --loss {args.loss} (a pair loss).")
    dataset = open_dataset(args.dataset, args.data_dir, args.image_size)
    keras.utils.set_random_seed(args.seed)
    embedding_dim = args.embedding_dim or dataset.embedding_dim
    backbone = build_backbone(dataset, args.backbone, embedding_dim, args.weights)
    family_callbacks = ()
    if pairs:
        model, loss = build_pair_method(args.loss, backbone, dataset.num_classes, args.head_dim,
                                        args.scale, args.margin)
        head = None
        embedder = model  # the backbone itself, or the ensemble's weighted concatenation
    else:
        loss, head, family = build_loss_and_head(
            args.loss, args.head, dataset.num_classes, args.scale, args.margin
        )
        family_callbacks = family.train_callbacks  # e.g. POD's delta schedule
        if family.needs == "scores":
            model = keras.Sequential([backbone, head], name=f"{args.loss}_model")
        else:
            model = MarginModel(backbone, head, name=f"{args.loss}_model")
        embedder = backbone
    model(np.zeros((1, *dataset.input_shape), "float32"))  # build: MarginMonitor reads the kernel
    compile_kwargs = {"loss": loss} if loss is not None else {}
    if head is not None:
        compile_kwargs["metrics"] = ["accuracy"]
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate), jit_compile=not args.no_jit,
                  **compile_kwargs)
    out_dir = run_folder(args.output_dir, args.dataset, args.loss, args.overwrite)
    callbacks = [cls() for cls in family_callbacks]
    eval_every = args.eval_every if args.eval_every is not None else int(not dataset.is_tfds)
    if eval_every:
        callbacks.append(km_callbacks.RetrievalEvaluation(
            dataset.validation_data(), embedding_model=embedder, frequency=eval_every))
    if getattr(head, "kernel", None) is not None:
        callbacks.append(km_callbacks.MarginMonitor(head))
    callbacks.append(keras.callbacks.TensorBoard(os.path.join(out_dir, "logs")))
    fit_args, fit_kwargs = dataset.train_stream(
        args.batch_size, args.seed, samples_per_class=args.samples_per_class if pairs else None,
        steps_per_epoch=args.steps_per_epoch,
    )
    start = time.time()
    model.fit(*fit_args, epochs=args.epochs, verbose=args.verbose, callbacks=callbacks,
              **fit_kwargs)
    train_seconds = time.time() - start
    results = evaluate_dataset(embedder, model if head is not None else None, head, dataset)
    results["train_seconds"] = train_seconds
    model_path = os.path.join(out_dir, "model.keras")
    model.save(model_path)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump({"args": vars(args) | {"func": None}, "results": results}, f, indent=2)
    title = (f"{args.loss} on {args.dataset} ({args.epochs} epochs, "
             f"{'unseen classes' if dataset.zero_shot else 'test split'})")
    print(format_table(results, title))
    print(f"model: {model_path}\nTensorBoard logs: {os.path.join(out_dir, 'logs')}")
    if args.export:
        export_and_check(model, args.export, dataset.sample_inputs(), scores=head is not None)
    return 0


def export_and_check(model, base_dir, x_test, scores=True):
    """Export ``model``'s embedding (and, with ``scores``, its class scores) for TF Serving and
    check it in a process without keras_margins; prints both results."""
    from keras_margins import export

    path = export.export_embedding_model(model, base_dir, include_scores=scores)
    errors = export.check_export(path, model, x_test)
    signatures = "serving_default: inputs -> embedding" + (
        ", scores: inputs -> scores" if scores else "")
    print(f"exported for TF Serving: {path} (signatures {signatures})")
    print("checked in a fresh process without keras_margins: max |diff| "
          + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
