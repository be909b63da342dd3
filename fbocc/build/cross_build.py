"""`fbocc cross-build`: run the recipe in the profile's build container, verify, cache.

The flow for one build profile:

1. get the profile's build image (`profile_image`: planned by content, made when absent);
2. compute the cache key (sources, profile, image id, recipe); a hit copies the cached artefacts and
   starts no container;
3. otherwise run `cross/build-in-container.sh` in a `BuildContainer` (network off, invoking uid:gid,
   sources read-only), verify every `.so` with `elf_check`, and move the artefacts and the build
   manifest `fbocc-build.json` into the output directory only when everything passed.

Only `container` talks to Docker; this module hashes, runs the recipe and files results.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fbocc import config
from fbocc.assets import asset_dir
from fbocc.build import container as bc
from fbocc.build.container import LineSink
from fbocc.build.elf_check import verify_library
from fbocc.build.profile_image import ensure_image
from fbocc.config import BuildProfile
from fbocc.errors import BuildError, ConfigError
from fbocc.export.samples import sha256_file

MANIFEST_NAME = "fbocc-build.json"
MANIFEST_SCHEMA = "fbocc.cross-build/1"
SRC_MOUNT, OUT_MOUNT, RECIPE_MOUNT = "/fbocc/src", "/fbocc/out", "/fbocc/recipe"
RECIPE = "build-in-container.sh"
TRT_VERSION_SCRIPT = "tensorrt-version.sh"  # the recipe's reader of the headers' TensorRT version
SKIP_NAMES = {"__pycache__", "build", "out"}
SKIP_SUFFIXES = (".o", ".so", ".a", ".d", ".pyc")


def source_tree_hash(root: Path) -> str:
    """Content hash of a source tree: relative paths, exec bits and bytes; build outputs are skipped."""
    if not root.is_dir():
        raise ConfigError(f"plugin sources {root} do not exist or are not a directory",
                          fix="pass the plugin source folder with --sources (default: the shipped plugins/)")
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") or part in SKIP_NAMES for part in rel.parts):
            continue
        if not path.is_file() or path.name.endswith(SKIP_SUFFIXES):
            continue
        digest.update(rel.as_posix().encode() + b"\0")
        digest.update(b"x" if os.access(path, os.X_OK) else b"-")
        digest.update(sha256_file(path).encode() + b"\n")
    return digest.hexdigest()



# --- the build --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CrossBuildRequest:
    """Everything one `fbocc cross-build` needs; the CLI fills it from options and config."""

    profile: BuildProfile
    out_dir: Path
    sources: Path | None = None
    trt_deb: Path | None = None
    force: bool = False
    keep_container: bool = False
    jobs: int = 0
    transfer: str = "auto"  # auto | mount | archive
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)


@dataclass
class Artefact:
    """One verified library in the output directory."""

    file: str
    sha256: str
    size: int
    machine: str
    cubin_archs: list[str]
    ptx_archs: list[str]
    needed: list[str]
    registration_symbols: list[str]


@dataclass
class BuildManifest:
    """`fbocc-build.json`: what was built, from what, with which toolchain, and how long it took."""

    profile: str
    target_arch: str
    image: str
    image_id: str
    cuda_version: str
    tensorrt_version: str | None
    toolchain: dict[str, str]
    source_dir: str
    source_hash: str
    recipe_hash: str
    cache_key: str
    make_args: str
    compile_flags: list[str]
    cuda_archs: list[str]
    artefacts: list[Artefact]
    duration_s: float
    cache: str  # "miss" (built now) | "hit" (copied from the cache, no container)
    transfer: str
    built_at: str
    schema: str = MANIFEST_SCHEMA

    def to_json(self) -> str:
        """The manifest as written to disk."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> BuildManifest:
        """Parse a manifest written by `to_json`."""
        data = json.loads(text)
        data["artefacts"] = [Artefact(**a) for a in data.get("artefacts", [])]
        return cls(**data)


