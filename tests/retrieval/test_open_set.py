"""Open-set metrics (km.metrics) and index calibration / match against NumPy references
written here (loops over thresholds and searches)."""

import numpy as np
import pytest

import keras_margins as km


def far_of(impostor, t):
    return sum(1 for s in impostor if s >= t) / len(impostor)


def reference_threshold(impostor, far):
    """Smallest candidate threshold (a score, or just above one) with FAR <= far."""
    candidates = sorted(set(np.asarray(impostor).tolist()))
    candidates = [np.nextafter(np.float64(c), np.inf) for c in candidates] + candidates
    ok = [t for t in candidates if far_of(impostor, t) <= far]
    return min(ok)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("far", [0.5, 0.1, 0.03])
def test_threshold_at_far_is_the_smallest_threshold_meeting_the_target(seed, far):
    rng = np.random.default_rng(seed)
    impostor = np.round(rng.normal(size=60), 1)  # many ties
    t = km.metrics.threshold_at_far(impostor, far)
    assert far_of(impostor, t) <= far
    assert t == reference_threshold(impostor, far)


def test_threshold_hand_made_and_float32():
    t = km.metrics.threshold_at_far(np.float32([0.9, 0.5, 0.4, 0.3]), 0.25)
    assert t.dtype == np.float32 and t > np.float32(0.5) and t == np.nextafter(np.float32(0.5), 1)
    # 4 scores, far 0.2: no accept allowed -> just above the largest.
    assert km.metrics.threshold_at_far([0.9, 0.5, 0.4, 0.3], 0.2) > 0.9


def test_tar_at_far_point_values():
    genuine = np.array([0.95, 0.8, 0.6, 0.55, -np.inf])
    impostor = np.array([0.7, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0, -0.1, -0.2, -0.3])
    out = km.metrics.tar_at_far(genuine, impostor, far=0.1, n_bootstrap=0)
    assert out["far"] == 0.1 and out["tar"] == 0.8  # t just above 0.5: all but -inf accepted
    assert out["n_genuine"] == 5 and out["n_impostor"] == 10


def naive_bootstrap(genuine, impostor, far, rounds, seed, fixed):
    """Resample both sets; per resample: the TAR at its own threshold, and the FAR / TAR of
    the fixed threshold. Returns their 2.5 / 97.5 percentiles."""
    rng = np.random.default_rng(seed)
    tars, fars_fixed, tars_fixed = [], [], []
    for _ in range(rounds):
        g = rng.choice(genuine, len(genuine))
        i = rng.choice(impostor, len(impostor))
        t = km.metrics.threshold_at_far(i, far)
        tars.append(np.mean(g >= t))
        fars_fixed.append(np.mean(i >= fixed))
        tars_fixed.append(np.mean(g >= fixed))
    return [np.percentile(v, [2.5, 97.5]) for v in (tars, fars_fixed, tars_fixed)]


def test_bootstrap_intervals_match_a_naive_bootstrap():
    rng = np.random.default_rng(4)
    genuine, impostor = rng.normal(1.5, 1, 300), rng.normal(0, 1, 2000)
    out = km.metrics.tar_at_far(genuine, impostor, far=0.05, n_bootstrap=2000, seed=1)
    tar, far_fixed, tar_fixed = naive_bootstrap(genuine, impostor, 0.05, 2000, 2, out["threshold"])
    assert out["tar_low"] <= out["tar"] <= out["tar_high"]
    assert out["far_at_threshold_low"] <= out["far"] <= out["far_at_threshold_high"]
    assert out["threshold_low"] <= out["threshold"] <= out["threshold_high"]
    for name, ref in (("tar", tar), ("far_at_threshold", far_fixed), ("tar_at_threshold", tar_fixed)):
        assert abs(out[f"{name}_low"] - ref[0]) < 0.015, (name, out, ref)
        assert abs(out[f"{name}_high"] - ref[1]) < 0.015, (name, out, ref)
    again = km.metrics.tar_at_far(genuine, impostor, far=0.05, n_bootstrap=2000, seed=1)
    assert again == out


def test_bad_arguments_name_themselves():
    for call, name in (
        (lambda: km.metrics.threshold_at_far([0.1, np.nan], 0.1), "impostor_scores"),
        (lambda: km.metrics.threshold_at_far([0.1], 0.0), "far"),
        (lambda: km.metrics.threshold_at_far([0.1], 1.0), "far"),
        (lambda: km.metrics.tar_at_far([np.inf], [0.1], 0.1), "genuine_scores"),
        (lambda: km.metrics.tar_at_far([0.2], [0.1], 0.1, n_bootstrap=-1), "n_bootstrap"),
        (lambda: km.metrics.tar_at_far([0.2], [0.1], 0.1, confidence=1.5), "confidence"),
    ):
        with pytest.raises(ValueError, match=f"`{name}`"):
            call()


