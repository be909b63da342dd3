"""A user's NVlabs/FB-BEV tree, imported and run on the CPU: the upstream FB-OCC `_trt` model as its own code
computes it. Used by `fbocc export --fbbev`, by the parity check and by the golden generator.

The only module of fbocc that imports FB-BEV, mmcv, mmdet or mmdet3d; loaded lazily, never by orchestration.

What a CPU-only environment (mmcv built with MMCV_WITH_OPS=0, no CUDA) lacks, and what stands in for it:
- the compiled kernels FB-OCC's TensorRT forward calls, `bev_pool_v2_ext.bev_pool_v2_forward` and
  `mmcv._ext.ms_deform_attn_forward`: exact PyTorch equivalents (a scatter-add of depth x feature over the
  host-sorted ranks; mmcv's own `multi_scale_deformable_attn_pytorch`);
- every other compiled function of `mmcv._ext`/`mmdet3d.ops` and about forty packages that FB-BEV imports but
  FB-OCC never calls (spconv, numba, nuscenes, ...): stand-ins that raise `FBBEVStandInCalled` when called;
- numpy 2 removed aliases FB-BEV still names (`np.int`, `np.float`, `np.bool`, `np.long`);
- `value.is_cuda` asserted by the TensorRT MSDA wrapper and `.cuda()` in `CustomFocalLoss.__init__`: the
  model is built with `torch.Tensor.cuda` as identity and the wrapper's assertion sees a CPU tensor marked
  as such (no CUDA is ever touched).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import os
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fbocc.errors import ConfigError, EnvironmentCheckError

TRT_CONFIG = "occupancy_configs/fb_occ/fbocc-r50-cbgs_depth_16f_16x4_20e_trt.py"
# The three files upstream's deployment/README.md copies from DerryHub/BEVFormer_tensorrt (303d314) before
# applying deployment/fbocc_custom_ops_plugin.patch.
CUSTOM_OPS_FILES = ("grid_sampler.py", "bev_pool_v2.py", "multi_scale_deformable_attn.py")
from fbocc.export.fbbev_recipe import SETUP_RECIPE  # noqa: E402

# Top-level packages FB-BEV imports for datasets, evaluation, visualisation or sparse convolution; FB-OCC's
# TensorRT forward never calls them.
IMPORT_ONLY_PACKAGES = (
    "spconv", "numba", "nuscenes", "pyquaternion", "lyft_dataset_sdk", "waymo_open_dataset", "tensorflow",
    "torchvision", "matplotlib", "pycocotools", "IPython", "trimesh", "sklearn", "plyfile", "open3d",
    "scipy", "skimage", "shapely", "descartes", "networkx", "mmcv._ext", "MinkowskiEngine", "torchsparse",
    "imageio", "wandb", "torch_scatter", "ninja", "cumm", "pccm", "PIL", "termcolor", "seaborn", "pandas",
    "tensorboard", "einops", "fvcore", "timm", "torchmetrics", "h5py", "mmdet3d.ops.ops_dcnv3",
)
COMPILED_MODULES = ("mmdet3d.ops.bev_pool_v2.bev_pool_v2_ext", "mmcv._ext")


class FBBEVStandInCalled(RuntimeError):
    """Something FB-OCC's forward was expected never to call was called."""


class _StandIn(types.ModuleType):
    """A module whose every attribute is a stand-in that raises when called (and a sub-package)."""

    def __init__(self, name: str, implemented: dict[str, Any] | None = None):
        super().__init__(name)
        self.__path__: list[str] = []
        self.__file__ = f"<fbocc stand-in for {name}>"
        self.__dict__.update(implemented or {})

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        stand_in = _stand_in_class(f"{self.__name__}.{attr}")
        setattr(self, attr, stand_in)
        return stand_in


