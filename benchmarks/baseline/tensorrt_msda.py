"""TensorRT's own MultiscaleDeformableAttn kernel, for `make bench-kernels`: built at run time from a checkout of
NVIDIA/TensorRT (OSS) the user gives; never from code in this repository.

Issue 3's MSDA bar is "at least 2x TensorRT's own kernel". With this module the benchmark times that kernel in the
same run, on the same tensors, instead of relying on a figure measured elsewhere.

    sources = locate(Path("TensorRT"))       # checks the three files; no GPU or compiler needed
    library = build(sources, arch="90")      # their multiscaleDeformableAttn.cu + our adapter -> cached .so
    trt = TensorRTMsda(library)              # ctypes; calls take torch CUDA tensors

Their plugin/multiscaleDeformableAttnPlugin/ kernel files are copied into a temporary directory and compiled with
nvcc together with `trt_msda_adapter.cu`. `trt_shim/common/checkMacrosPlugin.h` stands in for their plugin
common header (the kernel file needs only its error log), so no TensorRT headers or libraries are involved; the
library is linked with `-z defs`, so nothing TensorRT-side can be left unresolved. The build is cached under
`$FBOCC_BASELINE_BUILD_DIR` (default `~/.cache/fbocc/bench-baseline/<content key>/`).
"""

from __future__ import annotations

import ctypes
import hashlib
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.baseline.bevformer_trt import (
    build_workspace,
    find_nvcc,
    git_head,
    msda_call_args,
    nvcc_summary,
    publish,
    shown_path,
)
from fbocc.errors import BuildError, ConfigError

HERE = Path(__file__).resolve().parent
ADAPTER = HERE / "trt_msda_adapter.cu"
SHIM = HERE / "trt_shim"
PLUGIN_DIR = "plugin/multiscaleDeformableAttnPlugin"
FILES = ("multiscaleDeformableAttn.cu", "multiscaleDeformableAttn.h", "multiscaleDeformableIm2ColCuda.cuh")
CLONE_FIX = ("give a checkout of NVIDIA/TensorRT (OSS; tags v8.6.1 and v10.8.0 carry the same kernel): `git clone "
             "https://github.com/NVIDIA/TensorRT && git -C TensorRT checkout v10.8.0`, then --trt-src TensorRT (or "
             "TRT_SRC=TensorRT make bench-kernels); a folder holding just its plugin/multiscaleDeformableAttnPlugin/ "
             "is enough")


@dataclass(frozen=True)
class TrtSources:
    """A checked TensorRT OSS checkout."""

    checkout: Path  # the path the user gave
    commit: str | None  # HEAD of the checkout when it is a git work tree
    version: str | None  # from its include/NvInferVersion.h, when present

    @property
    def plugin_dir(self) -> Path:
        return self.checkout / PLUGIN_DIR


def locate(checkout: Path) -> TrtSources:
    """Check that `checkout` holds TensorRT's MSDA kernel files. Raises ConfigError naming what is missing."""
    checkout = Path(checkout)
    if not checkout.is_dir():
        raise ConfigError(f"--trt-src {checkout}: no such directory", fix=CLONE_FIX)
    missing = [f"{PLUGIN_DIR}/{name}" for name in FILES if not (checkout / PLUGIN_DIR / name).is_file()]
    if len(missing) == len(FILES):
        raise ConfigError(f"--trt-src {checkout} is not a TensorRT OSS checkout: it has no {PLUGIN_DIR}/",
                          fix=CLONE_FIX)
    if missing:
        raise ConfigError(f"--trt-src {checkout} lacks TensorRT's MSDA kernel files: {', '.join(missing)}",
                          fix=CLONE_FIX)
    return TrtSources(checkout, git_head(checkout), tensorrt_version(checkout))


def tensorrt_version(checkout: Path) -> str | None:
    """"10.8.0" from the checkout's include/NvInferVersion.h (NV_TENSORRT_MAJOR/MINOR/PATCH), else None."""
    header = checkout / "include" / "NvInferVersion.h"
    if not header.is_file():
        return None
    text = header.read_text(errors="replace")
    parts = [re.search(rf"#define\s+NV_TENSORRT_{name}\s+(\d+)", text) for name in ("MAJOR", "MINOR", "PATCH")]
    return ".".join(m.group(1) for m in parts if m) if all(parts) else None


@dataclass(frozen=True)
class TrtLibrary:
    """The built library and where it came from."""

    path: Path
    sources: TrtSources
    arch: str

    def describe(self) -> str:
        src = self.sources
        facts = [f"TensorRT OSS {src.version}" if src.version else "version unknown: no include/NvInferVersion.h",
                 f"commit {src.commit[:7]}" if src.commit else "not a git work tree"]
        return f"`{shown_path(src.checkout, '<TRT_SRC>')}/{PLUGIN_DIR}` ({', '.join(facts)}), nvcc sm_{self.arch}"


