"""trtexec output parsed, on excerpts of real public logs (command lines: tests/test_trtexec_commands.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fbocc.target.trtexec import (
    TrtVersion,
    diagnose_failure,
    parse_export_profile,
    parse_export_times,
    parse_summary,
    query_stats,
)

DATA = Path(__file__).parent / "data" / "trtexec"
PROFILE = {"img": {"min": [1, 6, 3, 256, 704], "opt": [1, 6, 3, 256, 704], "max": [1, 6, 3, 256, 704]},
           "ranks_bev": {"min": [1000], "opt": [150000], "max": [200000]}}


def log(name: str) -> str:
    return (DATA / name).read_text()


@pytest.mark.parametrize(("text", "expected"), [
    ("v8603", (8, 6, 3)), ("v8613", (8, 6, 13)), ("v100200", (10, 2, 0)), ("v100001", (10, 0, 1)),
    ("v101300", (10, 13, 0)), ("8.6.13.3", (8, 6, 13)), ("10.8", (10, 8, 0)), ("v110000", (11, 0, 0)),
])
def test_version_tags_as_trtexec_prints_them(text: str, expected: tuple[int, int, int]) -> None:
    v = TrtVersion.parse(text)
    assert (v.major, v.minor, v.patch) == expected


def test_trt86_summary_is_parsed_completely() -> None:
    s = parse_summary(log("trt8.6.3_fp16_summary.log"))
    assert s.version == TrtVersion(8, 6, 3)
    assert s.status == "PASSED"
    assert s.throughput_qps == pytest.approx(9.56737)
    gpu = s.metrics["GPU Compute Time"]
    assert (gpu.min, gpu.max, gpu.mean, gpu.median) == (103.806, 105.511, 104.457, 104.337)
    assert gpu.percentiles == {"90": 105.17, "95": 105.42, "99": 105.511}
    assert set(s.metrics) == {"Latency", "Enqueue Time", "H2D Latency", "GPU Compute Time", "D2H Latency"}
    assert s.total_host_walltime_s == pytest.approx(3.24018)
    assert s.total_gpu_compute_s == pytest.approx(3.23816)
    assert s.cv_percent is None
    assert any("bound by Enqueue Time" in w for w in s.warnings)
    assert "--fp16" in (s.command or "")
    assert s.complete


def test_trt10_summary_with_coefficient_of_variance_warning() -> None:
    s = parse_summary(log("trt10.0.1_static_plugins_summary.log"))
    assert s.version == TrtVersion(10, 0, 1)
    assert s.status == "PASSED"
    assert s.metrics["GPU Compute Time"].median == pytest.approx(0.904633)
    assert s.metrics["D2H Latency"].percentiles["99"] == pytest.approx(0.041748)
    assert s.cv_percent == pytest.approx(43.467)
    assert "--staticPlugins=" in (s.command or "")


def test_version_from_the_header_lines_of_both_generations() -> None:
    assert parse_summary(log("trt10.2_header.log")).version == TrtVersion(10, 2, 0)
    head = parse_summary(log("trt8.6.3_header.log"))
    assert head.version == TrtVersion(8, 6, 3)
    assert head.status is None and not head.complete


def test_plugin_not_found_names_the_op_and_the_loaded_library() -> None:
    text = "[I] Loading supplied plugin library: /w/current/libfbocc_plugins.so\n" + log("plugin_not_found.log")
    d = diagnose_failure(text, plugin="/w/current/libfbocc_plugins.so")
    assert any("could not find plugin: Custom" in ln for ln in d.lines)
    assert d.hint is not None
    assert "Custom" in d.hint and "/w/current/libfbocc_plugins.so" in d.hint


def test_shape_outside_profile_names_the_input() -> None:
    d = diagnose_failure(log("shape_outside_profile.log"), profile=PROFILE,
                         shapes={"img": [1, 6, 3, 256, 704], "ranks_bev": [250000]})
    assert d.hint is not None and "'ranks_bev'" in d.hint and "250000" in d.hint and "200000" in d.hint
    assert any("satisfy any optimization profile" in ln for ln in d.lines)


def test_export_times_and_profile_json() -> None:
    # the shape of trtexec's --exportTimes / --exportProfile files (keys as trtexec writes them)
    times = json.dumps([{"startComputeMs": 0.0, "endComputeMs": 2.0, "computeMs": 2.0, "latencyMs": 2.5,
                         "h2dMs": 0.3, "d2hMs": 0.2}, {"computeMs": 4.0, "latencyMs": 4.6},
                        {"computeMs": 3.0, "latencyMs": 3.4}])
    queries = parse_export_times(times)
    stats = query_stats(queries)
    assert stats is not None and (stats.min, stats.median, stats.max) == (2.0, 3.0, 4.0)
    profile = json.dumps([{"count": 10}, {"name": "conv1", "timeMs": 5.0, "averageMs": 0.5, "medianMs": 0.5,
                                          "percentage": 20.0},
                          {"name": "GridSampler3DTRT_0", "timeMs": 20.0, "averageMs": 2.0, "medianMs": 1.9,
                           "percentage": 80.0}])
    count, layers = parse_export_profile(profile)
    assert count == 10 and layers[0].name == "GridSampler3DTRT_0" and layers[0].average_ms == 2.0


# --- formats from 7.x to 11.x (tests/data/trtexec_logs/, each file names its public source) ----------------

LOGS = Path(__file__).parent / "data" / "trtexec_logs"


def excerpt(name: str) -> str:
    """A log excerpt without its leading `#` source lines."""
    return "\n".join(ln for ln in (LOGS / name).read_text().splitlines() if not ln.startswith("# "))


@pytest.mark.parametrize(("name", "op"), [("trt10_plugin_not_found_checker.log", "TRTBatchedNMS"),
                                          ("trt10_plugin_not_found_gridsample3d.log", "GridSample3D")])
def test_plugin_not_found_in_10x_wording_names_the_op_and_keeps_the_untagged_creator_line(name: str, op: str) -> None:
    d = diagnose_failure(excerpt(name), plugin="/w/current/libfbocc_plugins.so")
    assert any(ln.startswith('[6] creator && "Plugin not found') for ln in d.lines), d.lines
    assert d.hint is not None and f"plugin {op} is not registered" in d.hint and "a custom op" not in d.hint
    assert "/w/current/libfbocc_plugins.so" in d.hint


def test_plugin_not_found_takes_the_op_from_plugin_name_wording() -> None:
    # "pluginName: X" is the 10.x/11.x registry wording quoted in issue 20 (no public log with it was found):
    # a made-up line in that wording, around the public 10.x checker excerpt.
    text = ("[E] [TRT] IPluginRegistry::getCreator: Error Code 4: API Usage Error (pluginName: BEVPoolV2TRT, "
            "pluginVersion: 1, pluginNamespace: )\n" + excerpt("trt10_plugin_not_found_checker.log"))
    d = diagnose_failure(text, plugin=None)
    assert d.hint is not None and d.hint.startswith("plugin BEVPoolV2TRT is not registered and no plugin library")


def test_the_abi_guards_refusal_is_the_hint_when_the_library_was_built_for_another_major() -> None:
    line = ("fbocc plugins: built with TensorRT 10.8.0 headers, loaded into TensorRT 11.1.0: plugins not registered "
            "(the plugin interfaces of TensorRT 10 and 11 differ); rebuild for this TensorRT: fbocc cross-build "
            "--profile <a TensorRT 11 profile> (fbocc doctor --target NAME names it)")
    d = diagnose_failure(f"[E] {line}\n" + excerpt("trt10_plugin_not_found_checker.log"))
    assert any(line in ln for ln in d.lines)
    assert d.hint is not None and d.hint.startswith("built with TensorRT 10.8.0 headers, loaded into TensorRT 11.1.0")
    assert "fbocc cross-build --profile" in d.hint


def test_trt80_to_82_end_to_end_host_latency_is_kept() -> None:
    s = parse_summary(excerpt("trt8.0-8.2_end_to_end_summary.log"))
    assert s.unsupported is None
    assert s.throughput_qps == pytest.approx(1.57184)
    e2e = s.metrics["End-to-End Host Latency"]
    assert (e2e.min, e2e.max, e2e.mean, e2e.median, e2e.percentiles) == (634.644, 638.123, 636.196, 636.003,
                                                                         {"99": 638.123})
    assert s.metrics["Latency"].median == pytest.approx(636.003)
    assert s.as_dict()["metrics_ms"]["End-to-End Host Latency"]["max"] == pytest.approx(638.123)


@pytest.mark.parametrize("name", ["trt7_host_latency_report.log", "trt7_failed_no_version_tag.log"])
def test_logs_older_than_8_are_said_unsupported_not_parsed_as_empty(name: str) -> None:
    s = parse_summary(excerpt(name))
    assert s.unsupported is not None and "older than TensorRT 8.0" in s.unsupported
    assert "8.0 and later" in s.unsupported
    assert not s.metrics and s.throughput_qps is None and not s.complete
    assert s.as_dict()["unsupported"] == s.unsupported


def test_a_7x_version_tag_is_said_unsupported_with_its_version() -> None:
    s = parse_summary("&&&& PASSED TensorRT.trtexec [TensorRT v7103] # trtexec --loadEngine=e\n")
    assert s.unsupported is not None and s.unsupported.startswith("this is the output of TensorRT 7.1.3")


def test_older_versions_run_without_cuda_graph_and_with_transfers_unless_asked() -> None:
    s = parse_summary(log("trt8.6.3_fp16_summary.log"))
    assert (s.cuda_graph, s.data_transfers, s.notes) == (False, True, [])
    t = parse_summary(log("trt10.0.1_static_plugins_summary.log"))
    graph = "--useCudaGraph" in (t.command or "").split()
    assert t.cuda_graph is graph and t.data_transfers is ("--noDataTransfers" not in (t.command or "").split())


def test_11x_default_cuda_graph_and_no_transfers_are_flagged() -> None:
    # The "&&&&" line and option echo as samples/common/sampleOptions.cpp of v11.1 prints them (no public 11.x
    # log was found): 11.0 made CUDA graph and no data transfers the defaults.
    s = parse_summary("&&&& RUNNING TensorRT.trtexec [TensorRT v110100] # trtexec --loadEngine=e "
                      "--staticPlugins=p.so\n")
    assert (s.version, s.cuda_graph, s.data_transfers) == (TrtVersion(11, 1, 0), True, False)
    assert any("CUDA graph (the TensorRT 11 default)" in n for n in s.notes)
    assert any("no host<->device transfers (the TensorRT 11 default)" in n for n in s.notes)
    opted_out = parse_summary("&&&& RUNNING TensorRT.trtexec [TensorRT v110100] # trtexec --loadEngine=e "
                              "--noCudaGraph --includeDataTransfers\n")
    assert (opted_out.cuda_graph, opted_out.data_transfers, opted_out.notes) == (False, True, [])
    echoed = parse_summary("&&&& RUNNING TensorRT.trtexec [TensorRT v110100] # trtexec --loadEngine=e\n"
                           "[I] === Inference Options ===\n[I] Data transfers: Enabled\n[I] CUDA Graph: Disabled\n")
    assert (echoed.cuda_graph, echoed.data_transfers) == (False, True)  # what trtexec says it did wins
    assert parse_summary("&&&& RUNNING TensorRT.trtexec [TensorRT v110100] # x\n").as_dict()["cuda_graph"] is True
