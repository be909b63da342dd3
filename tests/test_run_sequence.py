"""deploy/run_sequence.py runs frames as the car does: history outputs feed the next frame's history
inputs by name, every output lands as .dat + manifest, the last line is FBOCC_RESULT.

The model is a tiny hand-built ONNX graph with a history input/output pair and our custom ops
(GridSampler3DTRT, BEVPoolV2TRT) in domain "", exactly the shape of what `fbocc export` writes.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fbocc.export.samples import load_manifest, read_tensor, save_manifest, write_tensor

REPO = Path(__file__).resolve().parents[1]
RUNNER = ["-m", "deploy.run_sequence"]  # as the target runs it: a module of the pushed deploy package

C, D, H, W = 2, 3, 4, 5          # image volume
HIST = (1, C, 2, 2, 3)           # history / grid-sample output volume
BEV = (1, 2, 2, 3, C)            # bev_pool output [B, out_depth, out_h, out_w, C]


def tiny_temporal_model() -> Any:
    """hist_out = 0.5 * hist_in + GridSampler3D(img, grid) + permute(BEVPoolV2(...)); occ = scores of it."""
    from onnx import TensorProto, helper

    f, i32 = TensorProto.FLOAT, TensorProto.INT32
    inputs = [
        helper.make_tensor_value_info("img", f, [1, C, D, H, W]),
        helper.make_tensor_value_info("grid", f, [1, 3, *HIST[2:]]),
        helper.make_tensor_value_info("depth", f, [1, 1, 2, 2, 2]),
        helper.make_tensor_value_info("feat", f, [1, 1, 2, 2, C]),
        *[helper.make_tensor_value_info(n, i32, [6]) for n in ("ranks_depth", "ranks_feat", "ranks_bev")],
        *[helper.make_tensor_value_info(n, i32, [3]) for n in ("interval_starts", "interval_lengths")],
        helper.make_tensor_value_info("hist_in", f, list(HIST)),
    ]
    outputs = [helper.make_tensor_value_info("occ_scores", f, [1, *HIST[2:], C]),
               helper.make_tensor_value_info("hist_out", f, list(HIST))]
    half = helper.make_tensor("half", f, [], [0.5])
    nodes = [
        helper.make_node("GridSampler3DTRT", ["img", "grid"], ["sampled"], interpolation_mode=0, padding_mode=0,
                         align_corners=0),
        helper.make_node("BEVPoolV2TRT", ["depth", "feat", "ranks_depth", "ranks_feat", "ranks_bev",
                                          "interval_starts", "interval_lengths"], ["bev"], out_height=2, out_width=3,
                         out_depth=2),
        helper.make_node("Transpose", ["bev"], ["bev_cf"], perm=[0, 4, 1, 2, 3]),
        helper.make_node("Mul", ["hist_in", "half"], ["decayed"]),
        helper.make_node("Add", ["decayed", "sampled"], ["mixed"]),
        helper.make_node("Add", ["mixed", "bev_cf"], ["hist_out"]),
        helper.make_node("Transpose", ["hist_out"], ["occ_scores"], perm=[0, 2, 3, 4, 1]),
    ]
    graph = helper.make_graph(nodes, "tiny_temporal", inputs, outputs, initializer=[half])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def expected_chain(frames: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """What the sequence must produce, from the PyTorch references and the first frame's history."""
    import torch

    from fbocc import ops

    t = torch.from_numpy
    hist = frames[0]["hist_in"]
    outs = []
    for fr in frames:
        sampled = ops.grid_sampler3d(t(fr["img"]), t(fr["grid"])).numpy()
        bev = ops.bev_pool_v2(t(fr["depth"]), t(fr["feat"]), t(fr["ranks_depth"]), t(fr["ranks_feat"]),
                              t(fr["ranks_bev"]), t(fr["interval_starts"]), t(fr["interval_lengths"]), 2, 3, 2).numpy()
        hist = 0.5 * hist + sampled + bev.transpose(0, 4, 1, 2, 3)
        outs.append({"hist_out": hist, "occ_scores": hist.transpose(0, 2, 3, 4, 1)})
    return outs


