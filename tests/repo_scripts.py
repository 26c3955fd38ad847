"""The repository's scripts (``examples/``, ``benchmarks/``) loaded as modules by the tests.

Importable as ``repo_scripts`` from every test folder (``conftest.py`` puts ``tests/`` on the path).
"""

import importlib.util
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
BENCHMARKS = ROOT / "benchmarks"


def load_script(path, name, on_path=False, register=False):
    """Run the script at ``path`` as a new module called ``name`` and return the module.

    ``on_path``: put the script's folder on ``sys.path`` first (scripts that import their
    neighbours, e.g. the benchmarks' ``_timing``). ``register``: enter the module in
    ``sys.modules`` under ``name`` before running it (another script imports it by name).
    """
    path = pathlib.Path(path)
    if on_path and str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    if register:
        sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
