"""The one module that talks to the Docker engine (through the docker SDK, never the docker CLI).

`BuildContainer` owns a container for its lifetime, in the spirit of cibuildwheel's `OCIContainer`:
`__enter__` creates and starts it, `__exit__` always removes it (kept only when asked), and callers
use small verbs: `call`, `copy_into`, `copy_out`. Image verbs (`image_id`, `build_image`,
`import_rootfs`) and `docker_status()` complete the surface; nothing else in fbocc imports docker.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any

from fbocc.errors import BuildError, EnvironmentCheckError, Interrupted

LABEL = "org.fbocc.cross-build"
# Who made a build container, so that a later run can tell a crashed run's leftover from a live build.
OWNER_PID, OWNER_START, OWNER_HOST = "org.fbocc.owner-pid", "org.fbocc.owner-start", "org.fbocc.owner-host"
STARTED_AT, KEPT = "org.fbocc.started-at", "org.fbocc.keep"
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
DOCKER_FIX = ("start a Docker daemon (`make setup`, or `sudo systemctl start docker`), "
              "or point DOCKER_HOST at one")

LineSink = Callable[[str], None]


def _client(timeout: int = 600) -> Any:
    from docker.errors import DockerException

    import docker

    try:
        client = docker.from_env(timeout=timeout)  # type: ignore[attr-defined]
        client.ping()
    # ssh:// daemons fail through paramiko/socket errors, not only DockerException.
    except (DockerException, OSError, ValueError, ImportError) as exc:
        raise EnvironmentCheckError(f"no Docker daemon answers at {daemon_address()}: {_short(exc)}",
                                    fix=DOCKER_FIX) from None
    return client


def daemon_address() -> str:
    """Where the Docker daemon is expected: DOCKER_HOST, else the default socket."""
    return os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET


def _daemon_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=5)  # type: ignore[attr-defined]
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # any failure to reach it means: it does not answer
        return False


def daemon_lost(what: str, exc: BaseException, container: str | None = None) -> EnvironmentCheckError:
    """The error for a daemon that stopped answering in the middle of an operation."""
    left = (f"; the build container {container} may be left behind: the next cross-build removes it"
            if container else "")
    return EnvironmentCheckError(
        f"lost the connection to the Docker daemon at {daemon_address()} while {what} ({_short(exc)}){left}",
        fix="start the Docker daemon again (`sudo systemctl start docker`, or `make setup`) and run the same "
            "command again")


# Errors a call into the SDK raises when the daemon goes away: requests' errors are OSErrors, urllib3's
# protocol errors (a stream cut mid-read) are not.
def _connection_errors() -> tuple[type[BaseException], ...]:
    from docker.errors import DockerException
    from urllib3.exceptions import HTTPError

    return (OSError, DockerException, HTTPError)


@contextlib.contextmanager
def _daemon_guard(what: str, container: str | None = None) -> Iterator[None]:
    """Turn a failure into `daemon_lost` when the daemon no longer answers; other failures pass unchanged."""
    try:
        yield
    except _connection_errors() as exc:
        if _daemon_answers():
            raise
        raise daemon_lost(what, exc, container) from None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def docker_status() -> tuple[bool, str]:
    """(True, server version) when a Docker daemon answers, else (False, reason with the fix)."""
    try:
        client = _client(timeout=10)
    except EnvironmentCheckError as exc:
        return False, exc.message
    try:
        return True, str(client.version().get("Version", "unknown"))
    finally:
        client.close()


def daemon_is_remote(client: Any = None) -> bool:
    """True when the daemon cannot see this machine's files (ssh:// or tcp:// DOCKER_HOST or context)."""
    own = client is None
    client = client or _client(timeout=10)
    try:
        base = str(client.api.base_url)
    finally:
        if own:
            client.close()
    # The SDK shows a local unix socket as http+docker://localhost (or localunixsocket).
    return not (base.startswith("http+docker://") or base.startswith("npipe://"))


def image_id(tag: str) -> str | None:
    """The id of a local image, or None when the daemon does not have it."""
    from docker.errors import ImageNotFound

    client = _client(timeout=30)
    try:
        return str(client.images.get(tag).id)
    except ImageNotFound:
        return None
    finally:
        client.close()


