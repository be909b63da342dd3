"""`fbocc remote-bench` end to end against a real sshd on loopback, with the trtexec test double.

The chain: artefact set on the target (ONNX + plugin .so + samples + deploy/) -> engine build (trtexec
double) -> benchmark -> results JSON -> `fbocc report` markdown/PNG. Also: Ctrl-C leaves no remote
process; build and shape failures surface their reason and a hint; the ONNX Runtime backend.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fbocc.cli import run
from fbocc.config import Target
from fbocc.export.samples import save_manifest, write_tensor
from fbocc.target.transport import TargetSession
from tests.sshd import SshServer

pytestmark = pytest.mark.ssh

REPO = Path(__file__).resolve().parents[1]
DOUBLE = REPO / "tests" / "doubles" / "trtexec_double.py"
PLUGIN_OPS = (b"GridSampler3DTRT", b"BEVPoolV2TRT", b"MultiScaleDeformableAttnTRT")


def make_onnx(path: Path, *, custom_op: str | None, precision: str = "fp32") -> None:
    """A two-input graph; fp16: img passes through fp16 (Casts), int8: through QuantizeLinear/DequantizeLinear
    (the I/O stays fp32/int32 in every precision, as the export's graphs: docs/precision.md)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    img = helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 2, 4, 4])
    ranks = helper.make_tensor_value_info("ranks_bev", TensorProto.INT32, ["n"])
    out = helper.make_tensor_value_info("occ", TensorProto.FLOAT, [1, 2, 4, 4])
    out2 = helper.make_tensor_value_info("ranks_out", TensorProto.INT32, ["n"])
    typed, inits = [], []
    src = "img"
    if precision == "fp16":
        typed = [helper.make_node("Cast", ["img"], ["img16"], to=TensorProto.FLOAT16),
                 helper.make_node("Cast", ["img16"], ["img32"], to=TensorProto.FLOAT)]
        src = "img32"
    elif precision == "int8":
        inits = [numpy_helper.from_array(np.array(0.05, np.float32), "scale"),
                 numpy_helper.from_array(np.array(0, np.int8), "zero")]
        typed = [helper.make_node("QuantizeLinear", ["img", "scale", "zero"], ["q"]),
                 helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["dq"])]
        src = "dq"
    if custom_op:
        nodes = [helper.make_node(custom_op, [src, "ranks_bev"], ["occ"], domain=""),
                 helper.make_node("Identity", ["ranks_bev"], ["ranks_out"])]
    else:
        nodes = [helper.make_node("Identity", [src], ["occ"]),
                 helper.make_node("Identity", ["ranks_bev"], ["ranks_out"])]
    graph = helper.make_graph(typed + nodes, "fbocc_bench_test", [img, ranks], [out, out2], initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def make_artifacts(root: Path, *, custom_op: str | None = "GridSampler3DTRT",
                   plugin_ops: tuple[bytes, ...] = PLUGIN_OPS, frame_sizes: tuple[int, ...] = (8, 12),
                   graphs: tuple[str, ...] = ("fp16", "int8")) -> Path:
    """A local artefact set laid out as push-to-target lays it out under <workdir>/current, with the
    precision graphs beside the fp32 one and listed in the manifest's `graphs` (docs/precision.md)."""
    import hashlib

    cur = root / "current"
    (cur / "samples").mkdir(parents=True)
    make_onnx(cur / "fbocc.onnx", custom_op=custom_op)
    listed = []
    for precision in ("fp32", *graphs):
        name = "fbocc.onnx" if precision == "fp32" else f"fbocc.{precision}.onnx"
        if precision != "fp32":
            make_onnx(cur / name, custom_op=custom_op, precision=precision)
        blob = (cur / name).read_bytes()
        listed.append({"precision": precision, "file": f"../{name}", "sha256": hashlib.sha256(blob).hexdigest(),
                       "bytes": len(blob), "strongly_typed": True, "made_by": {"tool": "tests/test_remote_bench.py"}})
    # stands in for the cross-built library: the double checks it exists and names each creator it needs
    (cur / "libfbocc_plugins.so").write_bytes(b"\x7fELF fbocc test plugin stand-in\0" + b"\0".join(plugin_ops))
    samples = cur / "samples"
    rng = np.random.default_rng(0)
    frames = []
    for i, n in enumerate(frame_sizes):
        fid = f"{i:03d}"
        ins = {"img": write_tensor(samples, f"frame_{fid}/img.dat", rng.standard_normal((1, 2, 4, 4), np.float32)),
               "ranks_bev": write_tensor(samples, f"frame_{fid}/ranks_bev.dat", np.arange(n, dtype=np.int32))}
        outs = {"occ": write_tensor(samples, f"frame_{fid}/occ.dat", np.zeros((1, 2, 4, 4), np.float32)),
                "ranks_out": write_tensor(samples, f"frame_{fid}/ranks_out.dat", np.arange(n, dtype=np.int32))}
        frames.append({"id": fid, "inputs": ins, "outputs": outs})
    save_manifest(samples, {
        "format": "fbocc-samples/1",
        "inputs": [{"name": "img", "dtype": "float32"}, {"name": "ranks_bev", "dtype": "int32"}],
        "outputs": [{"name": "occ", "dtype": "float32"}, {"name": "ranks_out", "dtype": "int32"}],
        "profile": {"ranks_bev": {"min": [4], "opt": [8], "max": [16]}}, "history": [], "frames": frames,
        "source": "synthetic", "graphs": listed})
    shutil.copytree(REPO / "deploy", cur / "deploy", ignore=shutil.ignore_patterns("__pycache__"))
    return cur


def upload(target: Target, known_hosts: Path, local_current: Path, remote_workdir: Path) -> None:
    """push-to-target's library call: the artefact set becomes <workdir>/current on the target."""
    from fbocc.target.artefacts import collect_artefacts
    from fbocc.target.push import push_artifacts

    aset = collect_artefacts(onnx=local_current / "fbocc.onnx", plugin=next(local_current.glob("*.so")),
                             samples=local_current / "samples", deploy=local_current / "deploy")
    with TargetSession(target, known_hosts=known_hosts) as session:
        push_artifacts(session, aset)


@pytest.fixture
def loop_target(sshd: SshServer, isolated_home: Path, tmp_path: Path) -> dict[str, object]:
    """fbocc.toml in cwd with target `loop` -> the real sshd, trtexec = the double (TensorRT 8.6.13)."""
    remote = tmp_path / "remote"
    remote.mkdir()
    launcher = tmp_path / "bin" / "trtexec"
    launcher.parent.mkdir()
    launcher.write_text(f"#!/bin/sh\nFBOCC_DOUBLE_TRT_VERSION=${{FBOCC_DOUBLE_TRT_VERSION:-8.6.13}} "
                        f"exec {sys.executable} {DOUBLE} \"$@\"\n")
    launcher.chmod(0o755)
    results = tmp_path / "results"
    toml = (f'[project]\nresults_dir = "{results}"\nknown_hosts = "{sshd.known_hosts}"\n\n'
            + sshd.target_toml("loop", remote, trtexec=str(launcher), python=sys.executable))
    Path("fbocc.toml").write_text(toml)
    target = Target(name="loop", host=sshd.host, port=sshd.port, user=sshd.user, identity_file=sshd.client_key,
                    workdir=str(remote), trtexec=str(launcher), python=sys.executable)
    return {"target": target, "remote": remote, "results": results, "known_hosts": sshd.known_hosts,
            "local": tmp_path / "local"}


def cli_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object], str]:
    code = run(args)
    captured = capsys.readouterr()
    doc = json.loads(captured.out) if captured.out.strip().startswith("{") else {}
    return code, doc, captured.err


