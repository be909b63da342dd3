"""The one module that owns ONNX graphs: loading, external-data discovery, custom-node inspection and
the `check-onnx` logic.

Custom nodes are checked against `fbocc.ops.contract` (op_type, domain, attributes, input ranks and
dtypes); graph inputs/outputs against a samples manifest; the rest of the graph with onnx.checker (on a
copy whose custom nodes sit in a private domain, because onnx.checker rejects unknown ops in domain "").
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fbocc.errors import ValidationError
from fbocc.ops.contract import CUSTOM_OPS, TENSORRT_OPS

_CHECK_DOMAIN = "fbocc.plugins"  # where custom nodes go for onnx.checker only
_DTYPES = {1: "float32", 10: "float16", 6: "int32", 7: "int64", 9: "bool", 11: "float64", 3: "int8", 2: "uint8"}


def load_graph(path: Path) -> Any:
    """Load an ONNX model (weights included); a missing or unreadable file is a ValidationError."""
    import onnx

    if not path.is_file():
        raise ValidationError(f"ONNX file {path} does not exist", fix="pass the .onnx written by `fbocc export`")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError / OSError variants
        raise ValidationError(f"{path} is not a readable ONNX model: {exc}",
                              fix="re-run `fbocc export`; the file may be truncated") from exc


def external_data_files(path: Path) -> list[str]:
    """Relative locations of the external-data files an ONNX model's tensors name, sorted, each once.

    The model is read without its external data (`load_external_data=False`), so a multi-GB model is
    scanned without loading its weights; initializers and tensor attributes of every subgraph count.
    """
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    if not path.is_file():
        raise ValidationError(f"ONNX model {path} does not exist", fix="run `fbocc export` or pass --onnx PATH")
    if path.stat().st_size == 0:
        raise ValidationError(f"{path} is empty, not an ONNX model", fix="re-run `fbocc export`")
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError / OSError variants
        raise ValidationError(f"{path} is not a readable ONNX model ({exc})",
                              fix="point --onnx at the .onnx written by `fbocc export`") from exc
    return sorted({ExternalDataInfo(t).location for t in _tensors(model.graph) if uses_external_data(t)})


def _tensors(graph: Any) -> list[Any]:
    found = list(graph.initializer)
    for node in graph.node:
        for attr in node.attribute:
            found += [attr.t] if attr.HasField("t") else []
            found += list(attr.tensors)
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                found += _tensors(sub)
    return found


def custom_op_counts(model: Any) -> dict[str, int]:
    """How many nodes of each contract op the graph holds (all three keys, zero when absent)."""
    counts = {op: 0 for op in CUSTOM_OPS}
    for node in model.graph.node:
        if node.op_type in counts:
            counts[node.op_type] += 1
    return counts


@dataclass
class ValueInfo:
    name: str
    dtype: str | None
    shape: list[int | str] | None


@dataclass
class CheckReport:
    """The outcome of `check_onnx`: problems (each one line, naming node/tensor/file) and facts."""

    onnx_path: Path
    problems: list[str] = field(default_factory=list)
    custom_ops: dict[str, int] = field(default_factory=dict)
    tensorrt_ops: dict[str, int] = field(default_factory=dict)  # TensorRT's own plugins the graph uses
    inputs: list[ValueInfo] = field(default_factory=list)
    outputs: list[ValueInfo] = field(default_factory=list)
    samples_dir: Path | None = None
    precision: str = "fp32"  # what a strongly typed build of it runs in: fp32, fp16 (typed) or int8 (Q/DQ)

    @property
    def ok(self) -> bool:
        return not self.problems


def _value_info(vi: Any) -> ValueInfo:
    t = vi.type.tensor_type
    shape: list[int | str] | None = None
    if t.HasField("shape"):
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
    return ValueInfo(vi.name, _DTYPES.get(t.elem_type), shape)


def skeleton(model: Any) -> Any:
    """A copy of the graph without weight data: every initializer becomes a typed graph input. Shape
    inference and onnx.checker see the same structure at a fraction of the cost of the 270 MB original."""
    import onnx

    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.producer_name = model.producer_name
    light.opset_import.extend(model.opset_import)
    graph = light.graph
    graph.name = model.graph.name
    graph.node.extend(model.graph.node)
    graph.input.extend(model.graph.input)
    graph.output.extend(model.graph.output)
    graph.value_info.extend(model.graph.value_info)
    present = {vi.name for vi in model.graph.input}
    for init in model.graph.initializer:
        if init.name not in present:
            graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    return light


def _known_types(model: Any, light: Any) -> dict[str, ValueInfo]:
    import onnx

    known: dict[str, ValueInfo] = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(light, strict_mode=False)
    except Exception:  # inference is best effort; the checker reports real breakage
        inferred = light
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        known[vi.name] = _value_info(vi)
    for node in model.graph.node:  # constants folded into Constant nodes
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    known[node.output[0]] = ValueInfo(node.output[0], _DTYPES.get(attr.t.data_type), list(attr.t.dims))
    return known


def check_custom_nodes(model: Any, report: CheckReport, light: Any | None = None) -> None:
    """Every contract node: domain, input count, attributes (presence, type, allowed values), input ranks
    and dtypes where the graph records them."""
    import onnx

    known = _known_types(model, light if light is not None else skeleton(model))
    for idx, node in enumerate(model.graph.node):
        label = f"node {node.name or '#' + str(idx)}"
        contract = CUSTOM_OPS.get(node.op_type) or TENSORRT_OPS.get(node.op_type)
        if contract is None:
            if not node.domain and not onnx.defs.has(node.op_type):
                report.problems.append(f"{label}: op {node.op_type} is neither standard ONNX nor one of the "
                                       f"plugin ops ({', '.join(CUSTOM_OPS)})")
            continue
        if node.domain != contract.domain and not (node.op_type in TENSORRT_OPS and node.domain == ""):
            report.problems.append(f"{label}: {node.op_type} in domain {node.domain!r}, the plugin expects "
                                   f"{contract.domain!r}")
        if len(node.input) != len(contract.inputs):
            report.problems.append(f"{label}: {node.op_type} has {len(node.input)} inputs, expected "
                                   f"{len(contract.inputs)} ({', '.join(i.name for i in contract.inputs)})")
        attrs = {a.name: a for a in node.attribute}
        for spec in contract.attributes:
            attr = attrs.get(spec.name)
            if attr is None:
                if spec.default is None:
                    report.problems.append(f"{label}: {node.op_type} missing attribute {spec.name}")
                continue
            if attr.type != onnx.AttributeProto.INT:
                report.problems.append(f"{label}: {node.op_type} attribute {spec.name} is not an int")
            elif spec.allowed is not None and attr.i not in spec.allowed:
                report.problems.append(f"{label}: {node.op_type} attribute {spec.name}={attr.i}, allowed "
                                       f"{list(spec.allowed)}")
        for name in attrs:
            if contract.attribute(name) is None:
                report.problems.append(f"{label}: {node.op_type} has unknown attribute {name}")
        for tspec, tensor in zip(contract.inputs, node.input, strict=False):
            info = known.get(tensor)
            if info is None:
                continue
            if info.dtype is not None and info.dtype not in tspec.dtypes:
                report.problems.append(f"{label}: {node.op_type} input {tspec.name} ({tensor}) is {info.dtype}, "
                                       f"expected {' or '.join(tspec.dtypes)}")
            if info.shape is not None and len(info.shape) != tspec.rank:
                report.problems.append(f"{label}: {node.op_type} input {tspec.name} ({tensor}) has rank "
                                       f"{len(info.shape)}, expected {tspec.rank} ({tspec.layout})")
        check_dtype_pairing(contract, node, known, label, report)


def check_dtype_pairing(contract: Any, node: Any, known: dict[str, ValueInfo], label: str,
                        report: CheckReport) -> None:
    """Typed graphs: inputs the plugin takes in one type agree (fp16 features with fp16 features; coordinates
    fp32 or the features' type), and the output has the type the plugin gives it."""
    def dtype_of(tensor: str) -> str | None:
        info = known.get(tensor)
        return None if info is None else info.dtype

    dtypes = {spec.name: dtype_of(t) for spec, t in zip(contract.inputs, node.input, strict=False)}
    for spec, tensor in [*zip(contract.inputs, node.input, strict=False),
                         *zip(contract.outputs, node.output, strict=False)]:
        have = dtype_of(tensor)
        ref = dtypes.get(spec.same_as) if spec.same_as else None
        if spec.same_as is None or have is None or ref is None or have == ref:
            continue
        if spec.or_float32 and have == "float32":
            continue
        kind = "input" if spec in contract.inputs else "output"
        report.problems.append(f"{label}: {node.op_type} {kind} {spec.name} ({tensor}) is {have} but "
                               f"{spec.same_as} is {ref}: the plugin takes them in one type"
                               + (" (or float32)" if spec.or_float32 else ""))


def run_onnx_checker(model: Any, report: CheckReport) -> None:
    """onnx.checker on a copy with the plugin nodes moved to a private domain (the file is untouched);
    pass `skeleton(model)` for large graphs."""
    import onnx

    probe = copy.deepcopy(model)  # callers pass the skeleton: cheap
    for node in probe.graph.node:
        if node.op_type in CUSTOM_OPS or node.op_type in TENSORRT_OPS:
            node.domain = _CHECK_DOMAIN
    if not any(o.domain == _CHECK_DOMAIN for o in probe.opset_import):
        probe.opset_import.append(onnx.helper.make_opsetid(_CHECK_DOMAIN, 1))
    try:
        onnx.checker.check_model(probe)
    except onnx.checker.ValidationError as exc:
        report.problems.append(f"onnx.checker: {str(exc).splitlines()[0]}")


def check_io(model: Any, report: CheckReport) -> None:
    """Every graph input feeds some node (or is an output); every output is produced and named."""
    initializers = {i.name for i in model.graph.initializer}
    consumed = {name for node in model.graph.node for name in node.input}
    produced = {name for node in model.graph.node for name in node.output}
    outputs = {o.name for o in model.graph.output}
    for vi in model.graph.input:
        if vi.name not in initializers and vi.name not in consumed and vi.name not in outputs:
            report.problems.append(f"graph input {vi.name} is consumed by no node")
    for vi in model.graph.output:
        if not vi.name:
            report.problems.append("a graph output has no name")
        elif vi.name not in produced and vi.name not in {i.name for i in model.graph.input}:
            report.problems.append(f"graph output {vi.name} is produced by no node")


def check_against_manifest(report: CheckReport, samples_dir: Path) -> None:
    """Graph inputs/outputs against the manifest (names, order, dtypes, shapes); files against sizes."""
    from fbocc.export.samples import load_manifest

    try:
        manifest = load_manifest(samples_dir)
    except ValidationError as exc:
        report.problems.append(f"samples {samples_dir}: {exc.message}" + (f" (fix: {exc.fix})" if exc.fix else ""))
        return
    for kind, graph_side in (("inputs", report.inputs), ("outputs", report.outputs)):
        want = [t["name"] for t in manifest[kind]]
        have = [v.name for v in graph_side]
        if want != have:
            missing = [n for n in want if n not in have]
            extra = [n for n in have if n not in want]
            report.problems.append(
                f"graph {kind} differ from the manifest's"
                + (f"; manifest-only: {', '.join(missing)}" if missing else "")
                + (f"; graph-only: {', '.join(extra)}" if extra else "")
                + ("" if missing or extra else "; same names, different order"))
        by_name = {v.name: v for v in graph_side}
        for entry in manifest[kind]:
            vi = by_name.get(entry["name"])
            if vi is not None and vi.dtype is not None and vi.dtype != entry["dtype"]:
                report.problems.append(f"{kind[:-1]} {vi.name}: graph dtype {vi.dtype}, manifest {entry['dtype']}")
    graph_inputs = {v.name: v for v in report.inputs}
    for frame in manifest["frames"]:
        for name, tensor in frame.get("inputs", {}).items():
            vi = graph_inputs.get(name)
            if vi is None or vi.shape is None:
                continue
            shape = tensor["shape"]
            if len(shape) != len(vi.shape) or any(isinstance(d, int) and d > 0 and d != s
                                                  for d, s in zip(vi.shape, shape, strict=False)):
                report.problems.append(f"frame {frame['id']} input {name}: shape {shape} does not fit the graph's "
                                       f"{vi.shape}")


def graph_io(onnx_path: Path) -> tuple[list[ValueInfo], list[ValueInfo]]:
    """The graph's real inputs (initializers listed as inputs left out) and outputs."""
    model = load_graph(onnx_path)
    initializers = {i.name for i in model.graph.initializer}
    return ([_value_info(v) for v in model.graph.input if v.name not in initializers],
            [_value_info(v) for v in model.graph.output])


def graph_precision(model: Any) -> str:
    """int8 when the graph holds QuantizeLinear, fp16 when it has fp16 tensors or weights, else fp32."""
    if any(n.op_type == "QuantizeLinear" for n in model.graph.node):
        return "int8"
    fp16 = 10
    if any(i.data_type == fp16 for i in model.graph.initializer) or any(
            vi.type.tensor_type.elem_type == fp16 for vi in model.graph.value_info):
        return "fp16"
    return "fp32"


def check_onnx(onnx_path: Path, samples_dir: Path | None = None) -> CheckReport:
    """All checks of `fbocc check-onnx`; problems are collected, not raised, so the report is complete."""
    model = load_graph(onnx_path)
    report = CheckReport(onnx_path=onnx_path, samples_dir=samples_dir)
    initializers = {i.name for i in model.graph.initializer}
    report.inputs = [_value_info(v) for v in model.graph.input if v.name not in initializers]
    report.outputs = [_value_info(v) for v in model.graph.output]
    report.custom_ops = custom_op_counts(model)
    report.tensorrt_ops = {op: n for op in TENSORRT_OPS
                           if (n := sum(1 for node in model.graph.node if node.op_type == op))}
    report.precision = graph_precision(model)
    if not any(report.custom_ops.values()):
        report.problems.append("the graph contains none of the plugin ops "
                               f"({', '.join(CUSTOM_OPS)}): it was not exported for the TensorRT plugins")
    light = skeleton(model)
    check_custom_nodes(model, report, light)
    check_io(model, report)
    run_onnx_checker(light, report)
    if samples_dir is not None:
        check_against_manifest(report, samples_dir)
    return report