def count_containers(label: str = LABEL) -> int:
    """How many containers (any state) carry our label: tests and `doctor` use it to spot leftovers."""
    client = _client(timeout=30)
    try:
        return len(client.containers.list(all=True, filters={"label": label}))
    finally:
        client.close()


def build_image(context_dir: Path, dockerfile: str, tag: str, *, buildargs: Mapping[str, str],
                labels: Mapping[str, str], on_line: LineSink) -> str:
    """Build `tag` from `context_dir` with networking off, streaming the build output; return its id."""
    client = _client(timeout=3600)
    try:
        last_error: str | None = None
        with _daemon_guard(f"building image {tag}"):
            stream = client.api.build(path=str(context_dir), dockerfile=dockerfile, tag=tag,
                                      buildargs=dict(buildargs), labels=dict(labels), network_mode="none",
                                      rm=True, forcerm=True, decode=True, pull=False)
            for chunk in stream:
                if "stream" in chunk:
                    for line in str(chunk["stream"]).splitlines():
                        if line.strip():
                            on_line(line)
                if "error" in chunk:
                    last_error = str(chunk.get("error", "")).strip()
        if last_error is not None:
            raise BuildError(f"building image {tag} from {context_dir / dockerfile} failed: {last_error}",
                             fix="read the build output above; the step that failed is named there")
        found = client.images.get(tag)
        return str(found.id)
    finally:
        client.close()


def import_rootfs(tarball: Path, repository: str, tag: str, *, labels: Mapping[str, str] | None = None) -> str:
    """`docker import` a root filesystem tarball as `repository:tag`; return the image id."""
    client = _client(timeout=3600)
    try:
        changes = [f'LABEL {k}="{v}"' for k, v in (labels or {}).items()]
        with _daemon_guard(f"importing {tarball.name} as {repository}:{tag}"):
            client.api.import_image_from_file(str(tarball), repository=repository, tag=tag, changes=changes)
        return str(client.images.get(f"{repository}:{tag}").id)
    finally:
        client.close()


@dataclass(frozen=True)
class Mount:
    """A host directory made visible in the container (bind mount, or copied in/out via the archive API)."""

    host: Path
    container: str
    read_only: bool = True


@dataclass
class ContainerSpec:
    """What the build container looks like: image, user, mounts, environment."""

    image: str
    user: str
    mounts: list[Mount] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    labels: dict[str, str] = field(default_factory=dict)
    use_archive: bool = False
    keep: bool = False
    name: str | None = None