@dataclass
class CrossBuildResult:
    """What `cross_build` returns: the manifest, where it and the artefacts are, and whether it hit."""

    manifest: BuildManifest
    manifest_path: Path
    artefacts: list[Path]
    cache_hit: bool
    container: str | None = None


def default_sources() -> Path:
    """The shipped plugin sources."""
    return asset_dir("plugins")


def cache_key(profile: BuildProfile, image_id: str, source_hash: str, recipe_hash: str) -> str:
    """Same sources + profile + image + recipe -> same key -> no rebuild."""
    payload = json.dumps({"profile": dataclasses.asdict(profile), "image_id": image_id,
                          "sources": source_hash, "recipe": recipe_hash}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def check_out_dir(out_dir: Path) -> None:
    """Fail early, before any container, when the output directory cannot receive files."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".fbocc-probe-"):
            pass
    except OSError as exc:
        raise ConfigError(f"output directory {out_dir} is not writable: {exc.strerror or exc}",
                          fix="choose another --out directory, or fix its permissions") from None


def cross_build(req: CrossBuildRequest, *, on_step: LineSink, on_line: LineSink) -> CrossBuildResult:
    """Build (or fetch from the cache) the plugin library for `req.profile` into `req.out_dir`.

    Ctrl-C (or SIGTERM while the container runs) ends in `Interrupted` naming the step; the build
    container, a half-made base tarball and the staging directory are gone by then.
    """
    current = ["start"]

    def step(name: str) -> None:
        current[0] = name
        on_step(name)

    try:
        return _cross_build(req, on_step=step, on_line=on_line)
    except KeyboardInterrupt:
        raise bc.interrupted(current[0]) from None


def _cross_build(req: CrossBuildRequest, *, on_step: LineSink, on_line: LineSink) -> CrossBuildResult:
    started = time.monotonic()
    profile = req.profile
    sources = (req.sources or default_sources()).resolve()
    out_dir = req.out_dir.resolve()
    check_out_dir(out_dir)
    if req.transfer not in ("auto", "mount", "archive"):
        raise ConfigError(f"transfer mode {req.transfer!r} is not one of auto, mount, archive")
    on_step(f"hashing sources in {sources}")
    src_hash = source_tree_hash(sources)
    recipe_dir = asset_dir("cross")
    recipe_parts = "".join(sha256_file(recipe_dir / f) for f in (RECIPE, TRT_VERSION_SCRIPT))
    recipe_hash = hashlib.sha256(recipe_parts.encode()).hexdigest()

    tag, img_id = ensure_image(profile, req.trt_deb, on_step=on_step, on_line=on_line)
    for left in bc.remove_orphaned_containers():
        on_step(f"removed build container {left.name} ({left.state}), left behind by cross-build pid "
                f"{left.owner_pid} started {left.started_at}, which ended without removing it")
    key = cache_key(profile, img_id, src_hash, recipe_hash)
    store = config.cache_dir() / "cross-build" / key
    if not req.force:
        hit = _from_cache(store, out_dir, started)
        if hit is not None:
            on_step(f"cache hit ({key[:12]}): no container started")
            return hit

    transfer = req.transfer
    if transfer == "auto":
        transfer = "archive" if bc.daemon_is_remote() else "mount"
    staging = Path(tempfile.mkdtemp(prefix=".fbocc-staging-", dir=out_dir))
    if (req.uid, req.gid) != (os.getuid(), os.getgid()):
        os.chown(staging, req.uid, req.gid)
    info: dict[str, str] = {}
    log_tail: list[str] = []
    container_id: str | None = None

    def on_container_line(line: str) -> None:
        if line.startswith("::step::"):
            on_step(line[len("::step::"):].strip())
        elif line.startswith("::info::"):
            k, _, v = line[len("::info::"):].strip().partition("=")
            info[k] = v
        else:
            on_line(line)
            log_tail.append(line)
            del log_tail[:-5000]

    spec = bc.ContainerSpec(
        image=tag, user=f"{req.uid}:{req.gid}",
        mounts=[bc.Mount(sources, SRC_MOUNT, read_only=True), bc.Mount(recipe_dir, RECIPE_MOUNT, read_only=True),
                bc.Mount(staging, OUT_MOUNT, read_only=False)],
        environment=_recipe_env(profile, req.jobs), labels={"org.fbocc.profile": profile.name},
        use_archive=(transfer == "archive"), keep=req.keep_container)
    try:
        try:
            how = "archive API" if transfer == "archive" else "bind mounts"
            on_step(f"starting build container ({how}, network off)")
            with bc.BuildContainer(spec) as box:
                container_id = box.name
                code = box.call(["sh", f"{RECIPE_MOUNT}/{RECIPE}"], on_line=on_container_line)
                if code != 0:
                    raise _compile_error(profile, sources, code, log_tail, box.name if req.keep_container else None)
                box.collect_outputs()
        except KeyboardInterrupt:
            raise bc.interrupted("cross-build", container_id if req.keep_container else None) from None
        on_step("verifying artefacts")
        libs = sorted(staging.glob("*.so"))
        for lib in libs:
            if lib.stat().st_uid != req.uid or lib.stat().st_gid != req.gid:
                os.chown(lib, req.uid, req.gid)
        if not libs:
            raise BuildError("the build container finished but returned no .so file",
                             fix="check that the plugin Makefile writes its libraries to OUT")
        tensorrt = bool(profile.tensorrt_include_dir)
        artefacts = [_verify(lib, profile, tensorrt) for lib in libs]
        manifest = BuildManifest(
            profile=profile.name, target_arch=profile.target_arch, image=tag, image_id=img_id,
            cuda_version=info.get("cuda_version", ""), tensorrt_version=info.get("tensorrt_version") or None,
            toolchain={k: info[k] for k in ("nvcc", "cxx_version") if k in info},
            source_dir=str(sources), source_hash=src_hash, recipe_hash=recipe_hash, cache_key=key,
            make_args=info.get("make_args", ""), compile_flags=_compile_flags(log_tail, profile),
            cuda_archs=list(profile.cuda_archs), artefacts=artefacts,
            duration_s=round(time.monotonic() - started, 2), cache="miss", transfer=transfer,
            built_at=datetime.now(UTC).isoformat(timespec="seconds"))
        _store(store, libs, manifest)
        paths = _publish(staging, out_dir, libs, manifest)
        return CrossBuildResult(manifest=manifest, manifest_path=out_dir / MANIFEST_NAME, artefacts=paths,
                                cache_hit=False, container=container_id if req.keep_container else None)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _recipe_env(profile: BuildProfile, jobs: int) -> dict[str, str]:
    return {
        "FBOCC_TARGET_ARCH": profile.target_arch,
        "FBOCC_CUDA_HOME": profile.cuda_home,
        "FBOCC_CUDA_TARGET_DIR": profile.cuda_target_dir,
        "FBOCC_CUDA_ARCHS": " ".join(profile.cuda_archs),
        "FBOCC_CXX": profile.cxx,
        "FBOCC_TRT_INCLUDE_DIR": profile.tensorrt_include_dir or "",
        "FBOCC_TRT_LIB_DIR": profile.tensorrt_lib_dir or "",
        "FBOCC_JOBS": str(jobs if jobs > 0 else (os.cpu_count() or 2)),
    }


def _compile_flags(log: list[str], profile: BuildProfile) -> list[str]:
    """The distinct compiler command lines the Makefile echoed, with per-file arguments removed."""
    tools = (f"{profile.cuda_home}/bin/nvcc", "nvcc", profile.cxx)
    seen: list[str] = []
    for line in log:
        words = line.split()
        if not words or words[0] not in tools:
            continue
        kept: list[str] = []
        skip = False
        for word in words:
            if skip:
                skip = False
                continue
            if word in ("-c", "-o"):
                skip = True
                continue
            if word.endswith((".cu", ".cpp", ".o", ".so", ".tmp")):
                continue
            kept.append(word)
        flags = " ".join(kept)
        if flags not in seen:
            seen.append(flags)
    return seen


def _compile_error(profile: BuildProfile, sources: Path, code: int, log: list[str], kept: str | None) -> BuildError:
    first = (next((line for line in log if "error:" in line.lower()), None)
             or next((line for line in log if re.search(r"\bError \d+", line)), None))
    shown = first or (log[-1] if log else "no output")
    fix = f"fix the error above in {sources} and run again"
    if kept:
        fix += f"; the container {kept} was kept for inspection (docker exec -it {kept} sh)"
    return BuildError(f"building the plugins in the {profile.name} container failed (exit {code}): {shown.strip()}",
                      fix=fix)


def _verify(lib: Path, profile: BuildProfile, tensorrt: bool) -> Artefact:
    # Kernel-only libraries never carry TensorRT registration symbols; the plugin library must.
    wants_trt = tensorrt and "kernels" not in lib.name
    report = verify_library(lib, target_arch=profile.target_arch, cuda_archs=list(profile.cuda_archs),
                            tensorrt=wants_trt)
    return Artefact(file=lib.name, sha256=sha256_file(lib), size=lib.stat().st_size, machine=report.machine,
                    cubin_archs=report.cubin_archs, ptx_archs=report.ptx_archs, needed=report.needed,
                    registration_symbols=report.registration_symbols)


def _publish(staging: Path, out_dir: Path, libs: list[Path], manifest: BuildManifest) -> list[Path]:
    """Move artefacts to their final names, manifest last, each by an atomic rename."""
    final: list[Path] = []
    for lib in libs:
        dest = out_dir / lib.name
        os.replace(lib, dest)
        final.append(dest)
    tmp = staging / MANIFEST_NAME
    tmp.write_text(manifest.to_json())
    os.replace(tmp, out_dir / MANIFEST_NAME)
    return final


def _store(store: Path, libs: list[Path], manifest: BuildManifest) -> None:
    store.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=store.parent))
    try:
        for lib in libs:
            shutil.copy2(lib, tmp / lib.name)
        (tmp / MANIFEST_NAME).write_text(manifest.to_json())
        shutil.rmtree(store, ignore_errors=True)
        os.replace(tmp, store)
    except OSError:
        pass  # a concurrent build stored the same key first; the cache is an optimisation only
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _from_cache(store: Path, out_dir: Path, started: float) -> CrossBuildResult | None:
    manifest_file = store / MANIFEST_NAME
    if not manifest_file.is_file():
        return None
    try:
        cached = BuildManifest.from_json(manifest_file.read_text())
    except (ValueError, TypeError, KeyError):
        return None
    for art in cached.artefacts:
        path = store / art.file
        if not path.is_file() or sha256_file(path) != art.sha256:
            return None  # a damaged cache entry is rebuilt, never served
    staging = Path(tempfile.mkdtemp(prefix=".fbocc-staging-", dir=out_dir))
    try:
        libs = []
        for art in cached.artefacts:
            shutil.copy2(store / art.file, staging / art.file)
            libs.append(staging / art.file)
        manifest = dataclasses.replace(cached, cache="hit", duration_s=round(time.monotonic() - started, 2),
                                       built_at=datetime.now(UTC).isoformat(timespec="seconds"))
        paths = _publish(staging, out_dir, libs, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return CrossBuildResult(manifest=manifest, manifest_path=out_dir / MANIFEST_NAME, artefacts=paths,
                            cache_hit=True)


def read_manifest(out_dir: Path) -> dict[str, Any]:
    """The build manifest in an output directory, as plain data (push-to-target reads it)."""
    path = out_dir / MANIFEST_NAME
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise ConfigError(f"no build manifest {path}", fix="run `fbocc cross-build` first") from None