def identities(n_ids, dim, seed, noise=0.45):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_ids, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    return centers, lambda labels, r: (centers[labels] + noise / np.sqrt(dim)
                                       * r.normal(size=(len(labels), dim))).astype("float32")


def test_open_set_identification_matches_a_loop_reference():
    rng = np.random.default_rng(0)
    centers, sample = identities(40, 8, 0, noise=1.5)
    gallery_labels = np.repeat(np.arange(25), 2)          # two entries per enrolled identity
    gallery = sample(gallery_labels, rng)
    labels = rng.integers(0, 40, 300)
    queries = sample(labels, rng)
    out = km.metrics.open_set_identification(queries, labels, gallery, gallery_labels,
                                             fpirs=(0.1,), rank=2, n_bootstrap=0)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    genuine, impostor = [], []
    for row, label in zip(q, labels):
        scores = g @ row
        if label in gallery_labels:
            mate = max(scores[j] for j in range(len(g)) if gallery_labels[j] == label)
            ahead = sum(1 for j in range(len(g)) if gallery_labels[j] != label and scores[j] >= mate)
            genuine.append(mate if ahead < 2 else -np.inf)
        else:
            impostor.append(scores.max())
    t = reference_threshold(np.array(impostor, "float64"), 0.1)
    assert out["n_mated"] == len(genuine) and out["n_non_mated"] == len(impostor)
    assert out["fpir_at_fpir_0.1"] == pytest.approx(far_of(impostor, t), abs=1e-12)
    assert out["dir_at_fpir_0.1"] == pytest.approx(np.mean(np.array(genuine) >= t), abs=1e-12)
    assert out["rank_2_identification_rate"] == pytest.approx(np.mean(np.isfinite(genuine)))
    with pytest.raises(ValueError, match="`query_labels`"):
        km.metrics.open_set_identification(queries, np.zeros(300, int), gallery, gallery_labels)


@pytest.fixture(scope="module")
def enrolled():
    """An exact index of 300 enrolled identities (one template each) out of 500."""
    centers, sample = identities(500, 32, 1)
    index = km.retrieval.EmbeddingIndex(32, chunk_size=512)
    index.add(centers[:300], np.arange(300))
    return index, sample


def split(sample, seed, n=4000):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 500, n)
    return sample(labels, rng), labels


def test_calibrate_counts_as_documented(enrolled):
    index, sample = enrolled
    x, labels = split(sample, 10, n=600)
    cal = index.calibrate(x, labels, target_far=0.05, n_bootstrap=0)
    # Reference: top-2 search by brute force, impostor = best other-identity score.
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    centers = np.zeros((300, 32))
    ids = index.ids()
    rows = keras_rows(index)
    centers[ids] = rows
    scores = unit @ centers.T
    genuine, impostor = [], []
    for s, label in zip(scores, labels):
        best = int(np.argmax(s))
        others = np.delete(s, label) if label < 300 else s
        impostor.append(others.max())
        if label < 300:
            genuine.append(s[best] if best == label else -np.inf)
    impostor = np.float32(impostor)
    assert cal.far <= 0.05 and cal.far == pytest.approx(far_of(impostor, cal.threshold), abs=1e-9)
    assert cal.tar == pytest.approx(np.mean(np.float32(genuine) >= np.float32(cal.threshold)))
    assert cal.n_impostor == 600 and index.threshold == cal.threshold


def keras_rows(index):
    import keras

    rows = keras.ops.convert_to_numpy(index.index_embeddings.value)
    return rows[index.slots(np.arange(index.size))]


def test_calibration_holds_out_of_sample(enrolled):
    index, sample = enrolled
    first, second = split(sample, 20), split(sample, 21)
    cal = index.calibrate(*first, target_far=1e-2, n_bootstrap=200)
    held_out = index.decision_rates(*second)
    assert 0.5e-2 <= held_out["far"] <= 2e-2, held_out
    assert cal.far_interval[0] <= cal.far <= cal.far_interval[1]
    assert cal.tar_interval[0] <= cal.tar <= cal.tar_interval[1]
    assert abs(held_out["tar"] - cal.tar) < 0.05


def test_match_applies_the_threshold(enrolled):
    index, sample = enrolled
    x, labels = split(sample, 30, n=50)
    found, scores = index.search(x, 1)
    for threshold in (-1.0, 0.5, 2.0):
        ids, best = index.match(x, threshold=threshold)
        np.testing.assert_array_equal(best, scores[:, 0])
        np.testing.assert_array_equal(ids, np.where(scores[:, 0] >= threshold, found[:, 0], -1))
    with pytest.raises(ValueError, match="`target_far`"):
        index.calibrate(x, labels, target_far=0)
    with pytest.raises(ValueError, match="`labels`"):
        index.calibrate(x, labels[:10])
