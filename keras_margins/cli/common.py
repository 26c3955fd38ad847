"""What the subcommands share: the results table, argument types, path checks.

Nothing here imports Keras at module level: ``keras-margins --help`` builds its parser without
it.
"""

import argparse
import os


def load_model_file(path):
    """The ``.keras`` model at ``path`` (``safe_mode=True``); ``ValueError`` naming ``model``
    when ``path`` is not a file."""
    import keras

    if not os.path.isfile(path):
        raise ValueError(f"`model` {path!r} is not a file (expected a .keras model).")
    return keras.models.load_model(path, safe_mode=True)


def number_type(convert, accepts, expected, must, name, doc):
    """An argparse type: ``convert(text)`` (``int`` or ``float``), then ``accepts(value)``;
    ``ArgumentTypeError`` saying ``expected ...; got 'text'`` when the text is no number and
    ``must be ...; got value`` when the bound fails. ``name`` and ``doc`` become the function's
    ``__name__`` and ``__doc__``."""

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}; got {text!r}") from None
        if not accepts(value):
            raise argparse.ArgumentTypeError(f"must be {must}; got {value}")
        return value

    parse.__name__ = parse.__qualname__ = name
    parse.__doc__ = doc
    return parse


positive_int = number_type(
    int, lambda v: v >= 1, "a positive integer", "a positive integer (>= 1)", "positive_int",
    "argparse type: an integer >= 1 (``--epochs``, ``--batch-size``, ...).")
non_negative_int = number_type(
    int, lambda v: v >= 0, "an integer >= 0", "an integer >= 0", "non_negative_int",
    "argparse type: an integer >= 0 (``--eval-every``, ``--unenrolled``, ``--bootstrap``).")
positive_float = number_type(
    float, lambda v: 0 < v < float("inf"), "a positive number", "a positive number",
    "positive_float", "argparse type: a finite float > 0 (``--learning-rate``).")
rate = number_type(
    float, lambda v: 0.0 < v < 1.0, "a rate in (0, 1)", "a rate in (0, 1)", "rate",
    "argparse type: a float in (0, 1) (``--far``).")


def check_export_target(base_dir, option="--export"):
    """Raise ``ValueError`` (naming ``option``) unless a SavedModel can be exported to
    ``base_dir``: the backend must be able to write one (TensorFlow, or JAX with TensorFlow
    installed: ``km.export``), ``base_dir`` must not be a file, and the folder (or its nearest
    existing ancestor) and its parent (where ``models.config`` goes) must be writable. Called
    before training, so a bad path never costs a training run."""
    from keras_margins.export.saved_model import check_backend, creatable_dir

    try:
        check_backend()
    except ValueError as err:
        raise ValueError(f"`{option}`: {err}") from None
    path, existing = creatable_dir(base_dir, option)
    # The version folder is staged inside BASE_DIR and models.config written beside it.
    folders = (path, os.path.dirname(path)) if os.path.isdir(path) else (existing,)
    for folder in folders:
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ValueError(f"`{option}` {base_dir!r}: {folder!r} is not writable.")
    return path


def class_margin(head):
    """The class margin (rad) of a head with a ``kernel``, else None."""
    import keras

    from keras_margins import ops

    kernel = getattr(head, "kernel", None)  # a Dense or cosine head; Virtual Softmax too
    if kernel is None:
        return None
    return float(keras.ops.convert_to_numpy(ops.class_margin(kernel)))


def embed_dataset(embedder, scorer, dataset, batch_size=256):
    """``(embeddings, scores or None, labels)`` of ``dataset``'s test split, batch by batch
    (``embedder``/``scorer``: models mapping inputs to embeddings / class scores)."""
    import numpy as np

    embeddings, scores, labels = [], [], []
    for x, y in dataset.test_batches(batch_size):
        embeddings.append(np.asarray(embedder.predict_on_batch(x)))
        if scorer is not None:
            scores.append(np.asarray(scorer.predict_on_batch(x)))
        labels.append(np.asarray(y))
    if not labels:
        raise ValueError(f"`--dataset` {dataset.name}: the test split holds no examples.")
    return (np.concatenate(embeddings), np.concatenate(scores) if scores else None,
            np.concatenate(labels))


def evaluate_dataset(embedder, scorer, head, dataset, batch_size=256):
    """The results table's numbers on ``dataset``'s test split: accuracy and mean sample
    margin (seen classes only), MAP@R, P@1, Recall@5 of the embeddings, the head's class
    margin."""
    import keras
    import numpy as np

    from keras_margins import metrics, ops

    embeddings, scores, labels = embed_dataset(embedder, scorer, dataset, batch_size)
    results = {}
    if scores is not None and not dataset.zero_shot:
        results["accuracy"] = float(np.mean(np.argmax(scores, axis=1) == labels))
        if getattr(head, "kernel", None) is not None:
            cos = ops.cosine_similarity(embeddings, head.kernel)
            results["mean_sample_margin"] = float(
                np.mean(keras.ops.convert_to_numpy(ops.sample_margin(labels, cos)))
            )
    retrieval = metrics.retrieval_scores(embeddings, labels, k=(1, 5))
    results.update(
        map_at_r=retrieval["map_at_r"],
        precision_at_1=retrieval["precision_at_1"],
        recall_at_5=retrieval["recall_at_5"],
    )
    if head is not None:
        margin = class_margin(head)
        if margin is not None:
            results["class_margin"] = margin
    return results


_LABELS = {
    "accuracy": "test accuracy",
    "map_at_r": "MAP@R",
    "precision_at_1": "P@1",
    "recall_at_5": "Recall@5",
    "class_margin": "class margin",
    "mean_sample_margin": "mean sample margin",
    "train_seconds": "training time",
}


def format_table(results, title):
    """The results as an aligned two-column text table."""
    import math

    rows = []
    for key, label in _LABELS.items():
        if key not in results:
            continue
        value = results[key]
        if key == "class_margin":
            text = f"{value:.4f} rad ({math.degrees(value):.1f} deg)"
        elif key == "train_seconds":
            text = f"{value:.1f} s"
        else:
            text = f"{value:.4f}"
        rows.append((label, text))
    width = max(len(label) for label, _ in rows)
    rule = "-" * (width + 3 + max(len(t) for _, t in rows))
    lines = [title, rule, *(f"{label:<{width}}   {text}" for label, text in rows), rule]
    return "\n".join(lines)
