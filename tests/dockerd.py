"""Make sure a real Docker daemon answers; start one the way `make setup` does when none runs."""

from __future__ import annotations

import shutil
import subprocess
import time


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
