"""Target-side supervisor: remote work dies with the SSH session that started it.

Runs on the target (Python 3.8, standard library only; imports nothing from fbocc). The host sends this
file's source inline with every command (`python3 -I -S -c BOOT ...`), so it works before anything is
pushed. Three subcommands:

    run   [--grace S] [--heartbeat S] [--marker FILE] [--remove PATH ...] -- COMMAND
          COMMAND (one shell command line, run with $SHELL -c; or an argv) runs in its own process group. The supervisor watches its own
          stdin, which the host keeps open and writes a heartbeat byte to: on EOF (the session ended), on
          --heartbeat seconds without a byte (the link stalled), or on SIGHUP/SIGTERM/SIGINT it sends
          the group TERM, then KILL after --grace seconds, removes the --remove paths and exits 129.
          Otherwise it exits with COMMAND's code (128+N for a signal) once no process of the group is left.
          --marker FILE records who runs (pid + start time) until the end, so that `clean` can tell a
          dead run's leftovers from a live run.
    clean --dir DIR
          For every `*.fbocc-run` marker in DIR whose supervisor is gone (killed with SIGKILL, machine
          rebooted): kill what is left of its process group, remove its paths and the marker. Prints
          `FBOCC_CLEAN <json list>`; markers of live runs are listed with "running": true and kept.
    lock  --file FILE [--owner JSON] [--wait S] [--heartbeat S]
          Take an exclusive flock on FILE (per workdir) and hold it until the session ends; the kernel
          releases it whatever way this process ends. Prints `FBOCC_LOCKED <json>` once held, or
          `FBOCC_LOCK_BUSY <holder json>` and exits 75 when another holder keeps it past --wait seconds
          (`FBOCC_LOCK_WAIT <holder json>` once when it starts waiting).

The first line on stderr of `run` is `fbocc-pgid <pgid>` (the host's way to stop the group itself).
"""

import os
import select
import signal
import subprocess
import sys
import time

# Start-up time counts (this runs before every remote command): json, shutil, fcntl and typing (the type
# comments only) are imported where needed, or not at all.

GRACE_S = 5.0
LOST_EXIT = 129  # 128 + SIGHUP: what a shell reports for a command whose terminal went away
BUSY_EXIT = 75  # EX_TEMPFAIL
MARKER_SUFFIX = ".fbocc-run"


def process_start(pid):
    # type: (int) -> Optional[str]
    """The kernel's start time of `pid` (clock ticks since boot); None when there is no such process."""
    try:
        with open("/proc/{}/stat".format(pid), "r") as fh:
            stat = fh.read()
    except (OSError, IOError):
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def same_process(pid, start):
    # type: (int, Optional[str]) -> bool
    """True when `pid` still names the process that had start time `start` (pids are recycled)."""
    now = process_start(pid)
    if now is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return start is None  # no /proc: the pid exists, trust it
    return start is None or now == start


def group_alive(pgid):
    # type: (int) -> bool
    """True while a process of the group runs (zombies waiting for their parent's wait() do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not os.path.isdir("/proc/self"):
        return True
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/{}/stat".format(name), "r") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IOError, IndexError):
            continue
        if fields[0] != "Z" and fields[2] == str(pgid):
            return True
    return False


def stop_group(pgid, grace, reap=None):
    # type: (int, float, Any) -> None
    """TERM the process group, KILL it after `grace` seconds if anything is left."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if reap is not None:
            reap()
        if not group_alive(pgid):
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if reap is not None:
        for _ in range(40):
            reap()
            if not group_alive(pgid):
                return
            time.sleep(0.05)


def remove_path(path):
    # type: (str) -> None
    if os.path.islink(path) or os.path.isfile(path):
        try:
            os.remove(path)
        except OSError:
            pass
    elif os.path.isdir(path):
        import shutil

        shutil.rmtree(path, ignore_errors=True)


def write_json(path, doc):
    # type: (str, Dict[str, Any]) -> None
    import json

    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    tmp = "{}.{}.tmp".format(path, os.getpid())
    with open(tmp, "w") as fh:
        json.dump(doc, fh)
    os.replace(tmp, path)


def say(line):
    # type: (str) -> None
    """Print one line; the session may be gone, so a broken pipe is not an error here."""
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except (OSError, IOError, ValueError):
        pass


