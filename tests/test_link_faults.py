"""Link faults against the real sshd on loopback: a stalled link, Ctrl-C in a stall, sshd killed during a
remote run, two fbocc on one workdir. Every fbocc runs as its own process (`python -m fbocc`), as a user
runs it, so signals and exit codes are the real ones.

The stall bound is configured small here ([targets] stall_timeout_s = 2, connect_timeout_s = 2) so the
tests take seconds; test_default_deadlines_are_what_the_readme_says checks the defaults.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fbocc.config import Target
from fbocc.target.artefacts import collect_artefacts
from fbocc.target.supervision import GRACE_S, LinkTimes
from tests.sshd import SshServer
from tests.test_push import CuttingProxy, make_onnx, make_samples
from tests.test_remote_bench import make_artifacts, upload

pytestmark = [pytest.mark.ssh, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[1]
DOUBLE = REPO / "tests" / "doubles" / "trtexec_double.py"


def _env() -> dict[str, str]:
    # The child runs this checkout (as pytest does), whatever the shared venv's install points at.
    return {**os.environ, "PYTHONPATH": str(REPO), "FBOCC_DEBUG": ""}


def _fbocc(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "fbocc", *args], cwd=cwd, env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _sshd_processes(server: SshServer) -> list[int]:
    """The test's own sshd: its listener and the per-connection sshd processes under it (not the user's)."""
    assert server.proc is not None
    table = subprocess.run(["ps", "-eo", "pid=,ppid=,comm="], capture_output=True, text=True).stdout.split("\n")
    children: dict[int, list[tuple[int, str]]] = {}
    for line in table:
        if line.strip():
            pid, ppid, comm = line.split(None, 2)
            children.setdefault(int(ppid), []).append((int(pid), comm.strip()))
    found, todo = [server.proc.pid], [server.proc.pid]
    while todo:
        for pid, comm in children.get(todo.pop(), []):
            if comm.startswith("sshd"):
                found.append(pid)
                todo.append(pid)
    return found


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


def _one_error(err: str, kind: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith(f"{kind}:") or f": {kind}:" in line
             or line.startswith(f"{kind} ")]
    assert "Traceback" not in err, err
    assert "Socket exception" not in err, err  # paramiko's own stderr line
    assert lines, err
    return err


# --- push over a stalled link ------------------------------------------------------------------------


@pytest.fixture
def slow_push_project(sshd: SshServer, isolated_home: Path, tmp_path: Path) -> Iterator[dict[str, object]]:
    """A project whose push takes several seconds: 4 MiB of weights through a 1 MB/s proxy to the sshd."""
    work = Path.cwd()
    export = work / "fbocc-export"
    export.mkdir()
    make_onnx(export / "fbocc.onnx", weights=1024 * 1024)
    make_samples(export / "samples")
    plugins = work / "build" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "libfbocc_plugins.so").write_bytes(b"\x7fELF" + os.urandom(20000))
    proxy = CuttingProxy(sshd.port, cut_after=None, bytes_per_s=1_000_000)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd.host_pubkey_line + "\n"
                           + sshd.host_pubkey_line.replace(f":{sshd.port} ", f":{proxy.port} ") + "\n")
    workdir = tmp_path / "remote"

    def toml(port: int, **times: float) -> None:
        extra = "".join(f"{k} = {v}\n" for k, v in times.items())
        (work / "fbocc.toml").write_text(
            f'[project]\nknown_hosts = "{known_hosts}"\n\n[targets.orin]\nhost = "127.0.0.1"\nport = {port}\n'
            f'user = "{sshd.user}"\nidentity_file = "{sshd.client_key}"\nworkdir = "{workdir}"\n'
            f'python = "{sys.executable}"\n{extra}')

    toml(proxy.port, stall_timeout_s=2, connect_timeout_s=2)
    try:
        yield {"work": work, "workdir": workdir, "proxy": proxy, "toml": toml, "sshd": sshd}
    finally:
        proxy.close()
        _signal_all(_sshd_processes(sshd), signal.SIGCONT)


def _stall_once_sending(project: dict[str, object]) -> tuple[subprocess.Popen[str], float]:
    """Start a push, and once it is sending the weights, SIGSTOP every process of the test's sshd."""
    workdir = Path(str(project["workdir"]))
    proc = _fbocc(["push-to-target", "orin", "--retries", "1"], Path(str(project["work"])))
    _wait_for(lambda: any(p.stat().st_size > 200_000 for p in (workdir / "objects").glob("*.part"))
              or proc.poll() is not None, 60, "the push to start sending")
    assert proc.poll() is None, proc.communicate()
    _signal_all(_sshd_processes(project["sshd"]), signal.SIGSTOP)  # type: ignore[arg-type]
    return proc, time.monotonic()


