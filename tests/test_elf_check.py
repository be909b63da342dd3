"""ELF verification of built plugin libraries: real libraries compiled by this machine's nvcc.

The aarch64 case is covered end to end in test_cross_build.py (the sim container's output); here the
host's CUDA compiler makes small x86_64 libraries with chosen SM versions and symbols, so that each
rule (machine, device code for each SM of a profile, registration symbols, NEEDED) is seen to pass and to fail.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from fbocc.build.elf_check import FATBIN_MAGIC, inspect_library, parse_fatbin, verify_library
from fbocc.errors import BuildError

NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="no CUDA compiler (nvcc) on this machine")

KERNEL = """
extern "C" __global__ void add_one(float* a, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) a[i] += 1.f;
}
extern "C" int launch_add_one(float* a, int n, cudaStream_t s) {
  add_one<<<(n + 255) / 256, 256, 0, s>>>(a, n); return 0;
}
"""
REGISTRATION = """
extern "C" __attribute__((visibility("default"))) void* getPluginCreators(int* n) { *n = 0; return 0; }
extern "C" __attribute__((visibility("default"))) void setLoggerFinder(void*) {}
"""


def _build(tmp: Path, name: str, gencode: list[str], extra: str = "") -> Path:
    src = tmp / f"{name}.cu"
    src.write_text(KERNEL + extra)
    lib = tmp / f"lib{name}.so"
    subprocess.run([str(NVCC), "-shared", "-Xcompiler", "-fPIC,-fvisibility=hidden", *gencode, str(src),
                    "-o", str(lib)], check=True, capture_output=True)
    return lib


@pytest.fixture(scope="module")
def libs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if NVCC is None:
        pytest.skip("no CUDA compiler (nvcc) on this machine")
    tmp = tmp_path_factory.mktemp("elf")
    return {
        "sm87": _build(tmp, "sm87", ["-gencode", "arch=compute_87,code=sm_87"]),
        "sm90_ptx": _build(tmp, "sm90", ["-gencode", "arch=compute_90,code=compute_90"]),
        "plugin": _build(tmp, "plugin", ["-gencode", "arch=compute_87,code=sm_87"], REGISTRATION),
        "orin_thor": _build(tmp, "orin_thor", ["-gencode", "arch=compute_87,code=sm_87",
                                               "-gencode", "arch=compute_110,code=sm_110"]),
        "orin_thor_ptx": _build(tmp, "orin_thor_ptx", ["-gencode", "arch=compute_87,code=sm_87",
                                                       "-gencode", "arch=compute_110,code=compute_110"]),
    }


@needs_nvcc
def test_report_lists_machine_device_code_symbols_and_needed(libs):
    report = inspect_library(libs["plugin"])
    assert report.machine == "EM_X86_64"
    assert report.cubin_archs == ["87"] and report.ptx_archs == []
    assert {"getPluginCreators", "setLoggerFinder"} <= set(report.exported)
    assert "add_one" not in report.exported  # hidden visibility stays hidden
    assert any(n.startswith("libc.so") for n in report.needed)


@needs_nvcc
def test_matching_library_passes(libs):
    report = verify_library(libs["plugin"], target_arch="x86_64", cuda_archs=["87"], tensorrt=True)
    assert report.problems == []


@needs_nvcc
def test_every_sm_of_a_profile_needs_real_device_code(libs):
    """The sim and JetPack 7.2.2 profiles build for Orin (sm_87) and Thor (sm_110, CUDA 13's name)."""
    from fbocc.config import load_config

    cfg = load_config(user_file=Path("/nonexistent"), cwd=Path("/"))
    for name in ("sim", "jetpack-7.2.2"):
        archs = cfg.profile(name).cuda_archs
        assert archs == ["87", "110"]
        report = verify_library(libs["orin_thor"], target_arch="x86_64", cuda_archs=archs, tensorrt=False)
        assert report.cubin_archs == ["110", "87"] and report.problems == []
        with pytest.raises(BuildError, match=r"no device code for sm_110 \(cubins found: sm_87\)"):
            verify_library(libs["sm87"], target_arch="x86_64", cuda_archs=archs, tensorrt=False)
        with pytest.raises(BuildError, match=r"no device code for sm_110 \(cubins found: sm_87\)"):
            verify_library(libs["orin_thor_ptx"], target_arch="x86_64", cuda_archs=archs, tensorrt=False)


@needs_nvcc
def test_wrong_machine_is_an_error(libs):
    with pytest.raises(BuildError, match="EM_X86_64, expected EM_AARCH64"):
        verify_library(libs["sm87"], target_arch="aarch64", cuda_archs=["87"], tensorrt=False)


@needs_nvcc
def test_ptx_only_is_not_device_code_for_sm87(libs):
    report = inspect_library(libs["sm90_ptx"])
    assert report.ptx_archs == ["90"] and report.cubin_archs == []
    with pytest.raises(BuildError, match=r"no device code for sm_87 \(cubins found: none\)"):
        verify_library(libs["sm90_ptx"], target_arch="x86_64", cuda_archs=["87"], tensorrt=False)


@needs_nvcc
def test_missing_registration_symbols_when_tensorrt_glue_was_built(libs):
    with pytest.raises(BuildError) as info:
        verify_library(libs["sm87"], target_arch="x86_64", cuda_archs=["87"], tensorrt=True)
    assert "getPluginCreators, getCreators" in info.value.message and "setLoggerFinder" in info.value.message
    assert info.value.fix and "--force" in info.value.fix


def test_library_without_cuda_code_is_an_error():
    host_lib = next(p for p in (Path("/lib/x86_64-linux-gnu/libz.so.1"), Path("/usr/lib/x86_64-linux-gnu/libz.so.1"))
                    if p.exists())
    with pytest.raises(BuildError, match="no CUDA device code"):
        verify_library(host_lib, target_arch="x86_64", cuda_archs=["87"], tensorrt=False)


def test_a_file_that_is_not_elf_is_one_clear_error(tmp_path):
    bogus = tmp_path / "libfbocc_plugins.so"
    bogus.write_bytes(b"<html>proxy error</html>")
    with pytest.raises(BuildError, match="not a readable ELF shared library"):
        inspect_library(bogus)


def test_fatbin_parser_walks_every_entry_of_back_to_back_fatbins():
    def entry(kind: int, sm: int, payload: bytes) -> bytes:
        head = struct.pack("<HHIQ", kind, 0x101, 64, len(payload)) + b"\0" * 12 + struct.pack("<I", sm)
        return head.ljust(64, b"\0") + payload

    def fatbin(*entries: bytes) -> bytes:
        body = b"".join(entries)
        return struct.pack("<IHHQ", FATBIN_MAGIC, 1, 16, len(body)) + body

    data = fatbin(entry(2, 87, b"x" * 40), entry(1, 90, b"p" * 8)) + b"\0" * 8 + fatbin(entry(2, 72, b"y" * 16))
    images = parse_fatbin(data)
    assert [(i.kind, i.sm) for i in images] == [("elf", 87), ("ptx", 90), ("elf", 72)]
