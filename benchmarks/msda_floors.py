"""Data-movement floors for MultiScaleDeformableAttn at FB-OCC's shapes (part of `make bench-kernels`).

`benchmarks/msda_floors.cu` holds two benchmark-only kernels that split the plugin kernel's memory traffic in two,
with its thread mapping and nothing else: the value gathers alone (4 x points value rows per (n, query, head), in
the workload's access pattern, their sum written out; no locations or weights read) and the location/weight reads
with the output write alone (no value rows read). The plugin kernel does all of both, so each floor's time bounds
what any kernel with this data layout can reach, and an empty kernel shows the timing method's fixed cost. They are
timed on the benchmark's own input sets, in the same run, with the same method.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import torch

from fbocc.ops import cuda as kernels

HERE = Path(__file__).parent


@cache
def extension() -> Any:
    plugins, _ = kernels.plugin_sources()  # msda_floors.cu takes the plugin kernels' load helpers
    return kernels.load_extension("fbocc_msda_floors", [HERE / "msda_floors.cpp", HERE / "msda_floors.cu"],
                                  [HERE / "msda_floors.h", plugins / "common" / "cudaUtils.cuh"], [HERE])


def level_of(spatial_shapes: torch.Tensor) -> tuple[int, int]:
    """(h, w) of the one level the floors support. Reads the tensor back to the host: call it before timing."""
    if spatial_shapes.shape != (1, 2):
        raise ValueError(f"the MSDA floors take one level, got spatial_shapes {list(spatial_shapes.shape)}")
    h, w = (int(x) for x in spatial_shapes.reshape(-1).tolist())
    return h, w


def check(value: torch.Tensor, sampling_locations: torch.Tensor, out: torch.Tensor,
          attention_weights: torch.Tensor | None = None) -> None:
    """What the floors take, as one ValueError naming the tensor (the binding checks again, as a last line);
    locations and weights are checked as inputs only where they are read (`attention_weights` given)."""
    for name, t in (("value", value), ("sampling_locations", sampling_locations), ("out", out),
                    ("attention_weights", attention_weights)):
        if t is not None and not (t.is_cuda and t.is_contiguous()):
            raise ValueError(f"{name} must be a contiguous CUDA tensor")
    if value.dim() != 4 or value.dtype not in (torch.float32, torch.float16):
        raise ValueError(f"value must be a float32 or float16 [N, S, M, D] tensor, got {value.dtype} "
                         f"{list(value.shape)}")
    n, _, m, d = value.shape
    loc = sampling_locations
    if loc.dim() != 6 or loc.shape[3] != 1 or loc.shape[5] != 2 or loc.shape[0] != n or loc.shape[2] != m:
        raise ValueError(f"sampling_locations must be [N={n}, Lq, M={m}, 1, P, 2] (one level), got {list(loc.shape)}")
    if d % 2:
        raise ValueError(f"the floors read channel pairs: D must be even, got {d}")
    if out.dtype != value.dtype or out.numel() != n * loc.shape[1] * m * d:
        raise ValueError(f"out must be {value.dtype} with N * Lq * M * D = {n * loc.shape[1] * m * d} elements, got "
                         f"{out.dtype} {list(out.shape)}")
    if attention_weights is None:
        return  # the gather floor reads neither locations nor weights
    if loc.dtype != value.dtype:
        raise ValueError(f"sampling_locations must be {value.dtype} like value, got {loc.dtype}")
    if attention_weights.dtype != value.dtype or 2 * attention_weights.numel() != loc.numel():
        raise ValueError(f"attention_weights must be {value.dtype} [N, Lq, M, 1, P], got {attention_weights.dtype} "
                         f"{list(attention_weights.shape)}")


def gather_floor(value: torch.Tensor, level: tuple[int, int], sampling_locations: torch.Tensor, locality: str,
                 out: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The value gathers of `locality` ("local" or "uniform", as benchmarks.workloads.msda_inputs) over the one
    level (h, w) (`level_of`) into `out`; `sampling_locations` gives only the shape (not read). No host sync."""
    if locality not in ("local", "uniform"):
        raise ValueError(f"locality must be 'local' or 'uniform', got {locality!r}")
    h, w = level
    check(value, sampling_locations, out)
    extension().gather_floor(value, sampling_locations, h, w, locality == "local", seed, out)
    return out


def stream_floor(value: torch.Tensor, sampling_locations: torch.Tensor, attention_weights: torch.Tensor,
                 out: torch.Tensor) -> torch.Tensor:
    """The location/weight reads and the output write into `out`; `value` gives only the shape (not read)."""
    check(value, sampling_locations, out, attention_weights)
    extension().stream_floor(value, sampling_locations, attention_weights, out)
    return out


def empty() -> None:
    extension().empty()