def test_stalled_link_ends_the_push_with_one_transfer_error_within_the_bound(
        slow_push_project: dict[str, object]) -> None:
    proc, stalled_at = _stall_once_sending(slow_push_project)
    _, err = proc.communicate(timeout=60)
    took = time.monotonic() - stalled_at
    # stall detected after stall_timeout_s, then one reconnect attempt that times out after connect_timeout_s
    assert took < 2 + 1 * (2 + 2) + 3, f"{took:.1f} s:\n{err}"
    assert proc.returncode == 5, err
    _one_error(err, "transfer error")
    assert re.search(r"stalled|no answer", err), err
    assert "run the same command again" in err and "resumes" in err, err
    # With the link back, the same command resumes and completes.
    _signal_all(_sshd_processes(slow_push_project["sshd"]), signal.SIGCONT)  # type: ignore[arg-type]
    slow_push_project["toml"](slow_push_project["sshd"].port)  # type: ignore[operator,attr-defined]
    again = _fbocc(["push-to-target", "orin"], Path(str(slow_push_project["work"])))
    _out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    workdir = Path(str(slow_push_project["workdir"]))
    assert not list((workdir / "objects").glob("*.part"))
    assert (workdir / "current" / "fbocc-set.json").is_file()


def test_ctrl_c_during_a_stall_ends_the_push_within_2_s(slow_push_project: dict[str, object]) -> None:
    slow_push_project["toml"](slow_push_project["proxy"].port)  # type: ignore[operator,attr-defined]
    proc, _ = _stall_once_sending(slow_push_project)  # default deadlines: the stall is not detected yet
    time.sleep(1.0)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    took = time.monotonic() - started
    assert took < 2.0, f"Ctrl-C took {took:.1f} s:\n{err}"
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Socket exception" not in err, err
    assert "interrupted" in err


# --- a remote run whose connection dies ----------------------------------------------------------------


@pytest.fixture
def bench_target(sshd: SshServer, isolated_home: Path, tmp_path: Path) -> dict[str, object]:
    """fbocc.toml with target `loop` -> the real sshd (trtexec = the test double), a set pushed."""
    remote = tmp_path / "remote"
    remote.mkdir()
    launcher = tmp_path / "bin" / "trtexec"
    launcher.parent.mkdir()
    launcher.write_text(f"#!/bin/sh\nexec {sys.executable} {DOUBLE} \"$@\"\n")
    launcher.chmod(0o755)
    results = tmp_path / "results"
    Path("fbocc.toml").write_text(
        f'[project]\nresults_dir = "{results}"\nknown_hosts = "{sshd.known_hosts}"\n\n'
        + sshd.target_toml("loop", remote, trtexec=str(launcher), python=sys.executable)
        + "stall_timeout_s = 2\n")
    target = Target(name="loop", host=sshd.host, port=sshd.port, user=sshd.user, identity_file=sshd.client_key,
                    workdir=str(remote), trtexec=str(launcher), python=sys.executable)
    upload(target, sshd.known_hosts, make_artifacts(tmp_path / "local"), remote)
    return {"remote": remote, "results": results, "sshd": sshd, "work": Path.cwd()}