class SessionWatch:
    """Watches stdin for the host's heartbeat; `lost` tells why the session is over, else None."""

    def __init__(self, heartbeat):
        # type: (float) -> None
        self.heartbeat = heartbeat
        self.last = time.monotonic()
        self.open = True
        self.signalled = None  # type: Optional[int]
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        # A child that ends wakes the wait at once (SIGCHLD writes to this pipe), not at its next timeout.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        signal.signal(signal.SIGCHLD, self._on_child)

    def _on_child(self, _signum, _frame):
        # type: (int, Any) -> None
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _on_signal(self, signum, _frame):
        # type: (int, Any) -> None
        self.signalled = signum

    def wait(self, seconds):
        # type: (float) -> Optional[str]
        """Wait up to `seconds` for stdin activity; return the reason the session is over, or None."""
        if self.signalled is not None:
            return "signal {}".format(self.signalled)
        watched = [0, self._wake_r] if self.open else [self._wake_r]
        try:
            ready, _, _ = select.select(watched, [], [], seconds)
        except (OSError, ValueError):
            ready = []
        if self._wake_r in ready:
            os.read(self._wake_r, 4096)
        if self.open:
            if 0 in ready:
                try:
                    data = os.read(0, 4096)
                except OSError:
                    data = b""
                if not data:
                    self.open = False
                    return "the SSH session ended"
                self.last = time.monotonic()
        if self.signalled is not None:
            return "signal {}".format(self.signalled)
        if self.heartbeat > 0 and time.monotonic() - self.last > self.heartbeat:
            return "no heartbeat from the host for {:g} s".format(self.heartbeat)
        return None


def _announce_group():
    # type: () -> None
    try:
        os.write(2, "fbocc-pgid {}\n".format(os.getpid()).encode())
    except OSError:
        pass


def cmd_run(args):
    # type: (Options) -> int
    command = args.command
    if not command:
        sys.stderr.write("supervise.py run: no command given\n")
        return 2
    watch = SessionWatch(args.heartbeat)
    shell = os.environ.get("SHELL") or "/bin/sh"
    try:
        # One word: a shell command line (what the host sends); several: an argv run as it is.
        argv = [shell, "-c", command[0]] if len(command) == 1 else command
        # The group id goes out first on stderr, from the child itself before its command can print.
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True,
                                 preexec_fn=_announce_group)
    except OSError as exc:
        sys.stderr.write("supervise.py: cannot start {}: {}\n".format(shell, exc))
        return 127
    pgid = child.pid
    if args.marker:
        import json

        write_json(args.marker, {
            "supervisor_pid": os.getpid(), "supervisor_start": process_start(os.getpid()),
            "pgid": pgid, "child_start": process_start(pgid), "owner": json.loads(args.owner or "{}"),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "remove": args.remove or [],
            "host": os.uname()[1]})
    lost = None  # type: Optional[str]
    while child.poll() is None:
        lost = watch.wait(0.2)
        if lost is not None:
            break
    if lost is not None:
        stop_group(pgid, args.grace, reap=child.poll)
        for path in args.remove or []:
            remove_path(path)
        if args.marker:
            remove_path(args.marker)
        try:
            sys.stderr.write("fbocc-supervise: {}: stopped process group {}\n".format(lost, pgid))
        except (OSError, IOError):
            pass
        return LOST_EXIT
    code = child.returncode
    if group_alive(pgid):  # stragglers the command left in its group (background jobs) go with it
        stop_group(pgid, args.grace)
    if args.marker:
        remove_path(args.marker)
    return 128 - code if code < 0 else code


def cmd_clean(args):
    # type: (Options) -> int
    import json

    found = []  # type: List[Dict[str, Any]]
    try:
        names = sorted(os.listdir(args.dir))
    except OSError:
        names = []
    for name in names:
        if not name.endswith(MARKER_SUFFIX):
            continue
        path = os.path.join(args.dir, name)
        try:
            with open(path) as fh:
                doc = json.load(fh)
        except (OSError, IOError, ValueError):
            continue
        entry = {"marker": name, "owner": doc.get("owner", {}), "started_at": doc.get("started_at"),
                 "running": False, "killed": False}  # type: Dict[str, Any]
        if same_process(int(doc.get("supervisor_pid", 0)), doc.get("supervisor_start")):
            entry["running"] = True
            found.append(entry)
            continue
        pgid = int(doc.get("pgid", 0))
        # A pgid stays reserved while any process of the group lives; a recycled one has a new leader.
        leader = process_start(pgid) if pgid > 0 else None
        if pgid > 0 and group_alive(pgid) and (leader is None or leader == doc.get("child_start")):
            stop_group(pgid, GRACE_S)
            entry["killed"] = True
        for victim in doc.get("remove", []):
            remove_path(victim)
        remove_path(path)
        entry["removed"] = doc.get("remove", [])
        found.append(entry)
    say("FBOCC_CLEAN " + json.dumps(found))
    return 0


