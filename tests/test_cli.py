"""The `fbocc` executable: version, config show, exit codes, and a light import footprint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FBOCC = [sys.executable, "-m", "fbocc"]


def fbocc(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FBOCC, *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_version(isolated_home: Path) -> None:
    from fbocc import __version__

    result = fbocc("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"fbocc {__version__}"


def test_config_show_json_reports_origins(isolated_home: Path) -> None:
    Path("fbocc.toml").write_text('[build]\nprofile = "sim"\n')
    result = fbocc("config", "show", "--json", env={"FBOCC_BUILD_JOBS": "7"})
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    settings = doc["settings"]
    assert settings["build.profile"] == {"value": "sim", "origin": str(Path.cwd() / "fbocc.toml")}
    assert settings["build.jobs"] == {"value": 7, "origin": "environment"}
    assert settings["profiles.sim.cxx"]["origin"].startswith("built-in")


def test_config_show_table(isolated_home: Path) -> None:
    result = fbocc("config", "show")
    assert result.returncode == 0
    assert "build.profile" in result.stdout and "drive-os-6.0.10" in result.stdout


def test_config_error_is_one_message_with_exit_code_2(isolated_home: Path) -> None:
    Path("fbocc.toml").write_text('[build]\nprofle = "sim"\n')
    result = fbocc("config", "show")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "unknown key build.profle (did you mean 'profile'?)" in result.stderr
    assert "fix:" in result.stderr


def test_config_option_and_usage_errors(isolated_home: Path, tmp_path: Path) -> None:
    result = fbocc("--config", str(tmp_path / "missing.toml"), "config", "show")
    assert result.returncode == 2
    assert "missing.toml does not exist" in result.stderr
    result = fbocc("no-such-command")
    assert result.returncode == 2
    assert "No such command" in result.stderr


def test_cli_run_returns_error_exit_codes(isolated_home: Path) -> None:
    from fbocc.cli import app, run
    from fbocc.errors import TransferError

    @app.command("raise-for-test", hidden=True)
    def _raise() -> None:
        raise TransferError("connection to orin lost", fix="check the cable")

    try:
        assert run(["raise-for-test"]) == 5
    finally:
        app.registered_commands = [c for c in app.registered_commands if c.name != "raise-for-test"]


def test_help_does_not_import_heavy_modules(isolated_home: Path) -> None:
    code = ("import sys; from fbocc.cli import run; rc = run(['--help']);"
            "heavy = [m for m in ('torch', 'docker', 'paramiko', 'fabric', 'onnx', 'matplotlib') if m in sys.modules];"
            "print(heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout


@pytest.mark.parametrize("name", ["docker", "ssh", "gpu"])
def test_markers_are_registered(name: str, pytestconfig: pytest.Config) -> None:
    assert any(line.startswith(f"{name}:") for line in pytestconfig.getini("markers"))
