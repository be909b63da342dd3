"""Shared fixtures: real sshd targets, a real Docker daemon, GPU gating.

With CI=true, docker, ssh and nvcc tests fail loudly when their daemon or tool is missing; gpu tests skip with
a reason wherever no CUDA device is present.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.dockerd import ensure_daemon
from tests.sshd import SSHD, SshServer, make_server

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPO = Path(__file__).resolve().parents[1]


# A suite started in the background by a non-interactive shell inherits SIGINT as ignored, and so would every
# fbocc the Ctrl-C tests start (Python keeps an ignored SIGINT). A caught handler resets to the default on exec,
# so the children get a real Ctrl-C, as from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true and {reason}: CI must run this test, not skip it", pytrace=False)
    pytest.skip(reason)


def _cuda_reason() -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device on this machine (GPU tests run on the device machine: make test-gpu)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    reason = _cuda_reason()
    if reason:
        for item in items:
            if item.get_closest_marker("gpu"):
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def nvcc() -> Path:
    """CUDA's nvcc under $CUDA_HOME (default /usr/local/cuda): CI has it; elsewhere the test skips."""
    path = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc"
    if not path.exists():
        _unavailable(f"nvcc not found at {path} (set CUDA_HOME)")
    return path


@pytest.fixture(scope="session")
def docker_daemon() -> Iterator[None]:
    """A reachable Docker daemon (started if none answers)."""
    reason = ensure_daemon()
    if reason:
        _unavailable(reason)
    yield


@pytest.fixture
def sshd_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., SshServer]]:
    """Start any number of real sshd servers on loopback; all are stopped after the test."""
    if not Path(SSHD).exists() or shutil.which("ssh-keygen") is None:
        _unavailable("OpenSSH server is not installed (run `make setup` as root, or apt-get install openssh-server)")
    servers: list[SshServer] = []

    def start(**kwargs: object) -> SshServer:
        server = make_server(tmp_path_factory.mktemp("sshd"), **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def sshd(sshd_factory: Callable[..., SshServer]) -> SshServer:
    """One real sshd on 127.0.0.1 with a trusted host key and an authorized client key."""
    return sshd_factory()


@pytest.fixture
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME and XDG_CONFIG_HOME in a temp dir, cwd there too: no user config leaks into a test."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    for name in list(os.environ):
        if name.startswith("FBOCC_"):
            monkeypatch.delenv(name)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return home
