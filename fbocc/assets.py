"""Where the shipped recipes live: `plugins/`, `cross/`, `docker/`, `deploy/`.

In a wheel `plugins/`, `cross/` and `docker/` are package data under `fbocc/_assets/`; in a checkout
(editable install) they are the top-level folders beside the package. `deploy/` is a package of its own
(the host imports it, push-to-target sends its files): its folder is wherever `import deploy` finds it.
"""

from __future__ import annotations

from pathlib import Path

ASSET_NAMES = ("plugins", "cross", "docker", "deploy")
_PACKAGE_DIR = Path(__file__).resolve().parent


def asset_dir(name: str) -> Path:
    """Return the directory of a shipped asset folder (`plugins`, `cross`, `docker` or `deploy`)."""
    if name not in ASSET_NAMES:
        raise ValueError(f"unknown asset folder {name!r}; expected one of {ASSET_NAMES}")
    if name == "deploy":
        import deploy

        return Path(deploy.__file__).resolve().parent
    installed = _PACKAGE_DIR / "_assets" / name
    if installed.is_dir():
        return installed
    checkout = _PACKAGE_DIR.parent / name
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"fbocc asset folder {name!r} not found at {installed} or {checkout}")
