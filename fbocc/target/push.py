"""`fbocc push-to-target`: a verified, resumable, incremental copy of an artefact set to a target.

The set is collected here (fbocc.target.artefacts) and lands in the target's content-addressed store
(fbocc.target.store, which documents the remote layout). This module is the uploader between them.

Transfer rules: a file whose content is already an object (verified by sha256 once, re-hashed when
its size/mtime/inode changed) is skipped. Others go to `objects/<sha>.part` through pipelined SFTP
writes (several files in flight, one SFTP channel each), are hashed on the target and renamed to
`objects/<sha>` only when the hash matches. A lost connection is re-opened with backoff and the push
goes on where it stopped. Free space is checked against the bytes still to send before anything is
sent; a half-pushed set is never `current`.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from deploy.manifest import sha256_file
from fbocc.config import Target
from fbocc.errors import ConnectionLost, FboccError, Interrupted, RemoteError, TargetDiskFull, TransferError
from fbocc.target.artefacts import ArtefactSet, file_stamp
from fbocc.target.sftp import FileChannel
from fbocc.target.store import VERIFY_FAILED, RemoteStore, StoreState
from fbocc.target.supervision import WorkdirLock, workdir_lock
from fbocc.target.transport import TargetOutcome, TargetSession, connect_all, quote

log = logging.getLogger(__name__)


@dataclass
class PushResult:
    """What one push to one target did."""

    target: str
    set_hash: str
    remote_set_dir: str
    remote_current: str
    files_total: int
    files_sent: int
    files_skipped: int
    bytes_total: int
    bytes_sent: int
    seconds: float
    resumed: int = 0
    reconnects: int = 0
    switched: bool = True

    @property
    def mb_per_s(self) -> float:
        return self.bytes_sent / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mb_per_s": round(self.mb_per_s, 1)}


class PushProgress(Protocol):
    """Receives progress from pushes (called from worker threads; implementations must be thread-safe)."""

    def planned(self, target: str, send_bytes: int, send_files: int, skipped: int) -> None: ...
    def file_started(self, target: str, name: str, size: int, offset: int) -> None: ...
    def advance(self, target: str, name: str, nbytes: int) -> None: ...
    def file_done(self, target: str, name: str) -> None: ...


class _NoProgress:
    def planned(self, target: str, send_bytes: int, send_files: int, skipped: int) -> None: ...
    def file_started(self, target: str, name: str, size: int, offset: int) -> None: ...
    def advance(self, target: str, name: str, nbytes: int) -> None: ...
    def file_done(self, target: str, name: str) -> None: ...


class _ConnectionLost(Exception):
    pass


@dataclass
class _Object:
    sha256: str
    size: int
    local: Path
    stamp: tuple[int, int, int]
    names: list[str] = field(default_factory=list)


class _Pusher:
    def __init__(self, session: TargetSession, aset: ArtefactSet, progress: PushProgress, parallel: int,
                 retries: int, verify: bool, lock: WorkdirLock | None = None) -> None:
        self.session = session
        self.lock = lock
        self.store = RemoteStore(session)
        self.aset = aset
        self.progress = progress
        self.parallel = max(1, parallel)
        self.retries = retries
        self.verify = verify
        self.label = session.label
        self.objects: dict[str, _Object] = {}
        for f in aset.files:
            self.objects.setdefault(f.sha256, _Object(f.sha256, f.size, f.local, f.stamp)).names.append(f.path)
        self.sent: set[str] = set()
        self.bytes_sent = 0
        self.resumed = 0
        self.reconnects = 0
        self.bad_hash: dict[str, int] = {}
        self.new_index: dict[str, tuple[int, int, int]] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._stop = threading.Event()

    @property
    def workdir(self) -> str:
        return self.session.workdir()

    # the whole push, with reconnects ---------------------------------------------------------------

    def run(self) -> PushResult:
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                switched = self._attempt()
                break
            except _ConnectionLost as exc:
                log.info("push to %s: %s; reconnecting", self.label, exc)
                attempt += 1
                cause = self.session.stalled or str(exc)
                if attempt > self.retries:
                    raise _gave_up(self.label, f"the connection to {self.label} was lost {attempt} times; "
                                   f"the last time: {cause}") from None
                self._reconnect(attempt, cause)
        files_sent = sum(len(self.objects[s].names) for s in self.sent)
        return PushResult(
            target=self.label, set_hash=self.aset.set_hash, remote_set_dir=f"{self.workdir}/sets/{self.aset.set_hash}",
            remote_current=f"{self.workdir}/current", files_total=len(self.aset.files),
            files_sent=files_sent, files_skipped=len(self.aset.files) - files_sent,
            bytes_total=self.aset.total_bytes, bytes_sent=self.bytes_sent,
            seconds=time.monotonic() - started, resumed=self.resumed, reconnects=self.reconnects,
            switched=switched)

    def _reconnect(self, attempt: int, cause: str) -> None:
        delay = min(0.5 * 2 ** (attempt - 1), 8.0)
        while True:
            time.sleep(delay)
            self.reconnects += 1
            try:
                self.session.reconnect()
                return
            except RemoteError as exc:
                if not isinstance(exc, ConnectionLost) and "another fbocc is" in exc.message:
                    raise  # another fbocc took the workdir while the link was down
                attempt += 1
                if attempt > self.retries:
                    raise _gave_up(self.label, f"{cause}; reconnecting failed: {exc.message}") from None
                delay = min(delay * 2, 8.0)

    def _guard(self, fn: Callable[[], Any]) -> Any:
        """Run one remote step; any failure while the connection is down means 'connection lost'."""
        try:
            return fn()
        except FboccError as exc:
            if isinstance(exc, ConnectionLost) or not self.session.connected:
                raise _ConnectionLost(exc.message) from exc
            raise

    def _attempt(self) -> bool:
        # The lock's answer arrives while the (read-only) query runs; nothing is written before it is held.
        state = self._guard(lambda: self.store.query(self.aset))
        if self.lock is not None and self._guard(self.lock.confirm) and state.foreign_parts:
            self._guard(lambda: self.store.reclaim(state.foreign_parts))
            log.info("push to %s: removed %d upload(s) left by a push that died", self.label,
                     len(state.foreign_parts))
        todo = self._plan(state)
        skipped = len(self.aset.files) - sum(len(self.objects[s].names) for s in todo)
        send_bytes = sum(self.objects[s].size - state.parts.get(s, 0) for s in todo)
        self.progress.planned(self.label, send_bytes, len(todo), skipped)
        if send_bytes > state.free_bytes:
            raise TransferError(
                f"not enough space on {self.label}: {send_bytes / 1e6:.1f} MB to send, "
                f"{state.free_bytes / 1e6:.1f} MB free in {self.workdir}",
                where=self.label,
                fix="free space on the target (e.g. `fbocc push-to-target --prune --keep 1`) or set another "
                "workdir for this target")
        pending = self._send_all(todo, state) if todo else []
        return bool(self._guard(lambda: self._assemble_and_switch(state, pending)))

    def _plan(self, state: StoreState) -> list[str]:
        """Objects still to send; objects present but not known verified are hashed on the target first."""
        unverified = [s for s in self.objects if s in state.objects
                      and (self.verify or state.index.get(s) != state.objects[s])]
        if unverified:
            hashed = self._guard(lambda: self.store.hashes(unverified))
            for sha in unverified:
                if hashed.get(sha) == sha:
                    self.new_index[sha] = state.objects[sha]
                else:  # a damaged object: drop it so the set gets a good copy
                    del state.objects[sha]
                    self.store.remove(self.store.object_path(sha))
        todo = [s for s in self.objects if s not in state.objects]
        todo.sort(key=lambda s: -self.objects[s].size)  # big files first; small ones fill the gaps
        return todo

    # sending -------------------------------------------------------------------------------------

    def _send_all(self, todo: list[str], state: StoreState) -> list[str]:
        """Upload with `parallel` SFTP channels; a verifier thread hashes finished parts in batches.

        Returns the uploaded objects not verified yet: the final command verifies them (one round trip).
        """
        self._stop.clear()
        errors: list[BaseException] = []
        channels: list[FileChannel] = []
        uploaded: queue.Queue[str | None] = queue.Queue()

        def fail(exc: BaseException) -> None:
            self._stop.set()
            with self._lock:
                errors.append(exc)

        def worker(sha: str) -> None:
            if self._stop.is_set():
                return
            try:
                channel = getattr(self._local, "channel", None)
                if channel is None or channel.closed:
                    channel = self.session.open_files()
                    self._local.channel = channel
                    with self._lock:
                        channels.append(channel)
                if self._send_one(channel, sha, state.parts.get(sha, 0)):
                    uploaded.put(sha)
            except BaseException as exc:
                fail(exc)

        pending: list[str] = []

        def verifier() -> None:
            while True:
                first = uploaded.get()
                if first is None:
                    return
                batch = [first]
                while True:
                    try:
                        item = uploaded.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:  # uploads are over: what is left goes with the final command
                        pending.extend(batch)
                        return
                    batch.append(item)
                try:
                    self._verified(self.store.verify(batch), batch)
                except BaseException as exc:
                    fail(exc)
                    return

        checker = threading.Thread(target=verifier, name=f"verify-{self.label}", daemon=True)
        checker.start()
        pool = ThreadPoolExecutor(max_workers=min(self.parallel, len(todo)), thread_name_prefix=f"push-{self.label}")
        aborted = False
        try:
            # A file holding most of the bytes goes alone first: its hash on the target then runs
            # while the small files travel, instead of after everything.
            total = sum(self.objects[sha].size for sha in todo)
            head = todo[:1] if len(todo) > 1 and self.objects[todo[0]].size * 2 > total else []
            for phase in (head, todo[len(head):]):
                futures = [pool.submit(worker, sha) for sha in phase]
                # Short waits, not one long one: Ctrl-C reaches this thread whatever the workers do.
                while not all(f.done() for f in futures):
                    wait(futures, timeout=0.2)
        except BaseException:
            # Ctrl-C: stop the workers and drop the connection under them, so that a worker blocked on
            # a stalled link wakes now; .part files stay resumable, the target's supervisor ends the hashing.
            aborted = True
            self._stop.set()
            for channel in list(channels):
                channel.close()
            self.session.abort()
            raise
        finally:
            pool.shutdown(wait=not aborted, cancel_futures=aborted)
            uploaded.put(None)
            checker.join(timeout=1.0 if aborted else None)
            for channel in channels:
                channel.close()
            self._local = threading.local()
        if errors:
            lost = [e for e in errors if isinstance(e, (ConnectionLost, _ConnectionLost))]
            if lost or not self.session.connected:
                first = (lost or errors)[0]
                raise _ConnectionLost(str(first) or type(first).__name__) from first
            raise next((e for e in errors if isinstance(e, FboccError)), errors[0])
        unverified = [sha for sha in todo if sha not in self.sent and sha not in pending]
        if unverified:
            raise _ConnectionLost(f"{len(unverified)} file(s) arrived with a wrong sha256 "
                                  f"({', '.join(self.objects[s].names[0] for s in unverified)}); sending them again")
        return pending

    def _send_one(self, channel: FileChannel, sha: str, part_size: int) -> bool:
        """Upload one object to its .part (resuming a good prefix); False when stopped early."""
        o = self.objects[sha]
        name = o.names[0]
        part = f"{self.store.object_path(sha)}.part"
        offset = 0
        if 0 < part_size <= o.size and self.store.part_prefix_hash(sha, part_size) == sha256_file(
                str(o.local), limit=part_size):
            offset = part_size
            with self._lock:
                self.resumed += 1
        self.progress.file_started(self.label, name, o.size, offset)

        def sent(nbytes: int) -> None:
            with self._lock:
                self.bytes_sent += nbytes
            self.progress.advance(self.label, name, nbytes)

        try:
            done = channel.upload(o.local, part, offset=offset, on_bytes=sent, stop=self._stop)
        except TargetDiskFull as exc:
            self.store.remove(part)
            raise TransferError(f"the target {self.label} ran out of space while receiving {name}", where=self.label,
                                fix="free space on the target (`fbocc push-to-target --prune --keep 1`) "
                                "or choose another workdir") from exc
        except ConnectionLost:
            raise
        except FboccError:
            if self.session.connected and not self._stop.is_set():
                self.store.remove(part)
            raise
        # A local file rewritten since it was hashed would arrive "corrupt": say what really happened.
        if done and file_stamp(o.local) != o.stamp:
            self.store.remove(part)
            raise TransferError(f"{o.local} changed while it was being pushed", where=self.label,
                                fix="wait until whatever writes it has finished, then re-run the push")
        self.progress.file_done(self.label, name)
        return done

    def _verified(self, stdout: str, shas: Sequence[str]) -> None:
        good, got = self.store.verified(stdout)
        good &= set(self.objects)
        with self._lock:
            self.sent.update(good)
        if not self.session.connected and len(good) + len(got) < len(shas):
            raise _ConnectionLost("connection lost while verifying files")
        for sha in shas:
            if sha in good:
                continue
            with self._lock:
                self.bad_hash[sha] = self.bad_hash.get(sha, 0) + 1
                tries = self.bad_hash[sha]
            if tries >= 2:
                name = self.objects[sha].names[0]
                raise TransferError(
                    f"{name} arrived on {self.label} with sha256 {got.get(sha, '(unreadable)')}, expected {sha}, "
                    "twice", where=self.label, fix="check the target's disk and memory; the link corrupts data")

    # finishing -------------------------------------------------------------------------------------

    def _assemble_and_switch(self, state: StoreState, pending: Sequence[str]) -> bool:
        """One command: verify the last uploads, assemble the set dir, switch `current` (each if needed)."""
        inodes = {sha: (state.objects.get(sha) or (0, 0, 0))[2] for sha in self.objects}
        complete = bool(not self.sent and not pending and state.set_manifest and all(
            state.set_inodes.get(f.path) == inodes.get(f.sha256) and inodes.get(f.sha256)
            for f in self.aset.files))
        cmds = [f"cd -- {quote(self.workdir)} || exit 1"]
        if pending:
            cmds += [self.store.verify_script(pending), f'[ "$bad" = 0 ] || exit {VERIFY_FAILED}']
        if self.new_index or self.sent or pending:
            cmds.append(self.store.index_command(self.new_index))
        switched = state.current != f"sets/{self.aset.set_hash}" or not complete
        cmds += self.store.assemble_commands(self.aset, state, complete=complete)
        if len(cmds) > 1:
            res = self.session.run("\n".join(cmds), check=False, timeout=3600)
            if pending:
                self._verified(res.stdout, pending)
            if res.exit_code == VERIFY_FAILED:
                log.info("verification output: %s", res.stdout)
                raise _ConnectionLost("some files arrived with a wrong sha256; sending them again")
            if res.exit_code != 0:
                if not self.session.connected:
                    raise _ConnectionLost("connection lost while assembling the set")
                self.store.check_preflight(res.exit_code, res.stderr)
            self.new_index.clear()
        return switched


def _gave_up(label: str, what: str) -> TransferError:
    return TransferError(what, where=label,
                         fix="check the link to the target, then run the same command again: the push resumes "
                         "where it stopped (finished files are kept, a partial file continues)")


def push_artifacts(session: TargetSession, aset: ArtefactSet, *, progress: PushProgress | None = None,
                   parallel: int = 4, retries: int = 5, verify: bool = False, wait_lock_s: float = 0.0,
                   on_note: Callable[[str], None] | None = None) -> PushResult:
    """Push `aset` to the target of `session`; `current` points at it when this returns.

    Unchanged files are skipped, a cut connection is re-opened (up to `retries` times, with backoff)
    and the push resumes; `verify=True` re-hashes every object already on the target. The workdir's lock
    is held throughout (another fbocc there: RemoteError, or wait up to `wait_lock_s`).
    """
    _require_plugin_abi(session, aset)
    try:
        with session.doing("pushing"), workdir_lock(session, "pushing", wait_lock_s, on_note, defer=True) as lock:
            return _Pusher(session, aset, progress or _NoProgress(), parallel, retries, verify, lock).run()
    except (KeyboardInterrupt, Interrupted):  # Ctrl-C here or inside a remote command (already killed)
        raise Interrupted(f"push to {session.label} interrupted; `current` still points at the previous set",
                          fix="re-run the same command: finished files are kept and partial ones resume") from None


def _require_plugin_abi(session: TargetSession, aset: ArtefactSet) -> None:
    """Before sending anything: a plugin library built for another TensorRT major than the target's stops here."""
    from fbocc.target.contract import require_plugin_abi, target_tensorrt_version

    manifest = next((f for f in aset.files if f.role == "plugin-manifest"), None)
    if manifest is None or aset.plugin is None:
        return
    try:
        headers = json.loads(manifest.local.read_text()).get("tensorrt_version")
    except (OSError, ValueError, AttributeError):
        return  # collect_artefacts already read it; a file changed since is caught by the hashes
    if headers:
        require_plugin_abi(session, str(headers), target_tensorrt_version(session), aset.plugin)


def push_to_targets(targets: Sequence[Target], aset: ArtefactSet, *, known_hosts: Path | None = None,
                    accept_new: bool = False, progress: PushProgress | None = None, parallel: int = 4,
                    retries: int = 5, verify: bool = False, connect_timeout: float | None = None,
                    wait_lock_s: float = 0.0,
                    on_note: Callable[[str], None] | None = None) -> list[TargetOutcome[PushResult]]:
    """Push one artefact set to several targets in parallel; one outcome per target, in order."""
    return connect_all(
        targets,
        lambda s: push_artifacts(s, aset, progress=progress, parallel=parallel, retries=retries, verify=verify,
                                 wait_lock_s=wait_lock_s, on_note=on_note),
        known_hosts=known_hosts, accept_new=accept_new, connect_timeout=connect_timeout)
