"""FB-OCC's three custom ops: PyTorch references (ground truth), the ONNX contract, and a CUDA binding.

`from fbocc.ops import grid_sampler3d, bev_pool_v2, multi_scale_deformable_attn` loads torch on first
use only, so `fbocc.ops.contract` stays importable (and fast) without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fbocc.ops.reference import bev_pool_v2, grid_sampler3d, multi_scale_deformable_attn

__all__ = ["bev_pool_v2", "grid_sampler3d", "multi_scale_deformable_attn"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from fbocc.ops import reference

        return getattr(reference, name)
    raise AttributeError(f"module 'fbocc.ops' has no attribute {name!r}")
