"""The ``keras-margins`` command: ``train``, ``evaluate``, plus subcommands that other modules
register themselves (``export``, ``tune``).

    keras-margins train                                   # LM-Softmax on the embedded digits
    keras-margins train --loss arcface --scale 16 --margin 0.3 --epochs 30
    keras-margins evaluate runs/digits-lmsoftmax/model.keras

Plugin protocol: for each name in ``PLUGINS`` the module ``keras_margins.<name>`` is imported
if it exists, and its ``add_subcommand(subparsers)`` (or ``add_cli(subparsers)``) is called.
It adds an argparse sub-parser and sets ``func=`` (called with the parsed arguments, returns
an exit code) through ``parser.set_defaults``. A missing module simply adds no subcommand.
"""

import argparse
import importlib
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

PLUGINS = ("export", "tuning")

#: --loss name -> (class in km.losses or None for plain softmax CE, head, {cli arg: loss arg})
LOSSES = {
    "lmsoftmax": ("LMSoftmax", "cosine", {"scale": "scale"}),
    "arcface": ("ArcFace", "cosine", {"scale": "scale", "margin": "margin"}),
    "cosface": ("CosFace", "cosine", {"scale": "scale", "margin": "margin"}),
    "sphereface": ("SphereFace", "cosine", {"scale": "scale", "margin": "margin"}),
    "normface": ("NormFace", "cosine", {"scale": "scale"}),
    "circle": ("CircleLoss", "cosine", {"scale": "gamma", "margin": "margin"}),
    "virtual_softmax": ("VirtualSoftmax", "virtual_softmax", {}),
    "pod": ("POD", "pedcc", {"margin": "delta"}),
    "softmax": (None, "dense", {}),
}
#: --head name -> layer class name in km.layers (None: a bias-free keras Dense)
HEADS = {
    "cosine": "LargestMarginHead",
    "virtual_softmax": "VirtualSoftmaxHead",
    "pedcc": "PEDCCHead",
    "dense": None,
}
DATASETS = ("digits", "digits-zero-shot")


def load_dataset(name):
    """``((x, y), (x_test, y_test), zero_shot)`` of a ``--dataset`` choice."""
    import keras_margins as km

    if name == "digits":
        return (*km.data.digits_classification(), False)
    if name == "digits-zero-shot":
        return (*km.data.digits_zero_shot(), True)
    raise ValueError(f"`--dataset` must be one of {DATASETS}; got {name!r}.")


def build_backbone(input_dim, embedding_dim, hidden=256):
    import keras

    return keras.Sequential(
        [
            keras.Input((input_dim,)),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(embedding_dim),
        ],
        name="embedding",
    )


def build_loss_and_head(loss_name, head_name, num_classes, scale=None, margin=None):
    """(loss, head, needs_task_model) for the CLI choices; unset hyper-parameters keep the
    loss's paper defaults."""
    import keras

    import keras_margins as km

    class_name, default_head, arg_map = LOSSES[loss_name]
    head_name = head_name or default_head
    given = {"scale": scale, "margin": margin}
    for cli_arg, value in given.items():
        if value is not None and cli_arg not in arg_map:
            raise ValueError(f"`--{cli_arg}` does not apply to --loss {loss_name}.")
    if class_name is None:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        kwargs = {arg_map[k]: v for k, v in given.items() if v is not None}
        loss = getattr(km.losses, class_name)(**kwargs)
    head_class = HEADS[head_name]
    if head_class is None:
        head = keras.layers.Dense(num_classes, use_bias=False, name="head")
    else:
        head = getattr(km.layers, head_class)(num_classes, name="head")
    return loss, head, getattr(loss, "needs", "scores") != "scores"


def _class_margin(head):
    import keras

    import keras_margins as km

    kernel = getattr(head, "kernel", None)
    if kernel is None:
        return None
    return float(keras.ops.convert_to_numpy(km.ops.class_margin(kernel)))


def _scores(model, head, x_test, y_test, embeddings, zero_shot):
    """The results table's numbers."""
    import keras

    import keras_margins as km

    results = {}
    if head is not None and not zero_shot:
        scores = np.asarray(model.predict(x_test, verbose=0))
        results["accuracy"] = float(np.mean(np.argmax(scores, axis=1) == y_test))
        if getattr(head, "kernel", None) is not None:
            cos = km.ops.cosine_similarity(embeddings, head.kernel)
            results["mean_sample_margin"] = float(
                np.mean(keras.ops.convert_to_numpy(km.ops.sample_margin(y_test, cos)))
            )
    retrieval = km.metrics.retrieval_scores(embeddings, y_test, k=(1, 5))
    results.update(
        map_at_r=retrieval["map_at_r"],
        precision_at_1=retrieval["precision_at_1"],
        recall_at_5=retrieval["recall_at_5"],
    )
    if head is not None:
        margin = _class_margin(head)
        if margin is not None:
            results["class_margin"] = margin
    return results


def format_table(results, title):
    """The results as an aligned two-column text table."""
    names = {
        "accuracy": "test accuracy",
        "map_at_r": "MAP@R",
        "precision_at_1": "P@1",
        "recall_at_5": "Recall@5",
        "class_margin": "class margin",
        "mean_sample_margin": "mean sample margin",
        "train_seconds": "training time",
    }
    rows = []
    for key, label in names.items():
        if key not in results:
            continue
        value = results[key]
        if key == "class_margin":
            text = f"{value:.4f} rad ({np.degrees(value):.1f} deg)"
        elif key == "train_seconds":
            text = f"{value:.1f} s"
        else:
            text = f"{value:.4f}"
        rows.append((label, text))
    width = max(len(label) for label, _ in rows)
    rule = "-" * (width + 3 + max(len(t) for _, t in rows))
    lines = [title, rule, *(f"{label:<{width}}   {text}" for label, text in rows), rule]
    return "\n".join(lines)


