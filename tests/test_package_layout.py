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


# ------------------------------------------------------------------ public Keras API only
def _keras_private_names():
    """Every ``_name`` (not dunder) that Keras' public classes define, on the class or set on
    their instances: what our code must not read, write or override outside ``_compat.py``."""
    import keras

    def private(names):
        return {n for n in names if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))}

    classes = [
        keras.Model, keras.Sequential, keras.layers.Layer, keras.layers.Dense, keras.losses.Loss,
        keras.optimizers.Optimizer, keras.optimizers.Adam,
        keras.metrics.Metric, keras.metrics.Mean, keras.callbacks.Callback, keras.Variable,
        keras.initializers.Initializer, keras.regularizers.Regularizer,
        keras.distribution.LayoutMap, keras.distribution.ModelParallel,
        keras.distribution.DataParallel, keras.distribution.DeviceMesh,
        keras.distribution.TensorLayout,
    ]
    names = set()
    for cls in classes:
        for klass in cls.__mro__:
            if klass.__module__.startswith("keras"):
                names |= private(vars(klass))
    # Instance attributes, set in __init__ / build / compile / fit.
    import numpy as np

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(), "mse", metrics=["mae"])
    model.fit(np.zeros((4, 3)), np.zeros((4, 2)), verbose=0)
    loss = keras.losses.MeanSquaredError()
    for obj in [model, model.layers[0], model.optimizer, loss, model.layers[0].kernel, keras.metrics.Mean()]:
        names |= private(vars(obj))
    return names


def _attribute_uses(path, names):
    """(line, name) of each use of ``names`` as an attribute, a ``getattr``/``setattr``/
    ``hasattr`` string, or a method defined in a class body (an override of a hook)."""
    found = []
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Attribute) and node.attr in names:
            found.append((node.lineno, node.attr))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
              and node.args[1].value in names):
            found.append((node.lineno, node.args[1].value))
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name in names:
                    found.append((item.lineno, item.name))
                if isinstance(item, ast.Assign):
                    for target in item.targets:
                        if isinstance(target, ast.Name) and target.id in names:
                            found.append((item.lineno, target.id))
    return found


def test_no_private_keras_attributes_outside_compat():
    names = _keras_private_names()
    assert "_compile_loss" in names and "_lock_state" in names and "_trainable_variables" in names
    offenders = [
        (os.path.relpath(path, REPO), line, name)
        for path in _python_files("keras_margins")
        if not path.endswith(os.path.join("keras_margins", "_compat.py"))
        for line, name in _attribute_uses(path, names)
    ]
    assert offenders == []


def test_the_checker_finds_private_keras_attributes(tmp_path):
    # The rule above is not vacuous: it flags a read, a getattr string and an overridden hook.
    source = tmp_path / "bad.py"
    source.write_text(
        "class M:\n    def _lock_state(self):\n        pass\n"
        "def f(model):\n    getattr(model, '_compile_metrics', None)\n    return model._compile_loss\n"
    )
    found = {name for _, name in _attribute_uses(str(source), _keras_private_names())}
    assert found == {"_lock_state", "_compile_metrics", "_compile_loss"}


# ------------------------------------------------------------------------------- layering
def test_losses_import_neither_layers_nor_distribution():
    offenders = [
        (os.path.relpath(path, REPO), module, names)
        for path in _python_files(os.path.join("keras_margins", "losses"))
        for module, names in _imports(path)
        if module.startswith(("keras_margins.layers", "keras_margins.distribution"))
        or (module == "keras_margins" and {"layers", "distribution"} & set(names))
    ]
    assert offenders == []


# ------------------------------------------------------------------ declared capabilities
def _needs_reads(path):
    """Lines that read a loss's ``needs`` (attribute read, ``getattr(..., "needs")``,
    ``loss_needs(...)``): dispatching on it. Class-body declarations ``needs = ...`` are not reads."""
    found = []
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Attribute) and node.attr == "needs" and isinstance(node.ctx, ast.Load):
            found.append(node.lineno)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name == "loss_needs" or (
                name == "getattr" and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                and node.args[1].value == "needs"
            ):
                found.append(node.lineno)
    return found


def test_needs_is_read_only_in_protocols():
    offenders = [
        (os.path.relpath(path, REPO), line)
        for path in _python_files("keras_margins")
        if not path.endswith(os.path.join("keras_margins", "protocols.py"))
        for line in _needs_reads(path)
    ]
    assert offenders == []


def _head_class_names():
    import inspect

    return {name for name, obj in vars(km.layers).items()
            if inspect.isclass(obj) and issubclass(obj, km.layers.ClassHead)}


def test_no_composition_check_by_concrete_class_or_class_name():
    heads = _head_class_names()
    assert {"LargestMarginHead", "PEDCCHead", "VirtualSoftmaxHead"} <= heads
    offenders = []
    for path in _python_files("keras_margins"):
        relative = os.path.relpath(path, REPO)
        for node in ast.walk(ast.parse(open(path).read())):
            # isinstance(x, SomeHead) / isinstance(x, (A, B)) outside the layers package
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("isinstance", "issubclass") and len(node.args) == 2
                    and not relative.startswith(os.path.join("keras_margins", "layers"))):
                kinds = node.args[1].elts if isinstance(node.args[1], ast.Tuple) else [node.args[1]]
                named = {k.id if isinstance(k, ast.Name) else getattr(k, "attr", None) for k in kinds}
                if named & heads:
                    offenders.append((relative, node.lineno, "isinstance on a head class"))
            # type(x).__name__ compared with strings
            if isinstance(node, ast.Compare):
                for side in [node.left, *node.comparators]:
                    if isinstance(side, ast.Attribute) and side.attr == "__name__":
                        offenders.append((relative, node.lineno, "class-name comparison"))
    assert offenders == []


def test_virtual_softmax_head_is_not_a_cosine_head():
    assert not issubclass(km.layers.VirtualSoftmaxHead, km.layers.LargestMarginHead)
    assert km.layers.VirtualSoftmaxHead.score_kind == "log_probs"
    assert km.layers.LargestMarginHead.score_kind == km.layers.PEDCCHead.score_kind == "cosine"
