"""File verbs of the SSH transport over one SFTP channel: upload (resumable, pipelined), download (with
read-ahead), size, list, rename, remove, remove a tree.

Part of the SSH owner: `TargetSession.files()` / `open_files()` hand these out; nothing else touches
paramiko's SFTP. Every paramiko or socket exception becomes ours: `ConnectionLost` when the link is
gone (the caller may reconnect and go on), `TargetDiskFull` when the target has no space left,
`TransferError` for anything else about the file, `Interrupted` for Ctrl-C during a download.
Nothing half-written is left at a local final path.

`timeout` (seconds without progress before a read or write gives up) is set per channel when it is
opened; verbs that wait for the target take the channel's value.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko

from fbocc.errors import ConnectionLost, FboccError, Interrupted, TargetDiskFull, TransferError

CHUNK = 1 << 20
# SFTP writes sized to fill exactly 4 SSH channel packets (32 KiB each) after the SFTP header.
PACKETS_PER_WRITE = 4
PACKET = 32768
PREFETCH_REQUESTS = 64
# Failures that mean "the connection is gone", as opposed to a refused file operation.
_LINK_ERRORS = (EOFError, paramiko.SSHException, TimeoutError, ConnectionError)
_ERRORS = (OSError, paramiko.SFTPError, *_LINK_ERRORS)


class FileChannel:
    """One SFTP channel to a target (thread-confined: one per thread for parallel transfers)."""

    def __init__(self, client: paramiko.SFTPClient, label: str, alive: Callable[[], bool]) -> None:
        self._client = client
        self.label = label
        self._alive = alive

    @property
    def closed(self) -> bool:
        return bool(self._client.sock.closed)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a channel of a dead connection may fail; nothing to do
            self._client.close()

    # --- errors ----------------------------------------------------------------------------------

    def _lost(self, exc: BaseException) -> bool:
        return (isinstance(exc, _LINK_ERRORS) and not isinstance(exc, paramiko.SFTPError)) or not self._alive()

    def _error(self, exc: BaseException, what: str, fix: str) -> FboccError:
        if isinstance(exc, FboccError):
            return exc
        if self._lost(exc):
            return ConnectionLost(f"the connection to {self.label} was lost while {what}: "
                                  f"{exc or type(exc).__name__}", where=self.label,
                                  fix="check the link to the target and re-run")
        return TransferError(f"{what} on {self.label} failed: {exc}", where=self.label, fix=fix)

    # --- verbs -----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _translated(self, what: str, fix: str = "check permissions on the target") -> Iterator[None]:
        """paramiko/socket errors inside the block become ours (FileNotFoundError passes through)."""
        try:
            yield
        except FileNotFoundError:
            raise
        except _ERRORS as exc:
            raise self._error(exc, what, fix) from exc

    def home(self) -> str:
        """The login directory (SFTP realpath of "."), without starting a shell."""
        with self._translated("asking for the home directory", "check the SSH login"):
            return self._client.normalize(".")

    def size(self, remote: str) -> int | None:
        """Size of a remote file; None when it does not exist."""
        with contextlib.suppress(FileNotFoundError), self._translated(f"reading the size of {remote}"):
            return self._client.stat(remote).st_size
        return None

    def listdir(self, remote: str) -> list[str]:
        """Names in a remote directory."""
        with self._translated(f"listing {remote}", "check the remote path"):
            try:
                return self._client.listdir(remote)
            except FileNotFoundError as exc:
                raise TransferError(f"{remote} does not exist on {self.label}", where=self.label,
                                    fix="check the remote path") from exc

    def rename(self, src: str, dst: str) -> None:
        """POSIX rename on the target (replaces `dst` atomically)."""
        with self._translated(f"renaming {src} to {dst}"):
            self._client.posix_rename(src, dst)

    def remove(self, remote: str) -> None:
        """Remove one remote file; a missing one is fine."""
        with contextlib.suppress(FileNotFoundError), self._translated(f"removing {remote}"):
            self._client.remove(remote)

    def remove_tree(self, remote: str) -> None:
        """Remove a remote directory and everything under it (no remote process started); missing is fine."""
        entries = []
        with contextlib.suppress(FileNotFoundError), self._translated(f"listing {remote}"):
            entries = self._client.listdir_attr(remote)
        for entry in entries:
            path = f"{remote}/{entry.filename}"
            if entry.st_mode is not None and stat.S_ISDIR(entry.st_mode):
                self.remove_tree(path)
            else:
                self.remove(path)
        with contextlib.suppress(FileNotFoundError), self._translated(f"removing {remote}"):
            self._client.rmdir(remote)

    def upload(self, local: Path, remote: str, *, offset: int = 0, on_bytes: Callable[[int], None] | None = None,
               stop: threading.Event | None = None) -> bool:
        """Write `local` to `remote` from byte `offset` on (a resumed upload keeps what is there before it).

        Writes are pipelined (many in flight, sized to whole SSH packets). `on_bytes(n)` is called per
        block sent; `stop` set by another thread ends the upload at the next block. Returns False when
        stopped early, True when every byte was sent. The remote file is left as it is on failure, so a
        later upload can resume it.
        """
        try:
            with local.open("rb") as src, self._client.open(remote, "r+b" if offset else "wb") as dst:
                dst.MAX_REQUEST_SIZE = PACKETS_PER_WRITE * PACKET - (25 + len(dst.handle))  # type: ignore[arg-type]
                dst.set_pipelined(True)
                if offset:
                    src.seek(offset)
                    dst.seek(offset)
                while stop is None or not stop.is_set():
                    block = src.read(CHUNK)
                    if not block:
                        break
                    dst.write(block)
                    if on_bytes is not None:
                        on_bytes(len(block))
        except FileNotFoundError as exc:
            if not local.exists():
                raise TransferError(f"local file {local} does not exist", fix="check the path") from exc
            raise TransferError(f"cannot write {remote} on {self.label}: its directory does not exist",
                                where=self.label, fix="create the remote directory first") from exc
        except _ERRORS as exc:
            text = str(exc)
            if not self._lost(exc) and ("No space" in text or "Failure" in text
                                        or getattr(exc, "errno", None) == errno.ENOSPC):
                raise TargetDiskFull(f"the target {self.label} ran out of space while receiving {local.name}",
                                     where=self.label, fix="free space on the target or choose another workdir") \
                    from exc
            raise self._error(exc, f"writing {remote}", "check permissions and free space in the target's workdir") \
                from exc
        return stop is None or not stop.is_set()

    def download(self, remote: str, local: Path, *, prefetch: int = PREFETCH_REQUESTS) -> None:
        """Copy `remote` to `local` through a temporary name, reading ahead `prefetch` requests.

        paramiko's plain get reads one request at a time (~1.6 MB/s on loopback here); with read-ahead
        it reaches ~22 MB/s on the same link (measured), which matters for 50 MB outputs.
        """
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.fbocc-tmp")
        try:
            self._client.get(remote, str(tmp), max_concurrent_prefetch_requests=prefetch)
            os.replace(tmp, local)
        except FileNotFoundError as exc:
            tmp.unlink(missing_ok=True)
            raise TransferError(f"{remote} does not exist on {self.label}", where=self.label,
                                fix="check the remote path (did the remote step produce it?)") from exc
        except KeyboardInterrupt:
            tmp.unlink(missing_ok=True)
            raise Interrupted(f"interrupted while pulling {remote} from {self.label}; nothing half-written kept",
                              fix="re-run the same command") from None
        except _ERRORS as exc:
            tmp.unlink(missing_ok=True)
            if isinstance(exc.__context__, KeyboardInterrupt):  # paramiko failed while closing after Ctrl-C
                raise Interrupted(f"interrupted while pulling {remote} from {self.label}",
                                  fix="re-run the same command") from None
            raise self._error(exc, f"copying {remote} to {local}", "check the connection and local free space") \
                from exc
