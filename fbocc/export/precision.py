"""The typed fp16 graph: per-stage fp16 sensitivity measured on the sample frames, then the fp32 graph retyped.

Why a retype of the fp32 graph and not an fp16 trace: the TorchScript exporter runs the model while it traces,
and PyTorch's CPU fp16 convolutions are ~30x slower than fp32 (ResNet-50 at FB-OCC's input: 197 s vs 6.3 s
measured on a 2-core host). The stages are still the model's own: every node of the exported graph carries
its module path (`/model/img_backbone/...`), so the retype works on the modules of `fbocc.model`.

- Sensitivity (`fp16_sensitivity`): over the sample frames in sequence order, each stage's fp32 inputs are
  captured and the stage is run again with fp16 storage (weights, and every parametrised layer's inputs and
  outputs rounded to fp16, arithmetic in fp32 as TensorRT's fp16 kernels accumulate). A stage whose output
  then overflows or leaves the bounds below stays an fp32 island.
- Retype (`retype_fp16`): nodes of fp16 stages get fp16 tensors; reductions and transcendental ops inside
  them stay fp32; the plugins' coordinate inputs (MSDA sampling locations and attention weights,
  GridSampler3D's grid) stay fp32 together with the elementwise subgraph that computes them; Casts at every
  boundary; graph inputs and outputs keep the fp32 graph's types, so one samples set feeds every graph.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fbocc.errors import ConfigError
from fbocc.ops.contract import CUSTOM_OPS

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
# The model's stages in execution order: FBOCC's child modules (two of them are the plugin stages).
STAGES: tuple[str, ...] = (
    "img_backbone", "img_neck", "depth_net", "bev_pool", "backward_projection", "history_sampler",
    "history_keyframe_time_conv", "history_keyframe_cat_conv", "img_bev_encoder_backbone", "img_bev_encoder_neck",
    "occupancy_head",
)
# A stage stays fp32 when, run with fp16 storage on its own fp32 inputs, its output overflows or exceeds these.
FP16_REL_L2_MAX = 1e-2  # ||y16 - y32|| / ||y32||
FP16_COSINE_MIN = 0.9999
FP16_MAX = 65504.0

_FLOAT, _FLOAT16 = 1, 10
_HEAVY = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})  # where a coordinate slice stops
_FP32_OPS = frozenset({"Pow", "Sqrt", "ReduceMean", "ReduceSum", "Softmax", "Exp", "Log", "Reciprocal", "Range"})
# Inputs that stay fp32 in an fp16 region: Resize's roi/scales (the op needs fp32 there), and the plugins'
# coordinates (fbocc/ops/contract.py: fp32 or the feature type; the kernels read fp32 coordinates best).
_FP32_INPUTS: dict[str, tuple[int, ...]] = {
    "Resize": (1, 2), "GridSampler3DTRT": (1,), "MultiScaleDeformableAttnTRT": (3, 4),
}
_KEEP_STAGE_ARGS_FP32: dict[str, tuple[int, ...]] = {"history_sampler": (1,)}  # the grid: coordinates


def parse_precisions(text: str | Sequence[str]) -> tuple[str, ...]:
    """`fp32,fp16,int8` -> ("fp32", "fp16", "int8"); fp32 is always made (the others derive from it)."""
    items = [p.strip().lower() for p in (text.split(",") if isinstance(text, str) else text) if p.strip()]
    unknown = [p for p in items if p not in PRECISIONS]
    if unknown:
        raise ConfigError(f"unknown precision {', '.join(repr(p) for p in unknown)} in --precision",
                          fix=f"use a comma-separated subset of {','.join(PRECISIONS)}, "
                          "e.g. --precision fp32,fp16,int8")
    return tuple(p for p in PRECISIONS if p == "fp32" or p in items)


def graph_file(fp32_name: str, precision: str) -> str:
    """`M.onnx` -> `M.fp16.onnx` / `M.int8.onnx` (docs/precision.md); fp32 keeps its name."""
    if precision == "fp32":
        return fp32_name
    stem = fp32_name[:-5] if fp32_name.endswith(".onnx") else fp32_name
    return f"{stem}.{precision}.onnx"


# --- sensitivity ----------------------------------------------------------------------------------


def _round16(x: Any) -> Any:
    import torch

    if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != torch.float16:
        return x.to(torch.float16).to(x.dtype)
    return x


def _map_tensors(obj: Any, fn: Any, skip: tuple[int, ...] = ()) -> Any:
    """fn on every tensor of a tuple/list (one level deep into lists); dicts (coordinate bundles) untouched."""
    if isinstance(obj, tuple):
        return tuple(o if i in skip else _map_tensors(o, fn) for i, o in enumerate(obj))
    if isinstance(obj, list):
        return [_map_tensors(o, fn) for o in obj]
    return fn(obj)


@contextlib.contextmanager
def emulated_fp16(module: Any, keep_args: tuple[int, ...] = ()) -> Iterator[None]:
    """Run `module` with fp16 storage: its parameters and float buffers rounded to fp16, and the float inputs
    and outputs of the module and of each of its parametrised layers rounded on the way. Restored on exit."""
    import torch

    saved: list[tuple[Any, Any]] = []
    handles = []
    with torch.no_grad():
        for t in list(module.parameters()) + [b for b in module.buffers() if b.is_floating_point()]:
            saved.append((t, t.data))
            t.data = _round16(t.data)
    layers = [m for m in module.modules() if m is not module and any(True for _ in m.parameters(recurse=False))]
    handles.append(module.register_forward_pre_hook(lambda _m, args: _map_tensors(args, _round16, keep_args)))
    handles.append(module.register_forward_hook(lambda _m, _a, out: _map_tensors(out, _round16)))
    for layer in layers:
        handles.append(layer.register_forward_pre_hook(lambda _m, args: _map_tensors(args, _round16)))
        handles.append(layer.register_forward_hook(lambda _m, _a, out: _map_tensors(out, _round16)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for t, data in saved:
            t.data = data


def _flat(obj: Any) -> list[Any]:
    import torch

    if isinstance(obj, torch.Tensor):
        return [obj] if obj.is_floating_point() else []
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _flat(o)]
    return []


@dataclass
class ErrorStats:
    """Output error of a stage or layer over all frames: fp16/int8 against fp32 on the same inputs."""

    max_abs: float = 0.0
    ref_max: float = 0.0
    sq_err: float = 0.0
    sq_ref: float = 0.0
    cosine: float = 1.0  # the lowest per-call value
    finite: bool = True
    peak: float = 0.0  # the largest |value| of the low-precision output
    calls: int = 0

    def add(self, ref: Any, low: Any, chunk: int = 1 << 22) -> None:
        """Accumulate one output pair, in chunks (the history tensors hold 10^8 values: no full-size copies)."""
        import torch

        ref_flat, low_flat = ref.detach().reshape(-1), low.detach().reshape(-1)
        dot = norm_ref = norm_low = 0.0
        for i in range(0, ref_flat.numel(), chunk):
            r = ref_flat[i:i + chunk].double()
            lo = low_flat[i:i + chunk].double()
            self.finite = self.finite and bool(torch.isfinite(lo).all())
            lo = lo.nan_to_num(nan=float("inf"))
            diff = lo - r
            self.max_abs = max(self.max_abs, float(diff.abs().max()))
            self.ref_max = max(self.ref_max, float(r.abs().max()))
            self.peak = max(self.peak, float(lo.abs().max()))
            self.sq_err += float((diff * diff).sum())
            finite_lo = lo.nan_to_num(posinf=0.0, neginf=0.0)
            dot += float((r * finite_lo).sum())
            norm_ref += float((r * r).sum())
            norm_low += float((finite_lo * finite_lo).sum())
        self.sq_ref += norm_ref
        if norm_ref == 0.0 and norm_low == 0.0:
            cos = 1.0
        elif norm_ref == 0.0 or norm_low == 0.0:
            cos = 0.0
        else:
            cos = dot / (norm_ref ** 0.5 * norm_low ** 0.5)
        self.cosine = min(self.cosine, cos)
        self.calls += 1

    @property
    def rel_l2(self) -> float:
        return (self.sq_err / self.sq_ref) ** 0.5 if self.sq_ref > 0 else (0.0 if self.sq_err == 0 else float("inf"))

    @property
    def rel_error(self) -> float:
        return self.max_abs / self.ref_max if self.ref_max > 0 else (0.0 if self.max_abs == 0 else float("inf"))

    def as_dict(self) -> dict[str, Any]:
        return {"max_abs": self.max_abs, "rel_error": self.rel_error, "rel_l2": self.rel_l2, "cosine": self.cosine,
                "finite": self.finite, "peak_abs": self.peak, "calls": self.calls}


def run_frames(model: Any, frames: Sequence[dict[str, Any]]) -> list[Any]:
    """The model over the frames in order; each frame's stored inputs already carry the history (export fed
    frame t+1 with frame t's reference outputs). Returns each frame's outputs."""
    import numpy as np
    import torch

    from fbocc.model.network import INPUT_NAMES

    outs = []
    with torch.no_grad():
        for arrays in frames:
            outs.append(model(*(torch.from_numpy(np.ascontiguousarray(arrays[n])) for n in INPUT_NAMES)))
    return outs


def module_sensitivity(model: Any, modules: dict[str, Any], frames: Sequence[dict[str, Any]],
                       variant: Callable[[str, Any, tuple[Any, ...]], Any], *,
                       variant_is_reference: bool = False) -> dict[str, ErrorStats]:
    """Run the frames once; at each named module, also run `variant(name, module, args)` on the very inputs the
    module got and accumulate how far the two outputs are apart. The module's own output is the reference unless
    `variant_is_reference` (int8: the variant switches its quantizers off). Nested calls are not measured."""
    stats = {name: ErrorStats() for name in modules}
    busy = {"on": False}

    def hook_for(name: str) -> Any:
        def hook(module: Any, args: Any, out: Any) -> None:
            if busy["on"]:
                return
            busy["on"] = True
            try:
                other = variant(name, module, args)
            finally:
                busy["on"] = False
            ref, low = (other, out) if variant_is_reference else (out, other)
            for ref_t, low_t in zip(_flat(ref), _flat(low), strict=True):
                stats[name].add(ref_t, low_t)
        return hook

    handles = [m.register_forward_hook(hook_for(name)) for name, m in modules.items()]
    try:
        run_frames(model, frames)
    finally:
        for h in handles:
            h.remove()
    return stats


@dataclass
class Fp16Sensitivity:
    """Per-stage fp16 error and the plan it leads to."""

    stages: dict[str, ErrorStats]
    frames: list[str]
    fp16_stages: list[str] = field(default_factory=list)
    fp32_islands: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"method": "each stage run again on its own fp32 inputs with fp16 storage (weights, layer inputs "
                          "and outputs rounded to fp16, fp32 arithmetic)",
                "bounds": {"rel_l2_max": FP16_REL_L2_MAX, "cosine_min": FP16_COSINE_MIN, "fp16_max": FP16_MAX},
                "frames": self.frames, "fp16_stages": self.fp16_stages, "fp32_islands": self.fp32_islands,
                "stages": {name: s.as_dict() | {"precision": "fp32" if name in self.fp32_islands else "fp16",
                                                 "reason": self.reasons.get(name, "")}
                           for name, s in self.stages.items()}}

    def markdown(self) -> str:
        rows = ["| stage | rel. L2 error | max abs | rel. error | cosine | peak |value| | chosen | why |",
                "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, s in self.stages.items():
            chosen = "fp32 island" if name in self.fp32_islands else "fp16"
            rows.append(f"| {name} | {s.rel_l2:.2e} | {s.max_abs:.3g} | {s.rel_error:.2e} | {s.cosine:.6f} | "
                        f"{s.peak:.4g} | {chosen} | {self.reasons.get(name, '')} |")
        return (f"fp16 sensitivity per stage over frames {', '.join(self.frames)} (each stage alone in fp16 on its "
                f"fp32 inputs; bounds: rel. L2 <= {FP16_REL_L2_MAX:g}, cosine >= {FP16_COSINE_MIN}, no overflow)\n\n"
                + "\n".join(rows) + "\n")


def fp16_sensitivity(model: Any, frames: Sequence[dict[str, Any]], frame_ids: Sequence[str]) -> Fp16Sensitivity:
    """Measure every stage's fp16 error on the frames (in order) and choose the fp32 islands."""
    def fp16_run(name: str, module: Any, args: tuple[Any, ...]) -> Any:
        with emulated_fp16(module, _KEEP_STAGE_ARGS_FP32.get(name, ())):
            return module(*args)

    stats = module_sensitivity(model, {name: getattr(model, name) for name in STAGES}, frames, fp16_run)
    result = Fp16Sensitivity(stages=stats, frames=list(frame_ids))
    for name, s in stats.items():
        if not s.finite or s.peak > FP16_MAX:
            result.reasons[name] = "overflows fp16"
        elif s.rel_l2 > FP16_REL_L2_MAX:
            result.reasons[name] = f"rel. L2 {s.rel_l2:.1e} > {FP16_REL_L2_MAX:g}"
        elif s.cosine < FP16_COSINE_MIN:
            result.reasons[name] = f"cosine {s.cosine:.6f} < {FP16_COSINE_MIN}"
        (result.fp32_islands if name in result.reasons else result.fp16_stages).append(name)
    return result


