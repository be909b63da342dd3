"""trtexec command lines per TensorRT version: which graph and switches build each precision, the four
timing switches, and the build and benchmark argv.

Pure functions only, so every rule is tested without a target. Rules and their sources (NVIDIA/TensorRT
`samples/common/sampleOptions.cpp` on release/8.6, release/10.x, release/11.0, release/11.1; `sampleOptions.h`
for defaults; `python/src/infer/pyCore.cpp` for the Python builder, which deploy/create_engine.py mirrors):

- plugin library: `--staticPlugins=` on every supported version (added in 8.6.0 together with the
  deprecation of `--plugins`, which still only warns in 11.1).
- precision (`precision_plan`): 8.6 has no `--stronglyTyped` (it came in 9.0): fp16 = the fp32 graph with
  `--fp16`, int8 = the Q/DQ graph with `--int8` (weak typing; no calibrator exists here). 10.0 to
  10.11: the typed graph of the precision with `--stronglyTyped` (default) or, on request, weak typing as
  8.6. 10.12 deprecated weak typing: typed graphs with `--stronglyTyped` only. 11.x removed `--fp16
  --int8 --best --bf16 --fp8 --int4 --calib`; networks are always strongly typed (`--stronglyTyped` is a
  documented no-op): typed graphs, no precision flag. `best` cannot exist with typed graphs: refused.
- timing (`timing_flags`): 8.6/10.x default to data transfers on, CUDA graph, spin wait and a separate
  profile run off, switched with `--noDataTransfers --useCudaGraph --useSpinWait --separateProfileRun`;
  11.x defaults to transfers off, CUDA graph and spin wait on, separate profile run always on, switched
  with `--includeDataTransfers --noCudaGraph --noSpinWait` (the old switches are deprecated no-ops there).
  Every run states all four, so a 10.x and an 11.x number measure the same thing.
- build without inference: `--skipInference` (`--buildOnly` was removed in 10.0); workspace:
  `--memPoolSize=workspace:N` (`--workspace` removed in 10.0); `--explicitBatch`/`--maxBatch`: never emitted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from fbocc.target.trtexec import Shape, TrtVersion, _dims, supported

PRECISIONS = ("fp32", "fp16", "int8")


STRONG_TYPING = TrtVersion(9, 0)  # `--stronglyTyped` / STRONGLY_TYPED: absent in 8.6, present from 9.0
WEAK_TYPING_DEPRECATED = TrtVersion(10, 12)  # we build weakly typed engines only before this
WEAK_TYPING_REMOVED = TrtVersion(11, 0)
TYPINGS = ("strong", "weak")
GONE = {  # precisions that cannot exist once precision lives in the graph, and what to use instead
    "best": "`best` asks TensorRT to pick fp16/int8 per layer (weak typing), which TensorRT 11 removed and "
            "`--stronglyTyped` forbids: use the fp16 or int8 graph (--precision fp32,fp16,int8)",
}


def check_precision(precision: str) -> None:
    """ValueError with the fix when `precision` is not fp32, fp16 or int8."""
    if precision in GONE:
        raise ValueError(GONE[precision])
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")


@dataclass(frozen=True)
class PrecisionPlan:
    """How one precision is built on one TensorRT version: from which graph, with which switches."""

    precision: str
    graph: str  # the manifest's graph to build from: "fp32", "fp16" or "int8"
    typing: str  # "strong" (precision in the graph) or "weak" (precision from builder flags)
    flags: tuple[str, ...]  # trtexec switches
    builder_flags: tuple[str, ...]  # Python API: BuilderFlag names to set (weak typing only)

    def as_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "graph": self.graph, "typing": self.typing,
                "flags": list(self.flags), "builder_flags": list(self.builder_flags)}


def graph_for(precision: str, typing: str) -> str:
    """Which graph a precision builds from: its own when strongly typed; weakly typed, the fp32 graph
    (the flags give fp16) except int8, whose scales only the Q/DQ graph carries."""
    check_precision(precision)
    return precision if typing == "strong" or precision == "int8" else "fp32"


def default_typing(version: TrtVersion) -> str:
    """Strongly typed wherever TensorRT has it (10.x, 11.x); weakly typed on 8.6."""
    return "strong" if version >= STRONG_TYPING else "weak"


def precision_plan(version: TrtVersion, precision: str, typing: str | None = None) -> PrecisionPlan:
    """The graph and switches for `precision` on `version` (typing None = `default_typing`).

    ValueError, with the fix, when the combination cannot exist on that version."""
    check_precision(precision)
    typing = typing or default_typing(version)
    if typing not in TYPINGS:
        raise ValueError(f"typing {typing!r} is not one of {', '.join(TYPINGS)}")
    if typing == "strong":
        if version < STRONG_TYPING:
            raise ValueError(f"TensorRT {version} has no strongly typed networks (--stronglyTyped came in 9.0): "
                             "build it weakly typed (the default there)")
        # 11.x: always strongly typed, `--stronglyTyped` is a deprecated no-op there
        flags: tuple[str, ...] = () if version >= WEAK_TYPING_REMOVED else ("--stronglyTyped",)
        return PrecisionPlan(precision, graph_for(precision, "strong"), "strong", flags, ())
    if version >= WEAK_TYPING_DEPRECATED:
        raise ValueError(f"TensorRT {version} builds precision from the graph only (weak typing is deprecated "
                         "since 10.12 and removed in 11.0): use the typed graphs (drop the weak-typing request)")
    # fp16: TensorRT picks fp16 kernels where it likes; int8: the Q/DQ scales (no calibrator), the rest fp32
    flags = {"fp32": (), "fp16": ("--fp16",), "int8": ("--int8",)}[precision]
    return PrecisionPlan(precision, graph_for(precision, "weak"), "weak", flags, tuple(f[2:].upper() for f in flags))


@dataclass(frozen=True)
class TimingMode:
    """The four trtexec switches that change what a latency means; every run sets and records all four."""

    data_transfers: bool = False  # H2D/D2H copies of every query inside Latency
    cuda_graph: bool = True
    spin_wait: bool = True
    separate_profile_run: bool = True  # per-layer profile in its own run, not inside the timed one

    def as_dict(self) -> dict[str, bool]:
        return {"data_transfers": self.data_transfers, "cuda_graph": self.cuda_graph,
                "spin_wait": self.spin_wait, "separate_profile_run": self.separate_profile_run}


def trtexec_defaults(version: TrtVersion) -> TimingMode:
    """What trtexec does when none of the four switches is given (sampleOptions.h of each release)."""
    if version >= WEAK_TYPING_REMOVED:
        return TimingMode(data_transfers=False, cuda_graph=True, spin_wait=True, separate_profile_run=True)
    return TimingMode(data_transfers=True, cuda_graph=False, spin_wait=False, separate_profile_run=False)


def timing_flags(version: TrtVersion, mode: TimingMode) -> list[str]:
    """The switches that give `mode` on `version`, in the spelling that version does not deprecate."""
    if version >= WEAK_TYPING_REMOVED:
        if not mode.separate_profile_run:
            raise ValueError(f"TensorRT {version} always profiles in a separate run: a profile inside the timed run "
                             "cannot be asked for")
        return ((["--includeDataTransfers"] if mode.data_transfers else [])
                + ([] if mode.cuda_graph else ["--noCudaGraph"]) + ([] if mode.spin_wait else ["--noSpinWait"]))
    # 8.6 and 10.x: everything off but data transfers unless switched; there is no way to say "off"
    return (([] if mode.data_transfers else ["--noDataTransfers"]) + (["--useCudaGraph"] if mode.cuda_graph else [])
            + (["--useSpinWait"] if mode.spin_wait else [])
            + (["--separateProfileRun"] if mode.separate_profile_run else []))


@dataclass(frozen=True)
class BuildSpec:
    """What one engine build needs: all paths are as seen on the target; `onnx` is the plan's graph."""

    onnx: str
    engine: str
    plugin: str | None
    precision: str
    profile: dict[str, dict[str, Shape]]  # input -> {"min","opt","max"}; dynamic inputs only
    timing_cache: str | None = None
    workspace_mib: int | None = None
    profile_layers: bool = True
    typing: str | None = None  # None: the version's default (`default_typing`)


