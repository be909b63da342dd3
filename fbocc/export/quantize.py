"""The INT8 graph: explicit QuantizeLinear/DequantizeLinear from NVIDIA Model Optimizer's PyTorch quantization.

`modelopt.torch.quantization.quantize(model, config, forward_loop)` with INT8_DEFAULT_CFG's quantizers (int8
per-channel weights, per-tensor inputs, max calibration), enabled only on the convolutions and matmuls of the
image backbone, neck, depth net and BEV encoder; calibrated on the sample frames in sequence order, each frame
with the history the fp32 model carried into it. Then each quantized layer's own error is measured (its output
with and without its quantizers, on the same inputs) and the layers above the bound lose their quantizers.
`torch.onnx.export(dynamo=False)` writes the Q/DQ pairs; our plugin nodes come out as in the fp32 graph, and
no quantizer sits on their inputs. Only public modelopt API is used (no patched private functions).

Everything not quantized stays fp32: opset 16's QuantizeLinear takes fp32 only (fp16 scales need opset 19).
"""

from __future__ import annotations

import contextlib
import copy
import io
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fbocc.errors import EnvironmentCheckError
from fbocc.export.precision import ErrorStats, module_sensitivity, run_frames

# The stages issue 19 names for INT8: image backbone, neck, depth net, BEV encoder (backbone + neck).
INT8_STAGES: tuple[str, ...] = (
    "img_backbone", "img_neck", "depth_net", "img_bev_encoder_backbone", "img_bev_encoder_neck",
)
# A layer stays fp32 when its own int8 error (||y8 - y32|| / ||y32||) exceeds the bound, or stands out from the
# other layers' (more than OUTLIER_FACTOR x their median): the few layers that carry most of the INT8 error.
INT8_LAYER_REL_L2_MAX = 0.05
INT8_OUTLIER_FACTOR = 2.0
MODELOPT_FIX = ("pip install 'fbocc[export]' (or: pip install nvidia-modelopt==0.47.0 requests huggingface_hub; "
                "not nvidia-modelopt[onnx], which pulls onnxruntime-gpu and cupy that fbocc does not use)")


def require_modelopt() -> Any:
    """`modelopt.torch.quantization`, or one clear error saying how to install it."""
    try:
        import modelopt.torch.quantization as mtq
    except ImportError as exc:
        raise EnvironmentCheckError(f"--precision int8 needs NVIDIA Model Optimizer (nvidia-modelopt): {exc}",
                                    fix=MODELOPT_FIX) from exc
    return mtq


def modelopt_version() -> str:
    import modelopt

    return str(getattr(modelopt, "__version__", "unknown"))


def quant_config(mtq: Any, stages: Sequence[str]) -> dict[str, Any]:
    """INT8_DEFAULT_CFG restricted to `stages`: its weight/input quantizer settings on those modules only, its
    disables (BatchNorm, Embedding, ...) kept, everything else off."""
    default = copy.deepcopy(mtq.INT8_DEFAULT_CFG)
    entries = default["quant_cfg"]
    weight = next(e["cfg"] for e in entries if e.get("quantizer_name") == "*weight_quantizer")
    inp = next(e["cfg"] for e in entries if e.get("quantizer_name") == "*input_quantizer")
    quant_cfg: list[dict[str, Any]] = [{"quantizer_name": "*", "enable": False}]
    for stage in stages:
        quant_cfg.append({"quantizer_name": f"{stage}.*weight_quantizer", "cfg": dict(weight)})
        quant_cfg.append({"quantizer_name": f"{stage}.*input_quantizer", "cfg": dict(inp)})
    quant_cfg.extend(e for e in entries if e.get("enable") is False and e.get("quantizer_name") != "*")
    return {"quant_cfg": quant_cfg, "algorithm": default.get("algorithm", "max")}


def _quantized_layers(model: Any) -> dict[str, Any]:
    """Layers with an enabled weight quantizer (convolutions, linears) by module name."""
    return {name: m for name, m in model.named_modules()
            if getattr(getattr(m, "weight_quantizer", None), "is_enabled", False)}


@dataclass
class Int8Result:
    """What the INT8 step did."""

    layers: dict[str, ErrorStats]
    excluded: dict[str, str]
    calibration_frames: list[str]
    stages: list[str]
    config: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    modelopt: str = ""

    @property
    def quantized(self) -> list[str]:
        return [n for n in self.layers if n not in self.excluded]

    def as_dict(self) -> dict[str, Any]:
        return {"method": "each quantized layer's output with and without its own quantizers, on the inputs of the "
                          "calibrated int8 model, over the calibration frames",
                "bound": {"rel_l2_max": INT8_LAYER_REL_L2_MAX, "outlier_factor_over_median": INT8_OUTLIER_FACTOR},
                "stages": self.stages,
                "calibration_frames": self.calibration_frames, "modelopt": self.modelopt,
                "quantized_layers": len(self.quantized), "excluded": self.excluded,
                "layers": {n: s.as_dict() | {"quantized": n not in self.excluded} for n, s in self.layers.items()},
                "seconds": self.seconds}

    def markdown(self) -> str:
        rows = ["| layer | rel. L2 error | cosine | max abs | int8 |", "| --- | --- | --- | --- | --- |"]
        for name, s in sorted(self.layers.items(), key=lambda kv: -kv[1].rel_l2):
            rows.append(f"| {name} | {s.rel_l2:.3e} | {s.cosine:.6f} | {s.max_abs:.3g} | "
                        f"{'no: ' + self.excluded[name] if name in self.excluded else 'yes'} |")
        return (f"INT8 sensitivity per layer (nvidia-modelopt {self.modelopt}, INT8_DEFAULT_CFG on "
                f"{', '.join(self.stages)}; calibrated on frames {', '.join(self.calibration_frames)}; "
                f"a layer stays fp32 above rel. L2 min({INT8_LAYER_REL_L2_MAX:g}, "
                f"{INT8_OUTLIER_FACTOR:g} x the median)): "
                f"{len(self.quantized)} layers quantized, "
                f"{len(self.excluded)} left fp32\n\n" + "\n".join(rows) + "\n")


