"""Sample inputs (`.dat` + `manifest.json`): the host's view of the contract in `deploy.manifest`.

The target runs the very same module, so host and target agree byte for byte on what a valid samples
directory is. This module wraps it and turns its `ManifestError` into our `ValidationError`.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from deploy import manifest as manifest_format
from deploy.manifest import MANIFEST_NAME, ManifestError
from fbocc.errors import ValidationError

__all__ = ["MANIFEST_NAME", "ManifestError", "check_manifest_document", "load_manifest", "manifest_format",
           "read_tensor", "save_manifest", "sha256_file", "write_tensor"]


def sha256_file(path: Path) -> str:
    """sha256 of a file's content (the hash every manifest in fbocc records: deploy.manifest's)."""
    return str(manifest_format.sha256_file(str(path)))


def check_manifest_document(manifest: Any, where: str) -> dict[str, Any]:
    """Check a manifest document whose files are not here (format, fields, sizes); ValidationError naming
    `where` when it is off."""
    try:
        manifest_format.check_structure(manifest, where)
    except ManifestError as exc:
        raise ValidationError(exc.message, fix=exc.fix) from exc
    return dict(manifest)


def load_manifest(samples_dir: Path, *, verify_hashes: bool = False) -> dict[str, Any]:
    """Read and validate `samples_dir/manifest.json` against its files; raise ValidationError if off."""
    try:
        return manifest_format.load(str(samples_dir), verify_hashes=verify_hashes)
    except ManifestError as exc:
        raise ValidationError(exc.message, fix=exc.fix) from exc


def save_manifest(samples_dir: Path, manifest: dict[str, Any]) -> Path:
    """Write `manifest.json` atomically."""
    return Path(manifest_format.save(str(samples_dir), manifest))


def write_tensor(samples_dir: Path, relfile: str, array: Any) -> dict[str, Any]:
    """Write one `.dat` (atomically) and return its manifest entry."""
    return manifest_format.write_tensor(str(samples_dir), relfile, array)


def read_tensor(samples_dir: Path, tensor: dict[str, Any]) -> Any:
    """Read one manifest tensor as a numpy array (size checked)."""
    try:
        return manifest_format.read_tensor(str(samples_dir), tensor)
    except ManifestError as exc:
        raise ValidationError(exc.message, fix=exc.fix) from exc


def publish_dir(staging: Path, out: Path) -> None:
    """Put a finished `staging` folder at `out` (same filesystem): an older `out` is moved aside first and
    removed only after the new one is in place, so `out` is never half-written."""
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        out.rename(old / out.name)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(out)
