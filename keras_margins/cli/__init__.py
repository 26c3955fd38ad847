"""The ``keras-margins`` command line: ``train``, ``evaluate``, ``export``, ``tune``.

    keras-margins train                                   # LM-Softmax on the embedded digits
    keras-margins train --loss arcface --scale 16 --margin 0.3 --epochs 30
    keras-margins evaluate runs/digits-lmsoftmax/model.keras
    keras-margins export runs/digits-lmsoftmax/model.keras saved_models/digits --scores
    keras-margins tune --losses arcface,cosface --max-trials 4

One module per subcommand (``keras_margins.cli.train``, ...), each with ``HELP``,
``add_parser(subparsers)`` and ``run(args)``; a subcommand may also set ``check`` (a function
of the parsed arguments raising ``ValueError``) with ``set_defaults``. The library never
imports this package.

Usage errors answer without importing Keras or TensorFlow: the parsers take their choices
from ``keras_margins.registry`` (tables that name classes by import path) and ``check`` runs
before the library's core is loaded (the ``keras-margins`` script loads it lazily, see
``keras_margins/__init__.py``). What needs the library (a loss's declarations, the dataset,
the export target) is checked in ``run``, still before anything is written.
"""

import argparse
import sys

from keras_margins.cli import evaluate, export, index, train, tune

#: subcommand -> its module.
COMMANDS = {"train": train, "evaluate": evaluate, "export": export, "tune": tune, "index": index}

_DESCRIPTION = (
    "Margin heads and metric-learning losses for Keras 3: train, evaluate, export for "
    "TF Serving, tune with KerasTuner. `keras-margins COMMAND --help` lists a command's options."
)


def build_parser(commands=None):
    """The argparse parser of ``keras-margins``.

    Args:
        commands: names of the subcommands whose options are built; the others only get
            their help line. Default None: all of them.

    Returns:
        An ``argparse.ArgumentParser``; ``parse_args`` gives ``func`` (run it with the
        arguments; it returns the exit code) and ``command``.
    """
    parser = argparse.ArgumentParser(prog="keras-margins", description=_DESCRIPTION)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
        if commands is None or name in commands:
            module.add_parser(subparsers)
        else:
            subparsers.add_parser(name, help=module.HELP)
    return parser


def main(argv=None):
    """Entry point of the ``keras-margins`` console script; returns the exit code.

    A ``ValueError`` raised by a subcommand (bad argument, path, model) is printed as
    ``keras-margins COMMAND: error: ...`` with exit code 2; argparse errors exit with 2 too.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    parser = build_parser(commands=(chosen,) if chosen in COMMANDS else ())
    args = parser.parse_args(argv)
    try:
        check = getattr(args, "check", None)
        if check is not None:
            check(args)  # no Keras yet: a usage error answers at once
        # Under the console script the core is not imported yet (see keras_margins/__init__.py);
        # load all of it, so every class is registered before a model is built or loaded.
        from keras_margins import layers  # noqa: F401

        return int(args.func(args) or 0)
    except ValueError as err:
        print(f"keras-margins {args.command}: error: {err}", file=sys.stderr)
        return 2
