"""`fbocc doctor` against a real Docker daemon and a real sshd target on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.protocol import trt_version_from_banner
from tests.sshd import SshServer

REPO = Path(__file__).resolve().parents[1]
DOUBLE = REPO / "tests" / "doubles" / "trtexec_double.py"


def doctor(*args: str) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    # PYTHONPATH: the subprocess runs this checkout's fbocc, whatever the editable install points at.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "fbocc", "doctor", "--json", *args], capture_output=True,
                          text=True, timeout=180, env=env)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {}, proc.stderr


def checks_of(report: dict, area: str) -> dict[str, dict]:  # type: ignore[type-arg]
    return {c["name"]: c for c in report["checks"] if c["area"] == area}


def local_target(sshd: SshServer, tmp_path: Path, **overrides: str) -> None:
    """fbocc.toml with target `local` in the test sshd; its host key known through ~/.ssh/known_hosts."""
    fields = {"trtexec": str(DOUBLE), "python": sys.executable, **overrides}
    Path("fbocc.toml").write_text(sshd.target_toml("local", tmp_path / "remote-work", **fields))
    known = Path.home() / ".ssh" / "known_hosts"
    known.write_text(sshd.host_pubkey_line + "\n")


@pytest.mark.parametrize(("banner", "version"), [
    ("&&&& RUNNING TensorRT.trtexec [TensorRT v8613] # trtexec --help", "8.6.13"),
    ("&&&& RUNNING TensorRT.trtexec [TensorRT v100800] # trtexec", "10.8.0"),
    ("&&&& RUNNING TensorRT.trtexec [TensorRT v8502] # trtexec", "8.5.2"),
    ("no banner", None),
])
def test_tensorrt_version_from_trtexec_banner(banner: str, version: str | None) -> None:
    assert trt_version_from_banner(banner) == version


@pytest.mark.ssh
@pytest.mark.docker
def test_doctor_target_all_green(isolated_home: Path, sshd: SshServer, tmp_path: Path, docker_daemon: None) -> None:
    local_target(sshd, tmp_path)
    code, report, stderr = doctor("--profile", "sim", "--target", "local")
    target = checks_of(report, "target local")
    assert target["reachable, host key known, login"]["status"] == "ok", target
    assert target["reachable, host key known, login"]["detail"].endswith(f":{sshd.port}")
    assert target["trtexec"]["status"] == "ok"
    assert target["TensorRT version"]["detail"] == "8.6.13"
    assert target["free disk in workdir"]["status"] == "ok"
    assert target["Python 3 and numpy"]["detail"].startswith(f"Python {sys.version.split()[0]}, numpy ")
    host = checks_of(report, "host")
    assert host["Docker daemon"]["status"] == "ok"
    assert host["SSH key or agent"]["detail"] == str(sshd.client_key)
    assert target["CUDA"]["status"] == "ok"  # the loopback target is this machine, which has /usr/local/cuda
    assert code == 0, stderr


@pytest.mark.ssh
def test_doctor_reports_each_missing_piece_with_its_fix(isolated_home: Path, sshd: SshServer,
                                                        tmp_path: Path) -> None:
    local_target(sshd, tmp_path, trtexec="/opt/nowhere/trtexec", python="/opt/nowhere/python3")
    code, report, _ = doctor("--profile", "sim", "--target", "local")
    assert code == 1
    target = checks_of(report, "target local")
    assert target["trtexec"]["status"] == "missing"
    assert "/opt/nowhere/trtexec" in target["trtexec"]["detail"]
    assert "[targets.local]" in target["trtexec"]["fix"]
    assert target["Python 3 and numpy"]["status"] == "missing"
    assert "python3" in target["Python 3 and numpy"]["fix"]


@pytest.mark.ssh
def test_doctor_never_accepts_an_unknown_host_key(isolated_home: Path, sshd: SshServer, tmp_path: Path) -> None:
    local_target(sshd, tmp_path)
    (Path.home() / ".ssh" / "known_hosts").write_text("")
    code, report, _ = doctor("--target", "local")
    assert code == 1
    login = checks_of(report, "target local")["reachable, host key known, login"]
    assert login["status"] == "missing"
    assert "--accept-new" in (login["fix"] or "") + login["detail"]
    assert not Path(".fbocc/known_hosts").exists() or sshd.host_pubkey_line.split()[2] not in Path(
        ".fbocc/known_hosts").read_text()


@pytest.mark.ssh
def test_doctor_unreachable_target(isolated_home: Path, tmp_path: Path) -> None:
    from tests.sshd import free_port

    Path("fbocc.toml").write_text(f'[targets.gone]\nhost = "127.0.0.1"\nport = {free_port()}\n')
    code, report, _ = doctor("--target", "gone")
    assert code == 1
    login = checks_of(report, "target gone")["reachable, host key known, login"]
    assert login["status"] == "missing" and login["fix"]


@pytest.mark.docker
def test_doctor_build_image_present_and_absent(isolated_home: Path, docker_daemon: None) -> None:
    from fbocc.build.profile_image import ensure_image
    from fbocc.config import load_config

    ensure_image(load_config().profile("sim"), None, on_step=lambda _: None, on_line=lambda _: None)
    code, report, _ = doctor("--profile", "sim")
    image = checks_of(report, "host")["build image (sim)"]
    assert image["status"] == "ok" and ": present" in image["detail"]

    Path("fbocc.toml").write_text(
        '[profiles.absent]\ndescription = "test"\ntarget_arch = "aarch64"\n'
        'base_image = "nvcr.io/drive/fbocc-test-absent:0"\ndockerfile = "drive-os.Dockerfile"\n'
        'cuda_version = "11.4"\ncuda_home = "/usr/local/cuda-11.4"\n'
        'cuda_target_dir = "/usr/local/cuda-11.4/targets/aarch64-linux"\ncuda_archs = ["87"]\n'
        'cxx = "aarch64-linux-gnu-g++"\nneeds_login = "nvcr.io"\n')
    code, report, _ = doctor("--profile", "absent")
    assert code == 1
    image = checks_of(report, "host")["build image (absent)"]
    assert image["status"] == "missing"
    assert "docker login nvcr.io" in image["fix"]


@pytest.mark.ssh
def test_doctor_names_the_profile_for_the_target_and_stops_a_library_of_another_major(
        isolated_home: Path, sshd: SshServer, tmp_path: Path) -> None:
    """A TensorRT 11.4.1 target (the trtexec double at that version) and a library built with 10.8.0 headers."""
    wrapper = tmp_path / "trtexec-11"
    wrapper.write_text(f"#!/bin/sh\nFBOCC_DOUBLE_TRT_VERSION=11.4.1 exec {sys.executable} {DOUBLE} \"$@\"\n")
    wrapper.chmod(0o755)
    local_target(sshd, tmp_path, trtexec=str(wrapper))
    out = Path("build/plugins")
    out.mkdir(parents=True)
    (out / "fbocc-build.json").write_text(json.dumps({"profile": "drive-os-6.5.1", "tensorrt_version": "10.8.0"}))
    code, report, _ = doctor("--target", "local")
    target = checks_of(report, "target local")
    assert target["TensorRT version"]["detail"] == "11.4.1"
    fit = target["build profile for this target"]
    assert fit["status"] == "ok" and fit["detail"].startswith("jetpack-7.2.2 (TensorRT 11.4.1"), fit
    abi = target["plugin library's TensorRT"]
    assert abi["status"] == "missing" and code == 1
    assert abi["detail"] == ("build/plugins: built with TensorRT 10.8.0 headers, the target runs TensorRT 11.4.1: "
                             "plugins would not register (the plugin interfaces of TensorRT 10 and 11 differ)")
    assert abi["fix"].startswith("rebuild for this TensorRT: fbocc cross-build --profile jetpack-7.2.2")
