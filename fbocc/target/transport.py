"""The one module that talks SSH to targets: Fabric `Connection`s (paramiko underneath).

What a caller gets:

- `TargetSession(target, known_hosts=..., accept_new=...)`: a context manager holding one connection
  (through the ProxyJump chain, if any). Verbs: `run`, `put`, `get`, `remove_tree`, `workdir`, `quote`;
  `files()` (the session's SFTP channel) and `open_files()` (one more, for a worker thread) hand out a
  `FileChannel` (fbocc.target.sftp: upload with offset and pipelining, download with read-ahead, ...).
- `connect_all(targets, fn, ...)`: `fn(session)` for every target in parallel, one `TargetOutcome` each.
- `ssh_stack()`: the SSH library's version and our cipher preference (for benchmark reports).

This module, `host_keys.py` and `sftp.py` are the only ones that import paramiko or fabric; their
exceptions leave them as ours (fbocc.errors): `ConnectionLost` when the link is gone, `RemoteError`
for a failed command or login, `TransferError` (`TargetDiskFull`) for files.

Host names, ports, users, identity files and ProxyJump chains come from the `Target` first and from
`~/.ssh/config` (aliases work as in `ssh`) for anything the target leaves unset.

Host keys are never accepted silently (Fabric's default `AutoAddPolicy` is replaced): a host key must
be in one of the user's `~/.ssh/known_hosts`, the files named by ssh_config `UserKnownHostsFile` /
`GlobalKnownHostsFile`, or the project file (`[project] known_hosts`, default `.fbocc/known_hosts`).
An unknown host is refused unless `accept_new=True` (CLI `--accept-new`), which records the key in the
project file like OpenSSH's `StrictHostKeyChecking accept-new`; a changed key is always refused, naming
both fingerprints and the known_hosts line that holds the old one. Every hop of a ProxyJump chain gets
the same checks.

`run` executes the command under `setsid` in its own process group on the target; on timeout or Ctrl-C
the whole remote group is sent TERM, then KILL, so no remote process survives an interrupted run.
Commands run in the remote user's login shell (`$SHELL -c`); quote every path with `quote()`.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Generic, TypeVar

import paramiko
from fabric import Config as FabricConfig
from fabric import Connection

from fbocc.config import ProjectSettings, Target
from fbocc.errors import ConfigError, ConnectionLost, FboccError, Interrupted, RemoteError
from fbocc.target.host_keys import StrictHostKeyPolicy, changed_key_error, split_paths
from fbocc.target.link import PGID_MARK, HeldCommand, LineBuffer, LinkWatch
from fbocc.target.sftp import FileChannel
from fbocc.target.supervision import LinkTimes, supervised_command

DEFAULT_KNOWN_HOSTS = ProjectSettings().known_hosts
# Big SSH channel windows keep the pipe full on long links; paramiko's 2 MiB default stalls SFTP.
WINDOW_SIZE = 64 * 1024 * 1024
MAX_PACKET = 32768
# paramiko logs the failures of its transport thread ("Socket exception: ...") through `logging`; with no
# handler Python's last-resort handler prints them raw on stderr. fbocc reports those failures itself, once.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

T = TypeVar("T")


@dataclass(frozen=True)
class RemoteResult:
    """What one remote command did."""

    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass(frozen=True)
class TargetOutcome(Generic[T]):
    """One target's result from `connect_all`: `value` when it worked, `error` when it did not."""

    target: Target
    value: T | None = None
    error: FboccError | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def quote(path: str | PurePosixPath) -> str:
    """Shell-quote one word for a remote command line (every remote path goes through this)."""
    return shlex.quote(str(path))


class _AeadFirstTransport(paramiko.Transport):
    """paramiko's Transport preferring AES-GCM: one AEAD pass instead of AES-CTR + a separate HMAC.

    Measured on loopback with pipelined SFTP writes: the cipher is most of paramiko's CPU per byte.
    Every other algorithm stays available for servers without GCM.
    """

    _preferred_ciphers = (
        "aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
        *(c for c in paramiko.Transport._preferred_ciphers if "gcm" not in c),  # type: ignore[attr-defined]
    )


