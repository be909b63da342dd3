"""The plugin kernels (plugins/*/*.cu) as PyTorch functions, for tests and benchmarks on a CUDA machine.

Built on first use with `torch.utils.cpp_extension.load` from the same sources the TensorRT plugins use,
for the current device's architecture, into a cache directory keyed by the sources' content, the torch
version and the architecture (`$FBOCC_TORCH_EXT_DIR`, default `~/.cache/fbocc/torch-ext/<key>`).
Signatures match `fbocc.ops.reference`; `out=` takes a preallocated output (tests poison it first).
"""

from __future__ import annotations

import hashlib
import os
from functools import cache
from pathlib import Path
from typing import Any

import torch

from fbocc.assets import asset_dir
from fbocc.config import cache_dir
from fbocc.errors import BuildError, EnvironmentCheckError

_BINDING = Path(__file__).with_name("csrc") / "binding.cpp"


def plugin_sources() -> tuple[Path, list[Path]]:
    """The plugins/ root and the kernel sources the binding compiles."""
    root = asset_dir("plugins")
    return root, sorted(root.glob("*/*.cu"))


def _build_key(files: list[Path], arch: str) -> str:
    digest = hashlib.sha256(f"{torch.__version__}|{torch.version.cuda}|{arch}".encode())
    for f in files:
        digest.update(f.name.encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


def load_extension(name: str, sources: list[Path], headers: list[Path], include_paths: list[Path]) -> Any:
    """Compile `sources` for the current device's architecture into `$FBOCC_TORCH_EXT_DIR/<content key>` (default
    `fbocc.config.cache_dir()/torch-ext`) and import the module, named `<name>_<key>`; a rebuild only when a file
    changed."""
    if not torch.cuda.is_available():
        raise EnvironmentCheckError("no CUDA device: the fbocc kernels need one", fix="run on a machine with a GPU")
    from torch.utils.cpp_extension import load

    major, minor = torch.cuda.get_device_capability()
    arch = f"{major}.{minor}"
    key = _build_key([*sources, *headers], arch)
    build_dir = Path(os.environ.get("FBOCC_TORCH_EXT_DIR") or cache_dir() / "torch-ext") / key
    build_dir.mkdir(parents=True, exist_ok=True)
    os.environ["TORCH_CUDA_ARCH_LIST"] = arch  # one architecture: the device's own, compiled once
    try:
        return load(
            name=f"{name}_{key}",
            sources=[str(s) for s in sources],
            extra_include_paths=[str(p) for p in include_paths],
            extra_cflags=["-O2", "-std=c++17"],
            extra_cuda_cflags=["-O3", "-std=c++17"],
            build_directory=str(build_dir),
            verbose=bool(os.environ.get("FBOCC_VERBOSE_BUILD")),
        )
    except (RuntimeError, OSError) as exc:  # cpp_extension reports compiler failures as RuntimeError
        raise BuildError(f"building the {name} extension in {build_dir} failed: {exc}",
                         fix="check nvcc/ninja on PATH; FBOCC_VERBOSE_BUILD=1 shows the compiler output") from exc


@cache
def extension() -> Any:
    """Compile (once per content) and import the extension module."""
    root, kernels = plugin_sources()
    headers = sorted(root.glob("*/*.h")) + sorted(root.glob("*/*.cuh"))
    return load_extension("fbocc_kernels", [_BINDING, *kernels], headers, [root])


def grid_sampler3d(
    input: torch.Tensor,
    grid: torch.Tensor,
    interpolation_mode: int = 0,
    padding_mode: int = 0,
    align_corners: bool | int = False,
    out: torch.Tensor | None = None,
    tile: tuple[int, int, int] | None = None,
) -> torch.Tensor:
    """`GridSampler3DTRT` kernel; contract as `fbocc.ops.reference.grid_sampler3d`. `tile` (z, y, x) overrides
    the output points one thread block covers (tuning only)."""
    result: torch.Tensor = extension().grid_sampler3d(
        input.contiguous(), grid.contiguous(), interpolation_mode, padding_mode, bool(align_corners), out,
        list(tile) if tile else None)
    return result


def bev_pool_v2(
    depth: torch.Tensor,
    feat: torch.Tensor,
    ranks_depth: torch.Tensor,
    ranks_feat: torch.Tensor,
    ranks_bev: torch.Tensor,
    interval_starts: torch.Tensor,
    interval_lengths: torch.Tensor,
    out_height: int,
    out_width: int,
    out_depth: int = 8,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """`BEVPoolV2TRT` kernel; contract as `fbocc.ops.reference.bev_pool_v2` (intervals sorted by voxel)."""
    result: torch.Tensor = extension().bev_pool_v2(
        depth.contiguous(), feat.contiguous(), ranks_depth.contiguous(), ranks_feat.contiguous(),
        ranks_bev.contiguous(), interval_starts.contiguous(), interval_lengths.contiguous(),
        out_height, out_width, out_depth, out)
    return result


def multi_scale_deformable_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """`MultiScaleDeformableAttnTRT` kernel; contract as `fbocc.ops.reference.multi_scale_deformable_attn`."""
    result: torch.Tensor = extension().multi_scale_deformable_attn(
        value.contiguous(), spatial_shapes.contiguous(), level_start_index.contiguous(),
        sampling_locations.contiguous(), attention_weights.contiguous(), out)
    return result
