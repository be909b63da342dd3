"""The trtexec test double answers as trtexec of each TensorRT version does (sampleOptions.cpp of release/8.6,
release/10.x, release/11.0, release/11.1): removed options fail, deprecated ones warn, defaults differ. If it
were lenient, our command lines could pass here and fail on a target."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fbocc.target.trtexec import TrtVersion
from fbocc.target.trtexec_commands import BuildSpec, build_command, precision_plan
from tests.tiny_graphs import write_graphs

DOUBLE = Path(__file__).parent / "doubles" / "trtexec_double.py"


def trtexec(version: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(DOUBLE), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "FBOCC_DOUBLE_TRT_VERSION": version})


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_graphs(tmp_path_factory.mktemp("graphs"))


def parsed(version: str, *options: str) -> str:
    """The log of a run with `options` that stops after option parsing (the engine file does not exist)."""
    return trtexec(version, "--loadEngine=/nonexistent/e.engine", *options).stdout


def unknown(version: str, option: str) -> bool:
    return f"Unknown option: {option.split('=')[0]} " in parsed(version, option)


@pytest.mark.parametrize("version", ["11.0.0", "11.1.0"])
def test_trtexec_11_fails_on_each_removed_precision_option(version: str) -> None:
    for option in ("--fp16", "--int8", "--best", "--bf16", "--fp8", "--int4", "--calib=c.cache"):
        assert unknown(version, option), option
        assert not unknown("10.8.0", option), option
    res = trtexec(version, "--loadEngine=e", "--fp16")
    assert res.returncode == 1 and "&&&& FAILED TensorRT.trtexec [TensorRT v11" in res.stdout


def test_trtexec_10_removed_the_old_build_options_that_8_6_only_deprecated() -> None:
    for option in ("--workspace=1024", "--explicitBatch", "--buildOnly"):
        assert "deprecated" in parsed("8.6.13", option) and not unknown("8.6.13", option), option
        assert unknown("10.0.0", option) and unknown("10.16.0", option), option
    assert not unknown("8.6.13", "--maxBatch=1") and unknown("10.8.0", "--maxBatch=1")
    assert unknown("10.0.0", "--int4") and not unknown("10.1.0", "--int4") and unknown("8.6.13", "--bf16")


def test_plugins_option_warns_everywhere_static_plugins_is_the_spelling() -> None:
    for version in ("8.6.13", "10.8.0", "11.0.0", "11.1.0"):
        log = parsed(version, "--plugins=p.so")
        assert "--plugins flag has been deprecated, use --staticPlugins flag instead." in log and "Unknown" not in log
        assert "deprecated" not in parsed(version, "--staticPlugins=p.so") and not unknown(version, "--staticPlugins=p")


def test_strongly_typed_exists_from_10_and_is_a_no_op_in_11() -> None:
    assert unknown("8.6.13", "--stronglyTyped") and not unknown("10.0.0", "--stronglyTyped")
    assert "--best and --stronglyTyped cannot be both set" in parsed("10.8.0", "--stronglyTyped", "--best")
    assert "Disabling BuilderFlag::kFP16." in parsed("10.8.0", "--stronglyTyped", "--fp16")
    assert not unknown("11.0.0", "--stronglyTyped")


def test_timing_switches_of_11_and_their_deprecated_predecessors() -> None:
    for option in ("--includeDataTransfers", "--noSpinWait", "--noCudaGraph"):
        assert unknown("10.16.0", option) and not unknown("11.0.0", option), option
    for option in ("--noDataTransfers", "--useSpinWait", "--useCudaGraph", "--separateProfileRun"):
        assert "deprecated" not in parsed("10.8.0", option) and "is deprecated" in parsed("11.0.0", option), option


def test_reference_outputs_options_came_with_11_1() -> None:
    for option in ("--accuracyThreshold=0.01", "--loadRefOutputs=o:o.dat", "--refPair=0"):
        assert unknown("11.0.0", option) and not unknown("11.1.0", option), option


@pytest.mark.parametrize(("version", "precision", "expected"), [
    ("8.6.13", "fp32", {"precision": "fp32", "strongly_typed": False, "builder_flags": []}),
    ("8.6.13", "fp16", {"precision": "fp16", "strongly_typed": False, "builder_flags": ["fp16"]}),
    ("8.6.13", "int8", {"precision": "int8", "strongly_typed": False, "builder_flags": ["int8"]}),
    ("10.8.0", "fp16", {"precision": "fp16", "strongly_typed": True, "builder_flags": []}),
    ("10.8.0", "int8", {"precision": "int8", "strongly_typed": True, "builder_flags": []}),
    ("10.13.0", "fp16", {"precision": "fp16", "strongly_typed": True, "builder_flags": []}),
    ("11.0.0", "fp16", {"precision": "fp16", "strongly_typed": True, "builder_flags": []}),
    ("11.1.0", "int8", {"precision": "int8", "strongly_typed": True, "builder_flags": []}),
])
def test_our_build_command_gives_the_asked_precision_on_each_version(graphs: dict[str, Path], tmp_path: Path,
                                                                      version: str, precision: str,
                                                                      expected: dict[str, object]) -> None:
    trt = TrtVersion.parse(version)
    plan = precision_plan(trt, precision)
    engine = tmp_path / "e.engine"
    argv = build_command(sys.executable, trt, BuildSpec(onnx=str(graphs[plan.graph]), engine=str(engine),
                                                        plugin=None, precision=precision, profile={}))
    res = trtexec(version, *argv[1:])
    assert res.returncode == 0, res.stdout
    doc = json.loads(engine.read_text())
    assert {k: doc[k] for k in expected} == expected
    assert ("Precision: Strongly Typed" in res.stdout) is expected["strongly_typed"]