# --- the ONNX retype ------------------------------------------------------------------------------


def node_stage(node: Any) -> str | None:
    """The model stage a node of our export belongs to, from its module path (`/model/<stage>/...`)."""
    return next((part for part in node.name.split("/") if part in STAGES), None)


def tensor_types(model: Any) -> dict[str, int]:
    """Element type of every tensor of an fp32 export (plugin outputs are float, like their first input)."""
    import onnx

    from fbocc.export.onnx_graph import skeleton

    light = skeleton(model)
    known = {vi.name for vi in light.graph.value_info}
    for node in light.graph.node:
        if node.op_type in CUSTOM_OPS:
            for out in node.output:
                if out not in known:
                    light.graph.value_info.append(onnx.helper.make_tensor_value_info(out, _FLOAT, None))
    inferred = onnx.shape_inference.infer_shapes(light, strict_mode=False)
    types: dict[str, int] = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    return types


def _to_fp16_tensor(tensor: Any, name: str) -> Any:
    import numpy as np
    from onnx import numpy_helper

    return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), name)


def retype_fp16(model: Any, fp16_stages: Sequence[str]) -> tuple[Any, dict[str, int]]:
    """A copy of the fp32 export with the nodes of `fp16_stages` in fp16 (see the module doc). Returns the
    typed model and counts (fp16 nodes, casts added, fp32-pinned nodes)."""
    import onnx
    from onnx import helper

    types = tensor_types(model)
    wanted = set(fp16_stages)
    nodes = list(model.graph.node)
    producer = {out: n for n in nodes for out in n.output}
    half = {id(n): node_stage(n) in wanted and n.op_type not in _FP32_OPS and n.op_type != "Constant" for n in nodes}
    # The elementwise subgraph computing a plugin's coordinates stays fp32, back to the layer that produced it.
    stack = [producer[n.input[i]] for n in nodes if half[id(n)] and n.op_type in CUSTOM_OPS
             for i in _FP32_INPUTS.get(n.op_type, ()) if i < len(n.input) and n.input[i] in producer]
    pinned = 0
    while stack:
        n = stack.pop()
        if not half[id(n)] or n.op_type in _HEAVY or n.op_type in CUSTOM_OPS:
            continue
        half[id(n)] = False
        pinned += 1
        stack.extend(producer[x] for x in n.input if x in producer and types.get(x) == _FLOAT)

    initializers = {i.name: i for i in model.graph.initializer}
    new_type: dict[str, int] = {}
    extra_inits: list[Any] = []
    converted: dict[tuple[str, int], str] = {}
    out_nodes: list[Any] = []
    casts = 0

    def typed(name: str) -> int | None:
        return new_type.get(name, types.get(name))

    def as_type(name: str, want: int) -> str:
        nonlocal casts
        if typed(name) == want or typed(name) not in (_FLOAT, _FLOAT16):
            return name
        key = (name, want)
        if key not in converted:
            suffix = "fp16" if want == _FLOAT16 else "fp32"
            src = producer.get(name)
            if want == _FLOAT16 and name in initializers:
                new = f"{name}__fp16"
                extra_inits.append(_to_fp16_tensor(initializers[name], new))
            elif (want == _FLOAT16 and src is not None and src.op_type == "Constant"
                  and src.attribute[0].name == "value"):
                new = f"{name}__fp16"
                out_nodes.append(helper.make_node("Constant", [], [new], name=f"{src.name}__fp16",
                                                  value=_to_fp16_tensor(src.attribute[0].t, new)))
            else:
                new = f"{name}__to_{suffix}"
                out_nodes.append(helper.make_node("Cast", [name], [new], to=want, name=f"{new}_cast"))
                casts += 1
            new_type[new] = want
            converted[key] = new
        return converted[key]

    fp16_nodes = 0
    for n in nodes:
        if half[id(n)]:
            fp16_nodes += 1
            keep = _FP32_INPUTS.get(n.op_type, ())
            for i, name in enumerate(n.input):
                if name and typed(name) in (_FLOAT, _FLOAT16):
                    n.input[i] = as_type(name, _FLOAT if i in keep else _FLOAT16)
            for attr in n.attribute:
                if n.op_type == "Cast" and attr.name == "to" and attr.i == _FLOAT:
                    attr.i = _FLOAT16
                elif n.op_type == "ConstantOfShape" and attr.name == "value" and attr.t.data_type == _FLOAT:
                    attr.t.CopyFrom(_to_fp16_tensor(attr.t, attr.t.name))
            for out in n.output:
                if types.get(out) == _FLOAT:
                    new_type[out] = _FLOAT16
        elif n.op_type != "Cast":  # a Cast takes any input type
            for i, name in enumerate(n.input):
                if name and typed(name) == _FLOAT16:
                    n.input[i] = as_type(name, _FLOAT)
        out_nodes.append(n)
    for vi in model.graph.output:  # graph outputs keep their fp32 type and name
        if typed(vi.name) == _FLOAT16:
            inner = f"{vi.name}__fp16"
            for n in out_nodes:
                n.output[:] = [inner if o == vi.name else o for o in n.output]
                n.input[:] = [inner if i == vi.name else i for i in n.input]
            new_type[inner] = _FLOAT16
            out_nodes.append(helper.make_node("Cast", [inner], [vi.name], to=_FLOAT, name=f"{vi.name}_cast_fp32"))
            new_type.pop(vi.name, None)
            casts += 1

    used_names = {i for n in out_nodes for i in n.input} | {o.name for o in model.graph.output}
    out_nodes = [n for n in out_nodes if n.op_type != "Constant" or n.output[0] in used_names]
    typed_model = onnx.ModelProto()
    typed_model.CopyFrom(model)
    graph = typed_model.graph
    del graph.node[:]
    graph.node.extend(out_nodes)
    graph.initializer.extend(extra_inits)
    used = {i for n in graph.node for i in n.input}
    keep_inits = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep_inits)
    # Every float tensor's type written down: ONNX Runtime's custom-op preparation and readers need no inference.
    del graph.value_info[:]
    outputs = {o.name for o in graph.output}
    for n in graph.node:
        for out in n.output:
            t = typed(out)
            if t in (_FLOAT, _FLOAT16) and out not in outputs:
                graph.value_info.append(helper.make_tensor_value_info(out, t, None))
    return typed_model, {"fp16_nodes": fp16_nodes, "casts": casts, "fp32_pinned": pinned,
                         "nodes": len(graph.node)}


def write_typed_fp16(fp32_onnx: Path, out_path: Path, fp16_stages: Sequence[str]) -> dict[str, int]:
    """Retype `fp32_onnx` and write the fp16 graph to `out_path`."""
    import onnx

    model = onnx.load(str(fp32_onnx))
    typed_model, counts = retype_fp16(model, fp16_stages)
    onnx.save(typed_model, str(out_path))
    return counts
