"""fbocc against the real NVlabs/FB-BEV code, where a checkout is given (FBOCC_UPSTREAM_SRC, prepared as its
deployment/README.md says; FBOCC_UPSTREAM_PYTHON: the interpreter of its environment, see `fbocc doctor --fbbev`).
Elsewhere these tests skip with that reason; the committed goldens (test_fbbev_goldens.py) run everywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fbocc.doctor import MISSING, check_fbbev

REPO = Path(__file__).resolve().parents[1]
UPSTREAM = os.environ.get("FBOCC_UPSTREAM_SRC")
PYTHON = os.environ.get("FBOCC_UPSTREAM_PYTHON") or os.environ.get("FBOCC_FBBEV_PYTHON") or sys.executable
needs_upstream = pytest.mark.skipif(
    not UPSTREAM, reason="needs an NVlabs/FB-BEV checkout (6e25469, custom ops of BEVFormer_tensorrt 303d314 copied "
    "and patched as its deployment/README.md says): set FBOCC_UPSTREAM_SRC=PATH and FBOCC_UPSTREAM_PYTHON=the python "
    "that imports it (docs/parity.md)")


def upstream_run(*argv: str, timeout: int) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), FBOCC_UPSTREAM_SRC=str(UPSTREAM))
    return subprocess.run([PYTHON, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)


def test_doctor_names_what_an_unprepared_tree_and_environment_lack(tmp_path: Path) -> None:
    (tmp_path / "mmdet3d" / "models" / "fbbev" / "custom_ops").mkdir(parents=True)
    checks = {c.name: c for c in check_fbbev(tmp_path, sys.executable)}
    tree = checks["FB-BEV tree"]
    assert tree.status == MISSING
    assert "lacks grid_sampler.py, bev_pool_v2.py, multi_scale_deformable_attn.py" in tree.detail
    assert tree.fix is not None and "fbocc_custom_ops_plugin.patch" in tree.fix
    if "mmcv" not in sys.modules and subprocess.run([sys.executable, "-c", "import mmcv"],
                                                    capture_output=True, check=False).returncode:
        env = checks["FB-BEV environment (mmcv, mmdet, mmseg, torch)"]
        assert env.status == MISSING and "mmcv: ModuleNotFoundError" in env.detail
        assert env.fix is not None and "MMCV_WITH_OPS=0" in env.fix


@needs_upstream
def test_goldens_are_what_fbbev_computes_today(tmp_path: Path) -> None:
    """14 s on 2 idle cores: the committed goldens regenerate bit for bit from the given checkout."""
    run = upstream_run("tools/fbbev_goldens.py", "--out", str(tmp_path), timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    committed = np.load(REPO / "tests" / "data" / "fbbev_goldens" / "small.npz")
    fresh = np.load(tmp_path / "small.npz")
    assert sorted(fresh.files) == sorted(committed.files)
    assert [k for k in fresh.files if not np.array_equal(fresh[k], committed[k])] == []


@needs_upstream
def test_export_through_fbbev_code_runs_in_onnxruntime_like_its_pytorch(tmp_path: Path) -> None:
    """28 s on 2 idle cores: `fbocc export --fbbev` on the shrunk config, then `check-onnx --run` (our ORT ops)."""
    config = tmp_path / "small_trt.py"
    assert upstream_run("tools/fbbev_goldens.py", "--dump-config", str(config), timeout=600).returncode == 0
    from fbocc.export.onnx_graph import check_onnx
    from fbocc.export.onnx_run import run_onnx
    from fbocc.export.pipeline import ExportOptions, export

    result = export(ExportOptions(out=tmp_path / "export", fbbev=Path(str(UPSTREAM)), fbbev_python=PYTHON,
                                  config_file=config, random_weights=True, samples=3))
    assert result.custom_ops == {"GridSampler3DTRT": 1, "BEVPoolV2TRT": 1, "MultiScaleDeformableAttnTRT": 3}
    report = check_onnx(result.onnx_path, result.samples_dir)
    assert report.problems == []
    ran = run_onnx(result.onnx_path, result.samples_dir)
    assert ran.frames == 3 and ran.passed and ran.comparison is not None


@needs_upstream
@pytest.mark.slow
def test_upstreams_own_pth2onnx_graph_and_dat_folder_are_a_drop_in(tmp_path: Path) -> None:
    """103 s on 2 idle cores (full size): pth2onnx.py's graph passes check-onnx with every custom node as the
    plugins register it, its .dat folder becomes samples, and ONNX Runtime reproduces upstream's PyTorch."""
    run = upstream_run("tools/fbbev_onnx.py", "--out", str(tmp_path), timeout=3600)
    assert run.returncode == 0, run.stderr[-3000:]
    from fbocc.export.foreign import samples_from_fbbev_folder
    from fbocc.export.onnx_graph import check_onnx, load_graph
    from fbocc.export.onnx_run import run_onnx
    from fbocc.ops.contract import CUSTOM_OPS, TENSORRT_OPS

    onnx_path = tmp_path / "onnx" / "fbocc-r50-cbgs_depth_16f_16x4_20e_trt.onnx"
    samples = samples_from_fbbev_folder(tmp_path / "trt_inputs", onnx_path, tmp_path / "samples")
    assert samples.references and any(s.startswith("bev_query_depth") for s in samples.supplied)
    report = check_onnx(onnx_path, tmp_path / "samples")
    assert report.problems == []
    graph = load_graph(onnx_path)
    custom = [n for n in graph.graph.node if n.op_type in CUSTOM_OPS or n.op_type in TENSORRT_OPS]
    for node in custom:
        contract = CUSTOM_OPS.get(node.op_type) or TENSORRT_OPS[node.op_type]
        assert node.domain == contract.domain, node.op_type
        assert {a.name for a in node.attribute} <= {a.name for a in contract.attributes}, node.op_type
        for a in node.attribute:
            spec = contract.attribute(a.name)
            assert spec is not None and (spec.allowed is None or a.i in spec.allowed)
    ran = run_onnx(onnx_path, tmp_path / "samples")
    assert ran.passed, json.dumps(ran.as_dict())[:3000]


@needs_upstream
@pytest.mark.slow
def test_full_size_parity_both_weight_sets_both_history_conventions(tmp_path: Path) -> None:
    """~1 h on 2 cores: the table of docs/parity.md (FBOCC_PARITY_FRAMES frames, default 3)."""
    frames = os.environ.get("FBOCC_PARITY_FRAMES", "3")
    run = upstream_run("tools/fbbev_parity.py", "--frames", frames, "--json", str(tmp_path / "parity.json"),
                       timeout=3 * 3600)
    doc = json.loads((tmp_path / "parity.json").read_text())
    failed = [(f["weights"], f["history_age"], f["frame"], [d for d in f["diffs"] if not d["passed"]])
              for f in doc["frames"] if not f["passed"]]
    assert run.returncode == 0 and failed == [], failed
    assert {(f["weights"], f["history_age"]) for f in doc["frames"]} == {
        (w, a) for w in ("upstream-init", "random") for a in ("deployment", "training")}
