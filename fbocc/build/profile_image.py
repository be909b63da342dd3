"""The build image of a build profile: plan it (a tag keyed by everything that goes into it), tell `fbocc
doctor` whether it is present or buildable, and make it when absent.

The image is `fbocc/build:<profile>-<content key>`, built from `docker/<profile's Dockerfile>` with networking
off. The key covers the Dockerfile, the base image (its id when the daemon has it), the build arguments, the
TensorRT .deb's name and size, and for the `sim` profile its Debian base recipe, pinned CUDA wheel lists and
layout script. The sim base is made here (`debian_base`); the wheels are downloaded once per list content.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from fbocc import config
from fbocc.assets import asset_dir
from fbocc.build import container as bc
from fbocc.build.container import LineSink
from fbocc.build.debian_base import ensure_base_image, read_recipe
from fbocc.config import BuildProfile, Config
from fbocc.errors import ConfigError, EnvironmentCheckError

IMAGE_REPO = "fbocc/build"
SIM_BASE_REPO = "fbocc/sim-base"


# --- planning ---------------------------------------------------------------------------------


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
    return f"{SIM_BASE_REPO}:{read_recipe(recipe).key}"


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
    key = hashlib.sha256("\0".join(key_parts).encode()).hexdigest()[:16]
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


# --- making ------------------------------------------------------------------------------------


def ensure_image(profile: BuildProfile, trt_deb: Path | None, *, on_step: LineSink,
                 on_line: LineSink) -> tuple[str, str]:
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
    with tempfile.TemporaryDirectory(prefix="fbocc-context-", dir=_mkdir(config.cache_dir())) as tmp:
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


def ensure_sim_base(recipe: Path, *, on_step: LineSink, on_line: LineSink) -> str:
    """Make `fbocc/sim-base:<hash>` from its Debian recipe; the root filesystem tarball stays cached."""
    return ensure_base_image(read_recipe(recipe), sim_base_tag(recipe), keep_tarball=True, on_step=on_step,
                             on_line=on_line)


def ensure_wheels(wheel_list: Path, arch: str, *, on_step: LineSink) -> Path:
    """Download a pinned, hash-checked wheel list for `arch` once; cached by the list's content."""
    key = hashlib.sha256(wheel_list.read_bytes()).hexdigest()[:16]
    final = config.cache_dir() / "wheels" / f"{arch}-{key}"
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

