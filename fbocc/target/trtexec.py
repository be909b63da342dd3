"""trtexec, the target's TensorRT benchmark tool: its versions, and its output parsed.

Pure functions only (no SSH, no files but what is passed in), so every rule here is tested without a
target. Version differences handled here:

- command lines (plugin library, precision per version, timing switches, build/bench argv) live in
  fbocc/target/trtexec_commands.py, built on `TrtVersion` / `supported` from here.
- version tag in the `&&&&` lines: `v8603` = 8.6.3, `v100200` = 10.2.0, `v110000` = 11.0.0 (7.x prints none).
- performance summary: 8.0-8.2 add an `End-to-End Host Latency` line (kept); 8.4 and later drop it; 7.x
  and older print another layout ("Host Latency" / "min: ... (end to end ...)", or "Average over N runs"),
  reported as unsupported in words, never parsed as an empty result; 11.x runs with CUDA graph on and
  without H2D/D2H transfers by default, flagged in the result.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from deploy.protocol import parse_trt_version

METRICS = ("Latency", "End-to-End Host Latency", "Enqueue Time", "H2D Latency", "GPU Compute Time", "D2H Latency")


# --- versions -----------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class TrtVersion:
    """A TensorRT version (major, minor, patch)."""

    major: int
    minor: int
    patch: int = 0

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @classmethod
    def parse(cls, text: str) -> TrtVersion:
        """'8.6.13.3', '10.8', 'v8603' or 'v100200' (the tag trtexec prints) -> TrtVersion.

        The one version parser is deploy.protocol's: the target reads its TensorRT with it too."""
        return cls(*parse_trt_version(text))


def supported(version: TrtVersion) -> bool:
    """Command lines are generated for TensorRT 8.6 and every later major version we know (10, 11)."""
    return version >= TrtVersion(8, 6) and version.major in (8, 10, 11)


Shape = list[int]


def _dims(shape: Shape) -> str:
    return "x".join(str(int(d)) for d in shape) if shape else "scalar"


# --- parsing the performance summary ------------------------------------------------------------


@dataclass
class Stats:
    """min/max/mean/median and percentiles of one timing metric, in milliseconds."""

    min: float
    max: float
    mean: float
    median: float
    percentiles: dict[str, float] = field(default_factory=dict)  # "90" -> ms

    def as_dict(self) -> dict[str, Any]:
        return {"min": self.min, "max": self.max, "mean": self.mean, "median": self.median,
                "percentiles": dict(self.percentiles)}


@dataclass
class TrtexecSummary:
    """What trtexec's `=== Performance summary ===` (and its first and last lines) say."""

    version: TrtVersion | None = None
    status: str | None = None  # "PASSED" / "FAILED" / None when the run did not finish
    command: str | None = None
    throughput_qps: float | None = None
    metrics: dict[str, Stats] = field(default_factory=dict)  # METRICS names
    total_host_walltime_s: float | None = None
    total_gpu_compute_s: float | None = None
    cv_percent: float | None = None  # "GPU compute time is unstable, with coefficient of variance = X%"
    warnings: list[str] = field(default_factory=list)
    cuda_graph: bool | None = None  # timed through a CUDA graph (11.x default); None: not known
    data_transfers: bool | None = None  # H2D/D2H copies timed (off by default in 11.x); None: not known
    unsupported: str | None = None  # why this output is not parsed (trtexec older than 8.0)

    @property
    def complete(self) -> bool:
        return self.throughput_qps is not None and "GPU Compute Time" in self.metrics

    @property
    def notes(self) -> list[str]:
        """What a reader of the numbers must know about how they were taken."""
        notes = []
        default = " (the TensorRT 11 default)" if self.version is not None and self.version.major >= 11 else ""
        if self.cuda_graph:
            notes.append(f"timed through a CUDA graph{default}: launch overhead is not in the latencies")
        if self.data_transfers is False:
            notes.append(f"no host<->device transfers{default}: Latency is GPU compute only, H2D/D2H not measured")
        return notes

    def as_dict(self) -> dict[str, Any]:
        return {
            "tensorrt_version": str(self.version) if self.version else None, "status": self.status,
            "command": self.command, "throughput_qps": self.throughput_qps,
            "metrics_ms": {k: v.as_dict() for k, v in self.metrics.items()},
            "total_host_walltime_s": self.total_host_walltime_s, "total_gpu_compute_s": self.total_gpu_compute_s,
            "gpu_compute_cv_percent": self.cv_percent, "warnings": list(self.warnings),
            "cuda_graph": self.cuda_graph, "data_transfers": self.data_transfers, "notes": self.notes,
            "unsupported": self.unsupported,
        }


