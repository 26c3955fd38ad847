"""Export a digits model trained with LargestMarginHead + ArcFace for TF Serving.

Loads saved_models/quickstart.keras (or trains it with examples/quickstart.py when missing or
with --train), writes the embedding model (head dropped, L2-normalised) to
saved_models/quickstart/<next version>/ (its own serving name: saved_models/digits is the
main job's) plus saved_models/models.config, then loads the export in
a fresh Python process that cannot import keras_margins and checks it gives the same
embeddings and class scores. Finally prints the docker command, the REST body and the curl
request to query it. Runs on the TensorFlow backend and on JAX (Keras exports JAX models
through jax2tf; TensorFlow must be installed either way).

    python examples/export_for_serving.py
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import keras_margins as km  # noqa: E402


def load_or_train(model_path, train, epochs):
    if train or not os.path.exists(model_path):
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import quickstart  # the README's main job: LargestMarginHead + ArcFace on digits

        quickstart.main(["--epochs", str(epochs), "--out", model_path])
    return keras.models.load_model(model_path, safe_mode=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="saved_models/quickstart.keras")
    parser.add_argument("--train", action="store_true", help="retrain even if --model exists")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", default="saved_models/quickstart", help="TF Serving model folder")
    args = parser.parse_args(argv)

    model = load_or_train(args.model, args.train, args.epochs)
    (_, _), (xt, yt) = km.data.digits_classification()
    export_dir = km.export.export_embedding_model(model, args.out, include_scores=True)
    name = os.path.basename(os.path.normpath(args.out))
    root = os.path.dirname(os.path.abspath(args.out))
    print(f"exported {export_dir}")
    print(f"models.config: {os.path.join(root, km.export.MODELS_CONFIG)}")

    errors = km.export.check_export(export_dir, model, xt)  # raises on a mismatch
    served = km.export.outputs_without_keras_margins(export_dir, xt)
    emb, emb_err, score_err = served["embedding"], errors["embedding"], errors["scores"]
    accuracy = float((served["scores"].argmax(axis=1) == yt).mean())
    print(f"fresh process without keras_margins: max |embedding diff| = {emb_err:.2e}, "
          f"max |score diff| = {score_err:.2e}, test accuracy from 'scores' = {accuracy:.4f}")

    body = km.export.rest_request(xt[:1])
    body_path = os.path.join(root, f"{name}_request.json")
    with open(body_path, "w") as f:
        json.dump(body, f, allow_nan=False)
    request = km.export.grpc_request(xt[:1], name)
    tensor = request.inputs[km.export.INPUT_NAME]
    print("\nREST body (one digit, 64 pixels in [0, 1]):")
    print(json.dumps(body))
    print(f"\ngRPC PredictRequest: model {request.model_spec.name!r}, signature "
          f"{request.model_spec.signature_name!r}, input {km.export.INPUT_NAME!r} "
          f"dtype {tensor.dtype} (DT_FLOAT) shape {[d.size for d in tensor.tensor_shape.dim]}")
    print("\nServe it:")
    print(f"  docker run -p 8501:8501 -v {os.path.abspath(args.out)}:/models/{name} "
          f"-e MODEL_NAME={name} tensorflow/serving")
    print(f"Query it (the reply is {{\"predictions\": [[...{emb.shape[1]} floats, unit norm...]]}}):")
    print(f"  curl -X POST -d @{body_path} {km.export.rest_url(name)}")
    print("All models at once:")
    print(f"  docker run -p 8500:8500 -p 8501:8501 -v {root}:/models tensorflow/serving "
          "--model_config_file=/models/models.config")
    return {"embedding_error": emb_err, "score_error": score_err, "accuracy": accuracy}


if __name__ == "__main__":
    main()
