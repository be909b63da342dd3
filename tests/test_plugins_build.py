"""`make -C plugins` builds what each target needs: x86_64 and aarch64/sm_87 (Orin) kernel libraries with
CUDA's nvcc, and the TensorRT plugin library against the public TensorRT 8.6 and 10 headers.

The aarch64 CUDA runtime comes from the `nvidia-cuda-runtime` wheel for aarch64, downloaded once into
~/.cache/fbocc/ keyed by version. TensorRT headers are never in the repository: the glue checks run where
they are unpacked (FBOCC_TRT_HEADERS, default /work/trt-headers/<version>/include, see plugins/README.md).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fbocc.build.elf_check import inspect_library
from fbocc.config import cache_dir

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "plugins"
CUDA_HOME = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))
NVCC = CUDA_HOME / "bin" / "nvcc"
TRT_HEADERS = Path(os.environ.get("FBOCC_TRT_HEADERS", "/work/trt-headers"))
CACHE = cache_dir()
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _require(ok: bool, reason: str) -> None:
    if not ok:
        if IN_CI:
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)


def _make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-C", str(PLUGINS), "-j2", f"CUDA_HOME={CUDA_HOME}", *args],
                          capture_output=True, text=True, timeout=900, check=False)


def _cuda_release() -> str:
    out = subprocess.run([str(NVCC), "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"release (\d+)\.(\d+)", out)
    assert match, f"cannot read the CUDA release from: {out}"
    return f"{match.group(1)}.{match.group(2)}"


@pytest.fixture(scope="module")
def aarch64_cudart(nvcc: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An unpacked aarch64 `nvidia-cuda-runtime` wheel matching nvcc's release (cached by version)."""
    _require(shutil.which("aarch64-linux-gnu-g++") is not None, "aarch64-linux-gnu-g++ missing (make setup)")
    release = _cuda_release()
    target = CACHE / f"cuda-runtime-aarch64-{release}"
    if not (target / ".complete").exists():
        download = tmp_path_factory.mktemp("wheel")
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
             "--platform", "manylinux2014_aarch64", "--platform", "manylinux_2_28_aarch64",
             "--python-version", "3.11", "-d", str(download), f"nvidia-cuda-runtime=={release}.*"],
            capture_output=True, text=True, timeout=600, check=False)
        _require(result.returncode == 0, f"cannot download nvidia-cuda-runtime {release} for aarch64: "
                 f"{result.stderr.strip()[-300:]}")
        staging = tmp_path_factory.mktemp("cudart")
        for wheel in download.glob("*.whl"):
            with zipfile.ZipFile(wheel) as zf:
                zf.extractall(staging)
        (staging / ".complete").touch()
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(staging), target)  # whole or not at all: the marker travels with the tree
    libs = sorted(target.glob("nvidia/*/lib/libcudart.so*"))
    assert libs, f"no libcudart.so* in the wheel unpacked at {target}"
    return libs[0].parent.parent


