"""Our three TensorRT plugin ops as ONNX Runtime custom ops, so a machine without TensorRT runs the graph.

numpy versions of the references in `fbocc.ops` (the ground truth; tests compare against them),
registered as onnxruntime-extensions Python ops. Python 3.8, numpy only for the math; the ONNX Runtime
backend additionally needs `onnx`, `onnxruntime` and `onnxruntime-extensions` (imported lazily).

ONNX side: the exported nodes live in domain "" (what TensorRT's parser looks up as plugins). ONNX
Runtime only runs custom ops from a custom domain, so `prepare_model` rewrites a *copy* of the graph:
the custom nodes move to `ai.onnx.contrib`, and integer inputs whose type differs from the op's
registered type (int64 ranks from TensorRT 10 exports) get a Cast.
"""

import os
import sys
import time

import numpy as np

CUSTOM_DOMAIN = "ai.onnx.contrib"
OP_TYPES = ("GridSampler3DTRT", "BEVPoolV2TRT", "MultiScaleDeformableAttnTRT")
# TensorRT's own plugin (libnvinfer_plugin) that FB-BEV's deployment graph uses for MSDA, as
# `trt::MultiscaleDeformableAttnPlugin_TRT`: our MSDA's inputs, output [N,Lq,M,D] instead of [N,Lq,M*D].
TENSORRT_OP_TYPES = ("MultiscaleDeformableAttnPlugin_TRT",)
_DOMAINS = ("", "ai.onnx", "trt")

# op_type -> element type (onnx TensorProto enum) of each input, as registered below
_FLOAT, _INT32, _FLOAT16 = 1, 6, 10
INPUT_TYPES = {
    "GridSampler3DTRT": (_FLOAT, _FLOAT),
    "BEVPoolV2TRT": (_FLOAT, _FLOAT, _INT32, _INT32, _INT32, _INT32, _INT32),
    "MultiScaleDeformableAttnTRT": (_FLOAT, _INT32, _INT32, _FLOAT, _FLOAT),
    "MultiscaleDeformableAttnPlugin_TRT": (_FLOAT, _INT32, _INT32, _FLOAT, _FLOAT),
}
# optional attributes and their defaults (fbocc/ops/contract.py)
DEFAULT_ATTRIBUTES = {
    "GridSampler3DTRT": {"interpolation_mode": 0, "padding_mode": 0, "align_corners": 0},
    "BEVPoolV2TRT": {"out_depth": 8},
}


# --- GridSampler3DTRT ----------------------------------------------------------------------------


def _unnormalize(coord, size, align_corners):
    if align_corners:
        return (coord + 1.0) / 2.0 * (size - 1)
    return ((coord + 1.0) * size - 1.0) / 2.0


def _reflect(coord, twice_low, twice_high):
    if twice_low == twice_high:
        return np.zeros_like(coord)
    low = twice_low / 2.0
    span = (twice_high - twice_low) / 2.0
    coord = np.abs(coord - low)
    extra = np.fmod(coord, span)
    flips = np.floor(coord / span)
    return np.where(np.fmod(flips, 2.0) == 0, extra + low, span - extra + low)


def _source_index(coord, size, padding_mode, align_corners):
    """grid coordinate in [-1, 1] -> continuous voxel index, with border/reflection padding applied."""
    coord = _unnormalize(coord, size, align_corners)
    if padding_mode == 1:  # border
        coord = np.clip(coord, 0, size - 1)
    elif padding_mode == 2:  # reflection
        if align_corners:
            coord = _reflect(coord, 0, 2 * (size - 1))
        else:
            coord = _reflect(coord, -1, 2 * size - 1)
        coord = np.clip(coord, 0, size - 1)
    return coord