_PREFIX = re.compile(r"^\s*(?:\[\d\d/\d\d/\d{4}-\d\d:\d\d:\d\d\]\s*)?(?:\[([IWEVF])\]\s*)?")
_STATUS = re.compile(r"&&&& (RUNNING|PASSED|FAILED) TensorRT\.trtexec(?: \[TensorRT (v\d+)\])?(?: \[b\d+\])?"
                     r"(?: # (.*))?")
_VERSION_LINE = re.compile(r"TensorRT version: (\d+\.\d+(?:\.\d+)*)")
_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
_METRIC = re.compile(r"^(" + "|".join(re.escape(m) for m in METRICS) + r"): (.*)$")
_FIELD = re.compile(r"(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\))\s*=?\s*" + _NUM + r" ms")
_CV = re.compile(r"coefficient of variance = " + _NUM + "%")
_OPTION = re.compile(r"^(CUDA Graph|Data transfers): (Enabled|Disabled)$")  # the "=== Inference Options ===" echo
# The layout of trtexec 7.x and older: a "Host Latency" block of "min: X ms (end to end Y ms)" lines, or
# "Average over N runs is X ms" (6.x and older).
_PRE8 = re.compile(r"^(?:min: [-+\d.eE]+ ms \(end to end|Average over \d+ runs is )")


def _line_body(line: str) -> tuple[str | None, str]:
    m = _PREFIX.match(line)
    level = m.group(1) if m else None
    return level, line[m.end():].rstrip() if m else line.rstrip()


def parse_summary(text: str) -> TrtexecSummary:
    """Parse trtexec's console output (8.6 and 10.x formats; timestamps optional)."""
    summary = TrtexecSummary()
    for raw in text.splitlines():
        level, body = _line_body(raw)
        status = _STATUS.search(raw)
        if status:
            if status.group(2):
                summary.version = TrtVersion.parse(status.group(2))
            else:  # trtexec tags its "&&&&" lines with its version from 8.0 on
                summary.unsupported = summary.unsupported or "pre-8"
            if status.group(1) != "RUNNING":
                summary.status = status.group(1)
            summary.command = (status.group(3) or "").strip() or summary.command
            continue
        vline = _VERSION_LINE.search(body)
        if vline and summary.version is None:
            summary.version = TrtVersion.parse(vline.group(1))
        if body.startswith("Throughput:"):
            m = re.search(_NUM + r" qps", body)
            if m:
                summary.throughput_qps = float(m.group(1))
            continue
        metric = _METRIC.match(body)
        if metric:
            values: dict[str, float] = {}
            pct: dict[str, float] = {}
            for fm in _FIELD.finditer(metric.group(2)):
                if fm.group(2):
                    pct[_pct_key(fm.group(2))] = float(fm.group(3))
                else:
                    values[fm.group(1)] = float(fm.group(3))
            if all(k in values for k in ("min", "max", "mean", "median")):
                summary.metrics[metric.group(1)] = Stats(values["min"], values["max"], values["mean"],
                                                         values["median"], pct)
            continue
        wall = re.match(r"Total Host Walltime: " + _NUM + " s", body)
        if wall:
            summary.total_host_walltime_s = float(wall.group(1))
            continue
        gpu = re.match(r"Total GPU Compute Time: " + _NUM + " s", body)
        if gpu:
            summary.total_gpu_compute_s = float(gpu.group(1))
            continue
        option = _OPTION.match(body)
        if option:
            enabled = option.group(2) == "Enabled"
            if option.group(1) == "CUDA Graph":
                summary.cuda_graph = enabled
            else:
                summary.data_transfers = enabled
            continue
        if _PRE8.match(body):
            summary.unsupported = summary.unsupported or "pre-8"
        cv = _CV.search(body)
        if cv:
            summary.cv_percent = float(cv.group(1))
        if level == "W" and body.startswith("* "):
            summary.warnings.append(body[2:].strip())
    _infer_run_options(summary)
    if summary.unsupported or (summary.version is not None and summary.version.major < 8):
        seen = f"TensorRT {summary.version}" if summary.version else "a trtexec older than TensorRT 8.0"
        summary.unsupported = (f"this is the output of {seen}, whose performance report has another layout; "
                               "fbocc reads trtexec of TensorRT 8.0 and later (8.6, 10.x, 11.x on the targets)")
        summary.metrics.clear()
        summary.throughput_qps = None
    return summary