def test_push_build_bench_results_and_report(loop_target: dict, capsys: pytest.CaptureFixture[str]) -> None:
    cur = make_artifacts(loop_target["local"])
    upload(loop_target["target"], loop_target["known_hosts"], cur, loop_target["remote"])

    code, doc, errtext = cli_json(["remote-bench", "loop", "--precision", "fp32,fp16", "--iterations", "30",
                                   "--warmup", "20", "--json"], capsys)
    assert code == 0, errtext
    results = doc["results"]
    assert [r["precision"] for r in results] == ["fp32", "fp16"]
    for r in results:
        assert r["schema"] == "fbocc-bench-result/1" and r["backend"] == "tensorrt"
        assert r["engine"]["cached"] is False and r["engine"]["build_seconds"] is not None
        gpu = r["summary"]["metrics_ms"]["GPU Compute Time"]
        assert gpu["min"] <= gpu["median"] <= gpu["max"]
        assert r["summary"]["tensorrt_version"] == "8.6.13" and r["summary"]["status"] == "PASSED"
        assert len(r["per_query_ms"]["compute"]) >= 30
        load = next(a for a in r["command"] if a.startswith("--loadInputs="))
        assert "img:" in load and "ranks_bev:" in load
        assert "--shapes=ranks_bev:8" in r["command"] and any(a.startswith("--staticPlugins=") for a in r["command"])
        assert r["environment"]["tensorrt"]["source"] == "trtexec banner"
        assert r["environment"]["power_mode"]["available"] is False  # no nvpmodel here: recorded, not guessed
        assert r["tegrastats"]["available"] is False
        assert r["layers"][0]["name"]
    assert "[loop]" in errtext  # remote output streamed with the target's prefix
    saved = sorted(loop_target["results"].glob("bench-*.json"))
    assert len(saved) == 2
    # fp32 sleeps longer than fp16 in the double, and the parsed medians show it
    assert results[0]["summary"]["metrics_ms"]["GPU Compute Time"]["median"] > \
        results[1]["summary"]["metrics_ms"]["GPU Compute Time"]["median"]

    code = run(["remote-bench", "loop", "--precision", "fp16", "--iterations", "20", "--warmup", "0"])
    table = capsys.readouterr().out
    assert code == 0
    assert "fbocc remote-bench" in table and "cached" in table and "fp16" in table
    newest = max(loop_target["results"].glob("bench-*.json"), key=lambda p: json.loads(p.read_text())["created"])
    again = json.loads(newest.read_text())
    assert again["engine"]["cached"] is True and again["engine"]["build_seconds"] is None
    assert again["engine"]["path"] == results[1]["engine"]["path"]
    leftovers = list((loop_target["remote"] / "runs").iterdir())
    assert leftovers == []  # per-run exports are fetched and removed
    assert not list((loop_target["remote"] / "engines").glob("*.part"))

    md = loop_target["local"] / "report.md"
    png = loop_target["local"] / "report.png"
    code, doc, errtext = cli_json(["report", "--markdown", str(md), "--png", str(png), "--json"], capsys)
    assert code == 0, errtext
    assert {r["precision"] for r in doc["rows"]} == {"fp32", "fp16"}
    fp16 = next(r for r in doc["rows"] if r["precision"] == "fp16")
    assert fp16["previous_run_id"] is not None and fp16["change"] is not None
    assert doc["fp16_speedup_over_fp32"]["loop"] > 1.0
    lines = md.read_text().splitlines()
    assert lines[0] == "|  | Precision | mIoU | Latency (ms) on loop |"
    assert any(ln.startswith("| FB-OCC-TensorRT | FP16 | - | ") for ln in lines)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_ctrl_c_during_remote_benchmark_leaves_no_remote_process(loop_target: dict) -> None:
    cur = make_artifacts(loop_target["local"])
    upload(loop_target["target"], loop_target["known_hosts"], cur, loop_target["remote"])
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's fbocc, not whatever the venv points at
    proc = subprocess.Popen([sys.executable, "-m", "fbocc", "remote-bench", "loop", "--precision", "fp32",
                             "--duration", "120", "--warmup", "0"], cwd=os.getcwd(), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pattern = f"trtexec_double.py --loadEngine={loop_target['remote']}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the benchmark never started on the target")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    gone = time.monotonic() + 10
    while time.monotonic() < gone and subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0:
        time.sleep(0.2)
    assert subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 1, "remote trtexec survived"
    assert not list(loop_target["results"].glob("bench-*.json"))  # no result for an interrupted run


