"""`fbocc cross-build`: plan the build image, run the recipe in a build container, verify, cache.

The flow for one build profile:

1. plan the image `fbocc/build:<profile>-<content hash>` (Dockerfile, build arguments, base image id,
   the TensorRT .deb's name and size, pinned wheel lists) and build it when absent — for the `sim`
   profile first make its Debian base with debootstrap and `docker import`;
2. compute the cache key (sources, profile, image id, recipe); a hit copies the cached artefacts and
   starts no container;
3. otherwise run `cross/build-in-container.sh` in a `BuildContainer` (network off, invoking uid:gid,
   sources read-only), verify every `.so` with `elf_check`, and move the artefacts and the build
   manifest `fbocc-build.json` into the output directory only when everything passed.

Only `build_container` talks to Docker; this module plans, hashes and files results.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fbocc.assets import asset_dir
from fbocc.build import container as bc
from fbocc.build.elf_check import CREATOR_SYMBOLS, LOGGER_SYMBOL, verify_library
from fbocc.config import BuildProfile, Config
from fbocc.errors import BuildError, ConfigError, EnvironmentCheckError
from fbocc.export.samples import sha256_file

MANIFEST_NAME = "fbocc-build.json"
MANIFEST_SCHEMA = "fbocc.cross-build/1"
IMAGE_REPO = "fbocc/build"
SRC_MOUNT, OUT_MOUNT, RECIPE_MOUNT = "/fbocc/src", "/fbocc/out", "/fbocc/recipe"
RECIPE = "build-in-container.sh"
SKIP_NAMES = {"__pycache__", "build", "out"}
SKIP_SUFFIXES = (".o", ".so", ".a", ".d", ".pyc")

StepSink = Callable[[str], None]


def cache_root() -> Path:
    """Where fbocc keeps content-keyed downloads, base tarballs and build results."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fbocc"


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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


# --- image planning ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ImagePlan:
    """How the build image for a profile is made, and the content-keyed tag it gets."""

    profile: str
    tag: str
    dockerfile: Path
    base_image: str
    base_recipe: Path | None
    buildargs: dict[str, str]
    trt_deb: Path | None
    wheel_lists: dict[str, Path]
    content_key: str


def sim_base_tag(recipe: Path) -> str:
    """`fbocc/sim-base:<hash of the debootstrap recipe>`."""
    return f"fbocc/sim-base:{_sha256_bytes(recipe.read_bytes())[:16]}"


def plan_image(profile: BuildProfile, trt_deb: Path | None, *, base_id: str | None = None) -> ImagePlan:
    """The image tag and recipe for a profile; pure, except that `base_id` names the base's content."""
    docker_dir = asset_dir("docker")
    dockerfile = docker_dir / profile.dockerfile
    if not dockerfile.is_file():
        raise ConfigError(f"profile {profile.name}: dockerfile {profile.dockerfile} not found in {docker_dir}",
                          fix="set dockerfile to one of: " + ", ".join(p.name for p in docker_dir.glob("*.Dockerfile")))
    recipe = docker_dir / profile.base_recipe if profile.base_recipe else None
    base = sim_base_tag(recipe) if recipe is not None else profile.base_image
    buildargs = {"BASE_IMAGE": base}
    wheel_lists: dict[str, Path] = {}
    key_parts: list[str] = [dockerfile.read_text(), base, base_id or ""]
    if recipe is not None:
        for arch in ("x86_64", "aarch64"):
            lst = docker_dir / "sim" / f"wheels-{arch}.txt"
            wheel_lists[arch] = lst
            key_parts.append(lst.read_text())
        key_parts.append((docker_dir / "sim" / "cuda-layout.sh").read_text())
        buildargs["CUDA_VERSION"] = profile.cuda_version
    deb_path: Path | None = None
    if profile.trt_deb or trt_deb is not None:
        deb_path = trt_deb
        name = trt_deb.name if trt_deb is not None else str(profile.trt_deb)
        buildargs["TRT_DEB"] = name
        if profile.trt_packages:
            buildargs["TRT_PACKAGES"] = profile.trt_packages
        # The .deb's name carries its version; name + size keep the key stable without hashing 1 GB.
        size = trt_deb.stat().st_size if trt_deb is not None and trt_deb.is_file() else -1
        key_parts.append(f"{name}:{size}")
    key_parts.append(json.dumps(buildargs, sort_keys=True))
    key = _sha256_bytes("\0".join(key_parts).encode())[:16]
    return ImagePlan(profile=profile.name, tag=f"{IMAGE_REPO}:{profile.name}-{key}", dockerfile=dockerfile,
                     base_image=base, base_recipe=recipe, buildargs=buildargs, trt_deb=deb_path,
                     wheel_lists=wheel_lists, content_key=key)


def _plan_with_daemon(profile: BuildProfile, trt_deb: Path | None) -> ImagePlan:
    base_id = None if profile.base_recipe else bc.image_id(profile.base_image)
    return plan_image(profile, trt_deb, base_id=base_id)


