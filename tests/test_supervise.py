"""deploy/supervise.py, the target-side supervisor, run as a real process on this machine (the loopback
target is this machine too): the SSH-level behaviour is in test_link_faults.py."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SUPERVISE = Path(__file__).resolve().parents[1] / "deploy" / "supervise.py"


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-I", "-S", str(SUPERVISE), *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _pgid_line(proc: subprocess.Popen[str]) -> int:
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert line.startswith("fbocc-pgid "), line
    return int(line.split()[1])


def _group_alive(pgid: int) -> bool:
    return bool(_ps_group(pgid))


def _ps_group(pgid: int) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pgid=,stat=,args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.split()[0] == str(pgid) and not line.split()[1].startswith("Z")]


def test_session_end_kills_the_whole_group_within_the_grace_and_removes_the_run_paths(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    marker = tmp_path / "runs" / "r1.fbocc-run"
    # A command that ignores TERM and leaves a background child: the worst case for a clean stop.
    proc = _start("run", "--grace", "1", "--marker", str(marker), "--remove", str(run_dir), "--",
                  "trap '' TERM; sleep 300 & sleep 300; wait")
    pgid = _pgid_line(proc)
    deadline = time.monotonic() + 5
    while len(_ps_group(pgid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_ps_group(pgid)) >= 3, _ps_group(pgid)
    assert json.loads(marker.read_text())["pgid"] == pgid
    started = time.monotonic()
    assert proc.stdin is not None
    proc.stdin.close()  # what sshd does when the connection goes away
    assert proc.wait(10) == 129
    assert time.monotonic() - started < 3.0
    assert not _group_alive(pgid), _ps_group(pgid)
    assert not run_dir.exists() and not marker.exists()
    assert "the SSH session ended" in proc.stderr.read() if proc.stderr else False


def test_no_heartbeat_for_the_given_seconds_counts_as_a_lost_session(tmp_path: Path) -> None:
    proc = _start("run", "--grace", "1", "--heartbeat", "1.5", "--", "sleep 300")
    pgid = _pgid_line(proc)
    assert proc.stdin is not None
    started = time.monotonic()
    for _ in range(4):  # heartbeats keep it going
        proc.stdin.write(".")
        proc.stdin.flush()
        time.sleep(0.5)
    assert proc.poll() is None
    assert proc.wait(10) == 129
    assert 3.0 < time.monotonic() - started < 6.0
    assert not _group_alive(pgid)
    assert "no heartbeat from the host for 1.5 s" in (proc.stderr.read() if proc.stderr else "")


def test_a_finished_command_keeps_its_exit_code_and_leaves_no_background_process(tmp_path: Path) -> None:
    marker = tmp_path / "m.fbocc-run"
    proc = _start("run", "--grace", "1", "--marker", str(marker), "--", "sleep 300 & echo out; exit 3")
    pgid = _pgid_line(proc)
    assert proc.wait(10) == 3  # stdin stays open: the session is alive
    assert proc.stdout is not None and proc.stdout.read() == "out\n"
    assert not _group_alive(pgid) and not marker.exists()


def test_clean_removes_what_a_killed_supervisor_left_and_keeps_live_runs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    (runs / "dead").mkdir(parents=True)
    (runs / "live").mkdir()
    dead = _start("run", "--marker", str(runs / "dead.fbocc-run"), "--remove", str(runs / "dead"),
                  "--owner", json.dumps({"host": "h", "pid": 1}), "--", "sleep 300")
    live = _start("run", "--marker", str(runs / "live.fbocc-run"), "--remove", str(runs / "live"), "--", "sleep 300")
    dead_pgid, live_pgid = _pgid_line(dead), _pgid_line(live)
    while not (runs / "dead.fbocc-run").exists() or not (runs / "live.fbocc-run").exists():
        time.sleep(0.05)
    dead.send_signal(signal.SIGKILL)  # the supervisor itself dies: its command runs on, orphaned
    dead.wait(5)
    assert _group_alive(dead_pgid)
    out = subprocess.run([sys.executable, "-I", "-S", str(SUPERVISE), "clean", "--dir", str(runs)],
                         capture_output=True, text=True, timeout=30).stdout
    report = {e["marker"]: e for e in json.loads(out.split("FBOCC_CLEAN ", 1)[1])}
    assert report["dead.fbocc-run"]["killed"] and not report["dead.fbocc-run"]["running"]
    assert report["dead.fbocc-run"]["owner"] == {"host": "h", "pid": 1}
    assert report["live.fbocc-run"]["running"]
    assert not _group_alive(dead_pgid) and not (runs / "dead").exists() and not (runs / "dead.fbocc-run").exists()
    assert _group_alive(live_pgid) and (runs / "live").is_dir()
    assert live.stdin is not None
    live.stdin.close()
    assert live.wait(10) == 129


def _lock(path: Path, wait: float = 0.0, owner: str = "{}") -> subprocess.Popen[str]:
    return _start("lock", "--file", str(path), "--owner", owner, "--wait", str(wait))


def test_lock_is_exclusive_names_its_holder_and_is_released_whatever_way_the_holder_ends(tmp_path: Path) -> None:
    path = tmp_path / "w" / ".fbocc-lock"
    first = _lock(path, owner=json.dumps({"operation": "pushing", "host": "laptop", "pid": 42}))
    assert first.stdout is not None
    assert first.stdout.readline().startswith("FBOCC_LOCKED ")
    second = _lock(path)
    out, _ = second.communicate(timeout=10)
    assert second.returncode == 75
    holder = json.loads(out.split("FBOCC_LOCK_BUSY ", 1)[1])
    assert holder["operation"] == "pushing" and holder["host"] == "laptop" and holder["pid"] == 42
    assert "since" in holder
    # A waiter gets the lock as soon as the holder's session ends.
    waiter = _lock(path, wait=20)
    assert waiter.stdout is not None
    assert waiter.stdout.readline().startswith("FBOCC_LOCK_WAIT ")
    assert first.stdin is not None
    first.stdin.close()
    assert waiter.stdout.readline().startswith("FBOCC_LOCKED ")
    assert first.wait(5) == 0
    # SIGKILL (no clean-up at all) releases it too: the kernel drops the flock with the process.
    waiter.kill()
    waiter.wait(5)
    third = _lock(path)
    assert third.stdout is not None
    assert third.stdout.readline().startswith("FBOCC_LOCKED ")
    assert third.stdin is not None
    third.stdin.close()
    assert third.wait(5) == 0


def test_lock_under_a_dangling_symlink_workdir_says_so(tmp_path: Path) -> None:
    workdir = tmp_path / "w"
    workdir.symlink_to(tmp_path / "gone")
    proc = _lock(workdir / ".fbocc-lock")
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 2
    assert "is a symbolic link to" in out and "which does not exist" in out


pytestmark = pytest.mark.timeout(60)