def ssh_stack() -> str:
    """The SSH library and the cipher we ask for first, as benchmark reports name them."""
    return f"paramiko {paramiko.__version__}; fbocc cipher preference {_AeadFirstTransport._preferred_ciphers[0]}"


def _parse_jump(spec: str) -> list[str]:
    hops = [hop.strip() for hop in spec.split(",") if hop.strip()]
    if any(hop.lower() == "none" for hop in hops):
        return []
    return [hop.removeprefix("ssh://") for hop in hops]


class TargetSession:
    """An open SSH connection to one target; use as a context manager."""

    def __init__(self, target: Target, *, known_hosts: Path | None = None, accept_new: bool = False,
                 connect_timeout: float | None = None) -> None:
        self.target = target
        self.project_known_hosts = known_hosts if known_hosts is not None else DEFAULT_KNOWN_HOSTS
        self.accept_new = accept_new
        self.times = LinkTimes(connect_timeout if connect_timeout is not None else target.connect_timeout_s,
                               target.stall_timeout_s)
        self.connect_timeout = self.times.connect_timeout_s
        self.activity = "running a command"
        self.on_open: list[Callable[[], None]] = []  # run after every (re)connect, e.g. to retake a lock
        self._aborted = False
        self._watch: LinkWatch | None = None
        self._conn: Connection | None = None
        self._files: FileChannel | None = None
        self._workdir: str | None = None

    # --- connection -------------------------------------------------------------------------------

    def __enter__(self) -> TargetSession:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def label(self) -> str:
        """How messages name this target."""
        return self.target.name

    @property
    def address(self) -> str:
        """user@host:port as resolved (ssh_config applied)."""
        conn = self._conn or self._build()
        return f"{conn.user}@{conn.host}:{conn.port}"

    def _fabric_config(self) -> FabricConfig:
        # A fresh Config per session so ~/.ssh/config is read with the HOME of this moment.
        return FabricConfig(overrides={"load_ssh_configs": True})

    def _build(self) -> Connection:
        t = self.target
        cfg = self._fabric_config()
        connect_kwargs: dict[str, Any] = {"banner_timeout": self.connect_timeout,
                                          "auth_timeout": self.connect_timeout}
        if t.identity_file is not None:
            key = Path(t.identity_file).expanduser()
            if not key.is_file():
                raise ConfigError(f"identity file {key} does not exist", where=f"targets.{t.name}.identity_file",
                                  fix="point identity_file at your private key (or remove it to use ssh_config/agent)")
            connect_kwargs["key_filename"] = [str(key)]
        gateway: Connection | None = None
        if t.proxy_jump:
            for hop in _parse_jump(t.proxy_jump):
                gateway = Connection(hop, config=cfg.clone(), gateway=gateway,
                                     connect_timeout=self.connect_timeout)
        kwargs: dict[str, Any] = {"config": cfg, "connect_kwargs": connect_kwargs,
                                  "connect_timeout": self.connect_timeout}
        if t.port is not None:
            kwargs["port"] = t.port
        if t.user is not None:
            kwargs["user"] = t.user
        if gateway is not None:
            kwargs["gateway"] = gateway
        return Connection(t.host, **kwargs)

    def _chain(self, conn: Connection) -> list[Connection]:
        """The connection and its gateways, outermost jump host first."""
        chain = [conn]
        while isinstance(chain[-1].gateway, Connection):
            chain.append(chain[-1].gateway)
        return list(reversed(chain))

    def _known_host_files(self, conn: Connection) -> list[Path]:
        files = [Path.home() / ".ssh" / "known_hosts"]
        files += split_paths(conn.ssh_config.get("userknownhostsfile"))
        files += split_paths(conn.ssh_config.get("globalknownhostsfile")) or [Path("/etc/ssh/ssh_known_hosts")]
        files.append(self.project_known_hosts)
        unique: list[Path] = []
        for f in files:
            if f not in unique:
                unique.append(f)
        return unique

    def open(self) -> None:
        """Connect (every hop checked against known_hosts); raise RemoteError naming the failing hop."""
        if self._aborted:
            raise Interrupted(f"interrupted; the connection to {self.label} was closed")
        if self._conn is not None and self._conn.is_connected:
            return
        self.close()
        conn = self._build()
        chain = self._chain(conn)
        try:
            for hop in chain:
                files = self._known_host_files(hop)
                label = self.label if hop is conn else f"{self.label} (jump host {hop.host}:{hop.port})"
                hop.client.set_missing_host_key_policy(
                    StrictHostKeyPolicy(files, self.project_known_hosts, self.accept_new, label))
                for f in files:
                    if f.is_file():
                        hop.client.load_system_host_keys(str(f))
                hop.connect_kwargs.setdefault("transport_factory", _AeadFirstTransport)
                self._open_hop(hop, files, label)
        except BaseException:
            for hop in reversed(chain):
                hop.close()
            raise
        self._conn = conn
        self._watch = LinkWatch(conn.transport, self.times)
        for hook in list(self.on_open):
            hook()

    def _open_hop(self, hop: Connection, files: list[Path], label: str) -> None:
        where = f"{hop.user}@{hop.host}:{hop.port}"
        started = time.monotonic()
        try:
            hop.open()
        except FboccError:
            raise
        except (paramiko.SSHException, OSError, EOFError) as exc:
            timed_out = time.monotonic() - started >= self.connect_timeout - 0.1
            raise self._hop_error(exc, hop, files, label, where, timed_out) from exc

    def _hop_error(self, exc: BaseException, hop: Connection, files: list[Path], label: str, where: str,
                   timed_out: bool) -> FboccError:
        """One error naming the failing hop and the fix."""
        reach = "check that the target is powered and reachable (network, VPN, ProxyJump)"
        if isinstance(exc, paramiko.BadHostKeyException):
            return changed_key_error(exc, files, hop.host, int(hop.port), label)
        if isinstance(exc, paramiko.AuthenticationException):
            return RemoteError(f"authentication failed for {where}: {exc}", where=label,
                               fix="check identity_file / IdentityFile and that its public key is in the target's "
                               "~/.ssh/authorized_keys (and the user name)")
        if isinstance(exc, paramiko.ChannelException):
            return RemoteError(f"the jump host could not open a connection to {hop.host}:{hop.port}: {exc}",
                               where=label, fix="check the target's host/port as seen from the jump host and that "
                               "it is up")
        if isinstance(exc, TimeoutError) or timed_out:
            # paramiko words a handshake that ran out of time in many ways ("No existing session", ...)
            return RemoteError(f"connecting to {where} timed out after {self.connect_timeout:g} s", where=label,
                               fix=reach)
        if isinstance(exc, (OSError, EOFError)):
            return RemoteError(f"cannot connect to {where}: {getattr(exc, 'strerror', None) or exc}", where=label,
                               fix="check host, port and that sshd runs on the target (ssh_config alias, [targets] "
                               "entry)")
        return RemoteError(f"SSH handshake with {where} failed: {exc}", where=label,
                           fix="check that the port speaks SSH and that a usable key is configured")

    def close(self) -> None:
        """Close the SFTP session, the connection and every jump-host connection."""
        if self._watch is not None:
            self._watch.stop()
        if self._files is not None:
            self._files.close()
            self._files = None
        if self._conn is not None:
            for hop in reversed(self._chain(self._conn)):
                with contextlib.suppress(Exception):
                    hop.close()
            self._conn = None

    def abort(self) -> None:
        """Close the connection for good (Ctrl-C from another thread): blocked calls fail now, none reconnects.

        The target's supervisors see their sessions end and stop the remote work.
        """
        self._aborted = True
        self.close()

    def reconnect(self) -> None:
        """Drop the connection (if any) and open a fresh one."""
        self.close()
        self.open()

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.is_connected

    @property
    def stalled(self) -> str | None:
        """Why the link was given up as stalled (None when it was not)."""
        return self._watch.stalled if self._watch is not None else None

    @contextlib.contextmanager
    def doing(self, activity: str) -> Iterator[None]:
        """Name what this session is doing, for the message when the connection is lost meanwhile."""
        previous, self.activity = self.activity, activity
        try:
            yield
        finally:
            self.activity = previous

    def lost(self, exc: BaseException | None = None, *, activity: str | None = None) -> ConnectionLost:
        """The error for a connection that went away (or stalled) while this session was doing something."""
        cause = self.stalled or (str(exc).strip() if exc is not None and str(exc).strip() else "the connection closed")
        return ConnectionLost(f"connection to {self.label} lost while {activity or self.activity}: {cause}",
                              where=self.label,
                              fix="check that the target is up and reachable, then run the same command again")

    @property
    def _transport(self) -> paramiko.Transport:
        if self._conn is None or self._conn.transport is None:
            self.open()
        assert self._conn is not None and self._conn.transport is not None
        return self._conn.transport

    # --- verbs -------------------------------------------------------------------------------------

    @staticmethod
    def quote(path: str | PurePosixPath) -> str:
        """Shell-quote one word for a remote command line."""
        return quote(path)

    def workdir(self) -> str:
        """The absolute remote workdir: `target.workdir`, a relative one taken under the remote $HOME."""
        if self._workdir is None:
            wd = self.target.workdir
            if wd.startswith("~/") or wd == "~":
                wd = wd[2:]
            if wd.startswith("/"):
                self._workdir = str(PurePosixPath(wd))
            else:
                home = self._remote_home()
                if not home.startswith("/"):
                    raise RemoteError(f"cannot tell the remote home directory (got {home!r})", where=self.label,
                                      fix="set an absolute workdir in [targets] for this target")
                self._workdir = str(PurePosixPath(home) / wd) if wd else home
        return self._workdir

    def _remote_home(self) -> str:
        # SFTP's realpath(".") is the login directory and starts no shell (cheaper than `echo $HOME`).
        try:
            return self.files().home()
        except FboccError:
            return self.run('printf "%s" "$HOME"', timeout=30).stdout.strip()

    def run(self, command: str, *, timeout: float | None = None, check: bool = True,
            on_line: Callable[[str], None] | None = None, env: dict[str, str] | None = None,
            marker: str | None = None, remove: tuple[str, ...] = ()) -> RemoteResult:
        """Run `command` on the target in its own process group, under deploy/supervise.py, and wait for it.

        `on_line` gets every line of stdout and stderr as it arrives. `check=True` raises RemoteError
        (naming host, command, exit code and the end of stderr) on a non-zero exit. On timeout or
        KeyboardInterrupt the remote process group is killed before this returns (within about 2 s).
        The supervisor kills the group by itself when this session ends or stops sending heartbeats;
        `marker` records the run (for a later clean-up) and `remove` lists paths it deletes then.
        A lost or stalled connection is `ConnectionLost`, naming `self.activity`.
        """
        inner = command
        if env:
            inner = "".join(f"export {k}={quote(v)}; " for k, v in env.items()) + command
        wrapped = supervised_command(self.target.python, inner, self.times, marker=marker, remove=remove,
                                     operation=self.activity)
        try:
            chan = self._open_channel()
            chan.exec_command(wrapped)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise self.lost(exc) from exc
        if self._watch is not None:
            self._watch.add(chan)
        out = LineBuffer(on_line)
        errb = LineBuffer(on_line, pgid_mark=True)
        started = time.monotonic()
        try:
            while True:
                busy = False
                if chan.recv_ready():
                    out.feed(chan.recv(65536))
                    busy = True
                if chan.recv_stderr_ready():
                    errb.feed(chan.recv_stderr(65536))
                    busy = True
                if not busy:
                    # sshd may send the exit status before the last output: the end is EOF (or close),
                    # which comes after every byte of stdout and stderr.
                    if (chan.eof_received or chan.closed) and not chan.recv_ready() and not chan.recv_stderr_ready():
                        break
                    if timeout is not None and time.monotonic() - started > timeout:
                        self._kill_group(errb.pgid, chan)
                        raise RemoteError(f"{self._step(command)} on {self.label} did not finish within "
                                          f"{timeout:g} s; its remote process group was killed", where=self.label,
                                          fix="raise the timeout or check why the command hangs")
                    time.sleep(0.01)
            status = chan.recv_exit_status()
        except KeyboardInterrupt:
            self._kill_group(errb.pgid, chan)
            raise Interrupted(f"interrupted while {self.activity} on {self.label}; "
                              "the remote process group was killed") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise self.lost(exc) from exc
        finally:
            if self._watch is not None:
                self._watch.discard(chan)
        transport = chan.get_transport()
        if status == -1 and (self.stalled or transport is None or not transport.is_active()):
            raise self.lost()
        chan.close()
        result = RemoteResult(command, status, out.finish(), errb.finish())
        if check and status != 0:
            said = [line.strip() for line in result.stderr.splitlines() if line.strip()][-2:]
            raise RemoteError(f"{self._step(command)} failed on {self.label} (exit {status})"
                              + (": " + " / ".join(said) if said else ""), where=self.label,
                              fix="see the remote output above" if on_line else
                              "check the target (free space, permissions, the tools named above) and run the "
                              "same command again")
        return result

    def _step(self, command: str) -> str:
        """How a message names a remote command: itself when short, else what the session was doing."""
        if "\n" not in command and len(command) <= 100:
            return f"`{command}`"
        return f"a remote step ({self.activity})"

    def hold(self, command: str) -> HeldCommand:
        """Start `command` and keep it running, heartbeats fed, until `release()` or the session ends."""
        try:
            chan = self._open_channel()
            chan.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise self.lost(exc) from exc
        if self._watch is not None:
            self._watch.add(chan)
        return HeldCommand(chan, self._watch)

    def _open_channel(self) -> paramiko.Channel:
        """A session channel, or an error within the stall deadline (paramiko's own default is an hour)."""
        return self._transport.open_session(timeout=self.times.stall_timeout_s)

    def _kill_group(self, pgid: int | None, chan: paramiko.Channel) -> None:
        """Stop a running command's process group, in at most about 2 s whatever the link does.

        Closing the channel is enough for a supervised command (its supervisor sees EOF and stops the
        group); the explicit kill covers targets without Python, on a short deadline in the background.
        """
        deadline = time.monotonic() + 0.3
        while pgid is None and time.monotonic() < deadline and not chan.closed:
            if chan.recv_stderr_ready():
                line = chan.recv_stderr(256)
                if line.startswith(PGID_MARK):
                    pgid = int(line[len(PGID_MARK):].split(b"\n")[0])
            else:
                time.sleep(0.02)
        with contextlib.suppress(Exception):
            chan.close()
        if pgid is None or not self.connected or self.stalled:
            return
        g = f"-{pgid}"
        killer = (f"kill -TERM -- {g} 2>/dev/null || exit 0; i=0; while [ $i -lt 10 ]; do "
                  f"kill -0 -- {g} 2>/dev/null || exit 0; sleep 0.1; i=$((i+1)); done; kill -KILL -- {g} 2>/dev/null;"
                  " exit 0")

        def kill() -> None:
            with contextlib.suppress(Exception):  # best effort: the supervisor is the guarantee
                kill_chan = self._transport.open_session(timeout=1.0)
                kill_chan.exec_command(killer)
                kill_chan.status_event.wait(1.2)
                kill_chan.close()

        worker = threading.Thread(target=kill, name="fbocc-kill-group", daemon=True)
        worker.start()
        worker.join(1.2)

    def files(self) -> FileChannel:
        """The session's SFTP channel (opened once); RemoteError when the target's sshd has no SFTP."""
        if self._files is None or self._files.closed:
            self._files = self.open_files()
        return self._files

    def open_files(self, *, timeout: float | None = None) -> FileChannel:
        """A new SFTP channel (one per thread for parallel transfers); the caller closes it.

        `timeout`: seconds without progress before a read or write raises (default: the stall deadline).
        """
        transport = self._transport
        try:
            # SFTPClient.from_transport, with the stall deadline on opening the channel (paramiko's is an hour)
            chan = transport.open_session(window_size=WINDOW_SIZE, max_packet_size=MAX_PACKET,
                                          timeout=self.times.stall_timeout_s)
            chan.settimeout(timeout if timeout is not None else self.times.stall_timeout_s)
            chan.invoke_subsystem("sftp")
            client = paramiko.SFTPClient(chan)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if not transport.is_active():
                raise ConnectionLost(f"the connection to {self.label} was lost opening SFTP: {exc}",
                                     where=self.label, fix="check the link to the target and re-run") from exc
            raise RemoteError(f"the target {self.address} offers no SFTP subsystem ({exc})", where=self.label,
                              fix="enable it in the target's /etc/ssh/sshd_config: "
                              "`Subsystem sftp internal-sftp`, then restart sshd") from exc
        if client is None:
            raise RemoteError(f"the target {self.address} offers no SFTP subsystem", where=self.label,
                              fix="enable `Subsystem sftp internal-sftp` in the target's sshd_config")
        channel = client.get_channel()
        if channel is not None:
            channel.settimeout(timeout if timeout is not None else self.times.stall_timeout_s)
        return FileChannel(client, self.label, lambda: self.connected)

    def put(self, local: Path, remote: str) -> None:
        """Copy one local file to `remote` (a temporary name first, renamed when complete)."""
        tmp = f"{remote}.fbocc-tmp"
        files = self.files()
        try:
            files.upload(Path(local), tmp)
            files.rename(tmp, remote)
        except FboccError:
            if self.connected:
                with contextlib.suppress(FboccError):
                    files.remove(tmp)
            raise

    def get(self, remote: str, local: Path) -> None:
        """Copy one remote file to `local` (read-ahead; via a temporary file, nothing half-written at `local`)."""
        self.files().download(remote, Path(local))

    def remove_tree(self, remote: str) -> None:
        """Remove a remote directory tree over SFTP (no remote process); `rm -rf` when SFTP cannot."""
        try:
            self.files().remove_tree(remote)
        except ConnectionLost:
            raise
        except FboccError:
            self.run(f"rm -rf -- {quote(remote)}", timeout=60, check=False)


