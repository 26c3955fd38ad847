"""Tune the loss, the scale s and the margin m of a margin head with KerasTuner, on real digits.

The zero-shot protocol of the metric-learning papers on scikit-learn's bundled handwritten
digits (no download): train on digits 0-4, choose the trial with the best ``val_map_at_r``
(leave-one-out MAP@R) on half of the unseen digits 5-9, report MAP@R of the best model on the
other half, and export its embedding model for TF Serving. The search space covers ArcFace,
CosFace, SphereFace, LM-Softmax, Virtual Softmax, PEDCC+POD and class-level Circle loss, each
with its own scale/margin ranges (conditional hyperparameters), a sample-margin weight, the
learning rate and a learning-rate multiplier for the head. Every trial trains under XLA.

    python examples/tune_margins.py
    python examples/tune_margins.py --task classification --tuner bayesian --max-trials 12
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import keras_margins as km  # noqa: E402


def build_backbone():
    """A small MLP embedding: 64 pixels -> 32-D."""
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(32),
        ],
        name="embedding",
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("retrieval", "classification"), default="retrieval")
    parser.add_argument("--tuner", choices=sorted(km.registry.TUNERS), default="random")
    parser.add_argument("--max-trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--directory", default="tuner_runs")
    # Its own serving name (`keras-margins tune` exports to saved_models/tuned_digits).
    parser.add_argument("--export-dir", default="saved_models/tune_margins")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    train, validation, test, num_classes = km.tuning.digits_search_data(args.task, args.seed)
    hypermodel = km.tuning.MarginHyperModel(build_backbone, num_classes)
    objective, callbacks = km.tuning.objective_and_callbacks(args.task, validation)
    tuner = km.tuning.make_tuner(
        hypermodel, objective, args.tuner, args.max_trials, args.seed,
        directory=args.directory, project_name=f"tune_margins_{args.task}", overwrite=True,
    )
    print(f"{args.tuner} search, {args.max_trials} trials x {args.epochs} epochs over "
          f"{', '.join(hypermodel.losses)}; objective {objective.name}")
    start = time.time()
    tuner.search(
        *train,
        # Retrieval scores unseen classes through the callback only (the head knows 0-4).
        validation_data=validation if args.task == "classification" else None,
        epochs=args.epochs, batch_size=64, callbacks=callbacks, verbose=0,
    )
    print(f"search took {time.time() - start:.0f} s\n")
    print(km.tuning.format_trials(km.tuning.trial_rows(tuner), objective.name))

    best_hp = tuner.get_best_hyperparameters(1)[0]
    print(f"\nbest configuration: {hypermodel.describe(best_hp.values)}")
    best = tuner.get_best_models(num_models=1)[0]  # reloaded from the tuner's directory
    name, value = km.tuning.held_out_score(best, args.task, test)
    print(f"best model on the untouched test split: {name} = {value:.4f}")
    path = km.export.export_embedding_model(best, args.export_dir)
    print(f"exported the best embedding model (TF Serving layout) to {path}")
    return tuner


if __name__ == "__main__":
    main()