def test_plugin_not_registered_names_the_loaded_library(loop_target: dict, capsys: pytest.CaptureFixture[str]) -> None:
    cur = make_artifacts(loop_target["local"], custom_op="BEVPoolV2TRT", plugin_ops=(b"GridSampler3DTRT",))
    upload(loop_target["target"], loop_target["known_hosts"], cur, loop_target["remote"])
    code = run(["remote-bench", "loop", "--precision", "fp16", "--iterations", "5"])
    errtext = capsys.readouterr().err
    assert code == 6
    assert "could not find plugin: BEVPoolV2TRT" in errtext
    assert "fix: plugin BEVPoolV2TRT is not registered by the library that was loaded" in errtext
    assert f"{loop_target['remote']}/current/libfbocc_plugins.so" in errtext
    assert not list((loop_target["remote"] / "engines").glob("*.engine*"))  # nothing half-written


def test_shape_outside_the_profile_names_the_input(loop_target: dict, capsys: pytest.CaptureFixture[str]) -> None:
    cur = make_artifacts(loop_target["local"], frame_sizes=(8, 32))
    upload(loop_target["target"], loop_target["known_hosts"], cur, loop_target["remote"])
    code = run(["remote-bench", "loop", "--precision", "fp32", "--iterations", "5", "--frame", "1"])
    errtext = capsys.readouterr().err
    assert code == 6
    assert "does not satisfy any optimization profile" in errtext
    assert "input 'ranks_bev' has shape 32, outside the engine's profile min 4 .. max 16" in errtext

    # the Python-API builder needs TensorRT's Python module, which this target lacks: said so, with the way out
    code = run(["remote-bench", "loop", "--precision", "fp16", "--iterations", "5", "--builder", "python"])
    errtext = capsys.readouterr().err
    assert code == 6
    assert "tensorrt Python module is not importable" in errtext and "--builder trtexec" in errtext

    # a step that outlives --timeout is stopped on the target and reported
    code = run(["remote-bench", "loop", "--precision", "fp32", "--duration", "60", "--warmup", "0", "--timeout", "4"])
    errtext = capsys.readouterr().err
    assert code == 6
    assert "did not finish within 4 s" in errtext
    time.sleep(1)
    pattern = f"trtexec_double.py --loadEngine={loop_target['remote']}"
    assert subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 1