def _infer_run_options(summary: TrtexecSummary) -> None:
    """CUDA graph / transfers from the command line when trtexec did not echo its inference options."""
    if summary.version is None or summary.command is None:
        return
    args = summary.command.split()
    if summary.version.major >= 11:  # 11.0 made --useCudaGraph and --noDataTransfers the defaults
        graph, transfers = "--noCudaGraph" not in args, "--includeDataTransfers" in args
    else:
        graph, transfers = "--useCudaGraph" in args, "--noDataTransfers" not in args
    if summary.cuda_graph is None:
        summary.cuda_graph = graph
    if summary.data_transfers is None:
        summary.data_transfers = transfers


def _pct_key(text: str) -> str:
    value = float(text)
    return str(int(value)) if value.is_integer() else str(value)


# --- exportTimes / exportProfile JSON -----------------------------------------------------------


@dataclass
class LayerTime:
    """One layer of `--exportProfile`: average time per run and share of the total."""

    name: str
    average_ms: float
    median_ms: float | None
    percentage: float | None


def parse_export_times(text: str) -> list[dict[str, float]]:
    """`--exportTimes` JSON -> one dict per timed query (keys like computeMs, latencyMs, h2dMs, d2hMs)."""
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError("exportTimes JSON is not a list of queries")
    queries = []
    for item in data:
        if isinstance(item, dict):
            queries.append({k: float(v) for k, v in item.items() if isinstance(v, int | float)})
    return queries


def parse_export_profile(text: str) -> tuple[int | None, list[LayerTime]]:
    """`--exportProfile` JSON -> (profiled run count, layers sorted by average time, slowest first)."""
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError("exportProfile JSON is not a list")
    count: int | None = None
    layers: list[LayerTime] = []
    for item in data:
        if not isinstance(item, dict):
            continue
        if "count" in item and "name" not in item:
            count = int(item["count"])
            continue
        if "name" in item:
            avg = item.get("averageMs")
            if avg is None and item.get("timeMs") is not None and count:
                avg = float(item["timeMs"]) / count
            layers.append(LayerTime(str(item["name"]), float(avg or 0.0),
                                    float(item["medianMs"]) if item.get("medianMs") is not None else None,
                                    float(item["percentage"]) if item.get("percentage") is not None else None))
    layers.sort(key=lambda layer: layer.average_ms, reverse=True)
    return count, layers


def query_stats(queries: list[dict[str, float]], key: str = "computeMs") -> Stats | None:
    """Recompute min/max/mean/median/p90/p95/p99 from per-query times (for histograms and checks)."""
    values = sorted(q[key] for q in queries if key in q)
    if not values:
        return None
    n = len(values)

    def pct(p: float) -> float:
        # trtexec's own definition: the value at index floor(n * p / 100), clamped
        return values[min(n - 1, max(0, int(n * p / 100)))]

    median = values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2
    return Stats(values[0], values[-1], sum(values) / n, median, {"90": pct(90), "95": pct(95), "99": pct(99)})


# --- failures: the decisive lines and a hint ----------------------------------------------------


@dataclass
class FailureDiagnosis:
    """Why a trtexec run failed, in the user's terms."""

    lines: list[str]
    hint: str | None


# "Plugin not found" also catches the untagged second line of 10.x/11.x's parser error ('[6] creator && "Plugin not
# found, ..."'), "fbocc plugins:" the ABI guard's refusal (plugins/common/loadedTensorRT.cpp).
_ERROR_MARKERS = ("[E]", "Error", "error:", "FAILED", "Assertion failed", "could not find plugin", "Plugin not found",
                  "fbocc plugins:")
