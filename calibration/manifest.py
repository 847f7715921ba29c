"""Writing manifest.json from calibration and engines, always atomically.

`write_manifest` (the exporter's) recomputes the `files` section from what is
on disk. `write_listed` writes the manifest as given, keeping its `files`
section: the way to stop listing files before deleting or replacing them, so
that the manifest on disk never lists a file that is missing or changed.
"""

from vlfront.export.pipeline import write_listed, write_manifest

__all__ = ["write_listed", "write_manifest"]