def test_trt10_target_gets_static_plugins(loop_target: dict, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    launcher = Path(loop_target["target"].trtexec)
    launcher.write_text(launcher.read_text().replace(":-8.6.13", ":-10.8.0"))
    cur = make_artifacts(loop_target["local"])
    upload(loop_target["target"], loop_target["known_hosts"], cur, loop_target["remote"])
    code, doc, errtext = cli_json(["remote-bench", "loop", "--precision", "fp16", "--iterations", "10",
                                   "--warmup", "0", "--json"], capsys)
    assert code == 0, errtext
    r = doc["results"][0]
    assert r["summary"]["tensorrt_version"] == "10.8.0"
    assert any(a.startswith("--staticPlugins=") for a in r["command"])


def test_a_plugin_built_for_another_major_stops_before_any_engine_is_built(
        loop_target: dict, capsys: pytest.CaptureFixture[str]) -> None:
    """Pushed while the target ran TensorRT 10.8 (same major: accepted), then the target moved to TensorRT 11."""
    from fbocc.build.cross_build import Artefact, BuildManifest

    cur = make_artifacts(loop_target["local"])
    lib = cur / "libfbocc_plugins.so"
    (cur / "fbocc-build.json").write_text(BuildManifest(
        profile="drive-os-6.5.1", target_arch="aarch64", image="i", image_id="sha256:0", cuda_version="11.4",
        tensorrt_version="10.8.0", toolchain={}, source_dir="plugins", source_hash="0", recipe_hash="0",
        cache_key="0", make_args="", compile_flags=[], cuda_archs=["87"], duration_s=0.0, cache="miss",
        transfer="archive", built_at="2026-01-01T00:00:00Z",
        artefacts=[Artefact(file=lib.name, sha256=hashlib.sha256(lib.read_bytes()).hexdigest(),
                            size=lib.stat().st_size, machine="EM_AARCH64", cubin_archs=["87"], ptx_archs=[],
                            needed=[], registration_symbols=[])]).to_json())
    launcher = Path(loop_target["target"].trtexec)
    launcher.write_text(launcher.read_text().replace(":-8.6.13", ":-10.8.0"))
    upload(loop_target["target"], loop_target["known_hosts"], cur, loop_target["remote"])
    launcher.write_text(launcher.read_text().replace(":-10.8.0", ":-11.1.0"))
    code = run(["remote-bench", "loop", "--precision", "fp16", "--iterations", "5"])
    errtext = capsys.readouterr().err
    assert code == 4, errtext
    assert ("libfbocc_plugins.so: built with TensorRT 10.8.0 headers, the target runs TensorRT 11.1.0: plugins "
            "would not register (the plugin interfaces of TensorRT 10 and 11 differ)") in errtext
    assert "fix: rebuild for this TensorRT: fbocc cross-build --profile" in errtext
    assert not (loop_target["remote"] / "engines").exists() or not list((loop_target["remote"] / "engines").iterdir())


def test_onnxruntime_backend_records_a_labelled_result(loop_target: dict, capsys: pytest.CaptureFixture[str]) -> None:
    cur = make_artifacts(loop_target["local"], custom_op=None)
    upload(loop_target["target"], loop_target["known_hosts"], cur, loop_target["remote"])
    code, doc, errtext = cli_json(["remote-bench", "loop", "--backend", "onnxruntime", "--iterations", "3",
                                   "--json"], capsys)
    assert code == 0, errtext
    r = doc["results"][0]
    assert r["backend"] == "onnxruntime" and r["precision"] == "fp32"
    assert "not a TensorRT number" in r["summary"]["note"]
    assert len(r["per_query_ms"]["latency"]) == 2 * 3  # two frames, three repeats each
    assert r["summary"]["metrics_ms"]["Latency"]["median"] > 0
    md = run(["report"])
    assert md == 0
    assert "| FB-OCC-ONNXRuntime | FP32 | - |" in capsys.readouterr().out


def test_nothing_pushed_is_one_clear_error(loop_target: dict, capsys: pytest.CaptureFixture[str]) -> None:
    code = run(["remote-bench", "loop", "--iterations", "5"])
    errtext = capsys.readouterr().err
    assert code == 6
    assert "nothing has been pushed to loop" in errtext and "fbocc push-to-target loop" in errtext


@pytest.fixture
def two_targets(sshd_factory, isolated_home: Path, tmp_path: Path) -> dict[str, object]:
    """Two real sshd targets `a` and `b` in a group `pair`, each with its own workdir, same double."""
    launcher = tmp_path / "bin" / "trtexec"
    launcher.parent.mkdir()
    launcher.write_text(f"#!/bin/sh\nFBOCC_DOUBLE_TRT_VERSION=10.8.0 exec {sys.executable} {DOUBLE} \"$@\"\n")
    launcher.chmod(0o755)
    results = tmp_path / "results"
    servers, targets, remotes = [], [], []
    kh = tmp_path / "known_hosts"
    toml = ""
    for name in ("a", "b"):
        srv = sshd_factory()
        remote = tmp_path / f"remote-{name}"
        remote.mkdir()
        servers.append(srv)
        remotes.append(remote)
        toml += srv.target_toml(name, remote, trtexec=str(launcher), python=sys.executable) + "\n"
        targets.append(Target(name=name, host=srv.host, port=srv.port, user=srv.user, identity_file=srv.client_key,
                              workdir=str(remote), trtexec=str(launcher), python=sys.executable))
    kh.write_text("".join(s.host_pubkey_line + "\n" for s in servers))
    Path("fbocc.toml").write_text(f'[project]\nresults_dir = "{results}"\nknown_hosts = "{kh}"\n\n'
                                  f'[groups]\npair = ["a", "b"]\n\n' + toml)
    cur = make_artifacts(tmp_path / "local")
    for target, remote in zip(targets, remotes, strict=True):
        upload(target, kh, cur, remote)
    return {"remotes": remotes, "results": results}


def test_several_targets_in_parallel_and_ctrl_c_stops_every_remote_step(
        two_targets: dict, capsys: pytest.CaptureFixture[str]) -> None:
    from datetime import datetime

    code, doc, errtext = cli_json(["remote-bench", "pair", "--precision", "fp16", "--duration", "2", "--warmup", "0",
                                   "--json"], capsys)
    assert code == 0, errtext
    assert sorted(r["target"]["name"] for r in doc["results"]) == ["a", "b"]
    assert "[a]" in errtext and "[b]" in errtext
    # in parallel, the two runs end together; one after the other, they would end a benchmark apart
    ends = [datetime.fromisoformat(r["created"].replace("Z", "+00:00")) for r in doc["results"]]
    walls = [r["summary"]["total_host_walltime_s"] for r in doc["results"]]
    assert abs((ends[0] - ends[1]).total_seconds()) < min(walls)
    for path in two_targets["results"].glob("bench-*.json"):
        path.unlink()

    proc = subprocess.Popen([sys.executable, "-m", "fbocc", "remote-bench", "pair", "--precision", "fp32",
                             "--duration", "120", "--warmup", "0"], cwd=os.getcwd(),
                            env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    patterns = [f"trtexec_double.py --loadEngine={r}" for r in two_targets["remotes"]]

    def running() -> list[bool]:
        return [subprocess.run(["pgrep", "-f", p], capture_output=True).returncode == 0 for p in patterns]

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not all(running()):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    assert all(running()), "the benchmarks never started on both targets"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    gone = time.monotonic() + 10
    while time.monotonic() < gone and any(running()):
        time.sleep(0.2)
    assert not any(running()), "a remote trtexec survived Ctrl-C"
    assert not list(two_targets["results"].glob("bench-*.json"))


def test_bench_then_validate_use_one_engine_and_report_pairs_only_that_engine(
        loop_target: dict, capsys: pytest.CaptureFixture[str]) -> None:
    """The bug of issue 18: validate built its own engine (Python builder) beside remote-bench's trtexec one,
    and report printed one's mIoU beside the other's latency. Now both get THE engine of (set, precision,
    builder, TensorRT version, profile) from fbocc.target.contract.ensure_engine."""
    from fbocc.results.history import load_history, record_validation
    from fbocc.target.contract import ensure_engine, locate_pushed_set, probe_target

    cur = make_artifacts(loop_target["local"])
    upload(loop_target["target"], loop_target["known_hosts"], cur, loop_target["remote"])
    code, doc, errtext = cli_json(["remote-bench", "loop", "--precision", "fp32", "--iterations", "10",
                                   "--warmup", "0", "--json"], capsys)
    assert code == 0, errtext
    (timed,) = doc["results"]
    engine = timed["engine"]
    assert engine["builder"] == "trtexec" and engine["cached"] is False and engine["precision"] == "fp32"
    assert engine["sha256"] == hashlib.sha256(Path(engine["path"]).read_bytes()).hexdigest()
    assert sorted(p.name for p in (loop_target["remote"] / "engines").glob("*.engine")) == \
        [Path(engine["path"]).name]

    # validate on the same target and precision runs that very file (this host has no TensorRT runtime,
    # so the run itself stops there, with the reason)
    code = run(["validate", "loop", "--backend", "tensorrt", "--precision", "fp32"])
    errtext = capsys.readouterr().err
    assert code == 6, errtext
    assert f"engine fp32: cached {engine['path']}" in errtext
    assert f"engine {engine['path']}" in errtext and "tensorrt Python module is not importable" in errtext
    assert sorted(p.name for p in (loop_target["remote"] / "engines").glob("*.engine")) == \
        [Path(engine["path"]).name], "validate must not build an engine of its own"
    # another builder is another engine (its own key), never the timed one
    code = run(["validate", "loop", "--backend", "tensorrt", "--precision", "fp32", "--builder", "python"])
    errtext = capsys.readouterr().err
    assert code == 6 and "building with python" in errtext and engine["path"] not in errtext.split("->")[-1]

    # what validate records names the engine it got from ensure_engine; report pairs it with the latency
    with TargetSession(loop_target["target"], known_hosts=loop_target["known_hosts"]) as session:
        pushed = locate_pushed_set(session)
        validated = ensure_engine(session, pushed, probe_target(session, pushed, precisions=["fp32"],
                                                                builder="trtexec"), "fp32")
    assert validated.cached and validated.path == engine["path"] and validated.sha256 == engine["sha256"]
    assert validated.bytes == engine["bytes"] == Path(engine["path"]).stat().st_size
    results = loop_target["results"]
    record_validation(results, backend="tensorrt", precision="fp32", miou=41.5, target="loop",
                      details={"miou_against": "ground-truth"}, engine=validated.as_dict())
    code, report, errtext = cli_json(["report", "--json"], capsys)
    assert code == 0, errtext
    (row,) = report["rows"]
    assert row["miou"] == 41.5 and row["miou_note"] is None and row["engine"] == engine["sha256"]

    other = {**validated.as_dict(), "sha256": "f" * 64, "key": "f" * 16}  # e.g. an engine since rebuilt
    record_validation(results, backend="tensorrt", precision="fp32", miou=12.0, target="loop",
                      details={"miou_against": "ground-truth"}, engine=other)
    assert [r.engine["sha256"] for r in load_history(results)] == [engine["sha256"]]
    code, report, errtext = cli_json(["report", "--json"], capsys)
    (row,) = report["rows"]
    assert row["miou"] == 41.5, "the record of the timed engine still wins over a newer one of another engine"
    for path in results.glob("validation-*.json"):
        if json.loads(path.read_text())["miou"] == 41.5:
            path.unlink()
    code = run(["report"])
    table = capsys.readouterr().out
    assert code == 0
    assert f"| FB-OCC-TensorRT | FP32 | - (validated engine {'f' * 12} is not the timed engine " \
        f"{engine['sha256'][:12]}) |" in table
