"""Maintainability rules of the package, checked on its source: Keras internals only through
``keras_margins/_compat.py``, no private names imported across modules, no guards against the
package's own names being absent."""

import ast
import os

import keras_margins as km

PACKAGE = os.path.dirname(os.path.abspath(km.__file__))
REPO = os.path.dirname(PACKAGE)


def _python_files(*folders):
    for folder in folders:
        for root, _, files in os.walk(os.path.join(REPO, folder)):
            for name in sorted(files):
                if name.endswith(".py"):
                    yield os.path.join(root, name)


def _imports(path):
    """(module, [imported names]) of every import statement, at any depth."""
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, [alias.name for alias in node.names]


def test_keras_internals_only_in_compat():
    offenders = [
        (os.path.relpath(path, REPO), module)
        for path in _python_files("keras_margins")
        if not path.endswith(os.path.join("keras_margins", "_compat.py"))
        for module, _ in _imports(path)
        if module == "keras.src" or module.startswith("keras.src.")
    ]
    assert offenders == []


def test_no_private_names_cross_modules():
    offenders = [
        (os.path.relpath(path, REPO), module, name)
        for path in _python_files("keras_margins")
        for module, names in _imports(path)
        if module.startswith("keras_margins")
        for name in names
        if name.startswith("_")
    ]
    assert offenders == []


def test_no_guards_against_the_package_missing_its_own_names():
    # `hasattr(km.losses, "X")` made a renamed loss vanish instead of failing.
    offenders = []
    for path in _python_files("keras_margins", "tests", "examples", "benchmarks"):
        for node in ast.walk(ast.parse(open(path).read())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "hasattr" and node.args
                    and isinstance(node.args[0], ast.Attribute)
                    and isinstance(node.args[0].value, ast.Name)
                    and node.args[0].value.id in ("km", "keras_margins")):
                offenders.append((os.path.relpath(path, REPO), node.lineno))
    assert offenders == []