@dataclass
class ImageStatus:
    """What `fbocc doctor` shows for a profile's build image."""

    profile: str
    state: str  # present | buildable | missing-base | missing-deb | no-docker
    image: str
    detail: str
    fix: str | None = None


def resolve_trt_deb(given: Path | None, profile: BuildProfile) -> Path | None:
    """The TensorRT .deb to use: the given file, or the profile's file name inside a given directory."""
    if given is None:
        return None
    if given.is_dir() and profile.trt_deb:
        return given / profile.trt_deb
    return given


def image_status(cfg: Config, profile: BuildProfile | None = None) -> ImageStatus:
    """Whether the profile's build image is present, can be built here, or what is missing (with the fix)."""
    profile = profile or cfg.profile()
    trt_deb = resolve_trt_deb(cfg.build.trt_deb, profile)
    ok, reason = bc.docker_status()
    if not ok:
        return ImageStatus(profile.name, "no-docker", "", reason, bc.DOCKER_FIX)
    plan = _plan_with_daemon(profile, trt_deb)
    if bc.image_id(plan.tag) is not None:
        return ImageStatus(profile.name, "present", plan.tag, "build image present")
    if plan.base_recipe is None and bc.image_id(plan.base_image) is None:
        err = _missing_base_error(profile)
        return ImageStatus(profile.name, "missing-base", plan.tag, err.message, err.fix)
    if profile.trt_deb and (trt_deb is None or not trt_deb.is_file()):
        err = _missing_deb_error(profile, trt_deb)
        return ImageStatus(profile.name, "missing-deb", plan.tag, err.message, err.fix)
    how = "debootstrap base + CUDA wheels" if plan.base_recipe else f"FROM {plan.base_image}"
    return ImageStatus(profile.name, "buildable", plan.tag, f"not built yet; fbocc builds it on first use ({how})")


def _missing_base_error(profile: BuildProfile) -> EnvironmentCheckError:
    login = (f"docker login {profile.needs_login} (user $oauthtoken, your NGC API key), then "
             if profile.needs_login else "")
    return EnvironmentCheckError(
        f"base image {profile.base_image} of build profile {profile.name} is not on this Docker daemon",
        fix=f"{login}docker pull {profile.base_image}; the DRIVE OS SDK image needs an NGC account with "
            "DRIVE access (or set [profiles.NAME] base_image in fbocc.toml to an image you have)")


def _missing_deb_error(profile: BuildProfile, trt_deb: Path | None) -> EnvironmentCheckError:
    shown = str(trt_deb) if trt_deb is not None else "(not given)"
    return EnvironmentCheckError(
        f"TensorRT cross package {profile.trt_deb} for profile {profile.name} not found: {shown}",
        fix=f"download {profile.trt_deb} from NVIDIA's Product Information Delivery (NVONLINE) and pass "
            "--trt-deb PATH (or set [build] trt_deb in fbocc.toml)")


# --- making images ----------------------------------------------------------------------------


def ensure_image(profile: BuildProfile, trt_deb: Path | None, *, on_step: StepSink,
                 on_line: StepSink) -> tuple[str, str]:
    """(tag, id) of the profile's build image, building it (and its base) when absent."""
    plan = _plan_with_daemon(profile, trt_deb)
    found = bc.image_id(plan.tag)
    if found is not None:
        return plan.tag, found
    if plan.base_recipe is not None:
        ensure_sim_base(plan.base_recipe, on_step=on_step, on_line=on_line)
    else:
        if profile.trt_deb and (trt_deb is None or not trt_deb.is_file()):
            raise _missing_deb_error(profile, trt_deb)
        if bc.image_id(plan.base_image) is None:
            raise _missing_base_error(profile)
    on_step(f"building image {plan.tag}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fbocc-context-", dir=_mkdir(cache_root())) as tmp:
        context = Path(tmp)
        shutil.copy2(plan.dockerfile, context / "Dockerfile")
        if plan.base_recipe is not None:
            for arch, lst in plan.wheel_lists.items():
                wheels = ensure_wheels(lst, arch, on_step=on_step)
                _link_tree(wheels, context / "wheels" / arch)
            shutil.copy2(plan.dockerfile.parent / "sim" / "cuda-layout.sh", context / "cuda-layout.sh")
        if plan.trt_deb is not None:
            _link_or_copy(plan.trt_deb, context / plan.trt_deb.name)
        image = bc.build_image(context, "Dockerfile", plan.tag, buildargs=plan.buildargs,
                               labels={"org.fbocc.profile": profile.name, "org.fbocc.content-key": plan.content_key},
                               on_line=on_line)
    on_step(f"built image {plan.tag} in {time.monotonic() - started:.1f}s")
    return plan.tag, image


