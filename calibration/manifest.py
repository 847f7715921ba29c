"""Writing manifest.json from calibration and engines, always atomically.

`write_manifest` (the exporter's) recomputes the `files` section from what is
on disk. `write_listed` writes the manifest as given, keeping its `files`
section: the way to stop listing files before deleting or replacing them, so
that the manifest on disk never lists a file that is missing or changed.
"""

from __future__ import annotations

import json
import os
import pathlib

from vlfront.runtime.bundle import MANIFEST


def write_listed(root: pathlib.Path, manifest: dict) -> None:
    """Write manifest.json atomically without rehashing (same format as the exporter's)."""
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, root / MANIFEST)


def write_manifest(root: pathlib.Path, manifest: dict) -> None:
    """Recompute `files` from disk and write manifest.json atomically (vlfront.export.pipeline's)."""
    from vlfront.export.pipeline import write_manifest as export_write_manifest

    export_write_manifest(root, manifest)
