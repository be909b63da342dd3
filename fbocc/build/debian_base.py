"""Debian base images made on this machine: no image registry is reachable, so a recipe's root filesystem is
made with debootstrap (plus `apt-get install` in a chroot where the recipe asks), tarred and `docker import`ed.

Recipes are `key = value` text files shipped in `docker/`: `sim/base.txt` (the sim build image's base) and
`old-cuda/*.txt` (the CUDA 11 images of `tools/old_toolchain.py`). Keys read here: `suite`, `variant`,
`packages` (debootstrap --include), and optionally `components`, `mirror`, `apt_packages` (installed in the
chroot, the one step with network besides debootstrap) and `dpkg_exclude` (dpkg path-exclude patterns). Other
keys belong to the recipe's user. Making an image needs root, once per machine; the image tag carries the
hash of the recipe's bytes, so editing a recipe makes a new image.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from fbocc import config
from fbocc.build import container as bc
from fbocc.build.container import LineSink
from fbocc.errors import ConfigError, EnvironmentCheckError

REQUIRED = ("suite", "variant", "packages")


@dataclass(frozen=True)
class DebianRecipe:
    """A parsed recipe: its file, its settings, and the hash of its bytes (the image tag's content key)."""

    path: Path
    settings: dict[str, str]
    key: str

    def words(self, name: str) -> list[str]:
        """A whitespace-separated setting as a list (empty when the recipe does not set it)."""
        return self.settings.get(name, "").split()


def read_recipe(path: Path, required: tuple[str, ...] = REQUIRED) -> DebianRecipe:
    """Parse `path`; a missing required key is a ConfigError naming the file and the key."""
    settings: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    missing = [k for k in (*REQUIRED, *required) if k not in settings]
    if missing:
        raise ConfigError(f"{path}: missing {', '.join(dict.fromkeys(missing))}",
                          fix=f"restore the shipped docker/{path.parent.name}/{path.name}")
    key = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return DebianRecipe(path=path, settings=settings, key=key)


def mirror_for(recipe: DebianRecipe) -> str:
    """FBOCC_DEBIAN_MIRROR, else the recipe's `mirror`, else the mirror the host's apt uses for the suite."""
    return config.debian_mirror() or recipe.settings.get("mirror") or host_debian_mirror(recipe.settings["suite"])


def host_debian_mirror(suite: str) -> str:
    """The http(s) mirror that this host's apt sources (deb822 `.sources` and one-line `.list`) use for `suite`."""
    candidates: list[tuple[str, list[str]]] = []
    apt = Path("/etc/apt")
    for src in sorted(apt.glob("sources.list.d/*.sources")):
        uris: list[str] = []
        suites: list[str] = []
        for line in [*src.read_text(errors="replace").splitlines(), ""]:
            if not line.strip():
                candidates += [(u, suites) for u in uris]
                uris, suites = [], []
            elif line.lower().startswith("uris:"):
                uris = line.split(":", 1)[1].split()
            elif line.lower().startswith("suites:"):
                suites = line.split(":", 1)[1].split()
    for lst in [apt / "sources.list", *sorted(apt.glob("sources.list.d/*.list"))]:
        if lst.is_file():
            for line in lst.read_text(errors="replace").splitlines():
                m = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
                if m:
                    candidates.append((m.group(1), [m.group(2)]))
    for uri, suites in candidates:
        if suite in suites and uri.startswith(("http://", "https://")):
            return uri
    raise EnvironmentCheckError(f"no Debian mirror for {suite!r} in this host's apt sources (/etc/apt)",
                                fix="set FBOCC_DEBIAN_MIRROR to a Debian mirror URL")


def ensure_base_image(recipe: DebianRecipe, tag: str, *, keep_tarball: bool = False, on_step: LineSink,
                      on_line: LineSink) -> str:
    """The id of image `tag` made from `recipe`, making it when the daemon does not have it.

    With `keep_tarball` the root filesystem tarball stays in the cache (`<cache>/<image name>/<key>.tar`), so a
    removed image is re-imported without debootstrap.
    """
    found = bc.image_id(tag)
    if found is not None:
        return found
    repo, _, version = tag.partition(":")
    cache = config.cache_dir() / repo.rpartition("/")[2]
    cache.mkdir(parents=True, exist_ok=True)
    kept = cache / f"{recipe.key}.tar"
    labels = {"org.fbocc.recipe": f"{recipe.path.parent.name}/{recipe.path.name}"}
    if keep_tarball and kept.is_file():
        on_step(f"docker import {kept.name} as {tag}")
        return bc.import_rootfs(kept, repo, version, labels=labels)
    _check_tools(recipe, tag)
    work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=cache))
    try:
        tarball = _make_tarball(recipe, work, on_step=on_step, on_line=on_line)
        if keep_tarball:
            os.replace(tarball, kept)
            tarball = kept
        started = time.monotonic()
        on_step(f"docker import as {tag} ({tarball.stat().st_size / 1e9:.2f} GB)")
        image = bc.import_rootfs(tarball, repo, version, labels=labels)
        on_step(f"imported in {time.monotonic() - started:.0f}s")
        return image
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check_tools(recipe: DebianRecipe, tag: str) -> None:
    for tool in ("debootstrap", "tar", *(["chroot"] if recipe.words("apt_packages") else [])):
        if shutil.which(tool) is None:
            raise EnvironmentCheckError(f"{tool} is not installed (needed once, to make the image {tag})",
                                        fix="apt-get install debootstrap (or run `make setup` as root)")
    if os.geteuid() != 0:
        raise EnvironmentCheckError(f"making the image {tag} with debootstrap needs root (once per machine)",
                                    fix="run this command once as root (e.g. `sudo make setup`); later runs reuse "
                                        "the image")


