"""Search and match on digits the model never saw: enrol a gallery, calibrate a threshold for a
target false-accept rate, decide match / no match, and serve all three from one SavedModel.

1. Train an MLP with LargestMarginHead + ArcFace on digits 0-4 (``km.data.digits_zero_shot``).
2. Enrol digits 5-8 in a ``km.retrieval.EmbeddingIndex``: each template is the mean embedding
   of that digit's first five test images (id = the digit). Digit 9 is not enrolled: its
   images are searches of someone unknown.
3. Search the other test images (top 3), calibrate the match threshold at FAR = 10 % on one
   half of them and measure FAR/TAR on the other half (``index.decision_rates``).
4. Export ``saved_models/digits_search/<version>`` (signatures ``embed``, ``search`` with k as
   an input, ``match``) and check it in a process that cannot import keras_margins.

    python examples/search_and_match.py
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_margins as km  # noqa: E402

ENROLLED = (5, 6, 7, 8)
TEMPLATES = 5


def train(epochs, seed):
    keras.utils.set_random_seed(seed)
    (x, y), _ = km.data.digits_zero_shot()
    model = keras.Sequential([km.models.mlp_backbone(64, 32, hidden=128),
                              km.layers.LargestMarginHead(5)])
    model.compile("adam", loss=km.losses.ArcFace(scale=16.0, margin=0.2), jit_compile=True)
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--far", type=float, default=0.1, help="target false-accept rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--export-dir", default="saved_models/digits_search",
                        help="SavedModel folder ('' to skip the export)")
    args = parser.parse_args(argv)

    model = train(args.epochs, args.seed)
    embed = km.models.embedding_model(model)                 # backbone + L2 normalisation
    _, (x_test, y_test) = km.data.digits_zero_shot()         # digits 5-9, never trained on
    emb = embed.predict(x_test, verbose=0)

    # Enrol: one template per enrolled digit, the mean of its first TEMPLATES embeddings.
    template = np.zeros(len(y_test), bool)
    for digit in ENROLLED:
        template[np.flatnonzero(y_test == digit)[:TEMPLATES]] = True
    index = km.retrieval.EmbeddingIndex(emb.shape[1])
    index.add(np.stack([emb[template & (y_test == d)].mean(axis=0) for d in ENROLLED]),
              ids=list(ENROLLED), names=[f"digit {d}" for d in ENROLLED])

    # Search: the other images (digit 9 included: not enrolled).
    probes, labels = emb[~template], y_test[~template]
    found, scores = index.search(probes[:3], k=3)
    for row in range(3):
        print(f"probe of digit {labels[row]}: " + ", ".join(
            f"{name} ({s:.3f})" for name, s in zip(index.name_of(found[row]), scores[row])))
    best, _ = index.search(probes, k=1)
    mated = np.isin(labels, ENROLLED)
    rank1 = float(np.mean(best[mated, 0] == labels[mated]))
    print(f"rank-1 identification rate of the enrolled digits: {rank1:.3f}")

    # Calibrate on one half of the searches, check the rates on the other half.
    rng = np.random.default_rng(args.seed)
    half = rng.permutation(len(labels)) < len(labels) // 2
    cal = index.calibrate(probes[half], labels[half], target_far=args.far)
    held_out = index.decision_rates(probes[~half], labels[~half])
    print(f"threshold {cal.threshold:.4f}: FAR {cal.far:.3f} [{cal.far_interval[0]:.3f}, "
          f"{cal.far_interval[1]:.3f}], TAR {cal.tar:.3f} [{cal.tar_interval[0]:.3f}, "
          f"{cal.tar_interval[1]:.3f}] on {cal.n_impostor} impostor / {cal.n_genuine} genuine "
          f"searches; held out: FAR {held_out['far']:.3f}, TAR {held_out['tar']:.3f}")
    ids, best_scores = index.match(probes[:5])
    print("match:", ", ".join(f"digit {lab} -> {i} ({s:.3f})"
                              for lab, i, s in zip(labels[:5], ids, best_scores)))
    result = {"rank1": rank1, "calibration": cal, "held_out": held_out}
    if args.export_dir and keras.backend.backend() == "tensorflow":
        path = km.retrieval.export_search_model(model, index, args.export_dir)
        errors = km.retrieval.check_search_export(path, model, index, x_test[~template][:16], k=3)
        print(f"exported {path}; served in a process without keras_margins, largest "
              f"differences to this process: {errors}")
        result["export"] = path
    return result


if __name__ == "__main__":
    main()