@pytest.fixture(scope="module")
def x86_kernels(nvcc: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("x86_64")
    result = _make("TARGET=x86_64", "CUDA_ARCHS=90", f"OUT={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout + result.stderr


def test_without_tensorrt_headers_the_kernel_library_is_built_and_make_says_so(x86_kernels: tuple[Path, str]) -> None:
    out, log = x86_kernels
    assert "TENSORRT_INCLUDE_DIR not set: built the kernel library only" in log, log[-2000:]
    info = inspect_library(out / "libfbocc_kernels.so")
    assert info.machine == "EM_X86_64"
    assert info.cubin_archs == ["90"]
    assert any(n.startswith("libcudart.so") for n in info.needed)
    assert not (out / "libfbocc_plugins.so").exists()
    assert not list(out.glob("*.tmp")), "a temporary library was left behind"


def test_kernels_cross_compile_for_orin_aarch64_sm87(aarch64_cudart: Path, tmp_path: Path) -> None:
    result = _make("TARGET=aarch64", f"CUDA_TARGET_DIR={aarch64_cudart}", f"OUT={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "-ccbin aarch64-linux-gnu-g++" in result.stdout and "code=sm_87" in result.stdout
    info = inspect_library(tmp_path / "libfbocc_kernels.so")
    assert info.machine == "EM_AARCH64"
    assert info.cubin_archs == ["87"]
    assert any(n.startswith("libcudart.so") for n in info.needed)


TRT_VERSIONS = [("8.6.1", "getPluginCreators"), ("10.8.0", "getCreators")]


PluginBuild = tuple[str, str, Path, Path, subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module", params=TRT_VERSIONS, ids=[v for v, _ in TRT_VERSIONS])
def plugin_build(request: pytest.FixtureRequest, x86_kernels: tuple[Path, str],
                 tmp_path_factory: pytest.TempPathFactory) -> PluginBuild:
    """(version, entry point, headers, library, make result) of the plugin library for one TensorRT version."""
    version, entry_point = request.param
    headers = TRT_HEADERS / version / "include"
    if not (headers / "NvInfer.h").exists():
        pytest.skip(f"TensorRT {version} OSS headers not unpacked at {headers} (see plugins/README.md)")
    out = tmp_path_factory.mktemp(f"trt{version}")
    kernels_out, _ = x86_kernels
    shutil.copytree(kernels_out / "obj", out / "obj", dirs_exist_ok=True)  # times kept: kernels not rebuilt
    result = _make("TARGET=x86_64", "CUDA_ARCHS=90", f"OUT={out}", f"TENSORRT_INCLUDE_DIR={headers}")
    return version, entry_point, headers, out / "libfbocc_plugins.so", result


def test_plugin_library_compiles_against_tensorrt_oss_headers(plugin_build: PluginBuild) -> None:
    _version, entry_point, _headers, library, result = plugin_build
    assert result.returncode == 0, result.stderr[-3000:]
    assert "warning" not in result.stderr.lower(), result.stderr[-3000:]
    info = inspect_library(library)
    assert info.registration_symbols == [entry_point, "setLoggerFinder"]
    assert info.cubin_archs == ["90"]


def test_tensorrt_standin_loads_registers_and_builds_each_plugin(plugin_build: PluginBuild, tmp_path: Path) -> None:
    """The stand-in (tests/tensorrt_standin_harness.cpp, not TensorRT) drives the library through the real
    TensorRT headers' interfaces: registration hand-over, attributes, shapes, formats, serialization."""
    version, _entry, headers, library, result = plugin_build
    assert result.returncode == 0, result.stderr[-3000:]
    harness = tmp_path / "tensorrt_standin_harness"
    compiled = subprocess.run(
        ["g++", "-std=c++17", "-Wall", "-Wno-deprecated-declarations", f"-I{headers}", f"-I{CUDA_HOME}/include",
         str(REPO / "tests" / "tensorrt_standin_harness.cpp"), "-o", str(harness), "-rdynamic", "-ldl"],
        capture_output=True, text=True, timeout=300, check=False)
    assert compiled.returncode == 0, compiled.stderr[-3000:]
    env = {**os.environ, "LD_LIBRARY_PATH": f"{CUDA_HOME}/lib64:{os.environ.get('LD_LIBRARY_PATH', '')}"}
    run = subprocess.run([str(harness), str(library)], capture_output=True, text=True, timeout=60, env=env,
                         check=False)
    assert run.returncode == 0 and run.stdout.startswith("OK"), run.stdout + run.stderr
    assert f"TensorRT {version.rsplit('.', 1)[0]} headers" in run.stdout


def test_an_unknown_target_is_refused_naming_the_allowed_ones(tmp_path: Path) -> None:
    result = _make("TARGET=armv7", f"OUT={tmp_path}")
    assert result.returncode != 0
    assert "TARGET=armv7 is neither x86_64 nor aarch64" in result.stderr


def test_a_tensorrt_include_dir_without_nvinfer_h_is_named_and_nothing_is_built(nvcc: Path, tmp_path: Path) -> None:
    result = _make(f"TENSORRT_INCLUDE_DIR={tmp_path}", f"OUT={tmp_path / 'out'}")
    assert result.returncode != 0
    assert f"{tmp_path}/NvInfer.h not found: set TENSORRT_INCLUDE_DIR" in result.stderr
    assert not list((tmp_path / "out").rglob("*.so*"))