def _remote_processes(pattern: str) -> list[str]:
    out = subprocess.run(["pgrep", "-af", "--", pattern], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def test_sshd_killed_during_remote_bench_leaves_no_remote_process_and_the_next_run_is_clean(
        bench_target: dict[str, object]) -> None:
    remote = Path(str(bench_target["remote"]))
    sshd: SshServer = bench_target["sshd"]  # type: ignore[assignment]
    proc = _fbocc(["remote-bench", "loop", "--precision", "fp32", "--duration", "120", "--warmup", "0"],
                  Path(str(bench_target["work"])))
    pattern = f"--loadEngine={remote}"
    _wait_for(lambda: bool(_remote_processes(pattern)) or proc.poll() is not None, 60, "the benchmark to start")
    assert proc.poll() is None, proc.communicate()
    _signal_all(_sshd_processes(sshd), signal.SIGKILL)  # listener and sessions: the target's sshd dies
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 6, err
    _one_error(err, "remote error")
    assert "connection to loop" in err and "lost while benchmarking" in err, err
    assert "SSH session not active" not in err and "cannot start a command" not in err, err
    # The supervisor saw its session end: the benchmark is gone within its grace period.
    _wait_for(lambda: not _remote_processes(pattern), GRACE_S + 3, "the remote benchmark to stop")
    sshd.proc = None
    sshd.start()
    again = _fbocc(["remote-bench", "loop", "--precision", "fp32", "--iterations", "3", "--warmup", "0"],
                   Path(str(bench_target["work"])))
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    leftovers = [p.name for p in (remote / "runs").iterdir()] if (remote / "runs").is_dir() else []
    assert leftovers == [], leftovers


# --- two fbocc on one workdir --------------------------------------------------------------------------


def test_two_pushes_at_once_one_fails_clearly_and_nothing_is_orphaned(
        slow_push_project: dict[str, object]) -> None:
    work = Path(str(slow_push_project["work"]))
    workdir = Path(str(slow_push_project["workdir"]))
    first = _fbocc(["push-to-target", "orin"], work)
    _wait_for(lambda: ((workdir / ".fbocc-lock").exists() and (workdir / ".fbocc-lock").stat().st_size > 0)
              or first.poll() is not None, 30, "the first push to take the lock")
    second = _fbocc(["push-to-target", "orin"], work)
    _, err2 = second.communicate(timeout=60)
    _, err1 = first.communicate(timeout=60)
    assert first.returncode == 0, err1
    assert second.returncode == 6, err2
    _one_error(err2, "remote error")
    assert re.search(r"another fbocc is pushing on orin since \S+ \(pid \d+ on host \S+", err2), err2
    assert "--wait-lock" in err2, err2
    assert not list((workdir / "objects").glob("*.part"))
    # With --wait-lock the second one waits for the first instead.
    first = _fbocc(["push-to-target", "orin", "--verify"], work)
    _wait_for(lambda: (workdir / ".fbocc-lock").stat().st_size > 0 or first.poll() is not None, 30, "the lock")
    second = _fbocc(["push-to-target", "orin", "--wait-lock", "60"], work)
    assert second.wait(90) == 0 and first.wait(90) == 0
    assert not list((workdir / "objects").glob("*.part"))


def test_two_benches_at_once_one_fails_clearly(bench_target: dict[str, object]) -> None:
    work = Path(str(bench_target["work"]))
    remote = Path(str(bench_target["remote"]))
    first = _fbocc(["remote-bench", "loop", "--precision", "fp32", "--duration", "6", "--warmup", "0"], work)
    _wait_for(lambda: bool(_remote_processes(f"--loadEngine={remote}")) or first.poll() is not None, 60,
              "the first benchmark to start")
    second = _fbocc(["remote-bench", "loop", "--precision", "fp32", "--iterations", "3"], work)
    _, err2 = second.communicate(timeout=60)
    _, err1 = first.communicate(timeout=60)
    assert first.returncode == 0, err1
    assert second.returncode == 6, err2
    assert re.search(r"another fbocc is benchmarking on loop since \S+ \(pid \d+ on host \S+", err2), err2


# --- workdir and defaults ------------------------------------------------------------------------------


def test_a_dangling_symlink_workdir_is_named_as_a_broken_link(slow_push_project: dict[str, object]) -> None:
    workdir = Path(str(slow_push_project["workdir"]))
    workdir.symlink_to(workdir.parent / "gone")
    slow_push_project["toml"](slow_push_project["sshd"].port)  # type: ignore[operator,attr-defined]
    proc = _fbocc(["push-to-target", "orin"], Path(str(slow_push_project["work"])))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "symbolic link" in err and "does not exist" in err and str(workdir) in err, err
    assert "File exists" not in err


def test_default_deadlines_are_what_the_readme_says() -> None:
    target = Target(name="t", host="h")
    times = LinkTimes(target.connect_timeout_s, target.stall_timeout_s)
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Guarantees", 1)[1].split("\n## ", 1)[0]
    assert f"connect: {times.connect_timeout_s:g} s" in section
    assert f"stalled link: {times.stall_timeout_s:g} s" in section
    assert f"heartbeat: {times.heartbeat_timeout_s:g} s" in section
    assert f"grace: {GRACE_S:g} s" in section
    assert "Ctrl-C: 2 s" in section
    assert "exit 5" in section and "exit 6" in section




# --- the store under faults ----------------------------------------------------------------------------


def test_reassembling_an_existing_set_never_leaves_current_dangling(sshd: SshServer, tmp_path: Path) -> None:
    from fbocc.target.push import push_artifacts
    from fbocc.target.transport import TargetSession
    from tests.test_push import target_for

    root = tmp_path / "artefacts"
    root.mkdir()
    make_onnx(root / "m.onnx", weights=1024)
    make_samples(root / "samples")
    aset = collect_artefacts(onnx=root / "m.onnx", plugin=None, samples=root / "samples")
    workdir = tmp_path / "remote"
    target = target_for(sshd, workdir, python=sys.executable)
    dangling: list[float] = []
    with TargetSession(target, known_hosts=sshd.known_hosts) as session:
        push_artifacts(session, aset)
        for _ in range(5):
            (workdir / "sets" / aset.set_hash / "fbocc-set.json").unlink()  # forces a re-assembly in place
            done = threading.Event()

            def watch(done: threading.Event = done) -> None:
                while not done.is_set():
                    if not os.path.isdir(workdir / "current"):
                        dangling.append(time.monotonic())

            watcher = threading.Thread(target=watch)
            watcher.start()
            try:
                push_artifacts(session, aset)
            finally:
                done.set()
                watcher.join()
            assert (workdir / "current" / "fbocc-set.json").is_file()
    assert not dangling, f"`current` pointed at nothing {len(dangling)} times"


def test_uploads_left_by_a_dead_push_are_reclaimed_by_the_next_push(sshd: SshServer, tmp_path: Path) -> None:
    from fbocc.target.push import push_artifacts
    from fbocc.target.transport import TargetSession
    from tests.test_push import target_for

    root = tmp_path / "artefacts"
    root.mkdir()
    make_onnx(root / "m.onnx", weights=1024)
    make_samples(root / "samples")
    aset = collect_artefacts(onnx=root / "m.onnx", plugin=None, samples=root / "samples")
    workdir = tmp_path / "remote"
    orphan = workdir / "objects" / ("ab" * 32 + ".part")
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"half of a file from a push that was killed")
    with TargetSession(target_for(sshd, workdir, python=sys.executable), known_hosts=sshd.known_hosts) as session:
        push_artifacts(session, aset)
    assert not orphan.exists()
    assert not list((workdir / "objects").glob("*.part"))


