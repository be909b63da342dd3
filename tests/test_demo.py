"""`make demo`: the whole chain on this machine against its own loopback OpenSSH target.

The local-target starter is product code (fbocc/demo.py, no tests/ import): it must give a target fbocc
can reach with strict host-key checking, and leave nothing behind, also when the demo fails.
The end-to-end run is the real `python -m fbocc.demo` (export, sim cross-build in Docker, push,
remote-bench and validate with the onnxruntime backend, report).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fbocc.demo import local_target

REPO = Path(__file__).resolve().parents[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it no longer serves
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


@pytest.mark.ssh
def test_local_target_is_reachable_with_strict_host_keys_and_vanishes_afterwards(tmp_path: Path) -> None:
    from fbocc.target.transport import TargetSession

    with local_target(tmp_path / "wd") as lt:
        assert lt.proc is not None
        pid, root = lt.proc.pid, lt.root
        with TargetSession(lt.target, known_hosts=lt.known_hosts) as session:
            result = session.run(f"{lt.target.python} -c 'import sys; print(sys.version_info[0])'")
            assert result.stdout.strip() == "3"
            assert session.workdir() == str(tmp_path / "wd")
    assert not _alive(pid), "sshd still running after the demo target was torn down"
    assert not root.exists(), "the demo target's keys were left on disk"


@pytest.mark.ssh
def test_local_target_is_torn_down_when_a_stage_fails(tmp_path: Path) -> None:
    pid = root = None
    with pytest.raises(RuntimeError, match="stage failed"), local_target(tmp_path / "wd") as lt:
        assert lt.proc is not None
        pid, root = lt.proc.pid, lt.root
        raise RuntimeError("stage failed")
    assert pid is not None and not _alive(pid)
    assert root is not None and not root.exists()


@pytest.mark.ssh
def test_an_unknown_host_key_is_refused_by_the_demo_target(tmp_path: Path) -> None:
    from fbocc.errors import FboccError
    from fbocc.target.transport import TargetSession

    with local_target(tmp_path / "wd") as lt:
        lt.known_hosts.write_text("")
        with pytest.raises(FboccError, match=r"(?i)host key|known"), TargetSession(
                lt.target, known_hosts=lt.known_hosts):
            pass


@pytest.mark.slow
@pytest.mark.ssh
@pytest.mark.docker
def test_make_demo_end_to_end(tmp_path: Path, docker_daemon: None) -> None:
    work = tmp_path / "demo"
    env = {**os.environ, "FBOCC_DEMO_DIR": str(work)}
    env.pop("FBOCC_BUILD_PROFILE", None)
    try:
        proc = subprocess.run([sys.executable, "-m", "fbocc.demo"], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=1800)
    finally:  # the full-size export and the target's copy of it are ~4 GB: never keep them in pytest's tmp
        for big in ("export", "target", "validation", "precision"):
            shutil.rmtree(work / big, ignore_errors=True)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    assert "There is no TensorRT on this machine" in log
    for stage in ("export", "cross-build --profile sim", "push-to-target", "remote-bench --backend onnxruntime",
                  "validate --backend onnxruntime", "precision graphs fp16 + int8 (host checks)", "report"):
        assert re.search(rf"\] {re.escape(stage)}: .*\(\d+\.\d s\)", log), f"stage {stage!r} did not report: {log}"
    assert re.search(r"validate --backend onnxruntime: PASS", log)
    assert re.search(r"precision graphs fp16 \+ int8 \(host checks\): HOST CHECKS .*fp16 labels agree .*int8 labels "
                     r"agree", log)
    assert "FB-OCC-ONNXRuntime" in (work / "report.md").read_text()
    assert list((work / "results").glob("bench-*.json")) and list((work / "results").glob("validation-*.json"))
    assert "sshd stopped" in log
