"""How fbocc keeps remote work tied to its SSH session, and one workdir to one fbocc at a time.

The target side is `deploy/supervise.py` (Python 3.8, stdlib). Its source travels inline with each
command (`python3 -I -S -c BOOT ...`, compressed), so it works before anything was pushed and needs no
file on the target. This module only builds those command lines and reads their answers; the channels
are fbocc.target.transport's.

- `supervised_command`: every remote command runs in its own process group under the supervisor, which
  stops the group (TERM, KILL after `GRACE_S`) when the session ends or the host's heartbeat stops for
  `LinkTimes.heartbeat_timeout_s`. A target without Python falls back to `setsid` (group killed on
  timeout and Ctrl-C, not when the link dies).
- `lock_command` / `lock_holder_message`: an exclusive flock on `<workdir>/.fbocc-lock`, held by a
  supervised process for as long as the command's session lives; the kernel releases it however that
  process ends.
- `clean_command` / `describe_cleaned`: leftovers of runs whose supervisor died (markers in `runs/`).
"""

from __future__ import annotations

import base64
import contextlib
import getpass
import json
import os
import shlex
import socket
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from fbocc.assets import asset_dir
from fbocc.errors import Interrupted, RemoteError

if TYPE_CHECKING:
    from fbocc.target.transport import HeldCommand, TargetSession

LOCK_FILE = ".fbocc-lock"
MARKER_SUFFIX = ".fbocc-run"
GRACE_S = 5.0
LOST_EXIT = 129
BUSY_EXIT = 75
_PGID_SCRIPT = 'echo "fbocc-pgid $$" >&2; exec "${SHELL:-/bin/sh}" -c "$1"'


@dataclass(frozen=True)
class LinkTimes:
    """The deadlines of one target's link, in seconds (README "Guarantees" names the defaults)."""

    connect_timeout_s: float = 10.0
    stall_timeout_s: float = 30.0

    @property
    def keepalive_s(self) -> float:
        """How often an idle link is probed (an unanswered probe for stall_timeout_s = stalled)."""
        return max(0.2, min(5.0, self.stall_timeout_s / 3))

    @property
    def heartbeat_timeout_s(self) -> float:
        """Remote work stops this long after the host's last heartbeat (the host sends one per keepalive_s)."""
        return 2 * self.stall_timeout_s


def _quote(word: str) -> str:
    return shlex.quote(str(word))


@cache
def _boot() -> str:
    source = (asset_dir("deploy") / "supervise.py").read_bytes()
    packed = base64.b64encode(zlib.compress(source, 9)).decode()
    return ("import base64,zlib;exec(compile(zlib.decompress(base64.b64decode('" + packed + "')),"
            "'fbocc-supervise','exec'),{'__name__':'__main__'})")


def _python_call(python: str, words: list[str]) -> str:
    return " ".join([_quote(python), "-I", "-S", "-c", _quote(_boot()), *(_quote(w) for w in words)])


def owner(operation: str) -> dict[str, Any]:
    """Who asks: recorded in locks and run markers, shown to the next fbocc that finds them."""
    return {"operation": operation, "host": socket.gethostname(), "pid": os.getpid(), "user": getpass.getuser()}


def supervised_command(python: str, command: str, times: LinkTimes, *, marker: str | None = None,
                       remove: tuple[str, ...] = (), operation: str | None = None) -> str:
    """`command` under the supervisor when the target has `python`, else under `setsid` (group only)."""
    words = ["run", "--grace", f"{GRACE_S:g}", "--heartbeat", f"{times.heartbeat_timeout_s:g}"]
    if marker:
        words += ["--marker", marker, "--owner", json.dumps(owner(operation or "running"))]
    for path in remove:
        words += ["--remove", path]
    words += ["--", command]
    # Without the supervisor the heartbeat bytes have no reader: the command gets /dev/null as stdin.
    fallback = (f"if command -v setsid >/dev/null 2>&1; then exec setsid -w /bin/sh -c {_quote(_PGID_SCRIPT)} "
                f"fbocc {_quote(command)} </dev/null; else exec /bin/sh -c {_quote(_PGID_SCRIPT)} fbocc "
                f"{_quote(command)} </dev/null; fi")
    return (f"if command -v {_quote(python)} >/dev/null 2>&1; then exec {_python_call(python, words)}; "
            f"else {fallback}; fi")


