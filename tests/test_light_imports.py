"""``import keras_margins`` loads the core only; heavy modules load on first access; the command
line's ``--help`` needs no Keras. Checked in child processes (a fresh ``sys.modules``)."""

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import keras_margins as km

HEAVY = ("tensorflow", "keras_tuner", "tensorflow_datasets", "matplotlib")
CORE = ("ops", "layers", "losses", "miners", "metrics", "models", "optimizers", "regularizers",
        "callbacks")
ON_ACCESS = ("data", "tuning", "export", "plots", "testing", "distribution")
# The library's tables: no Keras, read by the core (backbones) and the command line's parsers.
LIGHT = ("registry",)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(km.__file__)))


def _child(code, backend="jax", timeout=300):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_under_jax_loads_the_core_and_no_heavy_dependency():
    out = _child(f"""
        import json, sys
        import keras
        # Keras itself may import matplotlib (through cv2); only what we add counts for it.
        before = {{m for m in {HEAVY!r} if m in sys.modules}}
        import keras_margins as km
        after = {{m for m in {HEAVY!r} if m in sys.modules}}
        loaded = {{name: f"keras_margins.{{name}}" in sys.modules
                  for name in {CORE + ON_ACCESS + LIGHT!r}}}
        registered = [n in keras.saving.get_custom_objects()
                      for n in ("keras_margins>LargestMarginHead", "keras_margins>ArcFace",
                                "keras_margins>MarginModel", "keras_margins>LayerLRAdam")]
        print(json.dumps({{"before": sorted(before), "after": sorted(after), "loaded": loaded,
                          "registered": registered, "backend": keras.backend.backend()}}))
    """)
    assert out["backend"] == "jax"
    assert set(out["after"]) - set(out["before"]) == set()
    for name in ("tensorflow", "keras_tuner", "tensorflow_datasets"):
        assert name not in out["after"], name
    assert all(out["loaded"][name] for name in CORE), out["loaded"]
    assert not any(out["loaded"][name] for name in ON_ACCESS), out["loaded"]
    assert all(out["registered"])  # .keras files load right after `import keras_margins`


def test_import_works_with_the_heavy_dependencies_unimportable():
    out = _child(f"""
        import json, sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {HEAVY!r}:
                    raise ImportError(name + " is blocked")
        sys.meta_path.insert(0, Block())
        import numpy as np
        import keras_margins as km
        cos = km.ops.cosine_similarity(np.eye(3, dtype="float32"), np.eye(3, dtype="float32"))
        print(json.dumps({{"diag": [float(v) for v in np.diag(np.asarray(cos))]}}))
    """)
    assert out["diag"] == pytest.approx([1.0, 1.0, 1.0])


def test_heavy_modules_load_on_first_access():
    out = _child("""
        import json, sys
        import keras_margins as km
        names = dir(km)
        found = {
            "data": callable(km.data.digits_classification),
            "tuning": km.tuning.MarginHyperModel.__name__,
            "export": callable(km.export.export_embedding_model),
            "plots": callable(km.plots.plot_embeddings),
            "testing": km.testing.__name__,
            "registry": sorted(km.registry.FAMILIES)[0],
        }
        try:
            km.no_such_module
            missing = "no error"
        except AttributeError as err:
            missing = str(err)
        print(json.dumps({"found": found, "dir": names, "missing": missing,
                          "tuner": "keras_tuner" in sys.modules}))
    """)
    assert out["found"]["tuning"] == "MarginHyperModel"
    assert out["found"]["testing"] == "keras_margins.testing"
    assert out["found"]["data"] and out["found"]["export"] and out["found"]["plots"]
    assert out["tuner"]  # accessing km.tuning imported KerasTuner
    assert set(CORE + ON_ACCESS + LIGHT) <= set(out["dir"])
    assert "no_such_module" in out["missing"]


def _top_level_imports(path):
    tree = ast.parse(open(path).read())
    names = []
    for node in tree.body:  # module level only; imports inside functions are what we want
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_no_core_module_imports_tensorflow_at_module_level():
    package = os.path.dirname(km.__file__)
    offenders = []
    for name in CORE:
        for folder, _, files in os.walk(os.path.join(package, name)):
            for file in files:
                if file.endswith(".py"):
                    path = os.path.join(folder, file)
                    heavy = [n for n in _top_level_imports(path) if n.split(".")[0] in HEAVY]
                    if heavy:
                        offenders.append((os.path.relpath(path, package), heavy))
    assert offenders == []