def make_sequence_set(root: Path, frames: int = 3, seed: int = 0, with_reference: bool = True,
                      ground_truth: bool = False, write_onnx: bool = True) -> Path:
    """A samples directory (deploy/manifest.py schema) for tiny_temporal_model, ONNX beside it.

    Frames after the first carry a *wrong* hist_in file (large constant): a runner that reads it instead
    of carrying the previous output is caught by the reference outputs.
    """
    rng = np.random.default_rng(seed)
    samples = root / "samples"
    samples.mkdir(parents=True)
    if write_onnx:
        import onnx

        onnx.save(tiny_temporal_model(), str(root / "tiny.onnx"))
    data = []
    for k in range(frames):
        data.append({
            "img": rng.standard_normal((1, C, D, H, W)).astype(np.float32),
            "grid": (rng.uniform(-1.1, 1.1, (1, 3, *HIST[2:])) * 10).astype(np.float32),
            "depth": rng.random((1, 1, 2, 2, 2)).astype(np.float32),
            "feat": rng.standard_normal((1, 1, 2, 2, C)).astype(np.float32),
            "ranks_depth": rng.integers(0, 8, 6).astype(np.int32),
            "ranks_feat": rng.integers(0, 4, 6).astype(np.int32),
            "ranks_bev": np.array([0, 0, 3, 3, 3, 7], dtype=np.int32),
            "interval_starts": np.array([0, 2, 5], dtype=np.int32),
            "interval_lengths": np.array([2, 3, 1], dtype=np.int32),
            "hist_in": (np.zeros(HIST) if k == 0 else np.full(HIST, 1e3)).astype(np.float32),
        })
    refs = expected_chain(data)
    manifest: dict[str, Any] = {
        "format": "fbocc-samples/1",
        "inputs": [{"name": n, "dtype": str(a.dtype)} for n, a in data[0].items()],
        "outputs": [{"name": "occ_scores", "dtype": "float32"}, {"name": "hist_out", "dtype": "float32"}],
        "profile": {},
        "history": [{"input": "hist_in", "output": "hist_out"}],
        "frames": [],
        "model": {"name": "tiny_temporal", "onnx": "tiny.onnx", "occupancy_output": "occ_scores",
                  "occupancy_layout": "BXYZK"},
        "export": {"tool": "tests/test_run_sequence.py"},
        "source": "synthetic",
    }
    for k, (fr, ref) in enumerate(zip(data, refs, strict=True)):
        fid = f"{k:03d}"
        entry: dict[str, Any] = {"id": fid, "inputs": {}, "outputs": {}}
        for name, arr in fr.items():
            entry["inputs"][name] = write_tensor(samples, f"frame_{fid}/{name}.dat", arr)
        if with_reference:
            for name, arr in ref.items():
                entry["outputs"][name] = write_tensor(samples, f"frame_{fid}/ref_{name}.dat", arr.astype(np.float32))
        if ground_truth:  # Occ3D-style labels.npz content: semantics [X,Y,Z] uint8, mask_camera bool
            entry["ground_truth"] = {
                "semantics": write_tensor(samples, f"frame_{fid}/gt_semantics.dat",
                                          rng.integers(0, C, HIST[2:]).astype(np.uint8)),
                "mask_camera": write_tensor(samples, f"frame_{fid}/gt_mask_camera.dat", rng.random(HIST[2:]) < 0.8),
            }
        manifest["frames"].append(entry)
    save_manifest(samples, manifest)
    return samples


def run_runner(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any] | None, str]:
    proc = subprocess.run([sys.executable, *RUNNER, *args], capture_output=True, text=True, timeout=120,
                          env=env, cwd=REPO)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    doc = None
    for tag in ("FBOCC_RESULT ", "FBOCC_ERROR "):
        if last.startswith(tag):
            doc = json.loads(last[len(tag):])
    return proc.returncode, doc, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def sequence_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnxruntime_extensions")
    return make_sequence_set(tmp_path_factory.mktemp("seq"))


STANDIN = REPO / "tests" / "doubles" / "tensorrt_standin"


