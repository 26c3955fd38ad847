"""km.metrics.group_accuracy: many/medium/few-shot accuracy against a NumPy loop reference."""

import numpy as np
import pytest

import keras_margins as km


def _reference(y_true, predicted, counts, many, few):
    """Per-class accuracy by loops; a group's accuracy is the mean over its present classes."""
    per_class = []
    for c in range(len(counts)):
        hits, total = 0, 0
        for t, p in zip(y_true, predicted):
            if t == c:
                total += 1
                hits += int(p == c)
        per_class.append(hits / total if total else float("nan"))
    groups = {"many_shot": [], "medium_shot": [], "few_shot": []}
    for c, n in enumerate(counts):
        if np.isnan(per_class[c]):
            continue
        if n > many:
            groups["many_shot"].append(per_class[c])
        elif n < few:
            groups["few_shot"].append(per_class[c])
        else:
            groups["medium_shot"].append(per_class[c])
    out = {k: (sum(v) / len(v) if v else float("nan")) for k, v in groups.items()}
    out["overall"] = sum(int(t == p) for t, p in zip(y_true, predicted)) / len(y_true)
    out["per_class"] = per_class
    return out


def _assert_same(result, expected):
    for key in ("overall", "many_shot", "medium_shot", "few_shot"):
        if np.isnan(expected[key]):
            assert np.isnan(result[key]), key
        else:
            assert result[key] == pytest.approx(expected[key], abs=1e-12), key
    np.testing.assert_allclose(result["per_class"], expected["per_class"], equal_nan=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("thresholds", [(100, 20), (60, 20), (30, 30)])
def test_random_scores_and_labels_match_reference(seed, thresholds):
    rng = np.random.default_rng(seed)
    c = 8
    counts = rng.integers(0, 200, size=c)
    y_true = rng.integers(0, c, size=150)
    scores = rng.normal(size=(150, c)).astype("float32")
    scores[np.arange(150), y_true] += rng.uniform(0, 2, size=150)  # some accuracy
    expected = _reference(y_true.tolist(), np.argmax(scores, 1).tolist(), counts.tolist(), *thresholds)
    _assert_same(km.metrics.group_accuracy(y_true, scores, counts, *thresholds), expected)
    # the same from predicted labels (N,) and (N, 1) labels
    labels_in = km.metrics.group_accuracy(y_true[:, None], np.argmax(scores, 1), counts,
                                          many_threshold=thresholds[0], few_threshold=thresholds[1])
    _assert_same(labels_in, expected)


def test_hand_made_case_and_boundaries():
    counts = np.array([101, 100, 20, 19])  # many, medium (100 is not > 100), medium (20), few
    y_true = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    y_pred = np.array([0, 0, 1, 0, 2, 2, 0, 3])
    result = km.metrics.group_accuracy(y_true, y_pred, counts)
    assert result["overall"] == 6 / 8
    assert result["many_shot"] == 1.0
    assert result["medium_shot"] == pytest.approx((0.5 + 1.0) / 2)
    assert result["few_shot"] == 0.5
    np.testing.assert_array_equal(result["per_class"], [1.0, 0.5, 1.0, 0.5])


def test_empty_group_and_absent_class_are_nan():
    result = km.metrics.group_accuracy([0, 0, 1], [0, 1, 1], [500, 400, 300])
    assert np.isnan(result["few_shot"]) and np.isnan(result["medium_shot"])
    assert result["many_shot"] == pytest.approx((0.5 + 1.0) / 2)  # class 2 absent from y_true
    assert np.isnan(result["per_class"][2])


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"y_pred": np.zeros((3, 4))}, "y_pred"),  # 4 columns, 3 classes
        ({"y_pred": np.zeros((2, 3))}, "y_pred"),  # rows
        ({"y_pred": np.array([[0.0, np.nan, 1.0]] * 3)}, "y_pred"),
        ({"y_pred": [0, 1, 3]}, "y_pred"),
        ({"y_pred": [0, 1]}, "y_pred"),
        ({"y_true": [0, 1, 5]}, "y_true"),
        ({"y_true": [0, -1, 2]}, "y_true"),
        ({"y_true": [0.0, 1.5, 2.0]}, "y_true"),
        ({"y_true": np.zeros((3, 2), "int32")}, "y_true"),
        ({"y_true": [], "y_pred": []}, "y_true"),
        ({"train_counts": [5]}, "train_counts"),
        ({"train_counts": [5, -1, 3]}, "train_counts"),
        ({"train_counts": [[5, 1, 3]]}, "train_counts"),
        ({"many_threshold": -1}, "many_threshold"),
        ({"few_threshold": float("nan")}, "few_threshold"),
        ({"many_threshold": 10, "few_threshold": 20}, "few_threshold"),
    ],
)
def test_bad_inputs(kwargs, argument):
    args = {"y_true": [0, 1, 2], "y_pred": np.eye(3), "train_counts": [150, 50, 5], **kwargs}
    with pytest.raises(ValueError, match=argument):
        km.metrics.group_accuracy(**args)
