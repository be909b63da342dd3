"""A Docker daemon that dies in the middle of `fbocc cross-build`, against a real daemon of the test's own.

The test starts a private dockerd (own data root and socket), copies the sim build image into it (about
17 s here), stops that daemon with SIGTERM while the recipe compiles, and restarts it. The shared daemon
other builds use is never touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fbocc.assets import asset_dir
from fbocc.build import container as bc
from fbocc.build.cross_build import ensure_image
from fbocc.config import load_config
from tests.dockerd import PrivateDockerd, follow_stderr

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(600)]


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def sim_image(docker_daemon: None) -> str:
    profile = load_config(user_file=Path("/nonexistent"), cwd=Path("/")).profile("sim")
    tag, _ = ensure_image(profile, None, on_step=_quiet, on_line=_quiet)
    return tag


@pytest.fixture
def private_dockerd(sim_image: str) -> Iterator[PrivateDockerd]:
    daemon = PrivateDockerd()
    try:
        daemon.start()
        daemon.load_from_shared(sim_image)
        yield daemon
    finally:
        daemon.close()


def _cross_build(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "fbocc", "cross-build", "--profile", "sim", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)


def _labelled(daemon: PrivateDockerd) -> list:  # type: ignore[type-arg]
    client = daemon.client()
    try:
        return list(client.containers.list(all=True, filters={"label": bc.LABEL}))
    finally:
        client.close()


def test_daemon_stopped_mid_build_is_one_environment_error_and_the_next_build_removes_the_container(
        private_dockerd: PrivateDockerd, sim_image: str, tmp_path: Path) -> None:
    sources = tmp_path / "plugins"
    shutil.copytree(asset_dir("plugins"), sources, ignore=shutil.ignore_patterns("build", "out", ".*"))
    (sources / "fbocc-test-nonce.txt").write_text(uuid.uuid4().hex)
    # PYTHONPATH: the child runs this checkout, as pytest does, whatever the shared venv's install points at.
    env = {**os.environ, "DOCKER_HOST": private_dockerd.host, "FBOCC_DEBUG": "", "PYTHONPATH": str(REPO)}

    proc = _cross_build(["--force", "--sources", str(sources), "--out", str(tmp_path / "out"), "--jobs", "1"],
                        env, tmp_path)
    seen, reader = follow_stderr(proc, until="nvcc")  # the build is compiling in its container
    [box] = _labelled(private_dockerd)
    assert box.labels[bc.OWNER_PID] == str(proc.pid)  # the container names the run that owns it

    private_dockerd.stop(signal.SIGTERM)
    code = proc.wait(60)
    reader.join(10)
    err = "".join(seen)
    assert code == 3, err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("environment error:")]
    assert len(errors) == 1, err
    assert str(private_dockerd.socket) in errors[0] and "lost the connection to the Docker daemon" in errors[0]
    assert "start the Docker daemon again" in err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())

    private_dockerd.start()
    left = _labelled(private_dockerd)
    assert [b.name for b in left] == [box.name] and left[0].status != "running"
    # A build container of a live process (another build running now) must survive the clean-up.
    client = private_dockerd.client()
    try:
        live = client.containers.create(sim_image, command=["true"], labels={bc.LABEL: "1", **bc.owner_labels()})
    finally:
        client.close()

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "Makefile").write_text("all:\n\t@echo 'this test build fails at once' && false\n")
    again = _cross_build(["--sources", str(broken), "--out", str(tmp_path / "out2")], env, tmp_path)
    _, err2 = again.communicate(timeout=120)
    assert again.returncode == 4, err2
    assert f"removed build container {box.name}" in err2 and f"cross-build pid {proc.pid}" in err2, err2
    assert [b.name for b in _labelled(private_dockerd)] == [live.name]
