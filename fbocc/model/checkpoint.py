"""Loading FB-BEV checkpoints strictly: every key and shape must match, prefixes `module.`/`teacher.` are
stripped (as FB-BEV's deployment does with `revise_keys`), and a mismatch names every offending key."""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fbocc.errors import ConfigError

_PREFIXES = (re.compile(r"^module\."), re.compile(r"^teacher\."))
# BatchNorm's step counter is not a weight; older checkpoints may lack it.
_OPTIONAL_SUFFIXES = (".num_batches_tracked",)


@dataclass
class CheckpointMismatch:
    """What differs between a checkpoint's state dict and the model's."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    wrong_shape: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape)

    def describe(self, limit: int = 20) -> str:
        """One line per problem (at most `limit` per kind), e.g. `missing key depth_net.bn.weight`."""
        lines = []
        for title, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            for key in items[:limit]:
                lines.append(f"{title} key {key}")
            if len(items) > limit:
                lines.append(f"... and {len(items) - limit} more {title} keys")
        for key, want, got in self.wrong_shape[:limit]:
            lines.append(f"shape of {key}: checkpoint {list(got)}, model {list(want)}")
        return "\n".join(lines)


def normalize_keys(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Strip `module.` and `teacher.` prefixes (repeatedly, in either order)."""
    out = {}
    for key, value in state_dict.items():
        new = key
        changed = True
        while changed:
            changed = False
            for pattern in _PREFIXES:
                stripped = pattern.sub("", new)
                if stripped != new:
                    new, changed = stripped, True
        out[new] = value
    return out


def compare(model: nn.Module, state_dict: Mapping[str, Any]) -> CheckpointMismatch:
    """Compare keys and shapes (no loading)."""
    own = model.state_dict()
    result = CheckpointMismatch()
    for key, tensor in own.items():
        if key not in state_dict:
            if not key.endswith(_OPTIONAL_SUFFIXES):
                result.missing.append(key)
        elif tuple(state_dict[key].shape) != tuple(tensor.shape):
            result.wrong_shape.append((key, tuple(tensor.shape), tuple(state_dict[key].shape)))
    result.unexpected = [k for k in state_dict if k not in own]
    return result


def read_state_dict(path: Path) -> dict[str, Any]:
    """The state dict of an mmcv checkpoint (`{"state_dict": ..., "meta": ...}`) or of a bare state dict."""
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist", fix="pass the .pth file with --checkpoint")
    try:
        # weights_only: a checkpoint is data; never run code from it.
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise ConfigError(
            f"checkpoint {path} cannot be read as tensors only: {str(exc).splitlines()[0]}",
            fix="if you trust the file, re-save its weights: python -c \"import torch; "
                "c=torch.load('IN.pth', weights_only=False); torch.save(c.get('state_dict', c), 'OUT.pth')\"",
        ) from exc
    if isinstance(ckpt, Mapping) and isinstance(ckpt.get("state_dict"), Mapping):
        ckpt = ckpt["state_dict"]
    if not isinstance(ckpt, Mapping) or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise ConfigError(f"checkpoint {path} holds no state dict of tensors",
                          fix="pass an FB-BEV training checkpoint (.pth with 'state_dict')")
    return dict(ckpt)


def load_checkpoint(model: nn.Module, path: Path) -> CheckpointMismatch:
    """Load `path` into `model` with strict key and shape checking; raise ConfigError naming every
    missing, unexpected or mis-shaped key."""
    state = normalize_keys(read_state_dict(path))
    result = compare(model, state)
    if not result.ok:
        raise ConfigError(
            f"checkpoint {path} does not fit the FB-OCC model "
            f"({len(result.missing)} missing, {len(result.unexpected)} unexpected, "
            f"{len(result.wrong_shape)} mis-shaped keys):\n{result.describe()}",
            fix="use a checkpoint of fbocc-r50-cbgs_depth_16f_16x4_20e (or the matching --preset/--config)",
        )
    model.load_state_dict(state, strict=False)  # strictness checked above, num_batches_tracked optional
    return result
