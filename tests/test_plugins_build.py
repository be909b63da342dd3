"""`make -C plugins` builds what each target needs: x86_64 and aarch64/sm_87 (Orin) kernel libraries with
CUDA's nvcc, and the TensorRT plugin library against the TensorRT headers of 8.6.1, 10.8.0, 10.16 and 11.1,
each driven by the TensorRT stand-in harness of its own version and of the other majors (the ABI guard).

The aarch64 CUDA runtime comes from the `nvidia-cuda-runtime` wheel for aarch64, downloaded once into
~/.cache/fbocc/ keyed by version. TensorRT headers are never in the repository: the public ones are read from
../shared/trt-headers/<version>/include (CI fails without them), 8.6.1's from FBOCC_TRT_HEADERS/8.6.1/include
(default /work/trt-headers; skipped with the reason where absent), see plugins/README.md.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
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


@pytest.fixture(scope="module")
def aarch64_kernels(aarch64_cudart: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("aarch64")
    result = _make("TARGET=aarch64", f"CUDA_TARGET_DIR={aarch64_cudart}", f"OUT={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout


def test_kernels_cross_compile_for_orin_aarch64_sm87(aarch64_kernels: tuple[Path, str]) -> None:
    out, log = aarch64_kernels
    assert "-ccbin aarch64-linux-gnu-g++" in log and "code=sm_87" in log
    info = inspect_library(out / "libfbocc_kernels.so")
    assert info.machine == "EM_AARCH64"
    assert info.cubin_archs == ["87"]
    assert any(n.startswith("libcudart.so") for n in info.needed)


def test_aarch64_plugin_library_for_tensorrt_11_checks_the_loaded_tensorrt_without_linking_it(
        aarch64_kernels: tuple[Path, str], aarch64_cudart: Path, tmp_path: Path) -> None:
    """The Orin/Thor library against the 11.1 headers: getInferLibVersion and getLogger stay weak references
    (resolved where getPluginRegistry is, absent -> the guard refuses), no libnvinfer in NEEDED."""
    from elftools.elf.elffile import ELFFile

    headers = tensorrt_headers("11.1")
    kernels_out, _ = aarch64_kernels
    shutil.copytree(kernels_out / "obj", tmp_path / "obj", dirs_exist_ok=True)  # times kept: kernels not rebuilt
    result = _make("TARGET=aarch64", f"CUDA_TARGET_DIR={aarch64_cudart}", f"OUT={tmp_path}",
                   f"TENSORRT_INCLUDE_DIR={headers}")
    assert result.returncode == 0, result.stderr[-3000:]
    library = tmp_path / "libfbocc_plugins.so"
    info = inspect_library(library)
    assert info.machine == "EM_AARCH64" and info.registration_symbols == ["getCreators", "setLoggerFinder"]
    assert not any(n.startswith("libnvinfer") for n in info.needed)
    with library.open("rb") as fh:
        dynsym = ELFFile(fh).get_section_by_name(".dynsym")
        binds = {sym.name: sym["st_info"]["bind"] for sym in dynsym.iter_symbols()  # type: ignore[union-attr]
                 if sym.name in ("getInferLibVersion", "getLogger", "getPluginRegistry")}
    assert binds == {"getInferLibVersion": "STB_WEAK", "getLogger": "STB_WEAK", "getPluginRegistry": "STB_GLOBAL"}


# The header matrix. 8.6.1's headers are proprietary and come only from FBOCC_TRT_HEADERS; the public
# Apache-2.0 headers of the others sit in ../shared/trt-headers/<version>/include beside the checkout.
PROPRIETARY = "8.6.1"
SHARED = ("10.8.0", "10.16", "11.1")
ENTRY_POINTS = {"8.6.1": "getPluginCreators", "10.8.0": "getCreators", "10.16": "getCreators", "11.1": "getCreators"}


def _shared_headers_root() -> Path | None:
    """The nearest `shared/trt-headers` beside the checkout or one of its parents (worktrees nest deeper)."""
    for parent in REPO.parents:
        candidate = parent / "shared" / "trt-headers"
        if candidate.is_dir():
            return candidate
    return None


def tensorrt_headers(version: str) -> Path:
    """The include/ folder of TensorRT `version`, or skip (fail in CI for the shared ones) saying where it looked."""
    looked = [TRT_HEADERS / version / "include"]
    shared = _shared_headers_root()
    if version != PROPRIETARY:
        looked.append((shared or REPO.parent / "shared" / "trt-headers") / version / "include")
    for include in looked:
        if (include / "NvInfer.h").is_file():
            return include
    where = " or ".join(str(p) for p in looked)
    if version == PROPRIETARY:
        pytest.skip(f"TensorRT {version} headers (proprietary licence, not redistributable) not found at {where}: "
                    "set FBOCC_TRT_HEADERS to the folder holding 8.6.1/include")
    _require(False, f"TensorRT {version} OSS headers not found at {where} (see ../shared/trt-headers/README)")
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class PluginBuild:
    """The plugin library built against one TensorRT version's headers."""

    version: str
    headers: Path
    library: Path
    make: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def plugin_library(x86_kernels: tuple[Path, str],
                   tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], PluginBuild]:
    """Builds (once per version) libfbocc_plugins.so against TensorRT `version`'s headers; kernels are reused."""
    built: dict[str, PluginBuild] = {}

    def build(version: str) -> PluginBuild:
        if version not in built:
            headers = tensorrt_headers(version)
            out = tmp_path_factory.mktemp(f"trt{version}")
            kernels_out, _ = x86_kernels
            shutil.copytree(kernels_out / "obj", out / "obj", dirs_exist_ok=True)  # times kept: not rebuilt
            result = _make("TARGET=x86_64", "CUDA_ARCHS=90", f"OUT={out}", f"TENSORRT_INCLUDE_DIR={headers}")
            assert result.returncode == 0, f"TensorRT {version}: {result.stderr[-3000:]}"
            built[version] = PluginBuild(version, headers, out / "libfbocc_plugins.so", result)
        return built[version]

    return build


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Compiles (once per version) the TensorRT stand-in harness against TensorRT `version`'s headers."""
    compiled: dict[str, Path] = {}

    def harness(version: str) -> Path:
        if version not in compiled:
            headers = tensorrt_headers(version)
            exe = tmp_path_factory.mktemp(f"standin{version}") / "tensorrt_standin_harness"
            result = subprocess.run(
                ["g++", "-std=c++17", "-Wall", "-Wno-deprecated-declarations", f"-I{headers}",
                 f"-I{CUDA_HOME}/include", str(REPO / "tests" / "tensorrt_standin_harness.cpp"), "-o", str(exe),
                 "-rdynamic", "-ldl"], capture_output=True, text=True, timeout=300, check=False)
            assert result.returncode == 0, f"stand-in for TensorRT {version}: {result.stderr[-3000:]}"
            compiled[version] = exe
        return compiled[version]

    return harness


