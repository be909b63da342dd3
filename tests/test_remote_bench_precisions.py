"""Precision lives in the graph (issue 19), end to end: `fbocc remote-bench --precision fp32,fp16,int8` over a
real sshd on loopback against the trtexec double of TensorRT 8.6, 10.x before and after 10.12, and 11.x. Each
precision is built from the right graph with exactly the switches that version takes, timed with the four
timing switches set in that version's spelling, and the double (strict per sampleOptions.cpp) would have
failed on any removed or unknown option."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fbocc.cli import run
from tests.test_remote_bench import DOUBLE, cli_json, loop_target, make_artifacts, upload  # noqa: F401 (fixture)

pytestmark = pytest.mark.ssh

OLD_TIMING = ["--noDataTransfers", "--useCudaGraph", "--useSpinWait", "--separateProfileRun"]


def use_version(loop: dict, version: str) -> None:
    launcher = Path(loop["target"].trtexec)
    launcher.write_text(f"#!/bin/sh\nFBOCC_DOUBLE_TRT_VERSION={version} exec {sys.executable} {DOUBLE} \"$@\"\n")


@pytest.mark.parametrize(("version", "graphs", "flags", "timing"), [
    ("8.6.13", {"fp32": "fbocc.onnx", "fp16": "fbocc.onnx", "int8": "fbocc.int8.onnx"},
     {"fp32": [], "fp16": ["--fp16"], "int8": ["--int8"]}, OLD_TIMING),
    ("10.8.0", {"fp32": "fbocc.onnx", "fp16": "fbocc.fp16.onnx", "int8": "fbocc.int8.onnx"},
     {p: ["--stronglyTyped"] for p in ("fp32", "fp16", "int8")}, OLD_TIMING),
    ("10.13.0", {"fp32": "fbocc.onnx", "fp16": "fbocc.fp16.onnx", "int8": "fbocc.int8.onnx"},
     {p: ["--stronglyTyped"] for p in ("fp32", "fp16", "int8")}, OLD_TIMING),
    ("11.1.0", {"fp32": "fbocc.onnx", "fp16": "fbocc.fp16.onnx", "int8": "fbocc.int8.onnx"},
     {p: [] for p in ("fp32", "fp16", "int8")}, []),
])
def test_each_precision_builds_its_graph_with_the_versions_switches(
        loop_target: dict, capsys: pytest.CaptureFixture[str], version: str, graphs: dict[str, str],  # noqa: F811
        flags: dict[str, list[str]], timing: list[str]) -> None:
    use_version(loop_target, version)
    upload(loop_target["target"], loop_target["known_hosts"], make_artifacts(loop_target["local"]),
           loop_target["remote"])
    code, doc, errtext = cli_json(["remote-bench", "loop", "--precision", "fp32,fp16,int8", "--iterations", "5",
                                   "--warmup", "0", "--json"], capsys)
    assert code == 0, errtext
    cur = f"{loop_target['remote']}/current"
    trtexec = loop_target["target"].trtexec
    results = {r["precision"]: r for r in doc["results"]}
    assert list(results) == ["fp32", "fp16", "int8"]
    for precision, r in results.items():
        engine = r["engine"]
        assert engine["command"] == [
            trtexec, f"--onnx={cur}/{graphs[precision]}", f"--saveEngine={engine['path']}.part",
            f"--staticPlugins={cur}/libfbocc_plugins.so", "--minShapes=ranks_bev:4", "--optShapes=ranks_bev:8",
            "--maxShapes=ranks_bev:16", *flags[precision],
            f"--timingCacheFile={loop_target['remote']}/engines/timing-{version}.cache",
            "--profilingVerbosity=detailed", "--skipInference"]
        run_path = f"{loop_target['remote']}/runs/{r['run_id']}"
        assert r["command"] == [
            trtexec, f"--loadEngine={engine['path']}", f"--staticPlugins={cur}/libfbocc_plugins.so",
            "--shapes=ranks_bev:8", f"--loadInputs=img:{cur}/samples/frame_000/img.dat,"
            f"ranks_bev:{cur}/samples/frame_000/ranks_bev.dat", "--iterations=5", "--duration=0", "--warmUp=0",
            *timing, f"--exportTimes={run_path}/times.json", f"--exportProfile={run_path}/profile.json"]
        assert (engine["graph"], engine["typing"]) == (
            "fp32" if graphs[precision] == "fbocc.onnx" else precision, "weak" if version == "8.6.13" else "strong")
        # what the double's "TensorRT" built: the precision asked for, from the graph or the flags
        built = json.loads(Path(engine["path"]).read_text())
        assert built["precision"] == precision and built["strongly_typed"] is (version != "8.6.13")
        assert r["options"]["timing"] == {"data_transfers": False, "cuda_graph": True, "spin_wait": True,
                                          "separate_profile_run": True}
        assert r["summary"]["tensorrt_version"] == version
        assert r["summary"]["metrics_ms"]["H2D Latency"]["max"] == 0.0  # no transfers timed, on every version
        # and the log the parser read says the same (trtexec echoes its inference options)
        assert (r["summary"]["cuda_graph"], r["summary"]["data_transfers"]) == (True, False)
    # the run really did what the result says (the double prints trtexec's inference options)
    assert errtext.count("Data transfers: Disabled") == 3 and errtext.count("CUDA Graph: Enabled") == 3
    assert errtext.count("Spin-wait: Enabled") == 3
    assert "deprecated" not in errtext and "Unknown option" not in errtext
    assert len({r["engine"]["key"] for r in results.values()}) == 3

    # validate plans int8 the same way and gets the very engine remote-bench timed (this host has no TensorRT
    # runtime, so the sequence run itself stops there, with the reason)
    code = run(["validate", "loop", "--backend", "tensorrt", "--precision", "int8"])
    errtext = capsys.readouterr().err
    assert code == 6 and f"engine int8: cached {results['int8']['engine']['path']}" in errtext, errtext
    assert "tensorrt Python module is not importable" in errtext

    # the report: the INT8 row in the seed's table, each run's graph and timing switches
    assert run(["report"]) == 0
    md = capsys.readouterr().out
    assert any(line.startswith("| FB-OCC-TensorRT | INT8 | - | ") for line in md.splitlines())
    int8_details = next(line for line in md.splitlines() if line.startswith(f"| {results['int8']['run_id']} |"))
    typing = "weakly" if version == "8.6.13" else "strongly"
    assert int8_details.endswith(f"| int8 graph, {typing} typed | transfers off, CUDA graph on, spin wait on, "
                                 "separate profile run on |")


def test_a_precision_whose_graph_was_not_pushed_names_the_export_to_run(loop_target: dict,  # noqa: F811
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    use_version(loop_target, "10.8.0")
    upload(loop_target["target"], loop_target["known_hosts"], make_artifacts(loop_target["local"], graphs=("fp16",)),
           loop_target["remote"])
    code, _, errtext = cli_json(["remote-bench", "loop", "--precision", "fp32,int8", "--iterations", "3"], capsys)
    assert code == 6
    assert "has no int8 graph, which int8 needs on TensorRT 10.8.0 (pushed: fp16, fp32)" in errtext
    assert "fbocc export --precision fp32,int8" in errtext
    assert not list((loop_target["remote"] / "engines").glob("*.engine"))  # checked before the first build
    code = run(["validate", "loop", "--backend", "tensorrt", "--precision", "fp32,int8"])
    errtext = capsys.readouterr().err
    assert code == 6 and "has no int8 graph" in errtext and "running the sequence" not in errtext


def test_best_and_weak_typing_where_they_cannot_exist_are_refused(loop_target: dict,  # noqa: F811
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, _, errtext = cli_json(["remote-bench", "loop", "--precision", "fp16,best"], capsys)
    assert code == 2 and "--precision best" in errtext and "TensorRT 11 removed" in errtext
    use_version(loop_target, "10.13.0")
    upload(loop_target["target"], loop_target["known_hosts"], make_artifacts(loop_target["local"]),
           loop_target["remote"])
    code, _, errtext = cli_json(["remote-bench", "loop", "--precision", "fp16", "--typing", "weak"], capsys)
    assert code == 2 and "weak typing is deprecated since 10.12 and removed in 11.0" in errtext
    use_version(loop_target, "10.8.0")
    code, doc, errtext = cli_json(["remote-bench", "loop", "--precision", "fp16", "--typing", "weak",
                                   "--iterations", "3", "--warmup", "0", "--json"], capsys)
    assert code == 0, errtext
    engine = doc["results"][0]["engine"]
    assert engine["graph"] == "fp32" and engine["typing"] == "weak" and "--fp16" in engine["command"]
    assert run(["remote-bench", "loop", "--precision", "fp16", "--typing", "weak", "--iterations", "3",
                "--no-cuda-graph"]) == 0
    table = capsys.readouterr().out
    assert "fp32 (weak)" in table and "cached" in table
    assert "timing set on every run: transfers off, CUDA graph off, spin wait on, separate profile run on" in table


@pytest.mark.slow
def test_a_real_export_of_three_graphs_is_pushed_built_timed_and_reported(
        loop_target: dict, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:  # noqa: F811
    """`fbocc export --precision fp32,fp16,int8` (fbocc-tiny preset, ~1.5 min of CPU) -> push-to-target ->
    remote-bench on TensorRT 11.1 and 8.6 doubles -> report: the manifest's graphs travel and build as each
    version allows, and the per-layer profile (the export's node names) lands in the five stages."""
    from fbocc.results.figure import build_figure
    from fbocc.results.history import load_history
    from fbocc.results.report import compare
    from fbocc.target.artefacts import collect_artefacts
    from fbocc.target.push import push_artifacts
    from fbocc.target.transport import TargetSession

    out = tmp_path / "export"
    assert run(["export", "--preset", "fbocc-tiny", "--random-weights", "--samples", "2",
                "--precision", "fp32,fp16,int8", "--out", str(out)]) == 0
    capsys.readouterr()
    plugin = tmp_path / "libfbocc_plugins.so"  # names each creator, as the cross-built library does
    plugin.write_bytes(b"\x7fELF\0GridSampler3DTRT\0BEVPoolV2TRT\0MultiScaleDeformableAttnTRT\0")
    aset = collect_artefacts(onnx=out / "fbocc-tiny.onnx", plugin=plugin, samples=out / "samples")
    assert set(aset.graphs) == {"fp32", "fp16", "int8"}
    with TargetSession(loop_target["target"], known_hosts=loop_target["known_hosts"]) as session:
        push_artifacts(session, aset)
    for version, graph16 in (("11.1.0", "fbocc-tiny.fp16.onnx"), ("8.6.13", "fbocc-tiny.onnx")):
        use_version(loop_target, version)
        code, doc, errtext = cli_json(["remote-bench", "loop", "--precision", "fp32,fp16,int8", "--iterations", "3",
                                       "--warmup", "0", "--export-dir", str(out), "--json"], capsys)
        assert code == 0, errtext
        fp16 = next(r for r in doc["results"] if r["precision"] == "fp16")
        assert f"--onnx={loop_target['remote']}/current/{graph16}" in fp16["engine"]["command"]
    history = load_history(loop_target["results"])
    fig = build_figure(compare(history), history)
    names = [t.get_text() for t in fig.axes[3].get_yticklabels()]
    assert names and all(n.startswith("/model/") for n in names)  # TensorRT layer names = the export's nodes
    from fbocc.results.layers import staged

    plugins = {layer.plugin for r in history for layer in staged(r.layers) if layer.plugin}
    assert plugins == {"GridSampler3DTRT", "BEVPoolV2TRT", "MultiScaleDeformableAttnTRT"}
    stages = {t.get_text() for t in fig.axes[4].get_legend().get_texts()}
    assert {"backbone", "depth", "view transform", "BEV encoder", "head"} <= stages
