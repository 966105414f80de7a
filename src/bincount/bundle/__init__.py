"""Model bundles: the weights (safetensors) and ``bincount-model.json`` that serving needs, nothing more.

Modules: :mod:`.format` (file names, the metadata schema and its checks), :mod:`.preprocess` (the eval
transform, described and rebuilt), :mod:`.write` (every run's ``model/``), :mod:`.export` (``bincount
export`` for older runs), :mod:`.archive` (``model.tar.gz``, safely), :mod:`.load` (``load_model``),
:mod:`.provenance` (``trained_on``: what the model learned from, and the warning when inputs differ).
Importing this package is light: torch, timm and boto3 are imported by the functions that need them.
"""

from bincount.bundle.format import BUNDLE_FILE, FORMAT_VERSION, WEIGHTS_FILE, BundleError
from bincount.bundle.load import BinCountModel, load_model
from bincount.bundle.write import MODEL_DIR, write_bundle, write_run_bundle

__all__ = ["BUNDLE_FILE", "FORMAT_VERSION", "MODEL_DIR", "WEIGHTS_FILE", "BinCountModel", "BundleError", "load_model",
           "write_bundle", "write_run_bundle"]
