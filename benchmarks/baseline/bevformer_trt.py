"""The kernels users have today, for `make bench-kernels`: DerryHub/BEVFormer_tensorrt @303d314 as FB-OCC-TRT
deploys it, built at run time from a checkout the user gives; never from code in this repository.

    sources = locate(Path("BEVFormer_tensorrt"), trt_include=None, patch=None)  # checks files, no GPU needed
    library = build(sources, arch="90")            # their three kernel .cu + our adapter.cu -> cached .so
    today = TodaysKernels(library)                 # ctypes; calls take torch CUDA tensors

Their kernel files are copied into a temporary directory (FB-OCC-TRT's patch, when given, is applied there by a
strict unified-diff applier: same result as `git apply`, no git needed; the checkout is never modified), compiled
with nvcc together with `adapter.cu` into a shared library under `$FBOCC_BASELINE_BUILD_DIR` (default
`~/.cache/fbocc/bench-baseline/<content key>/`), and loaded with ctypes. Their headers include TensorRT's
`NvInferRuntime.h` (taken from `--trt-include`), cuBLAS' `cublas_v2.h` and cuDNN's `cudnn.h` (only for declarations
the three kernel files never use; taken from `--baseline-compat`: NVIDIA's own headers, or a folder declaring just
the types their headers name, kept out of this repository like theirs; the library is linked with `-z defs`, so a
call into either would fail the build).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fbocc.config import cache_dir
from fbocc.errors import BuildError, ConfigError, EnvironmentCheckError

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ADAPTER = HERE / "adapter.cu"
DEFAULT_TRT_INCLUDE = Path("/work/trt-headers/8.6.1/include")
DEFAULT_COMPAT_INCLUDE = REPO / ".scratch" / "baseline-compat"  # git-excluded in this checkout
COMPAT_HEADERS = ("cublas_v2.h", "cudnn.h")
COMMIT = "303d3140c14016047c07f9db73312af364f0dd7c"
PATCH_NAME = "fb-occ_custom_op_trt_plugin.patch"  # johnyang-nv/FB-OCC-TRT, branch deployment, deployment/

# Paths inside their TensorRT/ folder: the kernel files we compile and the headers they include.
KERNELS = {
    "grid_sampler": "plugin/grid_sampler/gridSamplerKernel.cu",
    "bev_pool_v2": "plugin/bev_pool_v2/bevPoolKernel.cu",
    "msda": "plugin/multi_scale_deformable_attn/multiScaleDeformableAttnKernel.cu",
}
HEADERS = (
    "common/cuda_helper.h",
    "common/cuda_int8.h",
    "common/helper.h",
    "plugin/grid_sampler/gridSamplerKernel.h",
    "plugin/bev_pool_v2/bevPoolKernel.h",
    "plugin/multi_scale_deformable_attn/multiScaleDeformableAttnKernel.h",
)
MSDA_HEADER = "plugin/multi_scale_deformable_attn/multiScaleDeformableAttnKernel.h"

CLONE_FIX = ("give a checkout of DerryHub/BEVFormer_tensorrt at 303d314: `git clone "
             "https://github.com/DerryHub/BEVFormer_tensorrt && git -C BEVFormer_tensorrt checkout 303d314`, then "
             "--baseline-src BEVFormer_tensorrt (or BASELINE_SRC=BEVFormer_tensorrt make bench-kernels)")
PATCH_FIX = (f"--baseline-patch takes {PATCH_NAME} from johnyang-nv/FB-OCC-TRT (branch deployment, folder "
             "deployment/), made for a clean 303d314 checkout; leave it out if the checkout already carries it")


@dataclass(frozen=True)
class BaselineSources:
    """A checked checkout of BEVFormer_tensorrt and what the build needs besides it."""

    checkout: Path  # the path the user gave
    tensorrt_dir: Path  # its TensorRT/ folder
    commit: str | None  # HEAD of the checkout when it is a git work tree
    trt_include: Path  # folder holding NvInferRuntime.h
    patch: Path | None  # FB-OCC-TRT's patch to apply to the temporary copy
    compat_include: Path  # folder holding cublas_v2.h and cudnn.h


def shown_path(path: Path, placeholder: str) -> str:
    """How a benchmark result names `path`: relative to this checkout when inside it, else `placeholder` (such
    as `<TRT_SRC>`), so that no machine's own paths land in a committed result."""
    try:
        return Path(path).resolve().relative_to(REPO).as_posix()
    except ValueError:
        return placeholder