def test_sshd_killed_during_validate_leaves_no_remote_process_and_no_part_folder(
        sshd: SshServer, isolated_home: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime_extensions")
    from fbocc.target.transport import TargetSession
    from tests.test_run_sequence import make_sequence_set
    from tests.test_validate import push_current

    export = tmp_path / "export"
    make_sequence_set(export)
    remote = tmp_path / "remote"
    # The target's python, made slow for the sequence runner only while the flag file exists.
    flag = tmp_path / "slow"
    flag.write_text("")
    slow_python = tmp_path / "bin" / "python3"
    slow_python.parent.mkdir()
    slow_python.write_text(f'#!/bin/sh\nif [ "$1 $2" = "-m deploy.run_sequence" ] && [ -e {flag} ]; then '
                           f"sleep 31.7; fi\nexec {sys.executable} \"$@\"\n")
    slow_python.chmod(0o755)
    target = Target(name="loop", host=sshd.host, port=sshd.port, user=sshd.user, identity_file=sshd.client_key,
                    workdir=str(remote), python=str(slow_python), stall_timeout_s=2)
    with TargetSession(target, known_hosts=sshd.known_hosts) as session:
        push_current(session, export)
    Path("fbocc.toml").write_text(
        sshd.target_toml("loop", remote, python=str(slow_python)) + "stall_timeout_s = 2\n"
        + f'\n[project]\nknown_hosts = "{sshd.known_hosts}"\nresults_dir = "{tmp_path / "results"}"\n')
    proc = _fbocc(["validate", "loop", "--backend", "onnxruntime", "--samples", str(export / "samples")], Path.cwd())
    _wait_for(lambda: bool(_remote_processes("sleep 31.7")) or proc.poll() is not None, 60, "the sequence to start")
    assert proc.poll() is None, proc.communicate()
    _signal_all(_sshd_processes(sshd), signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 6, err
    _one_error(err, "remote error")
    assert "connection to loop lost while validating" in err, err
    _wait_for(lambda: not _remote_processes("sleep 31.7"), GRACE_S + 3, "the remote sequence run to stop")
    assert not list((remote / "runs").glob("*.part")) and not list((remote / "runs").glob("*.fbocc-run"))
    flag.unlink()
    sshd.proc = None
    sshd.start()
    again = _fbocc(["validate", "loop", "--backend", "onnxruntime", "--samples", str(export / "samples")], Path.cwd())
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert not list((remote / "runs").glob("*.part")) and not list((remote / "runs").glob("*.fbocc-run"))


def test_a_run_whose_supervisor_was_killed_is_cleaned_up_by_the_next_run(bench_target: dict[str, object]) -> None:
    work = Path(str(bench_target["work"]))
    remote = Path(str(bench_target["remote"]))
    pattern = f"trtexec_double.py --loadEngine={remote}"  # the benchmark process itself
    proc = _fbocc(["remote-bench", "loop", "--precision", "fp32", "--duration", "120", "--warmup", "0"], work)
    _wait_for(lambda: bool(_remote_processes(pattern)) or proc.poll() is not None, 60, "the benchmark to start")
    bench_pid = int(_remote_processes(pattern)[0].split()[0])
    pgid = os.getpgid(bench_pid)
    supervisor = int(subprocess.run(["ps", "-o", "ppid=", "-p", str(pgid)], capture_output=True,
                                    text=True).stdout.strip())
    assert "fbocc-supervise" in Path(f"/proc/{supervisor}/cmdline").read_text()
    # Both ends die at once (the supervisor killed by the OOM killer, the laptop's fbocc killed): nothing
    # cleans up the run folder; the next fbocc on this workdir must.
    os.kill(supervisor, signal.SIGKILL)
    proc.kill()
    proc.communicate(timeout=30)
    # (whatever of the benchmark still runs, killing an orphaned group is tested in test_supervise.py)
    assert list((remote / "runs").glob("*.fbocc-run"))
    again = _fbocc(["remote-bench", "loop", "--precision", "fp32", "--iterations", "3", "--warmup", "0"], work)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert f"removed the leftovers of an earlier run (benchmarking by pid {proc.pid} on" in err, err
    assert not _remote_processes(pattern)
    assert [p.name for p in (remote / "runs").iterdir()] == []
