"""Three tiny ONNX graphs, one per precision, shaped like the export's: fp32; fp16 (fp16 tensors between
Casts, the plugin's input kept fp32); int8 (QuantizeLinear/DequantizeLinear before the convolution-like
node). Node names follow the FB-OCC export's module paths, so stage grouping can be tested on them.

Until the export writes real precision graphs (issue 19, manifest `graphs`), tests build engines from these.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

NODE_NAMES = ("/img_backbone/layer1/conv/Conv", "/img_view_transformer/depth_net/Relu",
              "/img_view_transformer/BEVPoolV2TRT", "/img_bev_encoder_backbone/layers.0/Relu", "/occ_head/Sigmoid")


def _model(precision: str, op: str | None) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("occ", TensorProto.FLOAT, [1, 4])
    nodes = []
    src = "img"
    if precision == "int8":
        nodes += [helper.make_node("QuantizeLinear", ["img", "s", "z"], ["q"], name="/img_backbone/q"),
                  helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="/img_backbone/dq")]
        src = "dq"
    if precision == "fp16":
        nodes.append(helper.make_node("Cast", [src], ["h"], name="/img_backbone/cast_in", to=TensorProto.FLOAT16))
        src = "h"
    names = list(NODE_NAMES)
    for i, name in enumerate(names):
        out = f"t{i}"
        if "BEVPoolV2TRT" in name:
            if precision == "fp16":  # the plugin's coordinates stay fp32 in the typed graph
                nodes.append(helper.make_node("Cast", [src], ["c"], name=name + "_cast", to=TensorProto.FLOAT))
                src = "c"
            nodes.append(helper.make_node(op or "Relu", [src], [out], name=name))
            if precision == "fp16":
                nodes.append(helper.make_node("Cast", [out], [out + "h"], name=name + "_back", to=TensorProto.FLOAT16))
                out = out + "h"
        else:
            nodes.append(helper.make_node("Relu" if "Conv" not in name else "Sigmoid", [src], [out], name=name))
        src = out
    if precision == "fp16":
        nodes.append(helper.make_node("Cast", [src], ["occ"], name="/occ_head/cast_out", to=TensorProto.FLOAT))
    else:
        nodes.append(helper.make_node("Identity", [src], ["occ"], name="/occ_head/out"))
    inits = [numpy_helper.from_array(np.array(0.05, dtype=np.float32), "s"),
             numpy_helper.from_array(np.array(0, dtype=np.int8), "z")] if precision == "int8" else []
    graph = helper.make_graph(nodes, f"tiny_{precision}", [x], [y], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def write_graphs(out_dir: Path, *, custom_op: str | None = None) -> dict[str, Path]:
    """fp32/fp16/int8 graphs in `out_dir` (`custom_op`: the op_type of the BEV pool node; default Relu)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for precision in ("fp32", "fp16", "int8"):
        path = out_dir / f"tiny.{precision}.onnx"
        onnx.save(_model(precision, custom_op), str(path))
        paths[precision] = path
    return paths
