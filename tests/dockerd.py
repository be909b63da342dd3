"""Make sure a real Docker daemon answers; start one the way `make setup` does when none runs."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path


def docker_ping() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def ensure_daemon(timeout: float = 60.0) -> str | None:
    """Return None when a daemon answers (starting one if needed), else the reason it could not."""
    if docker_ping():
        return None
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        return "dockerd is not installed (run `make setup` as root, or apt-get install docker.io)"
    with open("/tmp/fbocc-dockerd.log", "ab") as log:
        subprocess.Popen([dockerd, "--bridge=none", "--iptables=false"], stdout=log, stderr=log,
                         start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if docker_ping():
            return None
        time.sleep(0.5)
    return f"dockerd did not answer within {timeout:.0f}s (see /tmp/fbocc-dockerd.log)"


class PrivateDockerd:
    """A Docker daemon of the test's own (own data root, exec root and unix socket), safe to stop and kill.

    Tests that take a daemon down use this one, never the shared daemon other builds are using.
    """

    def __init__(self) -> None:
        # A short path: a unix socket path must stay under 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="fbocc-dd-", dir="/tmp"))
        self.socket = self.root / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise RuntimeError("dockerd is not installed")
        with open(self.root / "dockerd.log", "ab") as log:
            self.proc = subprocess.Popen(
                [dockerd, "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
                 "-H", self.host, "--pidfile", str(self.root / "docker.pid"), "--bridge=none", "--iptables=false"],
                stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"private dockerd exited {self.proc.returncode}: see {self.root / 'dockerd.log'}")
            if self.ping():
                return
            time.sleep(0.2)
        raise RuntimeError(f"private dockerd did not answer within {timeout:.0f}s")

    def ping(self) -> bool:
        import docker

        try:
            client = docker.DockerClient(base_url=self.host, timeout=5)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:
            return False

    def client(self):  # type: ignore[no-untyped-def]
        import docker

        return docker.DockerClient(base_url=self.host, timeout=60)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60.0) -> None:
        """Signal the daemon and wait until it has exited."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signum)
        self.proc.wait(timeout)

    def load_from_shared(self, tag: str) -> float:
        """Copy an image from the shared daemon into this one (docker save | docker load); return seconds."""
        started = time.monotonic()
        subprocess.run(f"docker save {shlex.quote(tag)} | DOCKER_HOST={shlex.quote(self.host)} docker load -q",
                       shell=True, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "DOCKER_HOST": ""})
        return time.monotonic() - started

    def close(self) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                for box in self.client().containers.list(all=True):
                    box.remove(force=True)
            self.stop()
        finally:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(30)
            # Whatever the daemon left mounted under its root (it unmounts on a clean stop).
            mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                      if line.split()[1].startswith(str(self.root))]
            for mount in sorted(mounts, key=len, reverse=True):
                subprocess.run(["umount", "-l", mount], check=False)
            shutil.rmtree(self.root, ignore_errors=True)


def follow_stderr(proc: subprocess.Popen[str], until: str,
                  seconds: float = 120) -> tuple[list[str], threading.Thread]:
    """Collect `proc`'s stderr lines in a thread; return once a line contains `until` (fails after `seconds`).
    The list keeps growing until the reader thread (returned, to join) sees the end of stderr."""
    seen: list[str] = []
    reached = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if until in line:
                reached.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert reached.wait(seconds), "".join(seen)
    return seen, reader
