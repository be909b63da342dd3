"""Packaging and code rules: the wheel works outside the checkout, deploy/ stays Python 3.8 and small,
the orchestration side never pulls in torch, and the linters are clean."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_deploy_is_python38_compatible() -> None:
    result = subprocess.run([str(BIN / "vermin"), "--no-tips", "--violations", "-t=3.8-", "deploy"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_deploy_imports_only_stdlib_numpy_tensorrt() -> None:
    allowed = set(sys.stdlib_module_names) | {"numpy", "tensorrt", "onnx", "onnxruntime", "onnxruntime_extensions"}
    siblings = {p.stem for p in (REPO / "deploy").glob("*.py")}
    for path in sorted((REPO / "deploy").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top in allowed or top in siblings, f"{path.name} imports {name}: deploy/ runs on the target"


def test_lint_ruff_and_mypy_clean() -> None:
    ruff = subprocess.run([str(BIN / "ruff"), "check", "fbocc", "tests", "tools"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert ruff.returncode == 0, ruff.stdout
    mypy = subprocess.run([str(BIN / "mypy")], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert mypy.returncode == 0, mypy.stdout


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(REPO)],
                   check=True, capture_output=True, timeout=600)
    wheel = next(dist.glob("fbocc-*.whl"))
    env_dir = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], check=True, timeout=900,
                   env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    version = subprocess.run([str(env_dir / "bin" / "fbocc"), "--version"], cwd=elsewhere, capture_output=True,
                             text=True, check=True, timeout=60)
    assert version.stdout.startswith("fbocc ")
    probe = ("from fbocc.assets import asset_dir; import fbocc, sys; from deploy import manifest, protocol;"
             "print(all((asset_dir(n) / f).is_file() for n, f in "
             "[('deploy', 'manifest.py'), ('deploy', '__init__.py'), ('cross', 'profiles.toml')]));"
             "print(fbocc.__file__)")
    result = subprocess.run([str(py), "-c", probe], cwd=elsewhere, capture_output=True, text=True, check=True,
                            timeout=60)
    ok, location = result.stdout.split()
    assert ok == "True"
    assert str(env_dir) in location, "the installed wheel, not the checkout, must be imported"
    assert all((Path(location).parent / "_assets" / name).is_dir() for name in ("plugins", "cross", "docker"))
    assert (Path(location).parent.parent / "deploy" / "run_sequence.py").is_file(), "deploy/ is a package of its own"
    shipped = {p.relative_to(Path(location).parent).as_posix() for p in Path(location).parent.rglob("*.py")}
    assert not {"old_toolchain.py", "ops/elf.py", "ops/workloads.py"} & shipped, "development tooling in the wheel"
    shown = subprocess.run([str(env_dir / "bin" / "fbocc"), "config", "show", "--json"], cwd=elsewhere,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert '"profiles.drive-os-6.0.10.cuda_version"' in shown.stdout


# The SSH owner is the package fbocc/target/transport/ (sessions, SFTP, host keys, link watch).
SSH_OWNER = "fbocc/target/transport/"


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_only_the_ssh_owner_imports_paramiko_and_nothing_is_loaded_by_path() -> None:
    sources = [*REPO.glob("fbocc/**/*.py"), *REPO.glob("deploy/*.py"), *REPO.glob("benchmarks/*.py")]
    for path in sorted(sources):
        rel = path.relative_to(REPO).as_posix()
        ssh = [n for n in _imports(path) if n.split(".")[0] in ("paramiko", "fabric")]
        assert not ssh or rel.startswith(SSH_OWNER), f"{rel} imports {ssh}: SSH goes through fbocc.target.transport"
        # fbbev.py puts a user's FB-BEV tree (third-party code at a path given at run time) on sys.path, as
        # Python's own `-m` would; what is checked here is that no project file is loaded by path.
        if rel.startswith(("fbocc/", "deploy/")) and rel != "fbocc/export/fbbev.py":
            text = path.read_text()
            assert "spec_from_file_location" not in text and "sys.path.insert" not in text, \
                f"{rel} loads code by path: import the package (deploy is one) instead"


ORCHESTRATION = ["fbocc.config", "fbocc.target.transport", "fbocc.target.push", "fbocc.target.bench",
                 "fbocc.target.contract", "fbocc.target.store", "fbocc.target.artefacts", "fbocc.target.transport.sftp",
                 "fbocc.build.cross_build", "fbocc.build.container", "fbocc.results.report", "fbocc.results.history",
                 "fbocc.doctor", "fbocc.target.validate", "fbocc.target.trtexec", "fbocc.results.metrics", "fbocc.cli",
                 "fbocc.build.profile_image", "fbocc.build.debian_base", "fbocc.results.figure", "fbocc.results.layers"]


def test_orchestration_side_never_imports_torch_or_the_model() -> None:
    code = ("import sys, importlib;"
            f"[importlib.import_module(m) for m in {ORCHESTRATION!r}];"
            "print([m for m in ('torch', 'fbocc.model', 'fbocc.ops.reference', 'fbocc.export.pipeline')"
            " if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_model_side_never_imports_docker_or_ssh() -> None:
    code = ("import sys; import fbocc.export.pipeline, fbocc.model, fbocc.ops, fbocc.export.onnx_graph;"
            "print([m for m in ('docker', 'paramiko', 'fabric', 'fbocc.target.transport', 'fbocc.build.container')"
            " if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_readme_map_names_every_module_where_it_lives() -> None:
    """README's architecture table must match `ls`: every module of the stage folders (build/, target/, export/,
    results/) and of deploy/ is named in its folder's row; cli/, model/ and ops/ are named as folders."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:3] for line in section.splitlines() if line.startswith("| `")]
    missing = []
    for path in sorted([*REPO.glob("fbocc/*/**/*.py"), *REPO.glob("deploy/*.py")]):
        rel = path.relative_to(REPO)
        top = rel.parts[0] if rel.parts[0] == "deploy" else "/".join(rel.parts[:2])
        if top in ("fbocc/cli", "fbocc/model", "fbocc/ops"):
            named = any(f"{rel.parts[1]}/`" in cells[0] + cells[1] for cells in rows)
        elif path.name == "__init__.py":
            named = rel.parent.as_posix() == top or any(f"`{rel.parent.name}/`" in cells[1] for cells in rows)
        else:
            named = any(f"`{top}/`" in cells[0] and f"`{path.name}`" in cells[1] for cells in rows)
        if not named:
            missing.append(rel.as_posix())
    assert not missing, f"README's architecture map does not name {missing} in its folder's row"
