"""The first lines of a check process that cannot import keras_margins (as in TF Serving),
shared by the exporters' fresh-process checks."""

#: First lines of a check child: keras_margins made unimportable before anything is loaded.
BLOCK_KERAS_MARGINS = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "keras_margins":
            raise ImportError("keras_margins is blocked in this process")
sys.meta_path.insert(0, _Block())
try:
    import keras_margins
    raise SystemExit("keras_margins must not be importable in the check process")
except ImportError:
    pass
"""