@dataclass(frozen=True)
class BenchSpec:
    """What one benchmark run needs: engine, inputs of one frame, timing options, export paths."""

    engine: str
    plugin: str | None
    inputs: dict[str, str]  # every network input -> its .dat file
    shapes: dict[str, Shape]  # dynamic inputs -> the frame's shape
    iterations: int = 0
    duration_s: float = 10.0
    warmup_ms: int = 500
    timing: TimingMode = field(default_factory=TimingMode)
    export_times: str | None = None
    export_profile: str | None = None


def _tensor_name(name: str) -> str:
    # trtexec splits specs at ',' and ':'; a name containing them must be single-quoted
    return f"'{name}'" if re.search(r"[,:']", name) else name


def _shape_spec(shapes: dict[str, Shape]) -> str:
    return ",".join(f"{_tensor_name(n)}:{_dims(s)}" for n, s in shapes.items())


def plugin_flags(version: TrtVersion, plugin: str | None) -> list[str]:
    """How to load our plugin library so the ONNX parser and the runtime both find its creators."""
    del version  # `--staticPlugins` on 8.6, 10.x and 11.x alike (`--plugins` is deprecated since 8.6.0)
    return [] if plugin is None else [f"--staticPlugins={plugin}"]


def _check_version(version: TrtVersion) -> None:
    if not supported(version):
        raise ValueError(f"TensorRT {version} is not supported (8.6, 10.x, 11.x are)")