def quantize_int8(model: Any, frames: Sequence[dict[str, Any]], frame_ids: Sequence[str],
                  stages: Sequence[str] = INT8_STAGES,
                  progress: Callable[[str], None] = lambda _m: None) -> tuple[Any, Int8Result]:
    """A calibrated fake-quant copy of `model` and the per-layer sensitivity that chose its INT8 layers."""
    mtq = require_modelopt()
    config = quant_config(mtq, stages)
    qmodel = copy.deepcopy(model).eval()
    seconds: dict[str, float] = {}
    t0 = time.monotonic()
    progress(f"int8: calibrating on {len(frames)} frame(s) in sequence order (nvidia-modelopt {modelopt_version()})")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # it prints "Inserted N quantizers"
        warnings.simplefilter("ignore")
        mtq.quantize(qmodel, config, forward_loop=lambda m: run_frames(m, frames))
    seconds["calibrate"] = time.monotonic() - t0
    # Pooling layers get input quantizers too; INT8 here means convolutions and matmuls only.
    for _name, m in qmodel.named_modules():
        if hasattr(m, "input_quantizer") and not hasattr(m, "weight_quantizer"):
            m.input_quantizer.disable()
    layers = _quantized_layers(qmodel)

    def fp32_run(name: str, module: Any, args: tuple[Any, ...]) -> Any:
        module.weight_quantizer.disable()
        module.input_quantizer.disable()
        try:
            return module(*args)
        finally:
            module.weight_quantizer.enable()
            module.input_quantizer.enable()

    t1 = time.monotonic()
    progress(f"int8: per-layer sensitivity of {len(layers)} quantized layers")
    stats = module_sensitivity(qmodel, layers, frames, fp32_run, variant_is_reference=True)
    seconds["sensitivity"] = time.monotonic() - t1
    excluded = {}
    errors = sorted(s.rel_l2 for s in stats.values())
    median = errors[len(errors) // 2] if errors else 0.0
    bound = min(INT8_LAYER_REL_L2_MAX, INT8_OUTLIER_FACTOR * median) if median > 0 else INT8_LAYER_REL_L2_MAX
    for name, s in stats.items():
        if not s.finite or s.rel_l2 > bound:
            excluded[name] = ("not finite" if not s.finite else
                              f"rel. L2 {s.rel_l2:.2e} > {bound:.2e} (min({INT8_LAYER_REL_L2_MAX:g}, "
                              f"{INT8_OUTLIER_FACTOR:g} x median {median:.2e}))")
            layers[name].weight_quantizer.disable()
            layers[name].input_quantizer.disable()
    result = Int8Result(layers=stats, excluded=excluded, calibration_frames=list(frame_ids), stages=list(stages),
                        config=config, seconds=seconds, modelopt=modelopt_version())
    return qmodel, result


def export_int8(qmodel: Any, frame: dict[str, Any], out_path: Path) -> None:
    """The fake-quant model -> ONNX with QuantizeLinear/DequantizeLinear (TorchScript exporter, as the fp32 graph)."""
    import numpy as np
    import torch

    from fbocc.export.pipeline import DYNAMIC_AXES, ONNX_OPSET
    from fbocc.model.network import INPUT_NAMES, OUTPUT_NAMES, TraceRecorder

    tensors = tuple(torch.from_numpy(np.ascontiguousarray(frame[n])) for n in INPUT_NAMES)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(TraceRecorder(qmodel), tensors, str(out_path), input_names=list(INPUT_NAMES),
                          output_names=list(OUTPUT_NAMES), dynamic_axes=DYNAMIC_AXES, opset_version=ONNX_OPSET,
                          do_constant_folding=True, dynamo=False)


def qdq_summary(model: Any) -> dict[str, Any]:
    """Q/DQ facts of an ONNX model: pair counts, the ops they feed, and any that reach a plugin input."""
    from fbocc.ops.contract import CUSTOM_OPS

    producer = {o: n for n in model.graph.node for o in n.output}
    fed: dict[str, int] = {}
    into_plugins = []
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            src = producer.get(name)
            if src is not None and src.op_type == "DequantizeLinear":
                fed[node.op_type] = fed.get(node.op_type, 0) + 1
                if node.op_type in CUSTOM_OPS:
                    into_plugins.append(f"{node.name} input {i}")
    ops = [n.op_type for n in model.graph.node]
    return {"quantize_linear": ops.count("QuantizeLinear"), "dequantize_linear": ops.count("DequantizeLinear"),
            "dq_feeds": fed, "dq_into_plugins": into_plugins}
