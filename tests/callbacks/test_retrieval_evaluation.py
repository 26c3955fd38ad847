import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_margins as km


def _digits_model(dim=16):
    backbone = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(dim)]
    )
    head = km.layers.LargestMarginHead(10)
    model = keras.Sequential([backbone, head])
    model.compile(keras.optimizers.Adam(3e-3), loss=km.losses.ArcFace(scale=16.0, margin=0.3))
    return model, backbone


def test_logs_match_retrieval_scores_and_drive_early_stopping():
    (x, y), (xt, yt) = km.data.digits_classification()
    model, backbone = _digits_model()
    cb = km.callbacks.RetrievalEvaluation((xt, yt), embedding_model=backbone, k=(1, 4))
    stop = keras.callbacks.EarlyStopping("val_map_at_r", mode="max", patience=1)
    # Learning stops after epoch 1 (learning rate 0: Adam's update is exactly 0), so MAP@R
    # repeats its epoch-1 value in epoch 2 (no improvement) and, with patience 1, EarlyStopping
    # must stop there: 3 of the 10 epochs.
    freeze = keras.callbacks.LearningRateScheduler(lambda epoch, lr: 3e-3 if epoch < 2 else 0.0)
    history = model.fit(x, y, epochs=10, batch_size=64, verbose=0, callbacks=[cb, freeze, stop])
    maps = history.history["val_map_at_r"]
    assert len(maps) == len(history.history["loss"]) == 3, maps
    assert stop.stopped_epoch == 2
    assert maps[1] > maps[0] and maps[2] == maps[1]
    assert set(history.history) >= {"val_precision_at_1", "val_r_precision", "val_recall_at_4"}
    # Logged numbers are the scores of the backbone embeddings.
    want = km.metrics.retrieval_scores(backbone.predict(xt, verbose=0), yt, k=(1, 4))
    assert history.history["val_map_at_r"][-1] == pytest.approx(want["map_at_r"], abs=1e-9)
    assert history.history["val_precision_at_1"][-1] == pytest.approx(want["precision_at_1"])
    assert maps[-1] > maps[0] and history.history["val_precision_at_1"][-1] > 0.8  # learns


def test_model_output_as_embeddings_and_dataset_input():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)).astype("float32")
    y = np.repeat(np.arange(3), 20)
    x[:, 0] += 5 * y  # classes separated along the first axis
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile("sgd", loss="mse")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    cb = km.callbacks.RetrievalEvaluation(ds, prefix="ret_", frequency=2)
    history = model.fit(x, rng.normal(size=(60, 3)), epochs=2, verbose=0, callbacks=[cb])
    assert "ret_map_at_r" in history.history and len(history.history["ret_map_at_r"]) == 1
    want = km.metrics.retrieval_scores(model.predict(x, verbose=0), y, k=(1,))
    assert cb.evaluate() == pytest.approx(want)


@pytest.mark.parametrize(
    "args, match",
    [
        (((np.zeros((3, 2)),),), "validation_data"),
        (("bad",), "validation_data"),
        (((np.zeros((3, 2)), np.zeros((4,))),), "labels"),
        (((np.zeros((3, 2)), np.zeros((3,))), "not a model"), "embedding_model"),
    ],
)
def test_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        km.callbacks.RetrievalEvaluation(*args)


def test_class_score_model_without_embedding_model_still_runs_but_2d_required():
    model = keras.Sequential([keras.Input((4, 2)), keras.layers.Dense(2)])  # (N, 4, 2) output
    cb = km.callbacks.RetrievalEvaluation((np.zeros((6, 4, 2)), np.array([0, 0, 0, 1, 1, 1])))
    cb.set_model(model)
    with pytest.raises(ValueError, match="embedding_model"):
        cb.evaluate()