class BuildContainer:
    """A started container with networking off, removed on exit (success, error or Ctrl-C) unless `keep`."""

    def __init__(self, spec: ContainerSpec) -> None:
        self.spec = spec
        self.name = spec.name or f"fbocc-build-{uuid.uuid4().hex[:12]}"
        self._client: Any = None
        self._container: Any = None
        self._old_term: Any = None

    # -- lifetime -------------------------------------------------------------------------------
    def __enter__(self) -> BuildContainer:
        self._client = _client(timeout=3600)
        self._install_term_handler()
        spec = self.spec
        volumes = {} if spec.use_archive else {
            str(m.host.resolve()): {"bind": m.container, "mode": "ro" if m.read_only else "rw"}
            for m in spec.mounts
        }
        try:
            with _daemon_guard("starting the build container", self.name):
                self._start(volumes)
        except BaseException:
            self._remove(quiet=True)
            self._restore_term_handler()
            self._client.close()
            raise
        return self

    def _start(self, volumes: dict[str, dict[str, str]]) -> None:
        spec = self.spec
        self._container = self._client.containers.create(
            spec.image,
            command=["sleep", "infinity"],
            name=self.name,
            user=spec.user,
            environment=spec.environment,
            working_dir=spec.workdir,
            labels={LABEL: "1", **owner_labels(keep=spec.keep), **spec.labels},
            network_disabled=True,
            network_mode="none",
            volumes=volumes,
            init=True,
            detach=True,
        )
        self._container.start()
        if spec.use_archive:
            self._seed_mount_points()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if not self.spec.keep:
                # With an error already on its way, a dead daemon must not replace it with a second one.
                self._remove(quiet=exc is not None)
        finally:
            self._restore_term_handler()
            if self._client is not None:
                self._client.close()

    def _remove(self, *, quiet: bool = False) -> None:
        if self._container is None:
            return
        # A second Ctrl-C must not abort the cleanup that the first one started.
        previous = _ignore_sigint()
        try:
            from docker.errors import NotFound

            with contextlib.suppress(NotFound), _daemon_guard("removing the build container", self.name):
                self._container.remove(force=True, v=True)
            self._container = None
        except EnvironmentCheckError:
            if not quiet:
                raise
        finally:
            _restore_sigint(previous)

    def _install_term_handler(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def on_term(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        self._old_term = signal.signal(signal.SIGTERM, on_term)

    def _restore_term_handler(self) -> None:
        if self._old_term is not None:
            signal.signal(signal.SIGTERM, self._old_term)
            self._old_term = None

    @property
    def id(self) -> str:
        """The container id (for --keep-container messages)."""
        return str(self._container.id) if self._container is not None else ""

    # -- verbs ----------------------------------------------------------------------------------
    def call(self, argv: list[str], *, on_line: LineSink, environment: Mapping[str, str] | None = None,
             user: str | None = None) -> int:
        """Run argv in the container, stream its output line by line, return its exit code."""
        with _daemon_guard(f"running `{' '.join(argv)}` in the build container", self.name):
            return self._call(argv, on_line=on_line, environment=environment, user=user)

    def _call(self, argv: list[str], *, on_line: LineSink, environment: Mapping[str, str] | None,
              user: str | None) -> int:
        api = self._client.api
        exec_id = api.exec_create(self._container.id, argv, stdout=True, stderr=True, tty=False,
                                  environment=dict(environment or {}), user=user or self.spec.user,
                                  workdir=self.spec.workdir)["Id"]
        buffer = b""
        for chunk in api.exec_start(exec_id, stream=True, demux=False):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                on_line(line.decode("utf-8", "replace").rstrip("\r"))
        if buffer:
            on_line(buffer.decode("utf-8", "replace"))
        # exec_start's stream ends when the process closes its output; poll until the daemon has its code.
        for _ in range(100):
            info = api.exec_inspect(exec_id)
            if not info.get("Running") and info.get("ExitCode") is not None:
                return int(info["ExitCode"])
            time.sleep(0.05)
        raise BuildError(f"the daemon never reported an exit code for {' '.join(argv)} in {self.name}")

    def copy_into(self, host_dir: Path, container_dir: str, *, uid: int, gid: int) -> None:
        """Copy a host directory's contents to container_dir (created) via the archive API, owned by uid:gid."""
        target = PurePosixPath(container_dir)
        data = io.BytesIO()
        with tarfile.open(fileobj=data, mode="w") as tar:
            for part in _parents(target):
                tar.addfile(_dir_info(str(part).lstrip("/"), uid, gid))
            for path in sorted(host_dir.rglob("*")):
                rel = path.relative_to(host_dir).as_posix()
                info = tar.gettarinfo(str(path), arcname=f"{str(target).lstrip('/')}/{rel}")
                info.uid, info.gid, info.uname, info.gname = uid, gid, "", ""
                if info.isreg():
                    with path.open("rb") as fh:
                        tar.addfile(info, fh)
                else:
                    tar.addfile(info)
        if not self._container.put_archive("/", data.getvalue()):
            raise BuildError(f"the daemon refused to copy {host_dir} into {self.name}:{container_dir}")

    def make_dir(self, container_dir: str, *, uid: int, gid: int) -> None:
        """Create an empty directory owned by uid:gid (archive mode's stand-in for a writable mount)."""
        data = io.BytesIO()
        with tarfile.open(fileobj=data, mode="w") as tar:
            for part in _parents(PurePosixPath(container_dir)):
                tar.addfile(_dir_info(str(part).lstrip("/"), uid, gid))
        self._container.put_archive("/", data.getvalue())

    def copy_out(self, container_dir: str, host_dir: Path) -> list[Path]:
        """Copy the regular files under container_dir into host_dir (flat tree kept); return what came."""
        stream, _ = self._container.get_archive(container_dir.rstrip("/") + "/.")
        data = io.BytesIO(b"".join(stream))
        copied: list[Path] = []
        with tarfile.open(fileobj=data, mode="r") as tar:
            for member in tar.getmembers():
                rel = PurePosixPath(member.name)
                parts = [p for p in rel.parts if p not in (".", "")]
                if not parts or ".." in parts or rel.is_absolute():
                    continue
                dest = host_dir.joinpath(*parts)
                if member.isdir():
                    dest.mkdir(parents=True, exist_ok=True)
                elif member.isreg():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    src = tar.extractfile(member)
                    assert src is not None
                    with dest.open("wb") as fh:
                        fh.write(src.read())
                    os.chmod(dest, member.mode & 0o755)
                    copied.append(dest)
        return copied

    def _seed_mount_points(self) -> None:
        uid, gid = (int(x) for x in self.spec.user.split(":"))
        for mount in self.spec.mounts:
            if mount.read_only:
                self.copy_into(mount.host, mount.container, uid=uid, gid=gid)
            else:
                self.make_dir(mount.container, uid=uid, gid=gid)

    def collect_outputs(self) -> None:
        """In archive mode, bring every writable mount's content back to its host directory."""
        if not self.spec.use_archive:
            return
        with _daemon_guard("copying the results out of the build container", self.name):
            for mount in self.spec.mounts:
                if not mount.read_only:
                    self.copy_out(mount.container, mount.host)


def _process_start(pid: int) -> str | None:
    """The kernel's start time of a process (clock ticks since boot), or None when it does not exist.

    A pid plus its start time names one process for good: a recycled pid has another start time.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def owner_labels(*, keep: bool = False) -> dict[str, str]:
    """Labels naming the fbocc process that owns a new build container (pid + start time + host)."""
    labels = {OWNER_PID: str(os.getpid()), OWNER_START: _process_start(os.getpid()) or "",
              OWNER_HOST: socket.gethostname(),
              STARTED_AT: datetime.now(UTC).isoformat(timespec="seconds")}
    if keep:
        labels[KEPT] = "1"
    return labels


def _owner_gone(labels: Mapping[str, str]) -> bool:
    """True only when the owner ran on this host and that very process no longer exists."""
    if labels.get(OWNER_HOST) != socket.gethostname() or labels.get(KEPT) == "1":
        return False
    try:
        pid = int(labels.get(OWNER_PID, ""))
    except ValueError:
        return False  # made by an fbocc that did not record its owner: never ours to judge
    start = _process_start(pid)
    if start is None:  # no such process, or no /proc to read: ask the kernel directly
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    recorded = labels.get(OWNER_START)
    return bool(recorded) and start != recorded


@dataclass(frozen=True)
class Leftover:
    """A build container removed because the run that started it ended without removing it."""

    name: str
    owner_pid: str
    started_at: str
    state: str


def remove_orphaned_containers() -> list[Leftover]:
    """Remove this host's build containers whose owning fbocc process is gone; kept ones stay.

    Builds running concurrently (other processes, other users of this daemon) are never touched.
    """
    from docker.errors import NotFound

    client = _client(timeout=60)
    removed: list[Leftover] = []
    try:
        with _daemon_guard("looking for build containers left behind by earlier runs"):
            for box in client.containers.list(all=True, filters={"label": LABEL}):
                labels = box.labels or {}
                if not _owner_gone(labels):
                    continue
                with contextlib.suppress(NotFound):
                    box.remove(force=True, v=True)
                removed.append(Leftover(box.name, labels.get(OWNER_PID, "?"), labels.get(STARTED_AT, "?"),
                                        str(box.status)))
    finally:
        client.close()
    return removed


def _parents(path: PurePosixPath) -> Iterator[PurePosixPath]:
    parts = [p for p in reversed(path.parents) if str(p) != "/"]
    yield from parts
    yield path


def _dir_info(name: str, uid: int, gid: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.uid, info.gid = uid, gid
    info.mtime = int(time.time())
    return info


def _ignore_sigint() -> Any:
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, signal.SIG_IGN)


def _restore_sigint(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGINT, previous)


def interrupted(step: str, kept: str | None = None) -> Interrupted:
    """The error raised after Ctrl-C, once the container is gone (or kept, when asked)."""
    what = f"the build container {kept} was kept (--keep-container)" if kept else "no build container is left"
    return Interrupted(f"interrupted during '{step}'; {what}",
                       fix="run the same command again; finished steps are cached")
