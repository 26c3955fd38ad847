"""The embedded digits as a search problem: the splits ``keras-margins tune`` and
``examples/tune_margins.py`` search on, and the held-out score of the best model."""

from keras_margins.data import digits_classification, digits_zero_shot
from keras_margins.metrics import retrieval_scores
from keras_margins.models import split_head


def digits_search_data(task="retrieval", seed=0):
    """Splits of the embedded digits data for a search: ``(train, validation, test,
    num_classes)``, each split an ``(x, y)`` pair.

    ``"classification"``: 10 classes; the stratified training split is cut again into
    train/validation (80/20), the test split stays untouched. ``"retrieval"``: train on digits
    0–4; digits 5–9 are halved (stratified) into validation and test retrieval sets.
    """
    from sklearn.model_selection import train_test_split

    if task == "classification":
        (x, y), test = digits_classification(seed=seed)
        xa, xb, ya, yb = train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed)
        return (xa, ya), (xb, yb), test, 10
    if task == "retrieval":
        train, (xt, yt) = digits_zero_shot(seed=seed)
        xa, xb, ya, yb = train_test_split(xt, yt, test_size=0.5, stratify=yt, random_state=seed)
        return train, (xa, ya), (xb, yb), 5
    raise ValueError(f"`task` must be 'classification' or 'retrieval'; got {task!r}.")


def held_out_score(model, task, test):
    """``("accuracy", value)`` of the head, or ``("map_at_r", value)`` of the embedding
    (leave-one-out on ``test``), for a model built by ``MarginHyperModel``."""
    x, y = test
    if task == "classification":
        scores = model.predict(x, verbose=0)
        return "accuracy", float((scores.argmax(axis=-1) == y).mean())
    embeddings = split_head(model)[0].predict(x, verbose=0)
    return "map_at_r", float(retrieval_scores(embeddings, y)["map_at_r"])
