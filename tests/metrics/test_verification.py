import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

import keras_margins as km


def _pairs(seed, n=400, d=16, noise=1.0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d))
    is_same = rng.random(n) < 0.5
    b = np.where(is_same[:, None], a + noise * rng.normal(size=(n, d)), rng.normal(size=(n, d)))
    return a, b, is_same


def _cosines(a, b):
    # The library reads embeddings as float32 (then computes in float64): do the same.
    a = np.asarray(a, "float32").astype("float64")
    b = np.asarray(b, "float32").astype("float64")
    return np.array(
        [np.dot(a[i], b[i]) / (np.linalg.norm(a[i]) * np.linalg.norm(b[i])) for i in range(len(a))]
    )


def reference_lfw_accuracy(scores, is_same, n_folds=10):
    """Brute force: every midpoint threshold tried, lowest best one kept, contiguous folds."""
    n = len(scores)
    folds = np.array_split(np.arange(n), n_folds)
    accs = []
    for fold in folds:
        train = [i for i in range(n) if i not in set(fold.tolist())]
        s = sorted(set(scores[train].tolist()))
        cands = [s[0] - 1.0] + [(s[i] + s[i + 1]) / 2 for i in range(len(s) - 1)] + [s[-1] + 1.0]
        best_t, best_c = None, -1
        for t in cands:
            c = sum(int((scores[i] >= t) == is_same[i]) for i in train)
            if c > best_c:
                best_t, best_c = t, c
        accs.append(np.mean([(scores[i] >= best_t) == is_same[i] for i in fold]))
    return float(np.mean(accs)), float(np.std(accs, ddof=1))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_and_tar_match_sklearn(seed):
    a, b, is_same = _pairs(seed, n=2000, noise=2.5)
    got = km.metrics.verification_scores(a, b, is_same)
    scores = _cosines(a, b)
    np.testing.assert_allclose(got["roc_auc"], roc_auc_score(is_same, scores), atol=1e-9)
    fpr, tpr, _ = roc_curve(is_same, scores, drop_intermediate=False)
    for far in (1e-1, 1e-2, 1e-3):
        want = tpr[fpr <= far].max()
        np.testing.assert_allclose(got[f"tar_at_far_{far:g}"], want, atol=1e-12)
    assert 0.5 < got["roc_auc"] < 1.0  # not a trivial case
    assert got["tar_at_far_0.001"] < got["tar_at_far_0.1"]


def test_roc_points_equal_sklearn_with_ties():
    from keras_margins.metrics.verification import roc_points

    rng = np.random.default_rng(3)
    scores = rng.integers(0, 6, size=300).astype(float)  # many ties
    is_same = rng.random(300) < 0.4
    fpr, tpr, thr = roc_points(scores, is_same)
    s_fpr, s_tpr, s_thr = roc_curve(is_same, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, s_fpr)
    np.testing.assert_allclose(tpr, s_tpr)
    np.testing.assert_allclose(thr[1:], s_thr[1:])
    a = np.stack([np.cos(scores), np.sin(scores)], 1)
    b = np.stack([np.ones(300), np.zeros(300)], 1)  # cos(score) ties exactly like scores
    got = km.metrics.verification_scores(a, b, is_same)
    np.testing.assert_allclose(got["roc_auc"], roc_auc_score(is_same, np.cos(scores)), atol=1e-12)


@pytest.mark.parametrize("seed", [0, 4])
def test_ten_fold_accuracy_matches_brute_force(seed):
    a, b, is_same = _pairs(seed, n=200, noise=2.0)
    got = km.metrics.verification_scores(a, b, is_same)
    want, want_std = reference_lfw_accuracy(_cosines(a, b), is_same)
    assert got["accuracy"] == pytest.approx(want, abs=1e-12)
    # The spread over folds is the sample standard deviation (ddof = 1).
    assert got["accuracy_std"] == pytest.approx(want_std, abs=1e-12) and want_std > 0
    assert 0.6 < got["accuracy"] < 1.0


def test_separable_pairs_are_perfect():
    a, b, is_same = _pairs(1, n=100, noise=0.01)
    got = km.metrics.verification_scores(a, b, is_same)
    assert got["accuracy"] == 1.0 and got["roc_auc"] == 1.0 and got["tar_at_far_0.001"] == 1.0
    assert got["accuracy_std"] == 0.0 and -1.0 < got["threshold"] < 1.0


def test_euclidean_metric_orders_by_distance():
    a = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    b = np.array([[0.1, 0.0], [3.0, 0.0], [0.2, 0.0], [4.0, 0.0]])
    got = km.metrics.verification_scores(a, b, [1, 0, 1, 0], n_folds=2, metric="euclidean")
    assert got["roc_auc"] == 1.0 and got["accuracy"] == 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(emb_b=np.ones((5, 3))), "same shape"),
        (dict(is_same=[1, 0, 1]), "is_same"),
        (dict(is_same=[1, 1, 1, 1]), "both"),
        (dict(is_same=[2, 0, 1, 0]), "0/1"),
        (dict(n_folds=10), "n_folds"),
        (dict(fars=(0.0,)), "fars"),
        (dict(metric="l1"), "metric"),
        (dict(emb_a=np.full((4, 3), np.nan)), "NaN"),
    ],
)
def test_bad_input_raises_value_error(kwargs, match):
    rng = np.random.default_rng(0)
    args = dict(emb_a=rng.normal(size=(4, 3)), emb_b=rng.normal(size=(4, 3)),
                is_same=[1, 0, 1, 0], n_folds=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        km.metrics.verification_scores(**args)