def _make_tarball(recipe: DebianRecipe, work: Path, *, on_step: LineSink, on_line: LineSink) -> Path:
    settings = recipe.settings
    mirror = mirror_for(recipe)
    rootfs = work / "rootfs"
    started = time.monotonic()
    on_step(f"debootstrap {settings['suite']} ({settings['packages']}) from {mirror}")
    components = [f"--components={settings['components']}"] if "components" in settings else []
    _run_logged(["debootstrap", f"--variant={settings['variant']}", *components,
                 "--include=" + ",".join(recipe.words("packages")), settings["suite"], str(rootfs), mirror],
                on_line, what="debootstrap")
    on_step(f"debootstrap done in {time.monotonic() - started:.0f}s")
    excludes = "".join(f"path-exclude={p}\n" for p in recipe.words("dpkg_exclude"))
    if excludes:
        (rootfs / "etc/dpkg/dpkg.cfg.d/fbocc-excludes").write_text(excludes)
    if recipe.words("apt_packages"):
        _apt_install(rootfs, recipe.words("apt_packages"), on_step=on_step, on_line=on_line)
    shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
    shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
    tarball = work / "rootfs.tar"
    _run_logged(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tarball), "."], on_line, what="tar")
    shutil.rmtree(rootfs)
    return tarball


def _apt_install(rootfs: Path, packages: list[str], *, on_step: LineSink, on_line: LineSink) -> None:
    shutil.copy2("/etc/resolv.conf", rootfs / "etc/resolv.conf")
    started = time.monotonic()
    on_step(f"apt-get install {' '.join(packages)} in the chroot")
    env = ["env", "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C"]
    _run_logged(["chroot", str(rootfs), *env, "apt-get", "update", "-q"], on_line, what="apt-get update")
    _run_logged(["chroot", str(rootfs), *env, "apt-get", "install", "-y", "-q", "--no-install-recommends",
                 *packages], on_line, what="apt-get install")
    on_step(f"apt-get install done in {time.monotonic() - started:.0f}s")
    (rootfs / "etc/resolv.conf").unlink()


def _run_logged(cmd: list[str], on_line: LineSink, *, what: str) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            on_line(line.rstrip())
            tail = [*tail[-5:], line.rstrip()]
        code = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if code != 0:
        raise EnvironmentCheckError(f"{what} failed (exit {code}): {' / '.join(tail[-3:])}",
                                    fix="check network access to the Debian mirror (FBOCC_DEBIAN_MIRROR "
                                        "overrides it), then run again")
