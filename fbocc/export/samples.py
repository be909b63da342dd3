"""Sample inputs (`.dat` + `manifest.json`): the host's view of the contract in `deploy/manifest.py`.

The target runs the very same file, so host and target agree byte for byte on what a valid samples
directory is. This module loads it and turns its `ManifestError` into our `ValidationError`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

from fbocc.assets import asset_dir
from fbocc.errors import ValidationError


def _load_deploy_manifest() -> ModuleType:
    path = asset_dir("deploy") / "manifest.py"
    spec = importlib.util.spec_from_file_location("fbocc_deploy_manifest", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


manifest_format: Any = _load_deploy_manifest()
MANIFEST_NAME: str = manifest_format.MANIFEST_NAME
ManifestError: Any = manifest_format.ManifestError


def sha256_file(path: Path) -> str:
    """sha256 of a file's content (the hash every manifest in fbocc records)."""
    return str(manifest_format.sha256_file(str(path)))


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