def _console_script():
    exe = shutil.which("keras-margins") or os.path.join(os.path.dirname(sys.executable),
                                                        "keras-margins")
    assert os.path.isfile(exe), "the keras-margins console script is not installed"
    return exe


def test_help_does_not_import_keras():
    # What the console script does, with sys.argv[0] as it sets it.
    code = """
        import json, sys
        sys.argv = ["keras-margins", "--help"]
        from keras_margins.cli import main
        try:
            main()
        except SystemExit as exit:
            code = exit.code
        print(json.dumps({"code": code, "imported": sorted(
            m for m in ("keras", "tensorflow", "jax", "keras_margins.layers") if m in sys.modules)}))
    """
    out = _child(code, backend="tensorflow")
    assert out == {"code": 0, "imported": []}


def test_console_script_help_lists_the_commands():
    proc = subprocess.run([_console_script(), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for command in ("train", "evaluate", "export", "tune"):
        assert command in proc.stdout


USAGE_ERRORS = [
    ["train", "--loss", "no-such-loss"],
    ["train", "--epochs", "0"],
    ["train", "--samples-per-class", "1"],
    ["train", "--backbone", "vgg99"],
    ["train", "--loss", "ensemble", "--scale", "3"],
    ["train", "--loss", "arcface", "--head-dim", "8"],
    ["train", "--dataset", "digits", "--backbone", "resnet50"],
    ["train", "--dataset", "digits", "--image-size", "32"],
    ["tune", "--losses", "no-such-loss"],
    ["tune", "--tuner", "grid"],
    ["evaluate"],
    ["export", "model.keras"],
]


def test_usage_errors_answer_without_keras_or_tensorflow(tmp_path):
    """The console script's parsers and argument checks read only the registry's tables:
    each usage error exits with 2 before Keras, TensorFlow or JAX is imported."""
    code = f"""
        import contextlib, io, json, sys
        results = []
        for argv in {USAGE_ERRORS!r}:
            sys.argv = ["keras-margins", *argv]
            from keras_margins.cli import main
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                try:
                    status = main(argv)
                except SystemExit as exit:
                    status = exit.code
            results.append({{"argv": argv, "status": status, "err": err.getvalue()[-300:],
                             "imported": sorted(m for m in ("keras", "tensorflow", "jax")
                                                if m in sys.modules)}})
        print(json.dumps(results))
    """
    env_code = "import os; os.chdir(" + repr(str(tmp_path)) + ")\n"
    for result in _child(env_code + textwrap.dedent(code), backend="tensorflow"):
        assert result["status"] == 2, result
        assert "error" in result["err"], result
        assert result["imported"] == [], result
    assert os.listdir(tmp_path) == []


def test_registry_imports_no_keras():
    out = _child("""
        import json, sys
        sys.argv = ["keras-margins"]
        from keras_margins import registry
        print(json.dumps({"families": len(registry.FAMILIES), "imported": sorted(
            m for m in ("keras", "tensorflow", "jax", "keras_tuner") if m in sys.modules)}))
    """, backend="tensorflow")
    assert out["imported"] == [] and out["families"] > 0


def test_console_script_mode_loads_every_class_before_loading_a_model(tmp_path):
    """Under the console script the core is loaded lazily; `evaluate` must still find every
    registered class (a MarginModel with POD, compiled with km.optimizers.LayerLRAdam)."""
    import keras

    model = km.models.MarginModel(km.models.mlp_backbone(64, 8, hidden=16),
                                  km.layers.PEDCCHead(10))
    model.compile(km.optimizers.LayerLRAdam(1e-3, layer_lr_multipliers={"pedcc_head": 2.0}),
                  loss=km.losses.POD())
    path = str(tmp_path / "model.keras")
    model.save(path)
    assert isinstance(keras.models.load_model(path).optimizer, km.optimizers.LayerLRAdam)
    code = f"""
        import json, sys
        sys.argv = ["keras-margins", "evaluate", {path!r}]
        import keras_margins
        lazy = "keras_margins.losses" not in sys.modules
        from keras_margins.cli import main
        code = main(sys.argv[1:])
        print(json.dumps({{"lazy": lazy, "code": code}}))
    """
    out = _child(code, backend=km_backend())
    assert out == {"lazy": True, "code": 0}


def km_backend():
    import keras

    return keras.backend.backend()
