"""keras_margins: margin-based heads and metric-learning losses for Keras 3.

    import keras_margins as km
    model = keras.Sequential([backbone, km.layers.LargestMarginHead(10)])
    model.compile("adam", loss=km.losses.ArcFace(), metrics=["accuracy"], jit_compile=True)

``import keras_margins`` loads the core: ``ops``, ``layers``, ``losses``, ``miners``,
``metrics``, ``models``, ``optimizers``, ``regularizers``, ``callbacks``, ``retrieval``
(this also registers every class with Keras, so ``.keras`` files load; ``km.protocols`` and
``km.registry``, plain Python tables, come with it). The modules with heavy dependencies load
on first attribute access: ``km.data`` (TensorFlow, TFDS), ``km.tuning`` (KerasTuner),
``km.export`` (TensorFlow Serving), ``km.plots`` (matplotlib), ``km.testing``,
``km.distribution``.
"""

import importlib as _importlib
import os as _os
import sys as _sys

# TensorFlow's C++ start-up banner (oneDNN, CPU features) is noise for users; respect any
# value they set themselves.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

#: Imported by ``import keras_margins`` (Keras and NumPy only).
_CORE = (
    "ops", "layers", "losses", "miners", "metrics", "models", "optimizers", "regularizers",
    "callbacks", "retrieval",
)
#: Imported on first access (``km.data``, ...).
_ON_ACCESS = ("data", "distribution", "export", "plots", "protocols", "registry", "testing", "tuning")


def _load_core():
    for name in _CORE:
        _importlib.import_module(f"{__name__}.{name}")


def __getattr__(name):
    if name in _CORE:
        _load_core()  # the core loads as a whole: every class registered before any is used
        return globals()[name]
    if name in _ON_ACCESS:
        return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_CORE) | set(_ON_ACCESS))


def _started_by_console_script():
    # The `keras-margins` script imports this package only to reach its command line, whose
    # `--help` must answer without Keras (seconds to import); its subcommands load the core
    # through __getattr__ / submodule imports before they use it.
    argv = getattr(_sys, "argv", None) or [""]
    return _os.path.basename(str(argv[0])) in ("keras-margins", "keras-margins.exe",
                                                 "keras-margins-script.py")


if not _started_by_console_script():
    _load_core()