def ensure_sim_base(recipe: Path, *, on_step: StepSink, on_line: StepSink) -> str:
    """Make `fbocc/sim-base:<hash>`: debootstrap (tarball cached by recipe hash) + docker import."""
    tag = sim_base_tag(recipe)
    found = bc.image_id(tag)
    if found is not None:
        return found
    settings = _read_recipe(recipe)
    key = tag.split(":", 1)[1]
    tarball = _mkdir(cache_root() / "sim-base") / f"{key}.tar"
    if not tarball.is_file():
        on_step(f"debootstrap {settings['suite']} root filesystem for {tag}")
        _debootstrap(settings, tarball, on_line=on_line)
    on_step(f"docker import {tarball.name} as {tag}")
    repo, _, version = tag.partition(":")
    return bc.import_rootfs(tarball, repo, version, labels={"org.fbocc.recipe": recipe.name})


def _read_recipe(recipe: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for raw in recipe.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    for needed in ("suite", "variant", "packages"):
        if needed not in values:
            raise ConfigError(f"{recipe}: missing '{needed} = ...'", fix="restore the shipped docker/sim/base.txt")
    return values


def host_debian_mirror(suite: str) -> str:
    """The Debian mirror the host's apt uses for `suite` (FBOCC_DEBIAN_MIRROR overrides)."""
    override = os.environ.get("FBOCC_DEBIAN_MIRROR")
    if override:
        return override
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


def _debootstrap(settings: dict[str, str], tarball: Path, *, on_line: StepSink) -> None:
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise EnvironmentCheckError("debootstrap is not installed (needed once, to make the sim base image)",
                                    fix="apt-get install debootstrap (or run `make setup` as root)")
    if os.geteuid() != 0:
        raise EnvironmentCheckError("making the sim base image with debootstrap needs root (once per machine)",
                                    fix="run `sudo make setup`, or this command once as root; later runs reuse it")
    mirror = host_debian_mirror(settings["suite"])
    work = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=tarball.parent))
    try:
        rootfs = work / "rootfs"
        cmd = [debootstrap, f"--variant={settings['variant']}",
               "--include=" + ",".join(settings["packages"].split()), settings["suite"], str(rootfs), mirror]
        _run_logged(cmd, on_line, what="debootstrap")
        shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
        shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
        partial = work / "rootfs.tar"
        _run_logged(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."], on_line, what="tar")
        os.replace(partial, tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_logged(cmd: list[str], on_line: StepSink, *, what: str) -> None:
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
                                    fix="check network access to the Debian mirror / PyPI, then run again")


def ensure_wheels(wheel_list: Path, arch: str, *, on_step: StepSink) -> Path:
    """Download a pinned, hash-checked wheel list for `arch` once; cached by the list's content."""
    key = _sha256_bytes(wheel_list.read_bytes())[:16]
    final = cache_root() / "wheels" / f"{arch}-{key}"
    if (final / ".complete").is_file():
        return final
    on_step(f"downloading CUDA wheels for {arch} ({wheel_list.name})")
    tmp = Path(tempfile.mkdtemp(prefix=f"wheels-{arch}-", dir=_mkdir(final.parent)))
    try:
        platforms = [f"manylinux2014_{arch}", f"manylinux_2_17_{arch}", f"manylinux_2_12_{arch}",
                     f"manylinux2010_{arch}"]
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--require-hashes", "--dest", str(tmp), "-r", str(wheel_list)]
        for plat in platforms:
            cmd += ["--platform", plat]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise EnvironmentCheckError(f"downloading the CUDA wheels in {wheel_list} failed: {last}",
                                        fix="check that PyPI is reachable (pip config, proxy), then run again")
        (tmp / ".complete").write_text(wheel_list.read_text())
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _link_or_copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def _link_tree(src: Path, dest: Path) -> None:
    for path in src.glob("*.whl"):
        _link_or_copy(path, dest / path.name)


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
    return _sha256_bytes(payload.encode())


def check_out_dir(out_dir: Path) -> None:
    """Fail early, before any container, when the output directory cannot receive files."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".fbocc-probe-"):
            pass
    except OSError as exc:
        raise ConfigError(f"output directory {out_dir} is not writable: {exc.strerror or exc}",
                          fix="choose another --out directory, or fix its permissions") from None


def cross_build(req: CrossBuildRequest, *, on_step: StepSink, on_line: StepSink) -> CrossBuildResult:
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


def _cross_build(req: CrossBuildRequest, *, on_step: StepSink, on_line: StepSink) -> CrossBuildResult:
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
    recipe_hash = sha256_file(recipe_dir / RECIPE)

    tag, img_id = ensure_image(profile, req.trt_deb, on_step=on_step, on_line=on_line)
    for left in bc.remove_orphaned_containers():
        on_step(f"removed build container {left.name} ({left.state}), left behind by cross-build pid "
                f"{left.owner_pid} started {left.started_at}, which ended without removing it")
    key = cache_key(profile, img_id, src_hash, recipe_hash)
    store = cache_root() / "cross-build" / key
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
    regs = [s for s in (*CREATOR_SYMBOLS, LOGGER_SYMBOL) if s in report.exported]
    return Artefact(file=lib.name, sha256=sha256_file(lib), size=lib.stat().st_size, machine=report.machine,
                    cubin_archs=report.cubin_archs, ptx_archs=report.ptx_archs, needed=report.needed,
                    registration_symbols=regs)


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
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=_mkdir(store.parent)))
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
