"""PEDCC + POD loss vs plain softmax on real handwritten digits (Zhu & Zu, arXiv 2111.15449).

The class centroids are fixed in advance (PEDCC: here the exact regular simplex, 10 classes
in 32 dimensions); the softmax-free POD loss (norm-adaptive cosine + decorrelation) trains
only the backbone, through km.models.MarginModel, with the δ schedule of the authors' script
(km.callbacks.PODDelta). Same split, backbone, optimiser and epochs as the softmax baseline,
both under XLA. Prints test accuracy, class margin and mean test sample margin, then checks
the .keras round trip (centroids restored from the file).

    python examples/pedcc_pod.py [--epochs 30]
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from virtual_softmax import compare_with_softmax, fit_and_report, make_backbone  # noqa: E402

import keras_margins as km  # noqa: E402


def train_pedcc_pod(data, epochs):
    backbone = make_backbone()
    model = km.models.MarginModel(backbone, km.layers.PEDCCHead(10, name="pedcc_head"))
    results = fit_and_report(
        "PEDCC + POD", model, backbone, lambda m: m.head.kernel, data, epochs,
        callbacks=[km.callbacks.PODDelta(alpha=0.01, norm_source="logits")], loss=km.losses.POD(),
    )
    print(f"final POD delta: {float(model.loss.state['delta'].numpy()):.4f}")
    return results, model


def main(argv=None):
    return compare_with_softmax(
        __doc__.splitlines()[0], "pedcc_pod", train_pedcc_pod, "saved_models/pedcc_pod.keras", argv
    )


if __name__ == "__main__":
    main()
