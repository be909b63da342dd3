"""Target-side pieces of remote-bench without a target: deploy/create_engine.py's cache key and checks,
deploy/bench.py's tegrastats parsing and runner, and the strictness of the trtexec test double."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deploy import bench, create_engine
from fbocc.export.samples import save_manifest, write_tensor

REPO = Path(__file__).resolve().parents[1]
DOUBLE = REPO / "tests" / "doubles" / "trtexec_double.py"


PROFILE = {"ranks_bev": {"min": [4], "opt": [8], "max": [16]}}


def samples(tmp: Path, profile: dict | None = None) -> Path:
    d = tmp / "samples"
    ins = {"img": write_tensor(d, "frame_000/img.dat", np.zeros((1, 2), np.float32)),
           "ranks_bev": write_tensor(d, "frame_000/ranks_bev.dat", np.arange(8, dtype=np.int32))}
    save_manifest(d, {"format": "fbocc-samples/1", "inputs": [{"name": "img", "dtype": "float32"},
                                                              {"name": "ranks_bev", "dtype": "int32"}],
                      "outputs": [], "profile": PROFILE if profile is None else profile, "history": [],
                      "frames": [{"id": "000", "inputs": ins, "outputs": {}}]})
    return d


def test_engine_cache_key_changes_with_every_part_and_only_then() -> None:
    base = dict(onnx_sha256="a" * 64, plugin_sha256="b" * 64, precision="fp16", trt_version="8.6.13",
                profile=PROFILE)
    key = create_engine.engine_cache_key(**base)
    assert key == create_engine.engine_cache_key(**base) and len(key) == 16
    for change in ({"onnx_sha256": "c" * 64}, {"plugin_sha256": None}, {"precision": "fp32"},
                   {"trt_version": "10.8.0"}, {"profile": {"ranks_bev": {"min": [4], "opt": [8], "max": [32]}}}):
        assert create_engine.engine_cache_key(**{**base, **change}) != key, change
    with pytest.raises(create_engine.UsageError, match="int4"):
        create_engine.engine_cache_key(**{**base, "precision": "int4"})


def test_profile_from_manifest_rejects_inverted_or_unknown_inputs() -> None:
    manifest = {"inputs": [{"name": "x"}], "profile": {"x": {"min": [8], "opt": [4], "max": [16]}}}
    with pytest.raises(create_engine.UsageError, match="min <= opt <= max"):
        create_engine.profile_from_manifest(manifest)
    with pytest.raises(create_engine.UsageError, match="not a network input"):
        create_engine.profile_from_manifest({"inputs": [], "profile": {"y": {"min": [1], "opt": [1], "max": [1]}}})


def test_create_engine_without_tensorrt_says_so(tmp_path: Path) -> None:
    d = samples(tmp_path)
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"onnx")
    proc = subprocess.run([sys.executable, "-m", "deploy.create_engine", "--onnx", str(onnx),
                           "--samples", str(d), "--precision", "fp16", "--engine-dir", str(tmp_path / "e")],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""}, cwd=REPO)
    assert proc.returncode == 3
    assert "tensorrt Python module is not importable" in proc.stderr and "trtexec builder" in proc.stderr
    assert not (tmp_path / "e").exists()
    bad = subprocess.run([sys.executable, "-m", "deploy.create_engine", "--onnx", str(tmp_path / "no"),
                          "--samples", str(d), "--engine-dir", str(tmp_path / "e")], capture_output=True, text=True,
                         cwd=REPO)
    assert bad.returncode == 2 and "no such file" in bad.stderr


def test_tegrastats_line_parsed() -> None:
    # the line format of L4T's tegrastats (Orin); the values are ours
    line = ("11-23-2026 23:10:00 RAM 5012/30536MB (lfb 6x4MB) CPU [12%@2201,3%@2201] EMC_FREQ 17%@3199 "
            "GR3D_FREQ 81%@[1300,1300] VDD_GPU_SOC 8123mW/7900mW VDD_CPU_CV 1200mW/1100mW VIN_SYS_5V0 4800mW/4700mW")
    s = bench.parse_tegrastats_line(line)
    assert s["gpu_load_pct"] == 81 and s["gpu_freq_mhz"] == 1300
    assert s["emc_load_pct"] == 17 and s["emc_freq_mhz"] == 3199
    assert s["ram_used_mb"] == 5012
    assert s["rails_mw"] == {"VDD_GPU_SOC": 8123, "VDD_CPU_CV": 1200, "VIN_SYS_5V0": 4800}


def test_runner_passes_exit_code_and_reports_missing_tegrastats(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "deploy.bench", "run", "--tegrastats-log",
                           str(tmp_path / "t.log"), "--", sys.executable, "-c", "print('hi'); raise SystemExit(3)"],
                          capture_output=True, text=True, env={**os.environ, "PATH": "/usr/bin:/bin"}, cwd=REPO)
    assert proc.returncode == 3
    assert "hi" in proc.stdout
    doc = json.loads(proc.stdout.strip().splitlines()[-1].split(" ", 1)[1])
    assert doc["exit_code"] == 3 and doc["tegrastats"]["available"] is False


def double(args: list[str], version: str = "8.6.13") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(DOUBLE), *args], capture_output=True, text=True,
                          env={**os.environ, "FBOCC_DOUBLE_TRT_VERSION": version})


def test_double_says_it_is_a_double_and_rejects_bad_flags(tmp_path: Path) -> None:
    ok = double(["--help"])
    assert ok.returncode == 0 and "TEST DOUBLE" in ok.stdout and "[TensorRT v8613]" in ok.stdout
    for args, message in ((["--onnx=m.onnx", "--bogus"], "Unknown option: --bogus"),
                          (["--onnx=m.onnx", "--iterations=ten"], "needs an integer"),
                          (["--onnx=m.onnx", "--minShapes=x:1xA"], "Invalid --minShapes spec"),
                          (["--onnx=m.onnx", "--fp16=yes"], "takes no value"),
                          (["--onnx=m.onnx", "--stronglyTyped"], "Unknown option: --stronglyTyped")):
        proc = double(args)
        assert proc.returncode == 1 and message in proc.stdout, (args, proc.stdout)
        assert "&&&& FAILED" in proc.stdout
    assert "Unknown option: --fp16" in double(["--onnx=m.onnx", "--fp16"], version="11.0.0").stdout
    assert "--plugins flag has been deprecated" in double(["--onnx=m.onnx", "--plugins=p.so"], version="11.0.0").stdout


def test_double_requires_every_network_input(tmp_path: Path) -> None:
    d = samples(tmp_path)
    engine = tmp_path / "e.engine"
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"plain graph")
    built = double([f"--onnx={onnx}", f"--saveEngine={engine}", "--minShapes=ranks_bev:4", "--optShapes=ranks_bev:8",
                    "--maxShapes=ranks_bev:16", "--skipInference"])
    assert built.returncode == 0, built.stdout
    one_input = double([f"--loadEngine={engine}", "--shapes=ranks_bev:8",
                        f"--loadInputs=ranks_bev:{d}/frame_000/ranks_bev.dat", "--iterations=2", "--warmUp=0"])
    assert one_input.returncode == 1 and "not given in --loadInputs: img" in one_input.stdout
    both = double([f"--loadEngine={engine}", "--shapes=ranks_bev:8", "--iterations=3", "--warmUp=0",
                   f"--loadInputs=img:{d}/frame_000/img.dat,ranks_bev:{d}/frame_000/ranks_bev.dat"])
    assert both.returncode == 0 and "=== Performance summary ===" in both.stdout


def test_wrong_bench_options_fail_before_connecting(isolated_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fbocc.cli import run

    assert run(["remote-bench", "nowhere.invalid", "--precision", "fp8"]) == 2
    assert "--precision fp8" in capsys.readouterr().err
    assert run(["remote-bench", "nowhere.invalid", "--backend", "tflite"]) == 2
    assert run(["report"]) == 2
    assert "no benchmark results" in capsys.readouterr().err