def run_train(args):
    import keras

    import keras_margins as km

    keras.utils.set_random_seed(args.seed)
    (x, y), (x_test, y_test), zero_shot = load_dataset(args.dataset)
    num_classes = int(y.max()) + 1
    backbone = build_backbone(x.shape[1], args.embedding_dim)
    loss, head, task_model = build_loss_and_head(
        args.loss, args.head, num_classes, args.scale, args.margin
    )
    if task_model:
        model = km.models.MarginModel(backbone, head, name=f"{args.loss}_model")
    else:
        model = keras.Sequential([backbone, head], name=f"{args.loss}_model")
    model(x[:1])  # build, so the head's kernel exists for MarginMonitor
    model.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate),
        loss=loss,
        metrics=["accuracy"],
        jit_compile=not args.no_jit,
    )
    out_dir = args.output_dir or os.path.join("runs", f"{args.dataset}-{args.loss}")
    os.makedirs(out_dir, exist_ok=True)
    callbacks = [
        km.callbacks.RetrievalEvaluation((x_test, y_test), embedding_model=backbone),
        keras.callbacks.TensorBoard(os.path.join(out_dir, "logs")),
    ]
    if getattr(head, "kernel", None) is not None:
        callbacks.insert(1, km.callbacks.MarginMonitor(head))
    if args.loss == "pod" and hasattr(km.callbacks, "PODDelta"):
        callbacks.insert(0, km.callbacks.PODDelta())  # the paper's delta schedule
    start = time.time()
    model.fit(
        x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=args.verbose,
        callbacks=callbacks,
    )
    train_seconds = time.time() - start
    results = _scores(model, head, x_test, y_test, backbone.predict(x_test, verbose=0), zero_shot)
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
        _export_and_check(model, args.export, x_test)
    return 0


def _export_and_check(model, base_dir, x_test):
    import keras_margins as km

    path = km.export.export_embedding_model(model, base_dir, include_scores=True)
    errors = km.export.check_export(path, model, x_test)
    print(f"exported for TF Serving: {path} (signatures serving_default: inputs -> embedding, "
          f"scores: inputs -> scores)")
    print("checked in a fresh process without keras_margins: max |diff| "
          + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))


def run_evaluate(args):
    import keras

    import keras_margins as km

    if not os.path.isfile(args.model):
        raise ValueError(f"`model` {args.model!r} is not a file (expected a .keras model).")
    model = keras.models.load_model(args.model, safe_mode=True)
    backbone, head, scorer = km.export.split_head(model)
    _, (x_test, y_test), zero_shot = load_dataset(args.dataset)
    embeddings = np.asarray(backbone.predict(x_test, verbose=0))
    results = _scores(scorer, head, x_test, y_test, embeddings, zero_shot)
    print(format_table(results, f"{os.path.basename(args.model)} on {args.dataset}"))
    return 0


def _add_train(subparsers):
    import keras_margins as km

    losses = [n for n in LOSSES if LOSSES[n][0] is None or hasattr(km.losses, LOSSES[n][0])]
    heads = [n for n in HEADS if HEADS[n] is None or hasattr(km.layers, HEADS[n])]
    p = subparsers.add_parser(
        "train", help="train a margin head on a dataset and report accuracy, MAP@R, margins",
        description="Train an MLP embedding + head with a margin loss (XLA), print accuracy, "
        "MAP@R, P@1 and the class margin, write model.keras and TensorBoard logs.",
    )
    p.add_argument("--dataset", choices=DATASETS, default="digits")
    p.add_argument("--loss", choices=losses, default="lmsoftmax")
    p.add_argument("--head", choices=heads, default=None, help="default: the loss's own head")
    p.add_argument("--scale", type=float, default=None, help="s (gamma for circle); default: the loss's")
    p.add_argument("--margin", type=float, default=None, help="m (delta for pod); default: the loss's")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=3e-3)
    p.add_argument("--embedding-dim", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", default=None, help="default: runs/<dataset>-<loss>")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                   help="Keras fit verbosity (1: progress bar)")
    p.add_argument("--no-jit", action="store_true", help="train without XLA")
    p.add_argument("--export", default=None, metavar="BASE_DIR",
                   help="also export the embedding model for TF Serving to BASE_DIR/<version>/ "
                   "(with a 'scores' signature) and check it in a process without keras_margins")
    p.set_defaults(func=run_train)


def _add_evaluate(subparsers):
    p = subparsers.add_parser(
        "evaluate", help="accuracy, MAP@R, P@1 and class margin of a saved .keras model",
    )
    p.add_argument("model", help="path of a .keras model (e.g. from `keras-margins train`)")
    p.add_argument("--dataset", choices=DATASETS, default="digits")
    p.set_defaults(func=run_evaluate)


def register_plugins(subparsers, names=PLUGINS):
    """Let ``keras_margins.<name>`` add its subcommand (see the module docstring)."""
    for name in names:
        module_name = f"keras_margins.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:
                continue
            print(f"keras-margins: {name} unavailable ({err})", file=sys.stderr)
            continue
        hook = getattr(module, "add_subcommand", None) or getattr(module, "add_cli", None)
        if hook is not None:
            hook(subparsers)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-margins",
        description="Margin heads and metric-learning losses for Keras 3: train, evaluate, "
        "and (when installed) export / tune.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_train(subparsers)
    _add_evaluate(subparsers)
    register_plugins(subparsers)
    return parser


def main(argv=None):
    """Entry point of the ``keras-margins`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValueError as err:
        print(f"keras-margins {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
