"""The SSH link's moving parts under fbocc.target.transport: the watch that probes the link and feeds
the target supervisors' heartbeats, held commands (the workdir lock's holder), and the line splitter of
command output. Part of the SSH owner: only transport.py creates these.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from fbocc.target.supervision import LinkTimes

if TYPE_CHECKING:
    import paramiko

PGID_MARK = b"fbocc-pgid "


class HeldCommand:
    """A remote command that runs for as long as its holder wants (a lock holder); see `TargetSession.hold`."""

    def __init__(self, chan: paramiko.Channel, watch: LinkWatch | None) -> None:
        self._chan = chan
        self._watch = watch
        self._pending = b""

    def read_line(self, timeout: float) -> str | None:
        """The next line of its stdout; None when it ended (or the link went) first; TimeoutError after `timeout`."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            if self._chan.recv_ready():
                self._pending += self._chan.recv(65536)
                continue
            if self._chan.closed or self._chan.eof_received:
                return None
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer within {timeout:g} s")
            time.sleep(0.02)
        line, _, self._pending = self._pending.partition(b"\n")
        return line.decode(errors="replace")

    def stderr(self) -> str:
        """What it printed on stderr so far (for error messages)."""
        data = b""
        while self._chan.recv_stderr_ready():
            data += self._chan.recv_stderr(65536)
        return data.decode(errors="replace")

    def release(self, wait_s: float = 2.0) -> None:
        """End it: EOF on its stdin ends it on the target; wait up to `wait_s` for it to be gone, then close."""
        if self._watch is not None:
            self._watch.discard(self._chan)
        with contextlib.suppress(Exception):
            if not self._chan.closed:
                self._chan.shutdown_write()
                self._chan.status_event.wait(wait_s)
        with contextlib.suppress(Exception):
            self._chan.close()


class LinkWatch:
    """Probes the link and feeds the supervisors' heartbeats, on a thread of its own.

    Every `keepalive_s` it asks the server for a reply (OpenSSH answers `keepalive@openssh.com`, as for
    ssh's ServerAliveInterval) and writes one heartbeat byte to every supervised channel. A probe
    unanswered for `stall_timeout_s` means the link is stalled: the transport is closed, which wakes
    every blocked SFTP request and channel read at once, and `stalled` says why.
    """

    def __init__(self, transport: paramiko.Transport, times: LinkTimes) -> None:
        self.transport = transport
        self.times = times
        self.stalled: str | None = None
        self.channels: set[paramiko.Channel] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fbocc-link-watch", daemon=True)
        self._thread.start()

    def add(self, chan: paramiko.Channel) -> None:
        with self._lock:
            self.channels.add(chan)

    def discard(self, chan: paramiko.Channel) -> None:
        with self._lock:
            self.channels.discard(chan)

    def stop(self) -> None:
        self._stop.set()

    def _probe(self, answered: threading.Event) -> None:
        try:
            self.transport.global_request("keepalive@openssh.com", wait=True)
        except Exception:  # a dead transport: is_active() tells the next round
            pass
        finally:
            answered.set()

    def _run(self) -> None:
        while not self._stop.wait(self.times.keepalive_s):
            if not self.transport.is_active():
                return
            with self._lock:
                channels = list(self.channels)
            for chan in channels:
                with contextlib.suppress(Exception):  # a closed channel needs no heartbeat
                    if not chan.closed and chan.send_ready():
                        chan.send(b".")
            answered = threading.Event()
            threading.Thread(target=self._probe, args=(answered,), name="fbocc-link-probe", daemon=True).start()
            if not answered.wait(self.times.stall_timeout_s) and not self._stop.is_set():
                self.stalled = f"no answer from the target for {self.times.stall_timeout_s:g} s (the link stalled)"
                with contextlib.suppress(Exception):
                    self.transport.close()
                return


class LineBuffer:
    """Collects one output stream, calling `on_line` per complete line; strips our pgid marker line."""

    def __init__(self, on_line: Callable[[str], None] | None, pgid_mark: bool = False) -> None:
        self.on_line = on_line
        self.chunks: list[bytes] = []
        self.pending = b""
        self.expect_mark = pgid_mark
        self.pgid: int | None = None

    def feed(self, data: bytes) -> None:
        if self.expect_mark:
            self.pending += data
            if b"\n" not in self.pending:
                return
            first, _, rest = self.pending.partition(b"\n")
            self.pending = b""
            self.expect_mark = False
            if first.startswith(PGID_MARK):
                self.pgid = int(first[len(PGID_MARK):])
                data = rest
            else:
                data = first + b"\n" + rest
        self.chunks.append(data)
        if self.on_line is not None:
            self.pending += data
            *lines, self.pending = self.pending.split(b"\n")
            for line in lines:
                self.on_line(line.decode(errors="replace"))

    def finish(self) -> str:
        if self.expect_mark and self.pending:
            self.chunks.append(self.pending)
        elif self.on_line is not None and self.pending:
            self.on_line(self.pending.decode(errors="replace"))
        return b"".join(self.chunks).decode(errors="replace")