def build_command(trtexec: str, version: TrtVersion, spec: BuildSpec) -> list[str]:
    """trtexec argv that builds and saves an engine (no inference) from the ONNX and the samples' profile."""
    _check_version(version)
    plan = precision_plan(version, spec.precision, spec.typing)
    argv = [trtexec, f"--onnx={spec.onnx}", f"--saveEngine={spec.engine}", *plugin_flags(version, spec.plugin)]
    if spec.profile:
        for key, flag in (("min", "--minShapes"), ("opt", "--optShapes"), ("max", "--maxShapes")):
            argv.append(f"{flag}={_shape_spec({n: p[key] for n, p in spec.profile.items()})}")
    argv += plan.flags
    if spec.timing_cache:
        argv.append(f"--timingCacheFile={spec.timing_cache}")
    if spec.workspace_mib:
        argv.append(f"--memPoolSize=workspace:{int(spec.workspace_mib)}")
    if spec.profile_layers:
        argv.append("--profilingVerbosity=detailed")  # layer names in --exportProfile later
    argv.append("--skipInference")
    return argv


def bench_command(trtexec: str, version: TrtVersion, spec: BenchSpec) -> list[str]:
    """trtexec argv that loads an engine and times it on one frame's real inputs (every input loaded)."""
    _check_version(version)
    if not spec.inputs:
        raise ValueError("no network inputs to load: trtexec would feed random data")
    argv = [trtexec, f"--loadEngine={spec.engine}", *plugin_flags(version, spec.plugin)]
    if spec.shapes:
        argv.append(f"--shapes={_shape_spec(spec.shapes)}")
    argv.append("--loadInputs=" + ",".join(f"{_tensor_name(n)}:{f}" for n, f in spec.inputs.items()))
    if spec.iterations > 0:
        argv += [f"--iterations={int(spec.iterations)}", "--duration=0"]
    else:
        argv.append(f"--duration={_num(spec.duration_s)}")
    argv.append(f"--warmUp={int(spec.warmup_ms)}")
    argv += timing_flags(version, spec.timing)
    if spec.export_times:
        argv.append(f"--exportTimes={spec.export_times}")
    if spec.export_profile:
        argv.append(f"--exportProfile={spec.export_profile}")
    return argv


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