def grid_sampler3d(inp, grid, interpolation_mode=0, padding_mode=0, align_corners=0):
    """input [N,C,D,H,W], grid [N,3,Do,Ho,Wo] (x,y,z channel-first, scaled by 10) -> [N,C,Do,Ho,Wo]."""
    inp = np.asarray(inp)
    grid = np.asarray(grid, dtype=np.float32)
    n, c, d, h, w = inp.shape
    if grid.ndim != 5 or grid.shape[1] != 3 or grid.shape[0] != n:
        raise ValueError("GridSampler3DTRT: grid must be [N,3,Do,Ho,Wo] with N={}, got {}".format(n, grid.shape))
    out_spatial = grid.shape[2:]
    coords = grid.reshape(n, 3, -1) / np.float32(10.0)
    ix = _source_index(coords[:, 0], w, padding_mode, align_corners)
    iy = _source_index(coords[:, 1], h, padding_mode, align_corners)
    iz = _source_index(coords[:, 2], d, padding_mode, align_corners)
    # channels-last copy: each sample then gathers one contiguous row of C values (cache friendly)
    rows = np.ascontiguousarray(inp.reshape(n, c, d * h * w).transpose(0, 2, 1))
    count = ix.shape[1]
    out = np.zeros((n, count, c), dtype=np.float32)
    if interpolation_mode == 1:  # nearest, rounding half to even like nearbyint
        corners = [(np.rint(ix), np.rint(iy), np.rint(iz), np.ones_like(ix))]
    else:
        x0, y0, z0 = np.floor(ix), np.floor(iy), np.floor(iz)
        fx, fy, fz = ix - x0, iy - y0, iz - z0
        corners = []
        for dz in (0, 1):
            wz = fz if dz else 1.0 - fz
            for dy in (0, 1):
                wy = fy if dy else 1.0 - fy
                for dx in (0, 1):
                    wx = fx if dx else 1.0 - fx
                    corners.append((x0 + dx, y0 + dy, z0 + dz, wx * wy * wz))
    step = max(1, (16 << 20) // max(1, c))  # samples per chunk: the one scratch buffer stays ~64 MB
    scratch = np.empty((min(step, count), c), dtype=np.float32)
    for cx, cy, cz, weight in corners:
        valid = (cx >= 0) & (cx <= w - 1) & (cy >= 0) & (cy <= h - 1) & (cz >= 0) & (cz <= d - 1)
        index = (np.clip(cz, 0, d - 1) * h + np.clip(cy, 0, h - 1)) * w + np.clip(cx, 0, w - 1)
        index = index.astype(np.int64)
        weight = np.where(valid, weight, 0.0).astype(np.float32)
        for b in range(n):
            for p0 in range(0, count, step):
                sel = slice(p0, p0 + step)
                buf = scratch[: len(index[b, sel])]
                np.take(rows[b], index[b, sel], axis=0, out=buf)  # gather without a fresh allocation
                np.multiply(buf, weight[b, sel, None], out=buf)
                out[b, sel] += buf
    out = out.transpose(0, 2, 1)
    return out.reshape((n, c) + tuple(out_spatial)).astype(inp.dtype, copy=False)


# --- BEVPoolV2TRT --------------------------------------------------------------------------------


def bev_pool_v2(depth, feat, ranks_depth, ranks_feat, ranks_bev, interval_starts, interval_lengths,
                out_height, out_width, out_depth=8):
    """Lift-splat pooling: out[ranks_bev[s]] = sum_{j in interval} depth[ranks_depth[j]] * feat[ranks_feat[j]].

    depth [B,N,D,H,W], feat [B,N,H,W,C] -> [B, out_depth, out_height, out_width, C]; voxels no interval
    names stay zero. Computed in float32, returned in feat's dtype.
    """
    depth = np.asarray(depth)
    feat = np.asarray(feat)
    batch = depth.shape[0]
    channels = feat.shape[-1]
    out = np.zeros((batch * int(out_depth) * int(out_height) * int(out_width), channels), dtype=np.float32)
    starts = np.asarray(interval_starts, dtype=np.int64).reshape(-1)
    lengths = np.asarray(interval_lengths, dtype=np.int64).reshape(-1)
    keep = lengths > 0
    starts, lengths = starts[keep], lengths[keep]
    if starts.size:
        offsets = np.cumsum(lengths) - lengths
        points = np.repeat(starts - offsets, lengths) + np.arange(int(lengths.sum()))
        rd = np.asarray(ranks_depth, dtype=np.int64).reshape(-1)[points]
        rf = np.asarray(ranks_feat, dtype=np.int64).reshape(-1)[points]
        contrib = depth.reshape(-1)[rd].astype(np.float32)[:, None] * feat.reshape(-1, channels)[rf].astype(np.float32)
        sums = np.add.reduceat(contrib, offsets, axis=0)
        # two intervals naming the same cell add up (as the reference does)
        np.add.at(out, np.asarray(ranks_bev, dtype=np.int64).reshape(-1)[starts], sums)
    shape = (batch, int(out_depth), int(out_height), int(out_width), channels)
    return out.reshape(shape).astype(feat.dtype, copy=False)


# --- MultiScaleDeformableAttnTRT -----------------------------------------------------------------


def multi_scale_deformable_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """value [N,S,M,D], locations [N,Lq,M,L,P,2] in [0,1] (x, y), weights [N,Lq,M,L,P] -> [N,Lq,M*D].

    Bilinear sampling with zero padding, align_corners=False, as grid_sample(2*loc-1) does.
    """
    value = np.asarray(value)
    shapes = np.asarray(spatial_shapes, dtype=np.int64).reshape(-1, 2)
    starts = np.asarray(level_start_index, dtype=np.int64).reshape(-1)
    loc = np.asarray(sampling_locations, dtype=np.float32)
    attn = np.asarray(attention_weights, dtype=np.float32)
    n, _, m, dim = value.shape
    _, lq, _, levels, points, _ = loc.shape
    out = np.zeros((n, m, lq, dim), dtype=np.float32)
    for lvl in range(levels):
        h, w = int(shapes[lvl, 0]), int(shapes[lvl, 1])
        start = int(starts[lvl])
        v = value[:, start:start + h * w].astype(np.float32).transpose(0, 2, 1, 3)  # [N,M,HW,D]
        # [N,Lq,M,P] -> [N,M,Lq*P]
        x = (loc[:, :, :, lvl, :, 0] * w - 0.5).transpose(0, 2, 1, 3).reshape(n, m, lq * points)
        y = (loc[:, :, :, lvl, :, 1] * h - 0.5).transpose(0, 2, 1, 3).reshape(n, m, lq * points)
        a = attn[:, :, :, lvl, :].transpose(0, 2, 1, 3).reshape(n, m, lq * points)
        x0, y0 = np.floor(x), np.floor(y)
        fx, fy = x - x0, y - y0
        sampled = np.zeros((n, m, lq * points, dim), dtype=np.float32)
        for dy in (0, 1):
            wy = fy if dy else 1.0 - fy
            for dx in (0, 1):
                wx = fx if dx else 1.0 - fx
                cx, cy = x0 + dx, y0 + dy
                valid = (cx >= 0) & (cx <= w - 1) & (cy >= 0) & (cy <= h - 1)
                index = (np.clip(cy, 0, h - 1) * w + np.clip(cx, 0, w - 1)).astype(np.int64)
                gathered = np.take_along_axis(v, index[..., None], axis=2)
                sampled += gathered * np.where(valid, wx * wy, 0.0)[..., None]
        out += (sampled * a[..., None]).reshape(n, m, lq, points, dim).sum(axis=3)
    return out.transpose(0, 2, 1, 3).reshape(n, lq, m * dim).astype(value.dtype, copy=False)


# --- registration and graph preparation ----------------------------------------------------------

_REGISTERED_MARK = "_fbocc_ops_registered"


def import_extensions():
    """Import onnxruntime_extensions without it importing torch (4-5 s on a small CPU, never used here).

    Its converter module imports torch when it can; we hide torch only for the duration of the import,
    so a process that wants torch later still gets it.
    """
    if "onnxruntime_extensions" in sys.modules:
        return sys.modules["onnxruntime_extensions"]
    hide = "torch" not in sys.modules
    if hide:
        sys.modules["torch"] = None  # type: ignore  # makes `import torch` raise ImportError
    try:
        import onnxruntime_extensions
    finally:
        if hide and sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]
    return onnxruntime_extensions


