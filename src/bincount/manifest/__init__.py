"""The manifest: one cached table of (id, image key, count, label, split) per dataset and settings.

Its layer sits above storage (it reads metadata through :mod:`bincount.s3.store` for ``s3://`` roots)
and below the shards and the DataModule, which both consume it. Modules: :mod:`.metadata` (reading
and checking metadata files), :mod:`.classes` (the class policy), :mod:`.splits` (stratified
deterministic splits), :mod:`.table` (rows and the cached CSV), :mod:`.build` (putting them together).
"""

from bincount.manifest.build import MANIFEST_VERSION, build_manifest
from bincount.manifest.classes import OVERFLOW_CHOICES, ClassRange
from bincount.manifest.table import CSV_COLUMNS, Manifest, ManifestRow, write_cache

__all__ = ["CSV_COLUMNS", "MANIFEST_VERSION", "OVERFLOW_CHOICES", "ClassRange", "Manifest", "ManifestRow",
           "build_manifest", "write_cache"]
