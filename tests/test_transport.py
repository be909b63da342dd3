"""SSH transport against real OpenSSH servers on loopback: host keys, auth, ssh_config, ProxyJump, verbs."""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import paramiko
import pytest

from fbocc.config import Target
from fbocc.errors import ConfigError, Interrupted, RemoteError, TransferError
from fbocc.target.host_keys import fingerprint
from fbocc.target.transport import TargetSession, connect_all
from tests.sshd import SshServer, free_port, keygen

pytestmark = pytest.mark.ssh


def target_for(server: SshServer, name: str = "orin", **kw: object) -> Target:
    fields: dict[str, object] = {"host": server.host, "port": server.port, "user": server.user,
                                 "identity_file": server.client_key}
    fields.update(kw)
    return Target(name=name, **fields)  # type: ignore[arg-type]


def local_processes(marker: str) -> str:
    """Processes on this machine (the sshd target runs here) whose command line contains `marker`."""
    found = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True).stdout
    return "\n".join(line for line in found.splitlines() if "pgrep" not in line)


def test_run_returns_output_and_exit_code_and_streams_lines(sshd: SshServer) -> None:
    lines: list[str] = []
    with TargetSession(target_for(sshd), known_hosts=sshd.known_hosts) as session:
        result = session.run("echo one; echo two >&2; printf three; exit 3", check=False, on_line=lines.append)
        assert (result.exit_code, result.stdout, result.stderr) == (3, "one\nthree", "two\n")
        assert sorted(lines) == ["one", "three", "two"]
        with pytest.raises(RemoteError, match=r"failed on orin \(exit 7\): boom") as failed:
            session.run("echo boom >&2; exit 7")
        assert "boom" in failed.value.message and "orin" in failed.value.render()
        env = session.run('printf "%s" "$FBOCC_X"', env={"FBOCC_X": "a 'quoted' value; $HOME"})
        assert env.stdout == "a 'quoted' value; $HOME"


def test_run_returns_all_output_of_a_command_that_exits_at_once(sshd: SshServer) -> None:
    # sshd may report the exit status before the last output bytes; none may be lost.
    with TargetSession(target_for(sshd), known_hosts=sshd.known_hosts) as session:
        for _ in range(5):
            result = session.run("seq 1 100000; seq 1 50000 >&2")
            assert result.stdout.splitlines()[-1] == "100000" and len(result.stdout.splitlines()) == 100000
            assert len(result.stderr.splitlines()) == 50000


def test_workdir_relative_to_remote_home_and_paths_with_spaces_and_quotes(sshd: SshServer, tmp_path: Path) -> None:
    with TargetSession(target_for(sshd, workdir="fbocc work"), known_hosts=sshd.known_hosts) as session:
        home = session.run('printf "%s" "$HOME"').stdout
        assert session.workdir() == f"{home}/fbocc work"
    odd = tmp_path / "dir with 'quotes' and spaces"
    with TargetSession(target_for(sshd, workdir=str(odd)), known_hosts=sshd.known_hosts) as session:
        assert session.workdir() == str(odd)
        session.run(f"mkdir -p {session.quote(session.workdir())}")
        local = tmp_path / "payload.bin"
        local.write_bytes(b"\x00\x01payload" * 1000)
        remote = f"{session.workdir()}/it's a file.bin"
        session.put(local, remote)
        assert (odd / "it's a file.bin").read_bytes() == local.read_bytes()
        back = tmp_path / "back" / "copy.bin"
        session.get(remote, back)
        assert back.read_bytes() == local.read_bytes()
        with pytest.raises(TransferError, match="does not exist"):
            session.get(f"{session.workdir()}/missing", tmp_path / "never.bin")
        assert not (tmp_path / "never.bin").exists()


