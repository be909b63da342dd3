"""`fbocc cross-build` against the real Docker daemon, the real sim build image and the real plugin sources.

The sim image (debootstrap base + CUDA wheels) is built once per machine and cached by content, so
only the first run on a fresh machine pays for it (about 2 minutes here).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from fbocc.assets import asset_dir
from fbocc.build import container as bc
from fbocc.build.cross_build import (
    MANIFEST_NAME,
    CrossBuildRequest,
    check_out_dir,
    cross_build,
    read_manifest,
)
from fbocc.build.elf_check import inspect_library
from fbocc.build.profile_image import ensure_image
from fbocc.cli import run
from fbocc.config import load_config
from fbocc.errors import ConfigError
from tests.dockerd import follow_stderr

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[1]


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def sim_profile(docker_daemon: None):  # type: ignore[no-untyped-def]
    profile = load_config(user_file=Path("/nonexistent"), cwd=Path("/")).profile("sim")
    ensure_image(profile, None, on_step=_quiet, on_line=_quiet)
    return profile


def _copy_plugins(dest: Path) -> Path:
    """A private copy of the shipped plugin sources (a unique tree, so the build cache cannot answer)."""
    src = dest / "plugins"
    shutil.copytree(asset_dir("plugins"), src, ignore=shutil.ignore_patterns("build", "out", ".*"))
    (src / "fbocc-test-nonce.txt").write_text(uuid.uuid4().hex)
    return src


@pytest.fixture
def plugin_copy(tmp_path: Path) -> Path:
    return _copy_plugins(tmp_path)


@pytest.fixture(scope="module")
def first_build(sim_profile, tmp_path_factory):  # type: ignore[no-untyped-def]
    """One real build of fresh sources, shared by the tests that inspect it and re-run it."""
    tmp = tmp_path_factory.mktemp("first-build")
    src = _copy_plugins(tmp)
    out = tmp / "out"
    result = cross_build(CrossBuildRequest(profile=sim_profile, out_dir=out, sources=src),
                         on_step=_quiet, on_line=_quiet)
    return src, out, result


def _docker_client():  # type: ignore[no-untyped-def]
    import docker

    return docker.from_env()  # type: ignore[attr-defined]


def _containers_created_since(since: float) -> int:
    client = _docker_client()
    try:
        events = client.events(since=f"{since:.9f}", until=f"{time.time() + 1:.9f}", decode=True,
                               filters={"type": "container", "event": "create", "label": bc.LABEL})
        return sum(1 for _ in events)
    finally:
        client.close()


def test_sim_build_returns_aarch64_library_for_orin_and_thor_owned_by_the_invoking_user(sim_profile, first_build):
    _, out, result = first_build
    assert not result.cache_hit
    lib = out / "libfbocc_kernels.so"
    assert result.artefacts == [lib]
    report = inspect_library(lib)
    assert report.machine == "EM_AARCH64"
    assert report.cubin_archs == ["110", "87"] and report.ptx_archs == []  # Orin sm_87, Thor sm_110 (CUDA 13)
    assert (lib.stat().st_uid, lib.stat().st_gid) == (os.getuid(), os.getgid())
    manifest = read_manifest(out)
    assert manifest["cache"] == "miss" and manifest["profile"] == "sim"
    assert manifest["cuda_version"] == sim_profile.cuda_version
    assert manifest["artefacts"][0]["sha256"] == result.manifest.artefacts[0].sha256
    assert any("code=sm_87" in flags and "code=sm_110" in flags for flags in manifest["compile_flags"])
    assert [a["cubin_archs"] for a in manifest["artefacts"]] == [["110", "87"]]
    assert manifest["transfer"] == "mount"
    # Nothing but the results lands in the output directory, and no container is left behind.
    assert sorted(p.name for p in out.iterdir()) == sorted([lib.name, MANIFEST_NAME])
    assert bc.count_containers() == 0


def test_unchanged_sources_are_a_cache_hit_in_seconds_without_a_container(first_build, tmp_path):
    plugin_copy, first, _ = first_build
    since = time.time()
    started = time.monotonic()
    code = run(["cross-build", "--profile", "sim", "--sources", str(plugin_copy), "--out", str(tmp_path / "again")])
    elapsed = time.monotonic() - started
    assert code == 0
    assert read_manifest(tmp_path / "again")["cache"] == "hit"
    lib = "libfbocc_kernels.so"
    assert (tmp_path / "again" / lib).read_bytes() == (first / lib).read_bytes()
    assert elapsed < 5.0, f"cache hit took {elapsed:.1f}s"
    assert _containers_created_since(since) == 0


def test_archive_api_mode_works_without_bind_mounts_and_as_another_uid(sim_profile, plugin_copy, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    uid, gid = (os.getuid(), os.getgid()) if os.geteuid() != 0 else (4321, 4321)
    if os.geteuid() == 0:
        os.chown(out, uid, gid)
    since = time.time()
    # One SM is enough to test the transfer (first_build covers sim's Orin + Thor SMs) and halves the compile.
    orin_only = dataclasses.replace(sim_profile, cuda_archs=["87"])
    result = cross_build(CrossBuildRequest(profile=orin_only, out_dir=out, sources=plugin_copy, transfer="archive",
                                           uid=uid, gid=gid), on_step=_quiet, on_line=_quiet)
    assert result.manifest.transfer == "archive"
    lib = out / "libfbocc_kernels.so"
    assert inspect_library(lib).machine == "EM_AARCH64"
    assert (lib.stat().st_uid, lib.stat().st_gid) == (uid, gid)
    client = _docker_client()
    try:
        created = list(client.events(since=f"{since:.9f}", until=f"{time.time() + 1:.9f}", decode=True,
                                     filters={"type": "container", "event": "create", "label": bc.LABEL}))
    finally:
        client.close()
    assert len(created) == 1
    # The container ran as uid:gid, without any bind mount.
    attrs = created[0]["Actor"]["Attributes"]
    assert attrs.get("org.fbocc.profile") == "sim"
    assert bc.count_containers() == 0


def test_compile_error_ends_in_one_build_error_naming_the_file(sim_profile, plugin_copy, tmp_path, capsys):
    broken = plugin_copy / "gridSampler3D" / "gridSampler3D.cu"
    broken.write_text(broken.read_text() + "\nthis is not C++;\n")
    out = tmp_path / "out"
    code = run(["cross-build", "--profile", "sim", "--sources", str(plugin_copy), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 4
    errors = [line for line in captured.err.splitlines() if line.startswith("build error:")]
    assert len(errors) == 1, captured.err
    assert "gridSampler3D.cu" in errors[0]
    assert "fix:" in captured.err
    assert not list(out.glob("*.so")) and not (out / MANIFEST_NAME).exists()
    assert not list(out.glob(".fbocc-staging-*"))
    assert bc.count_containers() == 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_mid_build_removes_the_container_and_leaves_no_artefact(sim_profile, plugin_copy, tmp_path, signum):
    out = tmp_path / "out"
    env = {**os.environ, "FBOCC_DEBUG": ""}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fbocc", "cross-build", "--profile", "sim", "--sources", str(plugin_copy),
         "--out", str(out), "--jobs", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    seen, reader = follow_stderr(proc, until="nvcc")  # the build is compiling in its container
    assert bc.count_containers() == 1  # the build is really running in its container
    proc.send_signal(signum)
    assert proc.wait(60) == 130
    reader.join(10)
    text = "".join(seen)
    assert "interrupted during" in text and "no build container is left" in text, text
    assert bc.count_containers() == 0
    assert not out.exists() or not [p for p in out.iterdir()]


def test_unwritable_output_directory_is_refused_before_any_container(sim_profile, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    since = time.time()
    code = run(["cross-build", "--profile", "sim", "--out", str(blocker / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "not writable" in err and str(blocker / "out") in err
    assert _containers_created_since(since) == 0


def test_read_only_output_directory_is_refused_for_an_unprivileged_user(tmp_path):
    out = tmp_path / "readonly"
    out.mkdir()
    out.chmod(0o555)
    tmp_path.chmod(0o755)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop root (a read-only directory does not stop root), then check
        os.close(read_end)
        code = 0
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            check_out_dir(out)
        except ConfigError as exc:
            os.write(write_end, exc.render().encode())
            code = exc.exit_code
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as fh:
        message = fh.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 2
    assert "not writable" in message and str(out) in message and "fix:" in message


def test_missing_trt_deb_names_the_package_and_where_to_get_it(docker_daemon, tmp_path, capsys):
    code = run(["cross-build", "--profile", "drive-os-6.0.10", "--trt-deb", str(tmp_path / "missing.deb"),
                "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 3
    assert "nv-tensorrt-repo-ubuntu2004-cuda11.4-trt8.6.13.3-d6l-cross-ga-20240202_1-1_amd64.deb" in err
    assert "NVONLINE" in err and "--trt-deb" in err
    assert err.count("environment error:") == 1


def test_missing_ngc_base_image_says_docker_login_and_pull(docker_daemon, tmp_path, capsys):
    profile = load_config(user_file=Path("/nonexistent"), cwd=Path("/")).profile("drive-os-6.0.10")
    assert bc.image_id(profile.base_image) is None, "this test needs a machine without the NGC image"
    deb = tmp_path / str(profile.trt_deb)
    deb.write_bytes(b"!<arch>\n")
    code = run(["cross-build", "--profile", "drive-os-6.0.10", "--trt-deb", str(tmp_path),
                "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 3
    assert f"docker login {profile.needs_login}" in err and f"docker pull {profile.base_image}" in err
    assert "Traceback" not in err and err.count("environment error:") == 1


def test_keep_container_keeps_a_failed_build_for_inspection(sim_profile, plugin_copy, tmp_path, capsys):
    broken = plugin_copy / "bevPoolV2" / "bevPoolV2.cu"
    broken.write_text("#error deliberately broken for this test\n" + broken.read_text())
    code = run(["cross-build", "--profile", "sim", "--sources", str(plugin_copy), "--out", str(tmp_path / "out"),
                "--keep-container"])
    err = capsys.readouterr().err
    assert code == 4
    assert "deliberately broken" in err and "kept for inspection" in err
    client = _docker_client()
    try:
        kept = client.containers.list(all=True, filters={"label": bc.LABEL})
        assert len(kept) == 1 and kept[0].name in err
        assert kept[0].attrs["HostConfig"]["NetworkMode"] == "none"
        assert kept[0].attrs["Config"]["User"] == f"{os.getuid()}:{os.getgid()}"
        mounts = {m["Destination"]: m["RW"] for m in kept[0].attrs["Mounts"]}
        assert mounts["/fbocc/src"] is False and mounts["/fbocc/out"] is True
        kept[0].remove(force=True)
    finally:
        client.close()
