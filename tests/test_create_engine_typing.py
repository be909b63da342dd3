"""deploy/create_engine.py (the Python-API builder) builds each precision as the target's TensorRT allows,
against the tensorrt stand-in of that version (tests/doubles/tensorrt_standin; pyCore.cpp per release):
strongly typed (NetworkDefinitionCreationFlag.STRONGLY_TYPED, no precision flags) from 10.x on, weakly
typed (BuilderFlag.FP16/INT8 with the explicit-batch network) on 8.6, and a clear refusal where a mode
does not exist on that version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_run_sequence import make_sequence_set
from tests.tiny_graphs import write_graphs

REPO = Path(__file__).resolve().parent.parent
STANDIN = REPO / "tests" / "doubles" / "tensorrt_standin"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], Path]:
    root = tmp_path_factory.mktemp("engine")
    return write_graphs(root / "graphs"), make_sequence_set(root / "set", frames=1, write_onnx=False)


def create_engine(version: str, onnx: Path, samples: Path, precision: str, engines: Path,
                  *extra: str) -> tuple[int, dict[str, object] | None, str]:
    env = {**os.environ, "PYTHONPATH": f"{STANDIN}{os.pathsep}{REPO}", "FBOCC_STANDIN_TRT_VERSION": version}
    proc = subprocess.run([sys.executable, "-m", "deploy.create_engine", "--onnx", str(onnx),
                           "--samples", str(samples), "--precision", precision, "--engine-dir", str(engines), *extra],
                          capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    tagged = [ln for ln in proc.stdout.splitlines() if ln.startswith("FBOCC_ENGINE ")]
    return proc.returncode, json.loads(tagged[-1][len("FBOCC_ENGINE "):]) if tagged else None, proc.stdout + proc.stderr


@pytest.mark.parametrize(("version", "graphs", "strong", "flags"), [
    ("8.6.13", {"fp32": "fp32", "fp16": "fp32", "int8": "int8"}, False,
     {"fp32": [], "fp16": ["FP16"], "int8": ["INT8"]}),
    ("10.8.0", {"fp32": "fp32", "fp16": "fp16", "int8": "int8"}, True, {"fp32": [], "fp16": [], "int8": []}),
    ("11.0.0", {"fp32": "fp32", "fp16": "fp16", "int8": "int8"}, True, {"fp32": [], "fp16": [], "int8": []}),
])
def test_each_precision_is_built_as_the_version_allows(workspace: tuple[dict[str, Path], Path], tmp_path: Path,
                                                       version: str, graphs: dict[str, str], strong: bool,
                                                       flags: dict[str, list[str]]) -> None:
    paths, samples = workspace
    keys = set()
    for precision in ("fp32", "fp16", "int8"):
        rc, built, log = create_engine(version, paths[graphs[precision]], samples, precision, tmp_path)
        assert rc == 0 and built is not None, log
        engine = json.loads(Path(str(built["engine"])).read_text())
        assert engine["strongly_typed"] is strong and engine["builder_flags"] == flags[precision]
        assert engine["precision"] == precision  # what TensorRT would run: the asked precision
        keys.add(built["key"])
    assert len(keys) == 3


def test_weak_typing_is_refused_where_it_is_gone_and_strong_where_it_never_was(
        workspace: tuple[dict[str, Path], Path], tmp_path: Path) -> None:
    paths, samples = workspace
    rc, _, log = create_engine("11.0.0", paths["fp32"], samples, "fp16", tmp_path, "--typing", "weak")
    assert rc == 2 and "weak typing is deprecated since 10.12 and removed in 11.0" in log
    rc, _, log = create_engine("10.13.0", paths["fp32"], samples, "fp16", tmp_path, "--typing", "weak")
    assert rc == 2 and "use the typed graph" in log
    rc, _, log = create_engine("8.6.13", paths["fp16"], samples, "fp16", tmp_path, "--typing", "strong")
    assert rc == 2 and "TensorRT 8.6.13 has no strongly typed networks" in log
    rc, built, log = create_engine("10.8.0", paths["fp32"], samples, "fp16", tmp_path, "--typing", "weak")
    assert rc == 0 and built is not None, log
    assert json.loads(Path(str(built["engine"])).read_text())["builder_flags"] == ["FP16"]
    rc, _, log = create_engine("10.8.0", paths["fp32"], samples, "best", tmp_path)
    assert rc == 2 and "precision 'best'" in log