class _StandInMeta(type):
    """Stand-in classes: subclassable, usable as decorators at import time, raising when really used."""

    def __getattr__(cls, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _stand_in_class(f"{cls.__qualname__}.{attr}")

    def __getitem__(cls, item: Any) -> Any:
        return cls

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and not kwargs and callable(args[0]):  # @numba.jit
            return _raising(cls.__qualname__, args[0])
        if not args and kwargs:  # @numba.jit(nopython=True)
            return lambda f: _raising(cls.__qualname__, f)
        raise FBBEVStandInCalled(f"{cls.__qualname__} was called: fbocc runs FB-BEV without it")


def _stand_in_class(qual: str) -> Any:
    name = qual.rsplit(".", 1)[-1]
    base: tuple[type, ...] = (Warning,) if name.endswith("Warning") else (
        (Exception,) if name.endswith(("Error", "Exception")) else ())
    return _StandInMeta(name, base, {"__qualname__": qual, "__module__": qual.rsplit(".", 1)[0]})


def _raising(qual: str, func: Any) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        raise FBBEVStandInCalled(f"{getattr(func, '__qualname__', func)} (under {qual}) was called: "
                                 "fbocc runs FB-BEV without it")

    return call


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves the stand-in modules for names that cannot be imported here."""

    def __init__(self, implemented: dict[str, dict[str, Any]]):
        self.implemented = implemented

    def _covers(self, fullname: str) -> bool:
        if fullname in self.implemented:
            return True
        return any(fullname == p or fullname.startswith(p + ".") for p in IMPORT_ONLY_PACKAGES)

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if not self._covers(fullname):
            return None
        if fullname not in self.implemented:  # a package that is really installed is used as is
            top = fullname.split(".")[0]
            if top not in ("mmcv", "mmdet3d") and _installed_elsewhere(top, self):
                return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _StandIn(spec.name, self.implemented.get(spec.name))

    def exec_module(self, module: types.ModuleType) -> None:
        return None


def _installed_elsewhere(top: str, finder: _StandInFinder) -> bool:
    for other in sys.meta_path:
        if other is finder or not hasattr(other, "find_spec"):
            continue
        with contextlib.suppress(ImportError, ValueError):
            if other.find_spec(top, None) is not None:
                return True
    return False


def _bev_pool_v2_forward(depth: Any, feat: Any, out: Any, ranks_depth: Any, ranks_feat: Any, ranks_bev: Any,
                         interval_lengths: Any, interval_starts: Any) -> None:
    """`bev_pool_v2_ext.bev_pool_v2_forward` (out [B,Z,Y,X,C] += depth x feat over the ranks), in PyTorch."""
    import torch

    c = feat.shape[-1]
    prod = depth.reshape(-1)[ranks_depth.long()].unsqueeze(-1) * feat.reshape(-1, c)[ranks_feat.long()]
    flat = torch.zeros(out.numel() // c, c, dtype=out.dtype)
    flat.index_add_(0, ranks_bev.long(), prod.to(out.dtype))
    out.copy_(flat.view(out.shape))


def bev_pool_v2_plain(depth: Any, feat: Any, ranks_depth: Any, ranks_feat: Any, ranks_bev: Any,
                      bev_feat_shape: Any, interval_starts: Any, interval_lengths: Any) -> Any:
    """FB-BEV's `bev_pool_v2_gpu` (QuickCumsumCuda.apply) as a plain function: torch 2.13's tracer fails on an
    autograd Function nested in another (`RuntimeError: unordered_map::at`); same kernel, same result."""
    out = feat.new_zeros(bev_feat_shape)
    _bev_pool_v2_forward(depth.contiguous().float(), feat.contiguous().float(), out, ranks_depth.int(),
                         ranks_feat.int(), ranks_bev.int(), interval_lengths.int(), interval_starts.int())
    return out


def _ms_deform_attn_forward(value: Any, spatial_shapes: Any, level_start_index: Any, sampling_locations: Any,
                            attention_weights: Any, im2col_step: int = 64) -> Any:
    """`mmcv._ext.ms_deform_attn_forward` -> [N, Lq, M*D], with mmcv's PyTorch implementation."""
    from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch

    return multi_scale_deformable_attn_pytorch(value, spatial_shapes, sampling_locations, attention_weights)


_NUMPY_ALIASES = {"int": int, "float": float, "bool": bool, "long": int, "object": object, "str": str}


@dataclass
class FBBEVTree:
    """An FB-BEV checkout prepared as its deployment/README.md says."""

    root: Path

    @property
    def custom_ops(self) -> Path:
        return self.root / "mmdet3d" / "models" / "fbbev" / "custom_ops"

    def problems(self) -> list[str]:
        """What is missing for this tree to build FB-OCC's TensorRT model (empty when ready)."""
        if not (self.root / "mmdet3d" / "models" / "fbbev").is_dir():
            return [f"{self.root} is not an NVlabs/FB-BEV checkout (no mmdet3d/models/fbbev)"]
        missing = [f for f in CUSTOM_OPS_FILES if not (self.custom_ops / f).is_file()]
        if missing:
            return [f"{self.custom_ops} lacks {', '.join(missing)} (deployment/README.md, 'Third-Party "
                    "Custom Operations')"]
        if "QuickCumsumCuda" not in (self.custom_ops / "bev_pool_v2.py").read_text(errors="replace"):
            return [f"{self.custom_ops / 'bev_pool_v2.py'} is not patched: apply "
                    "deployment/fbocc_custom_ops_plugin.patch (its mmdet3d/ part)"]
        return []


def check_tree(path: Path) -> FBBEVTree:
    """The tree at `path`, or ConfigError naming what is missing and how to prepare it."""
    tree = FBBEVTree(Path(path).expanduser().resolve())
    problems = tree.problems()
    if problems:
        raise ConfigError("; ".join(problems), where=str(path), fix=SETUP_RECIPE)
    return tree


_ACTIVE: dict[str, Any] = {}


def activate(tree: FBBEVTree) -> types.ModuleType:
    """Import the tree's mmdet3d (stand-ins installed first); returns the module. Once per process."""
    if _ACTIVE.get("root") not in (None, tree.root):
        raise ConfigError(f"FB-BEV tree {_ACTIVE['root']} is already imported in this process",
                          where=str(tree.root), fix="use one FB-BEV tree per process")
    if "module" in _ACTIVE:
        return _ACTIVE["module"]
    import numpy as np

    for alias, value in _NUMPY_ALIASES.items():
        if alias not in np.__dict__:
            setattr(np, alias, value)
    try:
        import mmcv  # noqa: F401
        import mmdet  # noqa: F401
        import mmseg  # noqa: F401
    except ImportError as exc:
        raise EnvironmentCheckError(f"the FB-BEV environment is incomplete: {exc}", fix=SETUP_RECIPE) from exc
    finder = _StandInFinder({
        "mmcv._ext": {"ms_deform_attn_forward": _ms_deform_attn_forward},
        "mmdet3d.ops.bev_pool_v2.bev_pool_v2_ext": {"bev_pool_v2_forward": _bev_pool_v2_forward},
    })
    sys.meta_path.append(finder)
    sys.path.insert(0, str(tree.root))
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    module = importlib.import_module("mmdet3d.models")
    mmdet3d = sys.modules["mmdet3d"]
    if not str(getattr(mmdet3d, "__file__", "")).startswith(str(tree.root)):
        raise EnvironmentCheckError(f"mmdet3d was imported from {mmdet3d.__file__}, not from {tree.root}",
                                    fix="uninstall the other mmdet3d from this environment")
    _ACTIVE.update(root=tree.root, module=module)
    return module


@contextlib.contextmanager
def cpu_as_cuda() -> Iterator[None]:
    """`.cuda()` is the identity and `Tensor.is_cuda` is True while building/running upstream's model on CPU:
    FB-BEV asserts or moves to CUDA in places whose math is device-independent."""
    import torch

    saved_cuda, saved_is_cuda = torch.Tensor.cuda, torch.Tensor.is_cuda
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.Tensor.is_cuda = property(lambda self: True)  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.Tensor.cuda = saved_cuda  # type: ignore[method-assign]
        torch.Tensor.is_cuda = saved_is_cuda


def tree_provenance(tree: FBBEVTree) -> dict[str, Any]:
    """What identifies the tree: its git commit when it is a checkout, the versions of mmcv/mmdet/mmseg, and
    the sha256 of the custom-op files copied into it."""
    import hashlib
    import subprocess

    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        run = subprocess.run(["git", "-C", str(tree.root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=False)
        commit = run.stdout.strip() or None
    versions = {}
    for name in ("mmcv", "mmdet", "mmseg"):
        with contextlib.suppress(ImportError):
            versions[name] = importlib.import_module(name).__version__
    ops = {f: hashlib.sha256((tree.custom_ops / f).read_bytes()).hexdigest()[:16] for f in CUSTOM_OPS_FILES
           if (tree.custom_ops / f).is_file()}
    return {"root": str(tree.root), "git_commit": commit, "versions": versions, "custom_ops_sha256": ops,
            "commit_env": os.environ.get("FBOCC_UPSTREAM_COMMIT")}


def probe(tree_path: str) -> dict[str, Any]:
    """What `fbocc doctor --fbbev` reports about this interpreter and tree (run in the FB-BEV environment)."""
    import platform

    doc: dict[str, Any] = {"python": sys.executable, "python_version": platform.python_version(), "versions": {},
                           "tree_problems": FBBEVTree(Path(tree_path).expanduser().resolve()).problems()}
    for name in ("torch", "numpy", "mmcv", "mmdet", "mmseg", "onnx"):
        try:
            doc["versions"][name] = importlib.import_module(name).__version__
        except Exception as exc:
            doc["versions"][name] = None
            doc.setdefault("import_errors", {})[name] = f"{type(exc).__name__}: {exc}"
    if not doc["tree_problems"] and doc["versions"].get("mmcv"):
        try:
            activate(FBBEVTree(Path(tree_path).expanduser().resolve()))
            doc["mmdet3d"] = str(Path(sys.modules["mmdet3d"].__file__ or "").parent)
            doc["versions"]["mmdet3d"] = sys.modules["mmdet3d"].__version__
        except Exception as exc:
            doc.setdefault("import_errors", {})["mmdet3d"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    return doc


if __name__ == "__main__":  # python -m fbocc.export.fbbev --probe TREE (fbocc doctor --fbbev)
    import json

    if sys.argv[1:2] == ["--probe"] and len(sys.argv) == 3:
        import warnings

        warnings.simplefilter("ignore")
        print(json.dumps(probe(sys.argv[2])))