def _holder(fd):
    # type: (int) -> Dict[str, Any]
    import json

    try:
        raw = os.pread(fd, 65536, 0)
        return dict(json.loads(raw.decode())) if raw.strip() else {}
    except (OSError, ValueError):
        return {}


def cmd_lock(args):
    # type: (Options) -> int
    import errno
    import fcntl
    import json

    parent = os.path.dirname(args.file)
    if os.path.islink(parent) and not os.path.exists(parent):
        say("FBOCC_LOCK_ERROR " + json.dumps({"message": "{} is a symbolic link to {}, which does not exist".format(
            parent, os.readlink(parent))}))
        return 2
    try:
        os.makedirs(parent, exist_ok=True)
        fd = os.open(args.file, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        say("FBOCC_LOCK_ERROR " + json.dumps({"message": "cannot create {}: {}".format(args.file, exc.strerror),
                                              "errno": errno.errorcode.get(exc.errno or 0, "")}))
        return 2
    watch = SessionWatch(args.heartbeat)
    deadline = time.monotonic() + max(0.0, args.wait)
    announced = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                raise
        holder = _holder(fd)
        if time.monotonic() >= deadline:
            say("FBOCC_LOCK_BUSY " + json.dumps(holder))
            return BUSY_EXIT
        if not announced:
            say("FBOCC_LOCK_WAIT " + json.dumps(holder))
            announced = True
        if watch.wait(0.2) is not None:
            return LOST_EXIT
    doc = json.loads(args.owner or "{}")
    doc.update({"lock_pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(doc).encode(), 0)
    say("FBOCC_LOCKED " + json.dumps(doc))
    while watch.wait(1.0) is None:
        pass
    os.ftruncate(fd, 0)  # released: nobody should read this holder any more
    os.close(fd)
    return 0


class Options(object):
    """The parsed command line (argparse costs more start-up time than a whole short remote command)."""

    def __init__(self, cmd):
        # type: (str) -> None
        self.cmd = cmd
        self.grace = GRACE_S
        self.heartbeat = 0.0
        self.marker = None  # type: Optional[str]
        self.owner = None  # type: Optional[str]
        self.remove = []  # type: List[str]
        self.command = []  # type: List[str]
        self.dir = None  # type: Optional[str]
        self.file = None  # type: Optional[str]
        self.wait = 0.0


def parse(argv):
    # type: (List[str]) -> Options
    if not argv or argv[0] not in ("run", "clean", "lock"):
        raise ValueError("usage: supervise.py run|clean|lock [options] (see the module docstring)")
    opts = Options(argv[0])
    words = list(argv[1:])
    while words:
        word = words.pop(0)
        if word == "--":
            opts.command = words
            break
        name = word[2:] if word.startswith("--") else ""
        if name not in ("grace", "heartbeat", "marker", "owner", "remove", "dir", "file", "wait") or not words:
            raise ValueError("supervise.py {}: unexpected argument {!r}".format(opts.cmd, word))
        value = words.pop(0)
        if name == "remove":
            opts.remove.append(value)
        elif name in ("grace", "heartbeat", "wait"):
            setattr(opts, name, float(value))
        else:
            setattr(opts, name, value)
    if (opts.cmd == "clean" and not opts.dir) or (opts.cmd == "lock" and not opts.file):
        raise ValueError("supervise.py {}: missing --{}".format(opts.cmd, "dir" if opts.cmd == "clean" else "file"))
    return opts


def main(argv=None):
    # type: (Optional[List[str]]) -> int
    try:
        opts = parse(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        sys.stderr.write("{}\n".format(exc))
        return 2
    if opts.cmd == "run":
        return cmd_run(opts)
    if opts.cmd == "clean":
        return cmd_clean(opts)
    return cmd_lock(opts)


if __name__ == "__main__":
    sys.exit(main())