def _run_standin(harness: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LD_LIBRARY_PATH": f"{CUDA_HOME}/lib64:{os.environ.get('LD_LIBRARY_PATH', '')}"}
    return subprocess.run([str(harness), *args], capture_output=True, text=True, timeout=60, env=env, check=False)


MATRIX = [PROPRIETARY, *SHARED]


@pytest.mark.parametrize("version", MATRIX)
def test_plugin_library_compiles_against_tensorrt_oss_headers(
        version: str, plugin_library: Callable[[str], PluginBuild]) -> None:
    build = plugin_library(version)
    assert "warning" not in build.make.stderr.lower(), build.make.stderr[-3000:]
    info = inspect_library(build.library)
    assert info.registration_symbols == [ENTRY_POINTS[version], "setLoggerFinder"]
    assert info.cubin_archs == ["90"]
    assert not any(n.startswith("libnvinfer") for n in info.needed), "without TENSORRT_LIB_DIR: no libnvinfer"


@pytest.mark.parametrize("version", MATRIX)
def test_tensorrt_standin_loads_registers_and_builds_each_plugin(
        version: str, plugin_library: Callable[[str], PluginBuild], standin: Callable[[str], Path]) -> None:
    """The stand-in (tests/tensorrt_standin_harness.cpp, not TensorRT) drives the library through the real
    TensorRT headers' interfaces: registration hand-over, attributes, shapes, formats, serialization."""
    run = _run_standin(standin(version), str(plugin_library(version).library))
    assert run.returncode == 0 and run.stdout.startswith("OK"), run.stdout + run.stderr
    assert f"TensorRT {'.'.join(version.split('.')[:2])} headers" in run.stdout
    assert run.stderr == ""


def test_a_library_built_for_another_minor_of_the_same_major_loads(
        plugin_library: Callable[[str], PluginBuild], standin: Callable[[str], Path]) -> None:
    """10.8 <-> 10.16: the plugin interfaces of one major are compatible, so the guard lets them through."""
    for built, loaded in (("10.8.0", "10.16"), ("10.16", "10.8.0")):
        run = _run_standin(standin(loaded), str(plugin_library(built).library))
        assert run.returncode == 0 and run.stdout.startswith("OK"), f"{built} in {loaded}: {run.stdout}{run.stderr}"


def _version(v: str) -> str:
    return v if v.count(".") == 2 else f"{v}.0"


@pytest.mark.parametrize(("built", "loaded"), [("10.8.0", "11.1"), ("11.1", "10.8.0"), ("10.16", "11.1"),
                                               ("8.6.1", "10.8.0"), ("10.8.0", "8.6.1")])
def test_a_library_built_for_another_major_is_refused_with_one_line_naming_both_versions_and_the_fix(
        built: str, loaded: str, plugin_library: Callable[[str], PluginBuild],
        standin: Callable[[str], Path]) -> None:
    """Without the guard a 10.x library in an 11.x process calls IPluginRegistry::acquirePluginResource for
    registerCreator (and the reverse isParentSearchEnabled). With it: no registry call, no creator, and one
    line through TensorRT's logger (called in the loading major's layout)."""
    library = plugin_library(built).library
    run = _run_standin(standin(loaded), "--expect-refusal", str(library))
    assert run.returncode == 0 and "REFUSED" in run.stdout, run.stdout + run.stderr
    logged = [line for line in run.stdout.splitlines() if line.startswith("LOGGED: ")]
    assert logged == [
        f"LOGGED: fbocc plugins: built with TensorRT {_version(built)} headers, loaded into TensorRT "
        f"{_version(loaded)}: plugins not registered (the plugin interfaces of TensorRT {built.split('.')[0]} and "
        f"{loaded.split('.')[0]} differ); rebuild for this TensorRT: fbocc cross-build --profile "
        f"<a TensorRT {loaded.split('.')[0]} profile> (fbocc doctor --target NAME names it)"]
    assert run.stderr == "", "the refusal goes through TensorRT's logger, not around it"


def test_without_a_tensorrt_logger_at_load_the_refusal_goes_to_stderr_then_to_the_handed_over_logger(
        plugin_library: Callable[[str], PluginBuild], standin: Callable[[str], Path]) -> None:
    run = _run_standin(standin("11.1"), "--expect-refusal", "--no-global-logger",
                       str(plugin_library("10.8.0").library))
    assert run.returncode == 0 and "REFUSED" in run.stdout, run.stdout + run.stderr
    line = ("fbocc plugins: built with TensorRT 10.8.0 headers, loaded into TensorRT 11.1.0: plugins not "
            "registered")
    assert run.stderr.startswith(line) and run.stderr.count("\n") == 1, run.stderr
    assert [x for x in run.stdout.splitlines() if x.startswith("LOGGED: ")] == [f"LOGGED: {run.stderr.strip()}"]


@pytest.mark.parametrize("version", MATRIX)
def test_the_recipe_records_the_tensorrt_version_of_the_headers(version: str) -> None:
    """cross/tensorrt-version.sh (what the build manifest's tensorrt_version comes from) on every header set;
    10.16 and later define the numbers through TRT_*_ENTERPRISE."""
    headers = tensorrt_headers(version)
    out = subprocess.run(["sh", str(REPO / "cross" / "tensorrt-version.sh"), str(headers)], capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == _version(version), out.stderr


def test_the_recipe_refuses_a_directory_without_tensorrt_headers(tmp_path: Path) -> None:
    out = subprocess.run(["sh", str(REPO / "cross" / "tensorrt-version.sh"), str(tmp_path)], capture_output=True,
                         text=True, check=False)
    assert out.returncode == 2 and f"{tmp_path}/NvInferVersion.h is missing" in out.stderr


def test_an_unknown_target_is_refused_naming_the_allowed_ones(tmp_path: Path) -> None:
    result = _make("TARGET=armv7", f"OUT={tmp_path}")
    assert result.returncode != 0
    assert "TARGET=armv7 is neither x86_64 nor aarch64" in result.stderr


def test_a_tensorrt_include_dir_without_nvinfer_h_is_named_and_nothing_is_built(nvcc: Path, tmp_path: Path) -> None:
    result = _make(f"TENSORRT_INCLUDE_DIR={tmp_path}", f"OUT={tmp_path / 'out'}")
    assert result.returncode != 0
    assert f"{tmp_path}/NvInfer.h not found: set TENSORRT_INCLUDE_DIR" in result.stderr
    assert not list((tmp_path / "out").rglob("*.so*"))