def resolve_trt_include(given: Path | None) -> Path:
    """`--trt-include`, else `$FBOCC_TRT_HEADERS` (an include/ folder, or a folder holding 8.6.1/include as the
    plugin tests use it), else /work/trt-headers/8.6.1/include."""
    if given is not None:
        return given
    env = os.environ.get("FBOCC_TRT_HEADERS")
    if env:
        base = Path(env)
        nested = base / "8.6.1" / "include"
        return nested if not (base / "NvInferRuntime.h").exists() and nested.is_dir() else base
    return DEFAULT_TRT_INCLUDE


def resolve_compat_include(given: Path | None) -> Path:
    """`--baseline-compat`, else `$FBOCC_BASELINE_COMPAT`, else .scratch/baseline-compat in this checkout."""
    if given is not None:
        return given
    env = os.environ.get("FBOCC_BASELINE_COMPAT")
    return Path(env) if env else DEFAULT_COMPAT_INCLUDE


def locate(checkout: Path, trt_include: Path | None = None, patch: Path | None = None,
           compat_include: Path | None = None) -> BaselineSources:
    """Check that `checkout` holds their kernel sources, the TensorRT headers and the patch exist.

    Raises ConfigError naming the missing path and the fix. Needs no GPU and no compiler.
    """
    checkout = Path(checkout)
    if not checkout.is_dir():
        raise ConfigError(f"--baseline-src {checkout}: no such directory", fix=CLONE_FIX)
    tensorrt_dir = checkout / "TensorRT" if (checkout / "TensorRT").is_dir() else checkout
    missing = [rel for rel in (*KERNELS.values(), *HEADERS) if not (tensorrt_dir / rel).is_file()]
    if len(missing) == len(KERNELS) + len(HEADERS):
        raise ConfigError(f"--baseline-src {checkout} is not a BEVFormer_tensorrt checkout: it has no "
                          f"TensorRT/{KERNELS['grid_sampler']} (nor their other kernel files)", fix=CLONE_FIX)
    if missing:
        raise ConfigError(f"--baseline-src {checkout} is not a BEVFormer_tensorrt checkout: missing "
                          + ", ".join(f"TensorRT/{m}" for m in missing), fix=CLONE_FIX)
    include = resolve_trt_include(trt_include)
    if not (include / "NvInferRuntime.h").is_file():
        raise ConfigError(
            f"TensorRT headers: {include}/NvInferRuntime.h not found (their common/helper.h includes it)",
            fix="--trt-include DIR or FBOCC_TRT_HEADERS=DIR, DIR = TensorRT's include/ folder (e.g. "
                "`git -C TensorRT archive v8.6.1 include | tar -x` from NVIDIA/TensorRT)")
    compat = resolve_compat_include(compat_include)
    absent = [name for name in COMPAT_HEADERS if not (compat / name).is_file()]
    if absent:
        raise ConfigError(
            f"cuBLAS/cuDNN headers: {', '.join(f'{compat}/{name}' for name in absent)} not found (their "
            "common/cuda_helper.h and common/helper.h include them, for types the compiled kernels never use)",
            fix="--baseline-compat DIR or FBOCC_BASELINE_COMPAT=DIR, DIR holding cublas_v2.h and cudnn.h: NVIDIA's "
                "(CUDA toolkit / cuDNN include folders merged) or declarations of cublasHandle_t, cublasStatus_t, "
                "cublasOperation_t, cublasGemmAlgo_t, cudnnStatus_t and cudnnDataType_t")
    if patch is not None and not Path(patch).is_file():
        raise ConfigError(f"--baseline-patch {patch}: no such file", fix=PATCH_FIX)
    return BaselineSources(checkout, tensorrt_dir, git_head(checkout), include, Path(patch) if patch else None,
                           compat)


