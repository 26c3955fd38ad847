"""The embedding part of a trained model: ``split_head`` and ``embedding_model``.

What a margin model is served and evaluated with is its backbone (inputs -> embedding), not
the training head. These two functions find it in a ``MarginModel``, a ``Sequential`` or a
functional model, and build the L2-normalised embedding model that ``km.export`` writes.
"""

import keras

from keras_margins.layers import L2Normalize
from keras_margins.models.ensemble_model import EnsembleModel
from keras_margins.protocols import declares_head

#: Name of the embedding model's input (and of the exported signatures' input).
INPUT_NAME = "inputs"


def split_head(model):
    """``(embedding_part, head, scorer)`` of a model.

    * a ``km.models.MarginModel`` (anything with public ``.backbone``/``.head``): its
      backbone, its head, and the model itself as scorer (``call`` gives the head's scores);
    * a ``km.models.EnsembleModel``: the model itself (its inference output is the
      weighted concatenation of its members' embeddings), ``head = scorer = None``;
    * a ``Sequential``/functional model whose last layer is a class head (it declares
      ``score_kind``, see ``km.protocols``): the layers before the head, the head, the full
      model;
    * any other Keras model: treated as an embedding model, ``head = scorer = None``.

    Args:
        model: a Keras model.

    Returns:
        The tuple ``(embedding_part, head, scorer)``; ``head`` and ``scorer`` are None for a
        model without a class head.

    Raises:
        ValueError: for a head alone, a model with nothing before its head, or a model that
            contains a head without ending in it.

    Example:
        >>> import keras, numpy as np, keras_margins as km
        >>> backbone = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> model = keras.Sequential([backbone, km.layers.LargestMarginHead(5)])
        >>> part, head, scorer = km.models.split_head(model)
        >>> part.predict(np.ones((2, 4)), verbose=0).shape, type(head).__name__, scorer is model
        ((2, 3), 'LargestMarginHead', True)
    """
    if declares_head(model):
        raise ValueError(
            f"`model` is the head {model.name!r} alone; pass the full model or its backbone."
        )
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(f"`model` must be a Keras model; got {type(model).__name__}.")
    if isinstance(model, EnsembleModel):
        return model, None, None
    if hasattr(model, "backbone") and hasattr(model, "head"):  # MarginModel or look-alike
        if not isinstance(model.backbone, keras.layers.Layer):
            raise ValueError("`model.backbone` is not a Keras model: no embedding part to export.")
        return model.backbone, model.head, (model if model.head is not None else None)
    layers = list(getattr(model, "layers", []))
    heads = [layer for layer in layers if declares_head(layer)]
    if not heads:
        return model, None, None
    head = layers[-1]
    if not declares_head(head):
        raise ValueError(
            f"`model` contains the head {heads[0].name!r} but does not end in it; pass the "
            "embedding model itself."
        )
    if isinstance(model, keras.Sequential):
        part = layers[:-1]
        if not part:
            raise ValueError(f"`model` has no embedding part: it is only the head {head.name!r}.")
        return keras.Sequential(part, name=f"{model.name}_embedding"), head, model
    try:
        features = head.input
    except (AttributeError, ValueError) as err:
        raise ValueError(f"cannot find the input of head {head.name!r} in `model`: {err}") from err
    if any(features is tensor for tensor in model.inputs):
        raise ValueError(
            f"`model` has no embedding part: its inputs go straight into {head.name!r}."
        )
    return keras.Model(model.inputs, features, name=f"{model.name}_embedding"), head, model


def _input_shape(models, input_shape):
    if input_shape is not None:
        return tuple(input_shape)
    for model in models:
        try:
            inputs = model.inputs
        except (AttributeError, ValueError):
            inputs = None
        if inputs:
            if len(inputs) != 1:
                raise ValueError(f"`model` must have exactly one input; it has {len(inputs)}.")
            return tuple(inputs[0].shape[1:])
    raise ValueError(
        f"cannot infer the input shape of {models[0].name!r} (not built on a keras.Input); "
        "pass `input_shape` (per example, without the batch axis)."
    )


def embedding_model(model, normalize=True, input_shape=None):
    """A functional Keras model ``inputs -> embedding``: the head dropped, L2-normalised.

    Shares weights with ``model``; ``km.export.export_embedding_model`` writes exactly this.

    Args:
        model: a model accepted by ``split_head``.
        normalize: append L2 normalisation (unit rows, cosine = dot product). Default True.
        input_shape: per-example input shape (no batch axis), only for models not built on
            a ``keras.Input``. Default None (read from the model).

    Returns:
        A ``keras.Model`` with one input named ``"inputs"`` and one (N, D) output.

    Example:
        >>> import keras, numpy as np, keras_margins as km
        >>> backbone = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> model = keras.Sequential([backbone, km.layers.LargestMarginHead(5)])
        >>> emb = km.models.embedding_model(model)
        >>> emb.predict(np.ones((2, 4)), verbose=0).shape
        (2, 3)
    """
    part, _, _ = split_head(model)
    candidates = [part, model] + ([model.backbone] if isinstance(model, EnsembleModel) else [])
    shape = _input_shape(candidates, input_shape)
    inputs = keras.Input(shape, name=INPUT_NAME)
    features = part(inputs)
    if not isinstance(features, keras.KerasTensor) or len(features.shape) != 2:
        got = getattr(features, "shape", type(features).__name__)
        raise ValueError(f"the embedding part of `model` must output one (N, D) tensor; got {got}.")
    if normalize:
        features = L2Normalize(name="l2_normalize", dtype="float32")(features)
    return keras.Model(inputs, features, name=f"{part.name}_serving")


def mlp_backbone(input_dim, embedding_dim, hidden=256, name="embedding"):
    """A small MLP embedding model ``(N, input_dim) -> (N, embedding_dim)``: one ReLU hidden
    layer of ``hidden`` units, then a linear layer (what ``keras-margins`` trains on digits).

    Args:
        input_dim: D_in, the number of input features.
        embedding_dim: D, the embedding size.
        hidden: units of the hidden layer. Default 256.
        name: the model's name. Default ``"embedding"``.

    Returns:
        A ``keras.Sequential`` built on ``keras.Input((input_dim,))``.

    Example:
        >>> import keras_margins as km
        >>> km.models.mlp_backbone(64, 32).output_shape
        (None, 32)
    """
    for value, arg in ((input_dim, "input_dim"), (embedding_dim, "embedding_dim"), (hidden, "hidden")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{arg}` must be a positive integer; got {value!r}.")
    return keras.Sequential(
        [
            keras.Input((input_dim,)),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(embedding_dim),
        ],
        name=name,
    )
