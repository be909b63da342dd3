"""trtexec command lines per TensorRT version: which graph and switches each precision gets, and the four
timing switches that make a 10.x and an 11.x latency the same measurement.

Each rule's source is NVIDIA/TensorRT `samples/common/sampleOptions.cpp` on the release branch named in the
test (see the docstring of fbocc/target/trtexec_commands.py)."""

from __future__ import annotations

import pytest

from fbocc.target.trtexec import TrtVersion
from fbocc.target.trtexec_commands import (
    BenchSpec,
    BuildSpec,
    TimingMode,
    bench_command,
    build_command,
    precision_plan,
    timing_flags,
    trtexec_defaults,
)

PROFILE = {"img": {"min": [1, 6, 3, 256, 704], "opt": [1, 6, 3, 256, 704], "max": [1, 6, 3, 256, 704]},
           "ranks_bev": {"min": [1000], "opt": [150000], "max": [200000]}}
V86, V108, V1012, V110, V111 = (TrtVersion(8, 6, 13), TrtVersion(10, 8, 0), TrtVersion(10, 12, 0),
                                TrtVersion(11, 0, 0), TrtVersion(11, 1, 0))
REMOVED_IN_11 = ("--fp16", "--int8", "--best", "--bf16", "--fp8", "--int4", "--calib")


def build(version: TrtVersion, precision: str, typing: str | None = None, onnx: str = "/w/g.onnx") -> list[str]:
    return build_command("trtexec", version, BuildSpec(
        onnx=onnx, engine="/w/engines/k.engine.part", plugin="/w/current/libfbocc.so", precision=precision,
        profile=PROFILE, timing_cache="/w/engines/timing.cache", typing=typing))


def expected_build(*precision_flags: str) -> list[str]:
    return ["trtexec", "--onnx=/w/g.onnx", "--saveEngine=/w/engines/k.engine.part",
            "--staticPlugins=/w/current/libfbocc.so", "--minShapes=img:1x6x3x256x704,ranks_bev:1000",
            "--optShapes=img:1x6x3x256x704,ranks_bev:150000", "--maxShapes=img:1x6x3x256x704,ranks_bev:200000",
            *precision_flags, "--timingCacheFile=/w/engines/timing.cache", "--profilingVerbosity=detailed",
            "--skipInference"]


@pytest.mark.parametrize(("version", "precision", "graph", "flags"), [
    # release/8.6: no --stronglyTyped; precision from builder flags; INT8 scales from the Q/DQ graph
    (V86, "fp32", "fp32", ()), (V86, "fp16", "fp32", ("--fp16",)), (V86, "int8", "int8", ("--int8",)),
    # release/10.8 (before 10.12): the typed graph, strongly typed by default
    (V108, "fp32", "fp32", ("--stronglyTyped",)), (V108, "fp16", "fp16", ("--stronglyTyped",)),
    (V108, "int8", "int8", ("--stronglyTyped",)),
    # release/10.12: weak typing deprecated; typed graphs only
    (V1012, "fp16", "fp16", ("--stronglyTyped",)), (V1012, "int8", "int8", ("--stronglyTyped",)),
    # release/11.0, 11.1: always strongly typed; --stronglyTyped is a deprecated no-op, precision flags are gone
    (V110, "fp32", "fp32", ()), (V110, "fp16", "fp16", ()), (V110, "int8", "int8", ()), (V111, "int8", "int8", ()),
])
def test_each_precision_builds_its_graph_with_the_versions_switches(version: TrtVersion, precision: str, graph: str,
                                                                    flags: tuple[str, ...]) -> None:
    plan = precision_plan(version, precision)
    assert (plan.graph, plan.flags) == (graph, flags)
    assert build(version, precision) == expected_build(*flags)


def test_weak_typing_on_request_before_10_12_uses_the_fp32_graph_and_the_old_flags() -> None:
    fp16 = precision_plan(V108, "fp16", "weak")
    assert (fp16.graph, fp16.flags, fp16.builder_flags) == ("fp32", ("--fp16",), ("FP16",))
    int8 = precision_plan(V108, "int8", "weak")
    assert (int8.graph, int8.flags, int8.builder_flags) == ("int8", ("--int8",), ("INT8",))
    assert build(V108, "fp16", "weak") == expected_build("--fp16")


@pytest.mark.parametrize("version", [V1012, TrtVersion(10, 16, 0), V110, V111])
def test_weak_typing_is_refused_from_10_12_on(version: TrtVersion) -> None:
    with pytest.raises(ValueError, match=r"weak typing is deprecated since 10\.12 and removed in 11\.0"):
        precision_plan(version, "fp16", "weak")


def test_strong_typing_is_refused_on_8_6_which_has_no_strongly_typed_networks() -> None:
    with pytest.raises(ValueError, match=r"8\.6\.13 has no strongly typed networks"):
        build(V86, "fp16", "strong")