def register():
    """Register the three ops with onnxruntime-extensions (once per process); return its library path."""
    extensions = import_extensions()
    from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op

    # once per process, even when this file is loaded twice under different module names
    if not getattr(extensions, _REGISTERED_MARK, False):
        f32, i32, i64 = PyCustomOpDef.dt_float, PyCustomOpDef.dt_int32, PyCustomOpDef.dt_int64

        @onnx_op(op_type="GridSampler3DTRT", inputs=[f32, f32], outputs=[f32],
                 attrs={"interpolation_mode": i64, "padding_mode": i64, "align_corners": i64})
        def _grid_sampler3d(inp, grid, **attrs):
            return grid_sampler3d(inp, grid, int(attrs.get("interpolation_mode", 0)),
                                  int(attrs.get("padding_mode", 0)), int(attrs.get("align_corners", 0)))

        @onnx_op(op_type="BEVPoolV2TRT", inputs=[f32, f32, i32, i32, i32, i32, i32], outputs=[f32],
                 attrs={"out_height": i64, "out_width": i64, "out_depth": i64})
        def _bev_pool_v2(depth, feat, rd, rf, rb, starts, lengths, **attrs):
            return bev_pool_v2(depth, feat, rd, rf, rb, starts, lengths, int(attrs["out_height"]),
                               int(attrs["out_width"]), int(attrs.get("out_depth", 8)))

        @onnx_op(op_type="MultiScaleDeformableAttnTRT", inputs=[f32, i32, i32, f32, f32], outputs=[f32])
        def _msda(value, shapes, starts, loc, attn):
            return multi_scale_deformable_attn(value, shapes, starts, loc, attn)

        @onnx_op(op_type="MultiscaleDeformableAttnPlugin_TRT", inputs=[f32, i32, i32, f32, f32], outputs=[f32])
        def _msda_tensorrt(value, shapes, starts, loc, attn):
            out = multi_scale_deformable_attn(value, shapes, starts, loc, attn)
            return out.reshape(out.shape[0], out.shape[1], value.shape[2], value.shape[3])

        _install_array_hook()
        setattr(extensions, _REGISTERED_MARK, True)
    return get_library_path()