def _commands(nvcc: Path, copy: Path, arch: str, output: Path) -> tuple[list[list[str]], list[str]]:
    flags = ["-std=c++17", "-O3", f"-arch=sm_{arch}", "-Xcompiler", "-fPIC", "-I", str(SHIM), "-I", str(copy)]
    sources = [copy / FILES[0], ADAPTER]  # theirs first: a checkout that does not compile is named as such
    objects = [output.parent / f"{src.stem}.o" for src in sources]
    compiles = [[str(nvcc), *flags, "-c", str(src), "-o", str(obj)] for src, obj in zip(sources, objects, strict=True)]
    link = [str(nvcc), "-shared", f"-arch=sm_{arch}", "-Xlinker", "-z", "-Xlinker", "defs", *map(str, objects),
            "-o", str(output)]
    return compiles, link


def _content_key(nvcc: Path, copy: Path, arch: str) -> str:
    version = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True, check=False).stdout
    digest = hashlib.sha256(f"{version}|{arch}".encode())
    for f in [ADAPTER, *sorted(SHIM.rglob("*.h")), *(copy / name for name in FILES)]:
        digest.update(f.name.encode())
        digest.update(f.read_bytes())
    digest.update(repr(_commands(Path("N"), Path("C"), arch, Path("O"))).encode())
    return digest.hexdigest()[:16]


def build(sources: TrtSources, arch: str, nvcc: Path | None = None, build_root: Path | None = None) -> TrtLibrary:
    """Compile TensorRT's MSDA kernel + our adapter for `sm_<arch>`; cached by content, so a rerun is instant.

    Raises BuildError with nvcc's error lines and the command when the compiler fails.
    """
    nvcc = nvcc or find_nvcc()
    with build_workspace(build_root, "tensorrt-msda-") as (root, work):
        copy = work / "multiscaleDeformableAttnPlugin"
        copy.mkdir()
        for name in FILES:
            shutil.copy2(sources.plugin_dir / name, copy / name)
        final = root / _content_key(nvcc, copy, arch) / "libfbocc_trt_msda.so"
        if final.is_file():
            return TrtLibrary(final, sources, arch)
        output = work / "libfbocc_trt_msda.so"
        compiles, link = _commands(nvcc, copy, arch, output)
        for command in [*compiles, link]:
            done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
            if done.returncode:
                shown = done.stdout.replace(str(copy), str(sources.plugin_dir))
                raise BuildError(f"compiling TensorRT's MSDA kernel from {sources.checkout} failed (nvcc exit "
                                 f"{done.returncode}):\n{nvcc_summary(shown)}\ncommand: {' '.join(command)}",
                                 fix=f"check that --trt-src is an NVIDIA/TensorRT OSS checkout whose {PLUGIN_DIR}/ "
                                     "declares ms_deform_attn_cuda_forward as v8.6.1 and v10.8.0 do")
        publish(output, final)
    return TrtLibrary(final, sources, arch)


class TensorRTMsda:
    """TensorRT's MSDA launcher as a torch function on CUDA tensors, writing into a preallocated `out`.

    Takes exactly what its plugin receives: contiguous tensors, int32 spatial_shapes/level_start_index, and the
    sampling locations and attention weights in value's dtype (the plugin's format rule). Anything else is refused
    with ValueError, never converted inside a timed call.
    """

    def __init__(self, library: TrtLibrary) -> None:
        self.library = library
        lib = ctypes.CDLL(str(library.path))
        p, i = ctypes.c_void_p, ctypes.c_int
        lib.fbocc_trt_msda.argtypes = [i, p, p, p, p, p, p, *[i] * 7, p]
        lib.fbocc_trt_msda.restype = i
        self._lib = lib

    def multi_scale_deformable_attn(self, value: Any, spatial_shapes: Any, level_start_index: Any,
                                    sampling_locations: Any, attention_weights: Any, out: Any) -> Any:
        """MultiscaleDeformableAttnPlugin_TRT into out [N,Lq,M*D] (the plugin's [N,Lq,M,D], same memory)."""
        n, _, m, d = value.shape
        lq = sampling_locations.shape[1]
        args = msda_call_args("TensorRT MultiscaleDeformableAttn", value, spatial_shapes, level_start_index,
                              sampling_locations, attention_weights, out)
        if out.numel() != n * lq * m * d or out.shape[:2] != (n, lq):
            raise ValueError(f"TensorRT MultiscaleDeformableAttn: out must be [{n},{lq},{m * d}] or "
                             f"[{n},{lq},{m},{d}], got {list(out.shape)}")
        status = self._lib.fbocc_trt_msda(*args)
        if status:
            raise RuntimeError(f"TensorRT's MSDA kernel: CUDA error {status} (left by earlier work, or its launch)")
        return out