@pytest.mark.gpu
def test_tensorrt_backend_binds_by_name_and_carries_history_in_device_memory(tmp_path: Path) -> None:
    """The TensorRT backend against a strict stand-in of the tensorrt module (no TensorRT binary exists
    here) on a real GPU: buffers in CUDA memory bound by tensor name, engine loaded once, history carried."""
    samples = make_sequence_set(tmp_path / "set", write_onnx=False)
    engine = tmp_path / "tiny.engine"
    engine.write_bytes(b'{"standin": "tiny_temporal"}')
    env = {**os.environ, "PYTHONPATH": f"{STANDIN}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = tmp_path / "out"
    rc, result, log = run_runner("--backend", "tensorrt", "--engine", str(engine), "--set-dir", str(samples),
                                 "--out", str(out), "--save-history-inputs", "--repeat", "2", env=env)
    assert rc == 0, log
    assert result is not None and result["backend"] == "tensorrt"
    assert result["versions"]["tensorrt"] == "0.0-standin"
    got = load_manifest(out)
    for prev, cur in itertools.pairwise(got["frames"]):
        assert (out / cur["inputs"]["hist_in"]["file"]).read_bytes() == \
            (out / prev["outputs"]["hist_out"]["file"]).read_bytes()
    ref = load_manifest(samples)
    for rf, gf in zip(ref["frames"], got["frames"], strict=True):
        for name in ("occ_scores", "hist_out"):
            np.testing.assert_allclose(read_tensor(out, gf["outputs"][name]),
                                       read_tensor(samples, rf["outputs"][name]), rtol=1e-5, atol=1e-5)


def test_history_output_of_a_frame_is_the_next_frames_history_input(sequence_set: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc, result, log = run_runner("--backend", "onnxruntime", "--set-dir", str(sequence_set), "--out", str(out),
                                 "--save-history-inputs")
    assert rc == 0, log
    assert result is not None and result["backend"] == "onnxruntime" and result["frames"] == 3
    got = load_manifest(out)
    assert got["kind"] == "run-outputs"
    assert got["history"] == [{"input": "hist_in", "output": "hist_out"}]
    frames = got["frames"]
    for prev, cur in itertools.pairwise(frames):
        fed = (out / cur["inputs"]["hist_in"]["file"]).read_bytes()
        produced = (out / prev["outputs"]["hist_out"]["file"]).read_bytes()
        assert fed == produced, f"frame {cur['id']} was not fed frame {prev['id']}'s hist_out"
        assert cur["history_fed_from"] == {"hist_in": f"frame {prev['id']} output hist_out"}
    first_fed = read_tensor(out, frames[0]["inputs"]["hist_in"])
    assert np.array_equal(first_fed, np.zeros(HIST, np.float32)), "frame 0 must start from its own sample"


def test_outputs_match_the_pytorch_reference_chain(sequence_set: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc, result, log = run_runner("--backend", "onnxruntime", "--set-dir", str(sequence_set), "--out", str(out),
                                 "--repeat", "2")
    assert rc == 0, log
    assert result is not None
    assert [len(f["latency_ms"]) for f in result["per_frame"]] == [2, 2, 2]
    assert all(v > 0 for v in result["latency_ms"])
    assert result["versions"]["onnxruntime"] and result["manifest"] == str(out / "manifest.json")
    ref = load_manifest(sequence_set)
    got = load_manifest(out)
    for rf, gf in zip(ref["frames"], got["frames"], strict=True):
        for name in ("occ_scores", "hist_out"):
            np.testing.assert_allclose(read_tensor(out, gf["outputs"][name]),
                                       read_tensor(sequence_set, rf["outputs"][name]), rtol=1e-5, atol=1e-5)


def test_truncated_input_file_is_one_clear_error_and_no_output(tmp_path: Path) -> None:
    samples = make_sequence_set(tmp_path / "set", frames=2, with_reference=False)
    victim = samples / "frame_001" / "img.dat"
    victim.write_bytes(victim.read_bytes()[:-4])
    out = tmp_path / "out"
    rc, err, log = run_runner("--backend", "onnxruntime", "--set-dir", str(samples), "--out", str(out))
    assert rc == 2, log
    assert err is not None and "img.dat" in err["message"] and err["fix"]
    assert not out.exists() and not Path(f"{out}.part").exists()


def test_tensorrt_backend_without_tensorrt_says_so(sequence_set: Path, tmp_path: Path) -> None:
    if os.environ.get("FBOCC_HAVE_TENSORRT"):
        pytest.skip("TensorRT is present here")
    rc, err, log = run_runner("--backend", "tensorrt", "--set-dir", str(sequence_set), "--out", str(tmp_path / "o"))
    assert rc == 2, log
    assert err is not None and "tensorrt" in err["message"] and "onnxruntime" in err["fix"]


def test_fp16_on_onnxruntime_is_refused_with_the_reason(sequence_set: Path, tmp_path: Path) -> None:
    rc, err, log = run_runner("--backend", "onnxruntime", "--precision", "fp16", "--set-dir", str(sequence_set),
                              "--out", str(tmp_path / "o"))
    assert rc == 2, log
    assert err is not None and "fp32 only" in err["message"]