def _install_array_hook():
    """Hand op results back to ONNX Runtime as flat numpy arrays instead of Python lists.

    The stock hook calls `.flatten().tolist()`: at FB-OCC's temporal-fusion size (100M floats) that is
    gigabytes of Python floats and seconds per call; the native side takes an array just as well.
    """
    try:
        from onnxruntime_extensions._ocos import Opdef, PyCustomOpDef
    except ImportError:  # layout of a future release: keep its own (slower, correct) hook
        return

    timing = bool(os.environ.get("FBOCC_ORT_OPS_TIMING"))

    def invoke(op_id, feed, attributes):
        opdef = Opdef._odlist[op_id]
        started = time.perf_counter()
        result = opdef.body(*feed, **opdef.cast_attributes(attributes))
        if timing:  # FBOCC_ORT_OPS_TIMING=1: where the CPU time of a run goes
            sys.stderr.write("ort_ops: {} {:.1f} ms\n".format(opdef.op_type, (time.perf_counter() - started) * 1e3))
        parts = []
        for array in (result if isinstance(result, tuple) else (result,)):
            array = np.ascontiguousarray(array)
            parts.append(array.shape)
            parts.append(array.reshape(-1))
        return (op_id,) + tuple(parts)

    PyCustomOpDef.install_hooker(invoke)