def test_timeout_kills_the_whole_remote_process_group(sshd: SshServer) -> None:
    marker = f"fbocc-test-{uuid.uuid4().hex[:8]}"
    with TargetSession(target_for(sshd), known_hosts=sshd.known_hosts) as session:
        started = time.monotonic()
        with pytest.raises(RemoteError, match="did not finish within 1 s"):
            # A child that ignores the parent's death must die too: the whole group is killed.
            session.run(f"sh -c 'sleep 300; : {marker}' & sh -c 'sleep 301; : {marker}'", timeout=1)
        assert time.monotonic() - started < 10
        deadline = time.monotonic() + 5
        while local_processes(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert local_processes(marker) == ""
        assert session.run("echo still usable").stdout == "still usable\n"


def test_ctrl_c_kills_the_remote_process_group(sshd: SshServer) -> None:
    marker = f"fbocc-test-{uuid.uuid4().hex[:8]}"

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        with TargetSession(target_for(sshd), known_hosts=sshd.known_hosts) as session:
            signal.setitimer(signal.ITIMER_REAL, 1.0)
            with pytest.raises(Interrupted, match="remote process group was killed"):
                session.run(f"sh -c 'sleep 300; : {marker}'")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    deadline = time.monotonic() + 5
    while local_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert local_processes(marker) == ""


def test_unknown_host_is_refused_with_its_fingerprint(sshd: SshServer, tmp_path: Path, isolated_home: Path) -> None:
    project = tmp_path / "project_known_hosts"
    with pytest.raises(RemoteError) as refused:
        TargetSession(target_for(sshd), known_hosts=project).open()
    host_fp = subprocess.run(["ssh-keygen", "-lf", f"{sshd.host_key}.pub"], capture_output=True,
                             text=True, check=True).stdout.split()[1]
    assert "unknown SSH host" in refused.value.message and host_fp in refused.value.message
    assert "--accept-new" in (refused.value.fix or "")
    assert not project.exists()


def test_accept_new_records_the_key_and_later_connections_use_it(sshd: SshServer, tmp_path: Path,
                                                                   isolated_home: Path) -> None:
    project = tmp_path / ".fbocc" / "known_hosts"
    with TargetSession(target_for(sshd), known_hosts=project, accept_new=True) as session:
        assert session.run("echo ok").stdout == "ok\n"
    assert project.read_text().split() == sshd.host_pubkey_line.split()
    with TargetSession(target_for(sshd), known_hosts=project) as session:  # no --accept-new needed now
        assert session.run("echo again").stdout == "again\n"
    assert len(project.read_text().splitlines()) == 1


def test_changed_host_key_is_refused_even_with_accept_new(sshd: SshServer, tmp_path: Path,
                                                           isolated_home: Path) -> None:
    impostor_key = keygen(tmp_path / "other_host_key")
    kind, blob = Path(f"{impostor_key}.pub").read_text().split()[:2]
    project = tmp_path / "known_hosts"
    project.write_text(f"# a comment\n[{sshd.host}]:{sshd.port} {kind} {blob}\n")
    with pytest.raises(RemoteError) as refused:
        TargetSession(target_for(sshd), known_hosts=project, accept_new=True).open()
    message = refused.value.message

    old = fingerprint(paramiko.Ed25519Key(filename=str(impostor_key)))
    new = fingerprint(paramiko.Ed25519Key(filename=str(sshd.host_key)))
    assert "CHANGED" in message and old in message and new in message
    assert f"{project}:2" in message
    assert project.read_text().count("\n") == 2  # nothing recorded


def test_wrong_client_key_is_an_authentication_error(sshd: SshServer, tmp_path: Path, isolated_home: Path) -> None:
    stranger = keygen(tmp_path / "stranger")
    with pytest.raises(RemoteError, match="authentication failed") as failed:
        TargetSession(target_for(sshd, identity_file=stranger), known_hosts=sshd.known_hosts).open()
    assert "authorized_keys" in (failed.value.fix or "")
    with pytest.raises(ConfigError, match="does not exist"):
        TargetSession(target_for(sshd, identity_file=tmp_path / "nope"), known_hosts=sshd.known_hosts).open()


def test_nothing_listening_is_a_clear_connection_error(tmp_path: Path, isolated_home: Path) -> None:
    down = Target(name="down", host="127.0.0.1", port=free_port(), user="root")
    with pytest.raises(RemoteError, match=r"cannot connect to root@127\.0\.0\.1"):
        TargetSession(down, known_hosts=tmp_path / "kh", connect_timeout=3).open()


def test_ssh_config_alias_and_proxyjump_through_a_second_sshd(sshd_factory: Callable[..., SshServer],
                                                              isolated_home: Path, tmp_path: Path) -> None:
    jump = sshd_factory()
    # The target only listens on loopback like the jump host; what proves the jump is used is the jump
    # host's known_hosts/key being required: the target is reached through `direct-tcpip` on the jump host.
    target = sshd_factory(client_key=jump.client_key)
    (isolated_home / ".ssh" / "config").write_text(
        jump.ssh_config("jumpbox") + target.ssh_config("orin-via-jump", proxy_jump="jumpbox"))
    with TargetSession(Target(name="orin-via-jump", host="orin-via-jump"), known_hosts=tmp_path / "kh") as s:
        assert s.run("echo $FBOCC_TEST_SSHD").stdout.strip() == str(target.port)
        assert s.address.endswith(f":{target.port}")
        assert s._conn is not None and s._conn.gateway.port == jump.port  # the hop really went via jumpbox
    # A [targets] entry naming the jump host itself (proxy_jump = alias) works the same.
    via_field = target_for(target, proxy_jump="jumpbox")
    with TargetSession(via_field, known_hosts=target.known_hosts) as s:
        assert s.run("echo $FBOCC_TEST_SSHD").stdout.strip() == str(target.port)
    # An unknown jump host is refused and named.
    (isolated_home / ".ssh" / "config").write_text(
        jump.ssh_config("jumpbox").replace(f"UserKnownHostsFile {jump.known_hosts}", "UserKnownHostsFile /dev/null")
        + target.ssh_config("orin-via-jump", proxy_jump="jumpbox"))
    with pytest.raises(RemoteError, match="unknown SSH host") as refused:
        TargetSession(Target(name="orin-via-jump", host="orin-via-jump"), known_hosts=tmp_path / "kh").open()
    assert f"jump host {jump.host}:{jump.port}" in refused.value.render()


def test_no_sftp_subsystem_is_named(sshd_factory: Callable[..., SshServer], tmp_path: Path) -> None:
    server = sshd_factory()
    server.stop()
    cfg = server.config_text().replace("Subsystem sftp internal-sftp\n", "")
    server.extra_config = []
    server.config_text = lambda: cfg  # type: ignore[method-assign]
    server.start()
    with TargetSession(target_for(server), known_hosts=server.known_hosts) as session:
        with pytest.raises(RemoteError, match="no SFTP subsystem") as failed:
            session.files()
        assert "Subsystem sftp" in (failed.value.fix or "")


def test_connect_all_runs_targets_in_parallel_and_reports_each(sshd_factory: Callable[..., SshServer],
                                                               tmp_path: Path) -> None:
    a, b = sshd_factory(), sshd_factory()
    kh = tmp_path / "kh"
    kh.write_text(a.host_pubkey_line + "\n" + b.host_pubkey_line + "\n")
    down = Target(name="down", host="127.0.0.1", port=free_port(), user=a.user, identity_file=a.client_key)
    started = time.monotonic()
    outcomes = connect_all([target_for(a, "a"), down, target_for(b, "b")],
                           lambda s: s.run("sleep 1; echo $FBOCC_TEST_SSHD").stdout.strip(), known_hosts=kh)
    assert time.monotonic() - started < 2.8  # two 1 s commands overlapped
    assert [o.target.name for o in outcomes] == ["a", "down", "b"]
    assert [o.value for o in outcomes] == [str(a.port), None, str(b.port)]
    assert outcomes[1].error is not None and "cannot connect" in outcomes[1].error.message
