"""The intermediate results of one FB-OCC forward, recorded by name, so a run can be held against FB-BEV's own
code stage by stage (the parity check, the committed goldens). Names follow `fbocc.export.fbbev_model.STAGES`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch

from fbocc.model.network import FBOCC

STAGES = ("image_features", "context", "depth", "bev_pool", "backward_projection", "fused_bev",
          "voxel_features")


@contextlib.contextmanager
def record_stages(model: FBOCC) -> Iterator[dict[str, Any]]:
    """While active, every forward of `model` stores its stage results (detached copies) in the dict."""
    stages: dict[str, Any] = {}

    def keep(name: str, pick: Any = lambda o: o) -> Any:
        return lambda _m, _i, out: stages.__setitem__(name, detached(pick(out)))

    handles = [
        model.img_neck.register_forward_hook(keep("image_features", first_level)),
        model.depth_net.register_forward_hook(keep("context", lambda o: o[0])),
        model.depth_net.register_forward_hook(keep("depth", lambda o: o[1])),
        model.bev_pool.register_forward_hook(keep("bev_pool")),
        model.backward_projection.register_forward_hook(keep("backward_projection")),
        model.img_bev_encoder_neck.register_forward_hook(keep("voxel_features")),
    ]
    fuse = model.fuse_history

    @functools.wraps(fuse)
    def fuse_history(*a: Any, **k: Any) -> Any:
        out = fuse(*a, **k)
        stages["fused_bev"] = out[0].detach().clone()
        return out

    model.fuse_history = fuse_history  # type: ignore[method-assign]
    try:
        yield stages
    finally:
        del model.fuse_history
        for h in handles:
            h.remove()


def first_level(x: Any) -> Any:
    """The FPN's output level (a list of one, or the tensor itself)."""
    return x[0] if isinstance(x, (list, tuple)) else x


def detached(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, (list, tuple)):
        return type(x)(detached(v) for v in x)
    return x
