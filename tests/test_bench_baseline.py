"""`make bench-kernels` with today's kernels (BEVFormer_tensorrt @303d314) beside ours, built at run time.

Their sources are not ours and never in this repository, so the tests that compile them run only where a copy
is present: FBOCC_BASELINE_SRC (a checkout, or a bare git mirror holding 303d314; default the mirror at
/work/.mirror/DerryHub+BEVFormer_tensorrt/repo) and, for FB-OCC's MSDA, FBOCC_BASELINE_PATCH (FB-OCC-TRT's
fb-occ_custom_op_trt_plugin.patch; default taken from the mirror /work/.mirror/johnyang-nv+FB-OCC-TRT/repo).
Elsewhere they skip and say why. The error paths need none of it.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("torch")

from benchmarks import kernels as bench
from benchmarks.baseline import bevformer_trt as baseline
from fbocc.errors import BuildError, ConfigError

THEIR_SRC = Path(os.environ.get("FBOCC_BASELINE_SRC", "/work/.mirror/DerryHub+BEVFormer_tensorrt/repo"))
THEIR_PATCH = os.environ.get("FBOCC_BASELINE_PATCH")
FBOCC_TRT_MIRROR = Path("/work/.mirror/johnyang-nv+FB-OCC-TRT/repo")
NVCC = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc"
ENTRY_POINTS = {"fbocc_today_has_msda", "fbocc_today_grid_sampler3d", "fbocc_today_bev_pool_v2", "fbocc_today_msda"}


def _fake_checkout(root: Path, kernel_text: str = "// empty\n") -> Path:
    """A directory shaped like their checkout (every file the build needs), with `kernel_text` in the .cu files."""
    for rel in baseline.HEADERS:
        (root / "TensorRT" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "TensorRT" / rel).write_text("#pragma once\n")
    for rel in baseline.KERNELS.values():
        (root / "TensorRT" / rel).write_text(kernel_text)
    return root


def _trt_include(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "NvInferRuntime.h").write_text("#pragma once\n")
    return root


def _compat(root: Path) -> Path:
    """Empty cuBLAS/cuDNN headers: enough for the paths that never compile their code."""
    root.mkdir(parents=True, exist_ok=True)
    for name in baseline.COMPAT_HEADERS:
        (root / name).write_text("#pragma once\n")
    return root


def _run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = bench.main(list(argv))
    return code, capsys.readouterr().err


# --- bad input: one clear error naming the path and the fix, before any GPU work --------------------------------

def test_missing_baseline_checkout_is_one_error_with_the_fix(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "BEVFormer_tensorrt"
    code, err = _run_main(capsys, "--baseline-src", str(missing))
    assert code == ConfigError.exit_code
    assert f"--baseline-src {missing}: no such directory" in err
    assert "fix: give a checkout of DerryHub/BEVFormer_tensorrt at 303d314" in err
    assert "Traceback" not in err


def test_a_directory_without_their_kernels_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run_main(capsys, "--baseline-src", str(tmp_path))
    assert code == ConfigError.exit_code
    assert f"--baseline-src {tmp_path} is not a BEVFormer_tensorrt checkout" in err
    assert "TensorRT/plugin/grid_sampler/gridSamplerKernel.cu" in err


def test_each_missing_file_is_named(tmp_path: Path) -> None:
    checkout = _fake_checkout(tmp_path / "src")
    (checkout / "TensorRT" / baseline.KERNELS["bev_pool_v2"]).unlink()
    with pytest.raises(ConfigError, match=r"missing TensorRT/plugin/bev_pool_v2/bevPoolKernel\.cu$"):
        baseline.locate(checkout, _trt_include(tmp_path / "trt"))


def test_missing_tensorrt_headers_name_the_folder_and_the_fix(tmp_path: Path) -> None:
    checkout = _fake_checkout(tmp_path / "src")
    with pytest.raises(ConfigError) as info:
        baseline.locate(checkout, tmp_path / "no-headers")
    assert f"{tmp_path / 'no-headers'}/NvInferRuntime.h not found" in info.value.message
    assert info.value.fix is not None and "--trt-include" in info.value.fix


def test_missing_cublas_cudnn_headers_name_the_folder_and_the_fix(tmp_path: Path) -> None:
    checkout = _fake_checkout(tmp_path / "src")
    none = tmp_path / "none"
    with pytest.raises(ConfigError, match=f"{none}/cublas_v2.h, {none}/cudnn.h not found") as info:
        baseline.locate(checkout, _trt_include(tmp_path / "trt"), compat_include=tmp_path / "none")
    assert info.value.fix is not None and "--baseline-compat" in info.value.fix


def test_missing_patch_file_is_refused(tmp_path: Path) -> None:
    checkout = _fake_checkout(tmp_path / "src")
    with pytest.raises(ConfigError, match=r"--baseline-patch .*: no such file"):
        baseline.locate(checkout, _trt_include(tmp_path / "trt"), tmp_path / "fb-occ.patch", _compat(tmp_path / "c"))


def test_fbocc_trt_headers_may_name_the_folder_holding_versions(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    include = _trt_include(tmp_path / "8.6.1" / "include")
    monkeypatch.setenv("FBOCC_TRT_HEADERS", str(tmp_path))
    assert baseline.resolve_trt_include(None) == include
    monkeypatch.setenv("FBOCC_TRT_HEADERS", str(include))
    assert baseline.resolve_trt_include(None) == include
    assert baseline.resolve_trt_include(tmp_path / "given") == tmp_path / "given"


def test_a_patch_that_does_not_apply_names_patch_and_checkout(tmp_path: Path) -> None:
    checkout = _fake_checkout(tmp_path / "src")
    patch = tmp_path / "fb-occ.patch"
    patch.write_text("--- a/TensorRT/common/helper.h\n+++ b/TensorRT/common/helper.h\n@@ -1 +1 @@\n-nothing\n+x\n")
    sources = baseline.locate(checkout, _trt_include(tmp_path / "trt"), patch, _compat(tmp_path / "c"))
    with pytest.raises(ConfigError, match=f"--baseline-patch {patch} does not apply to the kernels of {checkout}"):
        baseline.build(sources, "90", nvcc=NVCC, build_root=tmp_path / "build")
    assert (checkout / "TensorRT" / "common" / "helper.h").read_text() == "#pragma once\n"  # theirs untouched


def test_a_compile_failure_names_the_checkout_and_nvcc_output(tmp_path: Path) -> None:
    if not NVCC.exists():
        pytest.skip(f"nvcc not found at {NVCC} (set CUDA_HOME)")
    checkout = _fake_checkout(tmp_path / "src", kernel_text='#error "not their kernel"\n')
    sources = baseline.locate(checkout, _trt_include(tmp_path / "trt"), compat_include=_compat(tmp_path / "c"))
    with pytest.raises(BuildError) as info:
        baseline.build(sources, "90", nvcc=NVCC, build_root=tmp_path / "build")
    assert f"compiling today's kernels from {checkout} failed" in info.value.message
    assert "not their kernel" in info.value.message
    assert info.value.fix is not None and "303d314" in info.value.fix
    assert not list((tmp_path / "build").rglob("*.so")), "a failed build must leave no library behind"


def test_the_patch_applier_does_what_git_apply_does(tmp_path: Path) -> None:
    (tmp_path / "k.cu").write_text("a\nb\nc\nd\ne\nf\ng\nh")  # no newline at the end
    diff = ("diff --git a/k.cu b/k.cu\n--- a/k.cu\n+++ b/k.cu\n"
            "@@ -1,3 +1,4 @@\n a\n-b\n+B\n+B2\n c\n"
            "@@ -7,2 +8,2 @@\n g\n-h\n\\ No newline at end of file\n+H\n"
            "--- /dev/null\n+++ b/new/Makefile\n@@ -0,0 +1,2 @@\n+all:\n+\ttrue\n"
            "--- a/other.py\n+++ b/other.py\n@@ -1 +1 @@\n-x\n+y\n")
    assert baseline.apply_unified_diff(diff, tmp_path, {"k.cu", "new/Makefile"}) == ["k.cu", "new/Makefile"]
    assert (tmp_path / "k.cu").read_text() == "a\nB\nB2\nc\nd\ne\nf\ng\nH\n"
    assert (tmp_path / "new" / "Makefile").read_text() == "all:\n\ttrue\n"
    assert not (tmp_path / "other.py").exists(), "files outside `only` are left alone"
    with pytest.raises(baseline.PatchMismatch, match=r"k\.cu: the hunk at line 1 does not match"):
        baseline.apply_unified_diff(diff, tmp_path, {"k.cu"})  # already applied: the context has changed


# --- the table says what was and was not given ------------------------------------------------------------------

def _row(today: bench.Today | None) -> bench.Row:
    return bench.Row("BEVPoolV2", "FB-OCC", "float32", 0.02, 0.37, 10**6, 1000.0, 0.35, 18.5, None, "bar", True,
                     today)


def test_without_a_baseline_the_table_says_it_was_not_given() -> None:
    text = bench.render([_row(None)], "H100", 2900.0, "make bench-kernels", 50 << 20)
    assert "not given in this" in text and "--baseline-src PATH" in text
    assert "today's ms" not in text


def test_with_a_baseline_the_table_has_its_time_speed_up_and_error() -> None:
    rows = [_row(bench.Today(0.066, 1.5e-6)),
            _row(bench.Today(None, note="not run: the checkout's MSDA is 303d314's original op"))]
    text = bench.render(rows, "H100", 2900.0, "make bench-kernels", 50 << 20, "`x` (commit 303d314)")
    assert "| today's ms | ours vs today's | today's max err |" in text
    assert "| 0.0660 | 3.3x | 1.50e-06 |" in text
    assert "| - | - | - |" in text
    assert "Today's BEVPoolV2: not run: the checkout's MSDA is 303d314's original op." in text


# --- their sources, where a copy is present ---------------------------------------------------------------------

def _export_commit(git_dir: Path, commit: str, into: Path) -> Path:
    into.mkdir(parents=True)
    archive = subprocess.run(["git", f"--git-dir={git_dir}", "archive", commit, "TensorRT"], capture_output=True,
                             check=False)
    if archive.returncode:
        pytest.skip(f"{git_dir} has no {commit}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


@pytest.fixture(scope="module")
def their_checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not THEIR_SRC.exists():
        pytest.skip(f"no copy of BEVFormer_tensorrt at {THEIR_SRC} (set FBOCC_BASELINE_SRC to a checkout or mirror "
                    "of DerryHub/BEVFormer_tensorrt): their code is not ours, so this check runs only where it is")
    if (THEIR_SRC / "TensorRT").is_dir():
        return THEIR_SRC
    if (THEIR_SRC / "HEAD").is_file() and shutil.which("git"):
        return _export_commit(THEIR_SRC, baseline.COMMIT, tmp_path_factory.mktemp("bevformer_trt") / "checkout")
    pytest.skip(f"{THEIR_SRC} is neither a checkout (TensorRT/) nor a bare git repository")


@pytest.fixture(scope="module")
def their_patch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if THEIR_PATCH:
        return Path(THEIR_PATCH)
    if not (FBOCC_TRT_MIRROR / "HEAD").is_file() or shutil.which("git") is None:
        pytest.skip(f"no FB-OCC-TRT patch: set FBOCC_BASELINE_PATCH, or mirror johnyang-nv/FB-OCC-TRT at "
                    f"{FBOCC_TRT_MIRROR}")
    shown = subprocess.run(["git", f"--git-dir={FBOCC_TRT_MIRROR}", "show",
                            f"deployment:deployment/{baseline.PATCH_NAME}"], capture_output=True, check=False)
    if shown.returncode:
        pytest.skip(f"{FBOCC_TRT_MIRROR} has no deployment/{baseline.PATCH_NAME}: {shown.stderr.decode().strip()}")
    patch = tmp_path_factory.mktemp("patch") / baseline.PATCH_NAME
    patch.write_bytes(shown.stdout)
    return patch


@pytest.fixture(scope="module")
def compat_include() -> Path:
    include = baseline.resolve_compat_include(None)
    if not all((include / name).is_file() for name in baseline.COMPAT_HEADERS):
        pytest.skip(f"no cublas_v2.h/cudnn.h at {include} (set FBOCC_BASELINE_COMPAT): their headers include them")
    return include


@pytest.fixture(scope="module")
def trt_include() -> Path:
    include = baseline.resolve_trt_include(None)
    if not (include / "NvInferRuntime.h").is_file():
        pytest.skip(f"no TensorRT headers at {include} (set FBOCC_TRT_HEADERS): their common/helper.h includes them")
    return include


def _exported(library: Path) -> set[str]:
    out = subprocess.run(["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True, check=True)
    return {line.split()[-1] for line in out.stdout.splitlines() if line.strip()}


@pytest.mark.parametrize("with_patch", [False, True], ids=["303d314", "303d314+FB-OCC-TRT-patch"])
def test_adapter_compiles_with_their_kernels_for_sm90(with_patch: bool, their_checkout: Path, trt_include: Path,
                                                      compat_include: Path, request: pytest.FixtureRequest,
                                                      tmp_path: Path) -> None:
    if not NVCC.exists():
        pytest.skip(f"nvcc not found at {NVCC} (set CUDA_HOME)")
    patch = request.getfixturevalue("their_patch") if with_patch else None
    before = sorted((p.relative_to(their_checkout), p.read_bytes()) for p in their_checkout.rglob("*.[ch]*")
                    if p.is_file())
    sources = baseline.locate(their_checkout, trt_include, patch, compat_include)
    library = baseline.build(sources, "90", nvcc=NVCC, build_root=tmp_path / "build")

    assert library.path.is_file() and tmp_path / "build" in library.path.parents
    assert library.has_msda == with_patch, "FB-OCC-TRT's patch is what turns their MSDA into FB-OCC's op"
    assert library.patch_applied == with_patch
    assert _exported(library.path) >= ENTRY_POINTS
    # -z defs linked it with nothing unresolved beyond libc/libstdc++/libdl: no cuBLAS, cuDNN or TensorRT call.
    undefined = subprocess.run(["nm", "-D", "-u", str(library.path)], capture_output=True, text=True,
                               check=True).stdout
    assert not [s for s in undefined.split() if s.startswith(("cublas", "cudnn", "_ZN8nvinfer1"))]
    assert ctypes.CDLL(str(library.path)).fbocc_today_has_msda() == int(with_patch)
    after = sorted((p.relative_to(their_checkout), p.read_bytes()) for p in their_checkout.rglob("*.[ch]*")
                   if p.is_file())
    assert before == after, "the build must never modify their checkout"
    again = baseline.build(sources, "90", nvcc=NVCC, build_root=tmp_path / "build")
    assert again.path == library.path, "an unchanged build is served from the cache"


# --- on a GPU: their kernels compute FB-OCC's ops, so the mapping of conventions is right -----------------------

@pytest.mark.gpu
def test_todays_kernels_match_the_fp32_reference(their_checkout: Path, their_patch: Path, trt_include: Path,
                                                 compat_include: Path, tmp_path: Path) -> None:
    import torch

    from benchmarks import workloads as wl
    from fbocc.ops import reference as ref

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    sources = baseline.locate(their_checkout, trt_include, their_patch, compat_include)
    library = baseline.build(sources, baseline.cuda_arch(), build_root=tmp_path / "build")
    today = baseline.TodaysKernels(library)

    case = wl.GridSamplerCase(n=2, c=5, d=6, h=7, w=9, out=(4, 5, 6))
    volume, grid = wl.grid_sampler_inputs(case, torch.float32, "cuda", warp="random")
    out = torch.full((2, 5, 4, 5, 6), float("nan"), device="cuda")
    today.grid_sampler3d(volume, grid, 0, 0, True, out)
    torch.testing.assert_close(out, ref.grid_sampler3d(volume, grid, 0, 0, True), atol=1e-4, rtol=1e-4)

    bev = wl.BevPoolCase(cams=2, depth_bins=6, h=4, w=5, c=8, out_depth=2, out_height=6, out_width=7, points=150)
    inputs = wl.bev_pool_inputs(bev, torch.float32, "cuda")
    out = torch.full((1, 2, 6, 7, 8), float("nan"), device="cuda")
    today.bev_pool_v2(*inputs, out)
    torch.testing.assert_close(out, ref.bev_pool_v2(*inputs, 6, 7, 2), atol=1e-4, rtol=1e-4)

    msda = wl.MsdaCase(n=2, levels=((6, 7), (3, 4)), heads=2, channels=4, queries=9, points=3)
    value, shapes, starts, loc, weights = wl.msda_inputs(msda, torch.float32, "cuda")
    out = torch.full((2, 9, 8), float("nan"), device="cuda")
    today.multi_scale_deformable_attn(value, shapes, starts, loc, weights, out)
    torch.testing.assert_close(out, ref.multi_scale_deformable_attn(value, shapes, starts, loc, weights),
                               atol=1e-4, rtol=1e-4)
