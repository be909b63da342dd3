"""The DRIVE OS build image recipe (docker/drive-os.Dockerfile) with a TensorRT STAND-IN repo .deb.

NVIDIA's TensorRT cross repo .deb cannot be downloaded here, so this test makes a stand-in with the
same shape: a repo package that drops a local apt repository under /var/nv-tensorrt-repo-*/ plus a
sources.list.d entry, serving a `tensorrt-safe-cross-aarch64` package whose only content is a
NvInferVersion.h with stand-in version numbers (no TensorRT code or headers). The stand-in package's
maintainer script checks its inputs strictly: it refuses to install unless apt took it from the local
repository the repo .deb created. Everything else is real: the Dockerfile, the offline (network none)
image build on the real daemon, the content-keyed tag, and the recipe reading the version back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from fbocc.build import container as bc
from fbocc.build.profile_image import ensure_image, plan_image
from fbocc.config import load_config

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]

STANDIN_VERSION = ("8", "6", "13")
REPO_DIR = "/var/nv-tensorrt-repo-standin"


def _deb(root: Path, out: Path) -> Path:
    dpkg_deb = shutil.which("dpkg-deb")
    assert dpkg_deb, "dpkg-deb (package dpkg) is needed to make the stand-in .deb"
    subprocess.run([dpkg_deb, "--root-owner-group", "--build", str(root), str(out)], check=True, capture_output=True)
    return out


def make_standin_repo_deb(tmp: Path, name: str) -> Path:
    """A TensorRT stand-in cross repo .deb named `name` (same layout as NVIDIA's repo packages)."""
    major, minor, patch = STANDIN_VERSION
    inner = tmp / "inner"
    header = inner / "usr/include/aarch64-linux-gnu/NvInferVersion.h"
    header.parent.mkdir(parents=True)
    header.write_text("// TensorRT STAND-IN for fbocc tests: version numbers only, no TensorRT content.\n"
                      f"#define NV_TENSORRT_MAJOR {major}\n#define NV_TENSORRT_MINOR {minor}\n"
                      f"#define NV_TENSORRT_PATCH {patch}\n")
    (inner / "DEBIAN").mkdir()
    (inner / "DEBIAN/control").write_text(
        "Package: tensorrt-safe-cross-aarch64\nVersion: 8.6.13.3-1\nArchitecture: all\n"
        "Maintainer: fbocc tests <tests@fbocc.invalid>\nDescription: TensorRT stand-in for fbocc tests\n")
    preinst = inner / "DEBIAN/preinst"
    preinst.write_text("#!/bin/sh\nset -e\n"
                       f"[ -d {REPO_DIR} ] || {{ echo 'stand-in: repo dir {REPO_DIR} missing' >&2; exit 1; }}\n"
                       f"grep -q 'file:{REPO_DIR}' /etc/apt/sources.list.d/nv-tensorrt-repo-standin.list || "
                       "{ echo 'stand-in: not installed from the local repo' >&2; exit 1; }\n")
    preinst.chmod(0o755)
    pkg = _deb(inner, tmp / "tensorrt-safe-cross-aarch64_8.6.13.3-1_all.deb")

    outer = tmp / "outer"
    repo = outer / REPO_DIR.lstrip("/")
    repo.mkdir(parents=True)
    shutil.copy2(pkg, repo / pkg.name)
    data = pkg.read_bytes()
    (repo / "Packages").write_text(
        "Package: tensorrt-safe-cross-aarch64\nVersion: 8.6.13.3-1\nArchitecture: all\n"
        "Maintainer: fbocc tests <tests@fbocc.invalid>\n"
        f"Filename: ./{pkg.name}\nSize: {len(data)}\nSHA256: {hashlib.sha256(data).hexdigest()}\n"
        "Description: TensorRT stand-in for fbocc tests\n\n")
    lists = outer / "etc/apt/sources.list.d"
    lists.mkdir(parents=True)
    (lists / "nv-tensorrt-repo-standin.list").write_text(f"deb [trusted=yes] file:{REPO_DIR} /\n")
    (outer / "DEBIAN").mkdir()
    (outer / "DEBIAN/control").write_text(
        "Package: nv-tensorrt-repo-standin\nVersion: 1.0\nArchitecture: amd64\n"
        "Maintainer: fbocc tests <tests@fbocc.invalid>\nDescription: TensorRT stand-in repo for fbocc tests\n")
    return _deb(outer, tmp / name)


def test_drive_os_dockerfile_installs_the_cross_packages_offline_from_the_repo_deb(docker_daemon, tmp_path):
    cfg = load_config(user_file=Path("/nonexistent"), cwd=Path("/"))
    sim = cfg.profile("sim")
    quiet = lambda _: None  # noqa: E731
    # The sim image stands in for NVIDIA's base: Debian with dpkg/apt, CUDA and the aarch64 compiler.
    sim_tag, _ = ensure_image(sim, None, on_step=quiet, on_line=quiet)
    drive = cfg.profile("drive-os-6.0.10")
    deb = make_standin_repo_deb(tmp_path, str(drive.trt_deb))
    profile = dataclasses.replace(drive, name="drive-os-standin", base_image=sim_tag, needs_login=None)

    lines: list[str] = []
    tag, image = ensure_image(profile, deb, on_step=lines.append, on_line=lines.append)
    try:
        assert tag == plan_image(profile, deb, base_id=bc.image_id(sim_tag)).tag
        assert tag.startswith("fbocc/build:drive-os-standin-")
        assert any("dpkg -i" in line or "Step" in line for line in lines)
        # The recipe's own version probe reads the installed header back, inside the new image.
        spec = bc.ContainerSpec(image=tag, user="0:0")
        seen: list[str] = []
        with bc.BuildContainer(spec) as box:
            probe = ("dpkg -s tensorrt-safe-cross-aarch64 | sed -n 's/^Status: //p'; sed -n "
                     "'s/^#define NV_TENSORRT_MAJOR //p' /usr/include/aarch64-linux-gnu/NvInferVersion.h")
            code = box.call(["sh", "-c", probe], on_line=seen.append)
        assert code == 0
        assert seen == ["install ok installed", STANDIN_VERSION[0]]
        # Same inputs -> same tag: a second call builds nothing.
        again: list[str] = []
        assert ensure_image(profile, deb, on_step=again.append, on_line=again.append) == (tag, image)
        assert not any(line.startswith("building image") for line in again)
    finally:
        import docker

        client = docker.from_env()  # type: ignore[attr-defined]
        client.images.remove(tag, force=True)
        client.close()
    assert bc.count_containers() == 0