@pytest.mark.parametrize("version", [V86, V108, V1012, V110, V111])
def test_best_is_gone_everywhere_with_the_fix(version: TrtVersion) -> None:
    with pytest.raises(ValueError, match=r"use the fp16 or int8 graph \(--precision fp32,fp16,int8\)"):
        build(version, "best")
    with pytest.raises(ValueError, match="int4"):
        build(version, "int4")


@pytest.mark.parametrize("version", [V110, V111])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_trtexec_11_never_gets_a_removed_flag(version: TrtVersion, precision: str) -> None:
    argv = build(version, precision)
    assert not [a for a in argv if a.split("=")[0] in REMOVED_IN_11]
    assert "--stronglyTyped" not in argv and not any(a.startswith(("--workspace", "--buildOnly")) for a in argv)


def test_unsupported_versions_are_refused() -> None:
    with pytest.raises(ValueError, match=r"8\.5\.0"):
        build(TrtVersion(8, 5, 0), "fp32")


# --- timing: the same four settings on every version ----------------------------------------------------------


def test_trtexec_defaults_changed_in_11() -> None:
    # sampleOptions.h: 8.6/10.x skipTransfers/spin/graph/rerun all false; 11.0 includeTransfers false, spin and
    # graph true, the profile always in its own run
    assert trtexec_defaults(V86) == trtexec_defaults(V108) == TimingMode(True, False, False, False)
    assert trtexec_defaults(V110) == trtexec_defaults(V111) == TimingMode(False, True, True, True)


@pytest.mark.parametrize(("mode", "old", "new"), [
    (TimingMode(), ["--noDataTransfers", "--useCudaGraph", "--useSpinWait", "--separateProfileRun"], []),
    (TimingMode(data_transfers=True, cuda_graph=False, spin_wait=False),
     ["--separateProfileRun"], ["--includeDataTransfers", "--noCudaGraph", "--noSpinWait"]),
    (TimingMode(cuda_graph=False), ["--noDataTransfers", "--useSpinWait", "--separateProfileRun"], ["--noCudaGraph"]),
])
def test_timing_switches_in_each_versions_spelling(mode: TimingMode, old: list[str], new: list[str]) -> None:
    assert timing_flags(V86, mode) == timing_flags(V108, mode) == timing_flags(V1012, mode) == old
    assert timing_flags(V110, mode) == timing_flags(V111, mode) == new


def test_a_profile_inside_the_timed_run_cannot_be_had_on_11() -> None:
    assert timing_flags(V108, TimingMode(separate_profile_run=False)) == [
        "--noDataTransfers", "--useCudaGraph", "--useSpinWait"]
    with pytest.raises(ValueError, match="always profiles in a separate run"):
        timing_flags(V110, TimingMode(separate_profile_run=False))


@pytest.mark.parametrize(("version", "timing"), [
    (V86, ["--noDataTransfers", "--useCudaGraph", "--useSpinWait", "--separateProfileRun"]),
    (V108, ["--noDataTransfers", "--useCudaGraph", "--useSpinWait", "--separateProfileRun"]),
    (V110, []), (V111, []),
])
def test_bench_command_per_version(version: TrtVersion, timing: list[str]) -> None:
    spec = BenchSpec(engine="/w/e.engine", plugin="/w/p.so",
                     inputs={"img": "/w/s/frame_000/img.dat", "a:b": "/w/s/frame_000/a_b.dat"},
                     shapes={"ranks_bev": [150000]}, iterations=50, warmup_ms=200,
                     export_times="/w/r/times.json", export_profile="/w/r/profile.json")
    assert bench_command("trtexec", version, spec) == [
        "trtexec", "--loadEngine=/w/e.engine", "--staticPlugins=/w/p.so", "--shapes=ranks_bev:150000",
        "--loadInputs=img:/w/s/frame_000/img.dat,'a:b':/w/s/frame_000/a_b.dat", "--iterations=50", "--duration=0",
        "--warmUp=200", *timing, "--exportTimes=/w/r/times.json", "--exportProfile=/w/r/profile.json"]


def test_bench_command_by_duration_and_never_on_random_data() -> None:
    by_duration = bench_command("trtexec", V108, BenchSpec(engine="e", plugin=None, inputs={"x": "x.dat"}, shapes={},
                                                           duration_s=2.5))
    assert "--duration=2.5" in by_duration and not any(a.startswith("--iterations") for a in by_duration)
    with pytest.raises(ValueError, match="random data"):
        bench_command("trtexec", V86, BenchSpec(engine="e", plugin=None, inputs={}, shapes={}))


def test_workspace_uses_the_memory_pool_switch() -> None:
    argv = build_command("trtexec", V110, BuildSpec(onnx="m.onnx", engine="e", plugin=None, precision="fp32",
                                                    profile={}, workspace_mib=2048))
    assert argv == ["trtexec", "--onnx=m.onnx", "--saveEngine=e", "--memPoolSize=workspace:2048",
                    "--profilingVerbosity=detailed", "--skipInference"]