def prepare_model(model):
    """A copy of the ONNX model (path or ModelProto) with our custom nodes moved to ai.onnx.contrib.

    Returns (ModelProto, count of rewritten nodes). Inputs whose type differs from the op's registered
    type get a Cast (int64 ranks of TensorRT 10 exports -> int32, float16 features -> float32, with the
    output cast back to float16), and optional attributes left out of a node (`out_depth`, the grid
    sampler's modes) are written out with their contract defaults, so the registered op sees exactly
    the types and attributes it declares.
    """
    import onnx
    from onnx import helper

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    else:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        model = copy
    value_types = _value_types(model)
    count = 0
    new_nodes = []
    for node in model.graph.node:
        if node.domain in _DOMAINS and node.op_type in OP_TYPES + TENSORRT_OP_TYPES:
            count += 1
            node.domain = CUSTOM_DOMAIN
            wanted = INPUT_TYPES[node.op_type]
            half_out = value_types.get(node.input[0]) == _FLOAT16
            for i, name in enumerate(list(node.input)):
                have = value_types.get(name)
                if i < len(wanted) and have is not None and have != wanted[i]:
                    cast_out = "{}__{}_as_{}".format(name, count, "int32" if wanted[i] == _INT32 else "float")
                    new_nodes.append(helper.make_node("Cast", [name], [cast_out], to=wanted[i],
                                                      name=cast_out + "_cast"))
                    node.input[i] = cast_out
            present = set(a.name for a in node.attribute)
            for attr, default in DEFAULT_ATTRIBUTES.get(node.op_type, {}).items():
                if attr not in present:  # ONNX Runtime's custom-op kernel insists on every declared attribute
                    node.attribute.append(helper.make_attribute(attr, default))
            new_nodes.append(node)
            if half_out:
                final = node.output[0]
                node.output[0] = "{}__{}_float".format(final, count)
                new_nodes.append(helper.make_node("Cast", [node.output[0]], [final], to=_FLOAT16,
                                                  name=final + "_cast_half"))
            continue
        new_nodes.append(node)
    if count:
        del model.graph.node[:]
        model.graph.node.extend(new_nodes)
        if not any(op.domain == CUSTOM_DOMAIN for op in model.opset_import):
            model.opset_import.append(helper.make_opsetid(CUSTOM_DOMAIN, 1))
    return model, count


def _value_types(model):
    types = {}
    graph = model.graph
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in graph.initializer:
        types[init.name] = init.data_type
    if any(n.op_type in OP_TYPES + TENSORRT_OP_TYPES for n in graph.node) and len(types) < len(graph.node):
        try:  # shape inference fills value_info for intermediate tensors (custom ops are skipped)
            import onnx
            from onnx import helper

            probe = onnx.ModelProto()
            probe.CopyFrom(model)
            for _ in range(len(OP_TYPES) + 1):
                inferred = onnx.shape_inference.infer_shapes(probe)
                for vi in inferred.graph.value_info:
                    if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
                        types.setdefault(vi.name, vi.type.tensor_type.elem_type)
                # A plugin's output has its feature input's type (fbocc/ops/contract.py): typing it lets
                # inference continue past the custom node, as in a typed fp16 graph without value_info.
                added = 0
                for node in probe.graph.node:
                    if node.op_type in OP_TYPES and node.output[0] not in types and node.input[0] in types:
                        types[node.output[0]] = types[node.input[0]]
                        probe.graph.value_info.append(
                            helper.make_tensor_value_info(node.output[0], types[node.input[0]], None))
                        added += 1
                if not added:
                    break
        except Exception:  # noqa: BLE001 - inference is best effort; unknown types are left alone
            pass
    return types


def isfinite_all(array):
    """True when every element is finite (used by runners to flag NaN/Inf outputs early)."""
    arr = np.asarray(array)
    return bool(np.isfinite(arr).all()) if arr.dtype.kind == "f" else True


__all__ = ["CUSTOM_DOMAIN", "OP_TYPES", "TENSORRT_OP_TYPES", "bev_pool_v2", "grid_sampler3d", "isfinite_all",
           "multi_scale_deformable_attn", "prepare_model", "register"]
