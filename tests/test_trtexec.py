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