# Where each TensorRT generation names the op whose plugin is missing, most specific first.
_MISSING_OP = (
    re.compile(r"pluginName:\s*'?([\w.-]+)"),  # 10.x/11.x plugin registry wording
    re.compile(r"[Cc]ould not find plugin:? ([\w.-]+),? version"),  # 8.x getPluginCreator
    re.compile(r"Cannot find plugin: ([\w.-]+)"),
    re.compile(r"operator: ([\w.-]+) \((?:check|import)FallbackPluginImporter\)"),  # 10.x/11.x parser summary
    re.compile(r"While parsing node number \d+ \[([\w.-]+) ->"),
)
_ABI_REFUSAL = re.compile(r"fbocc plugins: built with TensorRT \S+ headers, (?:loaded into|but the loading).*")


def diagnose_failure(text: str, *, plugin: str | None = None,
                     profile: dict[str, dict[str, Shape]] | None = None,
                     shapes: dict[str, Shape] | None = None, max_lines: int = 8) -> FailureDiagnosis:
    """The lines that decide a failed trtexec run, and a hint naming the library or the input at fault."""
    raw_lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    decisive = [ln for ln in raw_lines if any(m in ln for m in _ERROR_MARKERS)]
    # keep the first errors (the cause) and the last one (the verdict); drop repeats
    seen: set[str] = set()
    unique = []
    for ln in decisive:
        key = _line_body(ln)[1]
        if key not in seen:
            seen.add(key)
            unique.append(ln)
    if len(unique) > max_lines:
        unique = [*unique[: max_lines - 1], unique[-1]]
    if not unique:
        unique = raw_lines[-max_lines:]
    hint: str | None = None
    refusal = _ABI_REFUSAL.search(text)
    if refusal:
        return FailureDiagnosis(unique, refusal.group(0).split("fbocc plugins: ", 1)[1])
    missing_op = next((m.group(1) for pattern in _MISSING_OP for m in [pattern.search(text)] if m), None)
    if missing_op or "Plugin not found" in text:
        op = missing_op or "a custom op"
        loaded = re.findall(r"Loading (?:supplied |static |dynamic )?plugin library: (\S+)", text)
        library = loaded[-1] if loaded else plugin
        if library:
            hint = (f"plugin {op} is not registered by the library that was loaded ({library}): "
                    "check that this .so was built from our plugins for this TensorRT version "
                    "(fbocc cross-build) and pushed (fbocc push-to-target)")
        else:
            hint = f"plugin {op} is not registered and no plugin library was loaded: pass the plugin .so"
    elif re.search(r"does not satisfy any optimization profile|exceed min ~ max range|profileM(?:ax|in)Dims", text):
        culprit = _outside_profile(profile or {}, shapes or {})
        named = re.search(r"[Ff]or input:? '?([\w./:-]+?)'?[,:\s]", text)
        if culprit:
            name, shape, prof = culprit
            hint = (f"input {name!r} has shape {_dims(shape)}, outside the engine's profile "
                    f"min {_dims(prof['min'])} .. max {_dims(prof['max'])}: rebuild with a profile that covers it "
                    "(re-export the samples, then fbocc remote-bench --rebuild)")
        elif named:
            hint = f"input {named.group(1)!r} has a shape outside the engine's optimization profile"
        else:
            hint = "an input shape is outside the engine's optimization profile: rebuild the engine (--rebuild)"
    elif "Cannot find binding of given name" in text or "Cannot find input tensor with name" in text:
        hint = "a --loadInputs/--shapes name is not an input of the engine: the samples and the ONNX disagree"
    elif re.search(r"[Oo]ut of memory|OOM|Requested amount of GPU memory", text):
        hint = "the GPU ran out of memory: close other GPU processes or lower the workspace"
    return FailureDiagnosis(unique, hint)


def _outside_profile(profile: dict[str, dict[str, Shape]],
                     shapes: dict[str, Shape]) -> tuple[str, Shape, dict[str, Shape]] | None:
    for name, shape in shapes.items():
        prof = profile.get(name)
        if not prof or len(prof["min"]) != len(shape):
            continue
        if any(d < lo or d > hi for d, lo, hi in zip(shape, prof["min"], prof["max"], strict=True)):
            return name, shape, prof
    return None


def shape_outside_profile(profile: dict[str, dict[str, Shape]], shapes: dict[str, Shape]) -> str | None:
    """Name of the first input whose shape falls outside the profile, or None."""
    found = _outside_profile(profile, shapes)
    return found[0] if found else None