def lock_command(python: str, workdir: str, operation: str, wait_s: float, times: LinkTimes) -> str:
    """Take the workdir's lock and hold it while the session lives (see deploy/supervise.py lock)."""
    call = _python_call(python, ["lock", "--file", f"{workdir.rstrip('/')}/{LOCK_FILE}",
                                 "--owner", json.dumps(owner(operation)), "--wait", f"{max(0.0, wait_s):g}",
                                 "--heartbeat", f"{times.heartbeat_timeout_s:g}"])
    return f"if command -v {_quote(python)} >/dev/null 2>&1; then exec {call}; else echo FBOCC_LOCK_NOPY; fi"


LockNote = Callable[[str], None]


class WorkdirLock:
    """The target workdir's lock for one session: `start` asks for it, `confirm` waits for the answer.

    Between the two the caller may do read-only work (push's store query), so that the lock costs no
    round trip of its own. `held` is False on a target without Python (no lock there, said once through
    `on_note`) or where nobody can write anyway. After a reconnect the lock is taken again, waiting for
    our own previous holder if the old connection has not ended on the target yet.
    """

    def __init__(self, session: TargetSession, operation: str, wait_s: float, on_note: LockNote | None) -> None:
        self.session = session
        self.operation = operation
        self.wait_s = wait_s
        self.on_note = on_note
        self.held = False
        self._proc: HeldCommand | None = None
        self._answered = False
        self._retake = False

    def start(self, retake: bool = False) -> None:
        """Send the request (no waiting)."""
        self.release()
        s = self.session
        self._retake = retake
        self._answered = False
        wait = max(self.wait_s, s.times.heartbeat_timeout_s + 5) if retake else self.wait_s
        self._deadline_s = wait + s.times.stall_timeout_s + 10
        self._proc = s.hold(lock_command(s.target.python, s.workdir(), self.operation, wait, s.times))

    def confirm(self) -> bool:
        """Wait for the answer: True once held; RemoteError naming another holder (or the problem)."""
        if self._answered:
            return self.held
        assert self._proc is not None, "start() first"
        s, proc = self.session, self._proc
        deadline = time.monotonic() + self._deadline_s
        while True:
            try:
                line = proc.read_line(max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                raise s.lost(activity=f"taking the workdir lock ({self.operation})") from None
            if line is None:
                if s.stalled or not s.connected:
                    raise s.lost(activity=f"taking the workdir lock ({self.operation})")
                tail = " ".join(proc.stderr().strip().splitlines()[-2:]) or "no answer"
                raise RemoteError(f"cannot take the lock of {s.target.name}:{s.workdir()}: {tail}",
                                  where=s.label, fix=f"check [targets.{s.target.name}] python "
                                  "(Python >= 3.8 on the target) and the workdir's permissions")
            held = self._answer(line)
            if held is not None:
                self._answered, self.held = True, held
                if held and self._retake_hook not in s.on_open:
                    s.on_open.append(self._retake_hook)
                return held

    def _answer(self, line: str) -> bool | None:
        s = self.session
        if line == "FBOCC_LOCK_NOPY":
            if self.on_note and not self._retake:
                self.on_note(f"no {s.target.python} on {s.label}: working without the workdir lock")
            return False
        doc = (tagged(line, line.split(" ", 1)[0]) if line.startswith("FBOCC_LOCK") else None) or {}
        if line.startswith("FBOCC_LOCKED "):
            return True
        if line.startswith("FBOCC_LOCK_WAIT ") and self.on_note and not self._retake:
            self.on_note(f"waiting up to {self.wait_s:g} s: {lock_holder_message(s.label, doc)}")
        if line.startswith("FBOCC_LOCK_BUSY "):
            raise RemoteError(lock_holder_message(s.label, doc), where=s.label,
                              fix="wait for it to finish, or re-run with --wait-lock SECONDS to wait for it")
        if line.startswith("FBOCC_LOCK_ERROR "):
            if doc.get("errno") in ("EROFS", "EACCES", "EPERM", "ENOSPC", "EDQUOT"):
                return False  # nobody can write there: the command's own checks name the problem
            message = str(doc.get("message", line))
            if "symbolic link" in message:
                message = f"the workdir {message}: it is a broken link"
            raise RemoteError(message, where=s.label,
                              fix=f"fix or remove the link, or set [targets.{s.target.name}] workdir")
        return None

    def _retake_hook(self) -> None:
        self.start(retake=True)
        self.confirm()

    def release(self, wait_s: float = 2.0) -> None:
        """Let go (waiting up to `wait_s` for the holder to be gone on the target)."""
        if self._proc is not None:
            self._proc.release(wait_s)
            self._proc = None

    def close(self, wait_s: float = 2.0) -> None:
        """Release for good (no retaking after a reconnect)."""
        with contextlib.suppress(ValueError):
            self.session.on_open.remove(self._retake_hook)
        self.release(wait_s)


@contextlib.contextmanager
def workdir_lock(session: TargetSession, operation: str, wait_s: float = 0.0, on_note: LockNote | None = None,
                 *, defer: bool = False) -> Iterator[WorkdirLock]:
    """Hold the target workdir's lock for the block. `operation` names what we do: "pushing", ...

    Another holder: RemoteError naming it, or wait up to `wait_s`. `defer=True`: the block calls
    `confirm()` itself before changing anything (and may do read-only work before that).
    """
    lock = WorkdirLock(session, operation, wait_s, on_note)
    lock.start()
    try:
        if not defer:
            lock.confirm()
        yield lock
    except (KeyboardInterrupt, Interrupted):
        lock.close(wait_s=0)  # Ctrl-C: no waiting for the holder's exit (the supervisor ends it)
        raise
    except BaseException:
        lock.close()  # an error: the lock is free when the error reaches the user
        raise
    else:
        lock.close()


def clean_command(python: str, runs_dir: str) -> str:
    """Remove what runs whose supervisor died left in `runs_dir`; prints `FBOCC_CLEAN [...]`."""
    return _python_call(python, ["clean", "--dir", runs_dir])


def clean_leftovers(session: TargetSession, runs_dir: str, on_line: LockNote | None = None) -> list[str]:
    """Remove what runs whose supervisor died left in `runs_dir` (processes, scratch folders); the lines said.

    Run under the workdir lock, so no live run of another fbocc can be mistaken for a leftover (and the
    supervisor checks liveness itself anyway). Nothing to do on a target without Python.
    """
    command = (f"if command -v {_quote(session.target.python)} >/dev/null 2>&1; then "
               f"exec {clean_command(session.target.python, runs_dir)}; fi")
    res = session.run(command, timeout=60, check=False)
    lines = describe_cleaned(tagged(res.stdout, "FBOCC_CLEAN") or [])
    for line in lines:
        if on_line:
            on_line(line)
    return lines


def tagged(text: str, tag: str) -> Any:
    """The JSON after the last `TAG ` line in `text`, or None."""
    for line in reversed(text.splitlines()):
        if line.startswith(tag + " "):
            try:
                return json.loads(line[len(tag) + 1:])
            except ValueError:
                return None
    return None


def lock_holder_message(target: str, holder: dict[str, Any]) -> str:
    """"another fbocc is pushing on orin since T (pid P on host H, user U)"."""
    what = holder.get("operation") or "working"
    since = holder.get("since") or "an unknown time"
    who = " ".join(p for p in (f"pid {holder['pid']}" if holder.get("pid") else "",
                               f"on host {holder['host']}" if holder.get("host") else "") if p)
    if holder.get("user"):
        who = f"{who}, user {holder['user']}" if who else f"user {holder['user']}"
    return f"another fbocc is {what} on {target} since {since}" + (f" ({who})" if who else "")


def describe_cleaned(entries: list[dict[str, Any]]) -> list[str]:
    """One line per leftover a clean-up removed (live runs are not leftovers)."""
    lines = []
    for entry in entries:
        if entry.get("running"):
            continue
        who = entry.get("owner") or {}
        by = f"{who.get('operation', 'a run')} by pid {who.get('pid', '?')} on {who.get('host', '?')}"
        killed = "; stopped its remaining processes" if entry.get("killed") else ""
        lines.append(f"removed the leftovers of an earlier run ({by}, started {entry.get('started_at', '?')})"
                     f"{killed}")
    return lines
