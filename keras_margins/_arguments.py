"""Constructor arguments of the public classes: their names, and unknown ones refused."""

import difflib
import inspect

#: ``keras.losses.Loss`` arguments every loss takes besides its own.
LOSS_BASE_ARGUMENTS = ("name", "reduction", "dtype")
#: ``keras.layers.Layer`` arguments every head takes besides its own.
LAYER_ARGUMENTS = ("name", "dtype", "trainable", "autocast", "activity_regularizer", "input_shape",
                   "input_dim", "batch_size", "batch_input_shape", "weights")


def constructor_arguments(cls, exclude=LOSS_BASE_ARGUMENTS):
    """The named arguments of ``cls.__init__`` (no ``self``, ``*args``, ``**kwargs``), in order,
    without ``exclude``."""
    names = []
    for param in inspect.signature(cls.__init__).parameters.values():
        if param.name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if param.name not in exclude:
            names.append(param.name)
    return names


def reject_unknown(cls, unknown, accepted=LOSS_BASE_ARGUMENTS):
    """``TypeError`` naming the first unknown keyword argument of ``cls`` and the closest valid
    name (``ArcFace(margn=0.3)`` would otherwise train silently with the default margin).

    ``unknown``: the keyword arguments ``cls.__init__`` received through ``**kwargs`` (names in
    ``accepted``, the base class arguments passed on, are not unknown); the valid names are
    the named arguments of the ``keras_margins`` classes of ``cls.__mro__`` and ``accepted``.
    """
    unknown = [name for name in unknown if name not in accepted]
    if not unknown:
        return
    hidden = getattr(cls, "hidden_arguments", ())  # a parent's arguments the class sets itself
    own = [name for klass in cls.__mro__ if klass.__module__.startswith("keras_margins")
           and "__init__" in vars(klass) for name in constructor_arguments(klass, exclude=())
           if name not in hidden]
    valid = list(dict.fromkeys(own + list(accepted)))
    name = sorted(unknown)[0]
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    listed = f"Valid arguments: {', '.join(valid)}." if valid else "It takes no arguments."
    raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {name!r}.{hint} {listed}")