def git_head(path: Path) -> str | None:
    if shutil.which("git") is None:
        return None
    result = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=False)
    top = subprocess.run(["git", "-C", str(path), "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                         check=False)
    # Only the checkout's own HEAD counts, not that of a repository it happens to lie in (e.g. .scratch/ here).
    if result.returncode or top.returncode or Path(top.stdout.strip()).resolve() != path.resolve():
        return None
    return result.stdout.strip()


def has_mmcv_msda(tensorrt_dir: Path) -> bool:
    """True when the MSDA kernel takes level_start_index + sampling_locations (FB-OCC-TRT's patched kernel, the
    op FB-OCC exports); 303d314's original takes reference points + offsets and softmaxes the weights itself."""
    return "data_level_start_index" in (tensorrt_dir / MSDA_HEADER).read_text(errors="replace")


def prepare_tree(sources: BaselineSources, workdir: Path) -> tuple[Path, bool]:
    """Copy the files the build needs into `workdir/TensorRT` and apply the patch there, unless the checkout
    already carries it. Returns (the copy, whether the patch was applied)."""
    tree = workdir / "TensorRT"
    for rel in (*KERNELS.values(), *HEADERS):
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(sources.tensorrt_dir / rel, tree / rel)
    if sources.patch is None or has_mmcv_msda(tree):
        return tree, False
    _apply_patch(sources, workdir)
    return tree, True


def _apply_patch(sources: BaselineSources, workdir: Path) -> None:
    assert sources.patch is not None
    # Only the kernel files we copied: the patch's plugin glue and Python files are not part of the benchmark.
    wanted = {f"TensorRT/{rel}" for rel in (*KERNELS.values(), *HEADERS)}
    try:
        apply_unified_diff(sources.patch.read_text(errors="strict"), workdir, wanted)
    except (PatchMismatch, UnicodeDecodeError) as exc:
        raise ConfigError(f"--baseline-patch {sources.patch} does not apply to the kernels of {sources.checkout}: "
                          f"{exc}", fix=PATCH_FIX) from exc


class PatchMismatch(ValueError):
    """A hunk's context or removed lines are not where the patch says (or the patch is malformed)."""


_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def _lines(text: str) -> list[str]:
    parts = text.split("\n")
    return [line + "\n" for line in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def apply_unified_diff(diff: str, root: Path, only: set[str]) -> list[str]:
    """Apply a unified diff (git's format) to the files under `root` whose paths are in `only`; others are skipped.

    Strict, like `git apply` without fuzz: each hunk's context and removed lines must match the file exactly at
    its stated line (shifted by earlier hunks' growth). Returns the paths patched. Needs no git on the machine.
    """
    lines, patched, i = _lines(diff), [], 0
    while i < len(lines):
        if not (lines[i].startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ ")):
            i += 1
            continue
        created = lines[i][4:].rstrip("\n").split("\t")[0] == "/dev/null"
        target = lines[i + 1][4:].rstrip("\n").split("\t")[0]
        target = target[2:] if target.startswith("b/") else target
        i += 2
        hunks: list[tuple[int, list[str], list[str]]] = []
        while i < len(lines) and (match := _HUNK.match(lines[i])):
            old_start, old_count = int(match.group(1)), int(match.group(2) or 1)
            new_count = int(match.group(4) or 1)
            old: list[str] = []
            new: list[str] = []
            i += 1
            while (len(old) < old_count or len(new) < new_count) and i < len(lines):
                line = " \n" if lines[i] == "\n" else lines[i]  # an empty context line whose space was trimmed
                tag, body = line[:1], line[1:]
                if tag not in ("-", "+", " "):
                    raise PatchMismatch(f"{target}: malformed hunk line {i + 1} of the patch")
                if tag in " -":
                    old.append(body)
                if tag in " +":
                    new.append(body)
                i += 1
                if i < len(lines) and lines[i].startswith("\\"):  # "\ No newline at end of file"
                    for side, kinds in ((old, " -"), (new, " +")):
                        if tag in kinds:
                            side[-1] = side[-1].rstrip("\n")
                    i += 1
            if len(old) != old_count or len(new) != new_count:
                raise PatchMismatch(f"{target}: truncated hunk at line {old_start}")
            hunks.append((old_start, old, new))
        if target not in only:
            continue
        path = root / target
        if not created and not path.is_file():
            raise PatchMismatch(f"{target}: not in the copy to patch")
        if created and path.exists():
            raise PatchMismatch(f"{target}: the patch creates it, but it exists already")
        path.parent.mkdir(parents=True, exist_ok=True)
        content = [] if created else _lines(path.read_text())
        shift = 0
        for old_start, old, new in hunks:
            at = max(old_start - 1, 0) + shift if old else old_start + shift
            if content[at:at + len(old)] != old:
                raise PatchMismatch(f"{target}: the hunk at line {old_start} does not match the file")
            content[at:at + len(old)] = new
            shift += len(new) - len(old)
        path.write_text("".join(content))
        patched.append(target)
    return patched


@dataclass(frozen=True)
class BuildPlan:
    """One nvcc compile per source (run in parallel; a failure names its own file), then one link."""

    compiles: list[list[str]]
    link: list[str]


def build_plan(nvcc: Path, tree: Path, trt_include: Path, compat_include: Path, arch: str, msda: bool,
               output: Path) -> BuildPlan:
    """The nvcc commands that build the library. Their kernels need no CUDA 13 compatibility defines; the only
    additions are the cuBLAS/cuDNN header folder and FBOCC_BASELINE_MSDA for the adapter."""
    flags = [
        "-std=c++17", "-O3", f"-arch=sm_{arch}", "-Xcompiler", "-fPIC,-Wno-deprecated-declarations",
        f"-DFBOCC_BASELINE_MSDA={int(msda)}",
        "-I", str(compat_include), "-I", str(tree / "common"),
        *(arg for rel in KERNELS.values() for arg in ("-I", str((tree / rel).parent))),
        "-I", str(trt_include),
    ]
    sources = [ADAPTER, *(tree / rel for name, rel in KERNELS.items() if msda or name != "msda")]
    objects = [output.parent / f"{src.stem}.o" for src in sources]
    compiles = [[str(nvcc), *flags, "-c", str(src), "-o", str(obj)] for src, obj in zip(sources, objects, strict=True)]
    # -z defs: nothing may stay unresolved, which proves no cuBLAS/cuDNN/TensorRT function is called.
    link = [str(nvcc), "-shared", f"-arch=sm_{arch}", "-Xlinker", "-z", "-Xlinker", "defs",
            *map(str, objects), "-o", str(output)]
    return BuildPlan(compiles, link)


def find_nvcc() -> Path:
    """nvcc from $CUDA_HOME, /usr/local/cuda or PATH."""
    for candidate in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if candidate and (Path(candidate) / "bin" / "nvcc").is_file():
            return Path(candidate) / "bin" / "nvcc"
    found = shutil.which("nvcc")
    if found is None:
        raise EnvironmentCheckError("nvcc not found: it compiles today's kernels for the benchmark",
                                    fix="set CUDA_HOME to the CUDA toolkit, or put nvcc on PATH")
    return Path(found)


def default_build_root() -> Path:
    """$FBOCC_BASELINE_BUILD_DIR, else ~/.cache/fbocc/bench-baseline (shared by both baselines' builds)."""
    return Path(os.environ.get("FBOCC_BASELINE_BUILD_DIR") or cache_dir() / "bench-baseline")


@contextmanager
def build_workspace(build_root: Path | None, prefix: str) -> Iterator[tuple[Path, Path]]:
    """(the build root, created if needed; a temporary work folder inside it, removed afterwards). A finished
    library goes from the work folder to `root/<content key>/` with `publish`, so a cache entry is whole or absent."""
    root = build_root or default_build_root()
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=prefix, dir=root) as tmp:
        yield root, Path(tmp)


def publish(output: Path, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(output, final)  # whole or not at all


def nvcc_summary(output: str) -> str:
    """nvcc's error lines (at most 8), else its last 12 lines: what a build error shows."""
    errors = [line for line in output.splitlines() if re.search(r"\berror\b", line, re.IGNORECASE)]
    return "\n".join(errors[:8] or output.splitlines()[-12:])


@dataclass(frozen=True)
class BaselineLibrary:
    """The built library and how it was made."""

    path: Path
    has_msda: bool  # the checkout's MSDA kernel is FB-OCC's op (see has_mmcv_msda)
    patch_applied: bool
    sources: BaselineSources
    arch: str

    def describe(self) -> str:
        """What was built from where, for the benchmark's header."""
        src = self.sources
        commit = f"commit {src.commit[:7]}" if src.commit else "commit unknown: not a git work tree"
        if self.patch_applied:
            assert src.patch is not None
            patch = f"; FB-OCC-TRT's `{src.patch.name}` applied to a temporary copy at run time"
        elif self.has_msda:
            patch = "; the checkout already carries FB-OCC-TRT's MSDA patch"
        else:
            patch = "; without FB-OCC-TRT's patch"
        return (f"`{shown_path(src.checkout, '<BASELINE_SRC>')}` ({commit}{patch}), TensorRT headers "
                f"`{shown_path(src.trt_include, '<TRT_INCLUDE>')}`, nvcc sm_{self.arch}")


def build(sources: BaselineSources, arch: str, nvcc: Path | None = None,
          build_root: Path | None = None) -> BaselineLibrary:
    """Compile their kernels + our adapter for `sm_<arch>` (e.g. "90"); cached by content, so a rerun is instant.

    Raises BuildError with nvcc's last lines and the command when the compiler fails.
    """
    nvcc = nvcc or find_nvcc()
    with build_workspace(build_root, "bevformer-trt-") as (root, work):
        tree, applied = prepare_tree(sources, work)
        msda = has_mmcv_msda(tree)
        key = _content_key(nvcc, tree, sources, arch, msda)
        final = root / key / "libfbocc_today.so"
        if final.is_file():
            return BaselineLibrary(final, msda, applied, sources, arch)
        output = work / "libfbocc_today.so"
        plan = build_plan(nvcc, tree, sources.trt_include, sources.compat_include, arch, msda, output)
        logs = [work / f"compile-{i}.log" for i in range(len(plan.compiles))]
        running = []
        for cmd, log in zip(plan.compiles, logs, strict=True):
            with log.open("w") as sink:  # a file, not a pipe: a chatty compile cannot stall on a full pipe
                running.append((cmd, subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)))
        failed = [(cmd, code, log.read_text(errors="replace"))
                  for (cmd, proc), log in zip(running, logs, strict=True) for code in [proc.wait()] if code]
        if not failed:
            link = subprocess.run(plan.link, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
            failed = [(plan.link, link.returncode, link.stdout)] if link.returncode else []
        if failed:
            raise _build_error(sources, tree, applied, failed)
        publish(output, final)
    return BaselineLibrary(final, msda, applied, sources, arch)


def _build_error(sources: BaselineSources, tree: Path, applied: bool,
                 failed: list[tuple[list[str], int, str]]) -> BuildError:
    # Name their files where the user has them, not in the temporary copy that is about to go.
    def shown(text: str) -> str:
        return text.replace(str(tree), str(sources.tensorrt_dir))

    parts = []
    for command, code, output in failed:
        parts.append(f"nvcc exit {code}:\n{nvcc_summary(shown(output))}\ncommand: {shown(' '.join(command))}")
    where = " (their files as patched in a temporary copy)" if applied else ""
    return BuildError(f"compiling today's kernels from {sources.checkout} failed{where}:\n" + "\n".join(parts),
                      fix=f"check that --baseline-src is BEVFormer_tensorrt at 303d314 (with or without {PATCH_NAME})"
                          " and --trt-include holds TensorRT 8.6's include/")


def _content_key(nvcc: Path, tree: Path, sources: BaselineSources, arch: str, msda: bool) -> str:
    version = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True, check=False).stdout
    digest = hashlib.sha256(f"{version}|{arch}|{msda}|{sources.trt_include.resolve()}".encode())
    files = [ADAPTER, *(sources.compat_include / name for name in COMPAT_HEADERS),
             *sorted(p for p in tree.rglob("*") if p.is_file()), sources.trt_include / "NvInferRuntime.h"]
    for f in files:
        digest.update(f.name.encode())
        digest.update(f.read_bytes())
    plan = build_plan(nvcc, Path("T"), Path("I"), Path("C"), arch, msda, Path("O"))
    digest.update(repr((plan.compiles, plan.link)).encode())
    return digest.hexdigest()[:16]


def cuda_arch() -> str:
    """The current CUDA device's architecture as nvcc spells it (e.g. "90")."""
    import torch

    major, minor = torch.cuda.get_device_capability()
    return f"{major}{minor}"


_FP = {"float32": 0, "float16": 1}


def check_plugin_inputs(op: str, float_dtype: Any, floats: dict[str, Any], ints: dict[str, Any]) -> int:
    """What their TensorRT plugins (and TensorRT's own MSDA plugin) accept: float32 or float16 features, the other
    float tensors in the same dtype, int32 indices, contiguous CUDA tensors. Returns 1 for float16. Anything else
    is refused with ValueError, never converted silently inside a timed call."""
    import torch

    if float_dtype not in (torch.float32, torch.float16):
        raise ValueError(f"{op}: the kernel takes float32 or float16, got {float_dtype}")
    for name, t in floats.items():
        if t.dtype != float_dtype:
            raise ValueError(f"{op}: {name} must be {float_dtype} like the features (their plugin requires "
                             f"it), got {t.dtype}; convert it before timing")
    for name, t in ints.items():
        if t.dtype != torch.int32:
            raise ValueError(f"{op}: {name} must be int32 (their kernels take int*), got {t.dtype}")
    for name, t in {**floats, **ints}.items():
        if not (t.is_cuda and t.is_contiguous()):
            raise ValueError(f"{op}: {name} must be a contiguous CUDA tensor")
    return _FP[str(float_dtype)[6:]]


def msda_call_args(op: str, value: Any, spatial_shapes: Any, level_start_index: Any, sampling_locations: Any,
                   attention_weights: Any, out: Any) -> tuple[int, ...]:
    """The arguments both MSDA adapters' entry points take, after check_plugin_inputs: (half, output, value,
    spatial_shapes, level_start_index, sampling_locations, attention_weights, batch, spatial_size, num_heads,
    channels, num_levels, num_query, num_point, stream). The caller checks `out`'s shape."""
    import torch

    half = check_plugin_inputs(op, value.dtype, {"value": value, "sampling_locations": sampling_locations,
                                                 "attention_weights": attention_weights, "out": out},
                               {"spatial_shapes": spatial_shapes, "level_start_index": level_start_index})
    n, s, m, d = value.shape
    _, lq, _, levels, points, _ = sampling_locations.shape
    return (half, out.data_ptr(), value.data_ptr(), spatial_shapes.data_ptr(), level_start_index.data_ptr(),
            sampling_locations.data_ptr(), attention_weights.data_ptr(), n, s, m, d, levels, lq, points,
            int(torch.cuda.current_stream().cuda_stream))


class TodaysKernels:
    """Their launchers as torch functions on CUDA tensors, each writing into a preallocated `out`.

    Takes exactly what their TensorRT plugin receives: contiguous tensors, int32 indices, and (their plugins'
    format rule) GridSampler3D's grid and MSDA's locations/weights in the features' dtype. A tensor that breaks
    that is refused with ValueError, never converted silently inside a timed call.
    """

    def __init__(self, library: BaselineLibrary) -> None:
        self.library = library
        lib = ctypes.CDLL(str(library.path))
        p, i = ctypes.c_void_p, ctypes.c_int
        lib.fbocc_today_has_msda.restype = i
        lib.fbocc_today_grid_sampler3d.argtypes = [i, p, p, p, *[i] * 8, i, i, i, p]
        lib.fbocc_today_bev_pool_v2.argtypes = [i, p, p, p, p, p, p, p, p, i, i, i, p]
        lib.fbocc_today_msda.argtypes = [i, p, p, p, p, p, p, *[i] * 7, p]
        for fn in (lib.fbocc_today_grid_sampler3d, lib.fbocc_today_bev_pool_v2, lib.fbocc_today_msda):
            fn.restype = i
        self._lib = lib
        self.has_msda = bool(lib.fbocc_today_has_msda())

    @staticmethod
    def _stream() -> int:
        import torch

        return int(torch.cuda.current_stream().cuda_stream)

    @staticmethod
    def _raise(op: str, status: int) -> None:
        if status:
            raise RuntimeError(f"today's {op} kernel: CUDA error {status} (left by earlier work, or their launch)")

    def grid_sampler3d(self, input: Any, grid: Any, interpolation_mode: int, padding_mode: int,
                       align_corners: bool, out: Any) -> Any:
        """GridSampler3DTRT: input [N,C,D,H,W], grid [N,3,Do,Ho,Wo] x10 in input's dtype -> out [N,C,Do,Ho,Wo]."""
        half = check_plugin_inputs("GridSampler3D", input.dtype, {"input": input, "grid": grid, "out": out}, {})
        n, c, d, h, w = input.shape
        od, oh, ow = grid.shape[2:]
        if tuple(out.shape) != (n, c, od, oh, ow):
            raise ValueError(f"GridSampler3D: out must be {(n, c, od, oh, ow)}, got {tuple(out.shape)}")
        self._raise("GridSampler3D", self._lib.fbocc_today_grid_sampler3d(
            half, out.data_ptr(), input.data_ptr(), grid.data_ptr(), n, c, d, h, w, od, oh, ow,
            interpolation_mode, padding_mode, int(bool(align_corners)), self._stream()))
        return out

    def bev_pool_v2(self, depth: Any, feat: Any, ranks_depth: Any, ranks_feat: Any, ranks_bev: Any,
                    interval_starts: Any, interval_lengths: Any, out: Any) -> Any:
        """BEVPoolV2TRT into out [B,8,H,W,C] (their launcher zeroes it first; that memset is part of the call)."""
        half = check_plugin_inputs("BEVPoolV2", feat.dtype, {"depth": depth, "feat": feat, "out": out},
                                   {"ranks_depth": ranks_depth, "ranks_feat": ranks_feat, "ranks_bev": ranks_bev,
                                    "interval_starts": interval_starts, "interval_lengths": interval_lengths})
        if out.dim() != 5 or out.shape[-1] != feat.shape[-1]:
            raise ValueError(f"BEVPoolV2: out must be [B,D,H,W,{feat.shape[-1]}], got {tuple(out.shape)}")
        self._raise("BEVPoolV2", self._lib.fbocc_today_bev_pool_v2(
            half, out.data_ptr(), depth.data_ptr(), feat.data_ptr(), ranks_depth.data_ptr(),
            ranks_feat.data_ptr(), ranks_bev.data_ptr(), interval_starts.data_ptr(), interval_lengths.data_ptr(),
            feat.shape[-1], interval_starts.numel(), out.numel(), self._stream()))
        return out

    def multi_scale_deformable_attn(self, value: Any, spatial_shapes: Any, level_start_index: Any,
                                    sampling_locations: Any, attention_weights: Any, out: Any) -> Any:
        """MultiScaleDeformableAttnTRT (FB-OCC-TRT's kernel) into out [N,Lq,M*D]; zeroed by their launcher."""
        if not self.has_msda:
            raise RuntimeError("today's MSDA is 303d314's original op (reference points + offsets), not FB-OCC's: "
                               f"build with --baseline-patch {PATCH_NAME}")
        n, _, m, d = value.shape
        lq = sampling_locations.shape[1]
        args = msda_call_args("MultiScaleDeformableAttn", value, spatial_shapes, level_start_index,
                              sampling_locations, attention_weights, out)
        if tuple(out.shape) != (n, lq, m * d):
            raise ValueError(f"MultiScaleDeformableAttn: out must be {(n, lq, m * d)}, got {tuple(out.shape)}")
        self._raise("MultiScaleDeformableAttn", self._lib.fbocc_today_msda(*args))
        return out