def connect_all(targets: Sequence[Target], fn: Callable[[TargetSession], T], *,
                known_hosts: Path | None = None, accept_new: bool = False, connect_timeout: float | None = None,
                max_workers: int | None = None) -> list[TargetOutcome[T]]:
    """Run `fn(session)` for every target in parallel (one connection each); outcomes in target order.

    A target that fails (FboccError) does not stop the others; its outcome carries the error. Ctrl-C
    closes every connection (their remote supervisors stop the remote work) and raises Interrupted at once.
    """
    sessions: list[TargetSession] = []

    def one(target: Target) -> TargetOutcome[T]:
        started = time.monotonic()
        try:
            session = TargetSession(target, known_hosts=known_hosts, accept_new=accept_new,
                                    connect_timeout=connect_timeout)
            sessions.append(session)
            with session:
                value = fn(session)
            return TargetOutcome(target, value=value, seconds=time.monotonic() - started)
        except FboccError as exc:
            return TargetOutcome(target, error=exc, seconds=time.monotonic() - started)

    if len(targets) == 1:
        return [one(targets[0])]
    pool = ThreadPoolExecutor(max_workers=max_workers or len(targets), thread_name_prefix="fbocc-target")
    futures = [pool.submit(one, t) for t in targets]
    try:
        while not all(f.done() for f in futures):
            wait(futures, timeout=0.2)
    except KeyboardInterrupt:
        for session in list(sessions):
            session.abort()
        pool.shutdown(wait=False, cancel_futures=True)
        raise Interrupted(f"interrupted; the connections to {', '.join(t.name for t in targets)} were closed "
                          "and their remote work stopped", fix="run the same command again") from None
    pool.shutdown()
    return [f.result() for f in futures]
