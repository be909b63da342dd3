"""`fbocc remote-bench`: build (or reuse) engines on the target from the pushed artefact set, benchmark
them with trtexec on one frame's real inputs, and keep one result document per run.

Remote layout (written by `fbocc push-to-target`), under the target's workdir:

    current/            the active artefact set: one *.onnx, the plugin *.so, samples/, deploy/
    engines/            engine cache: <precision>-<key>.engine, key = (ONNX, plugin, precision,
                        TensorRT version, profile, builder); timing-<TensorRT version>.cache
    runs/<run_id>/      one benchmark's exports (times, profile, tegrastats), removed once fetched

Every remote command runs through `TargetSession.run` (own process group, killed on timeout or Ctrl-C);
every remote path is shell-quoted. The target side is deploy/bench.py (environment, cache key,
tegrastats) and trtexec; command lines come from fbocc.target.trtexec for the target's TensorRT version.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import secrets
import shlex
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from fbocc.config import Target
from fbocc.errors import ConfigError, FboccError, Interrupted, RemoteError
from fbocc.results.history import BenchResult, new_run_id, save_result
from fbocc.target.transport import TargetOutcome, TargetSession, quote
from fbocc.target.trtexec import (
    GONE,
    PRECISIONS,
    TYPINGS,
    BenchSpec,
    BuildSpec,
    PrecisionPlan,
    TimingMode,
    TrtVersion,
    bench_command,
    build_command,
    diagnose_failure,
    graph_for,
    parse_export_profile,
    parse_export_times,
    parse_summary,
    precision_plan,
    query_stats,
    supported,
)

LineSink = Callable[[str], None]
BACKENDS = ("tensorrt", "onnxruntime")
BUILDERS = ("trtexec", "python")


@dataclass(frozen=True)
class BenchOptions:
    """What `fbocc remote-bench` was asked to do (defaults from [bench])."""

    precisions: tuple[str, ...] = ("fp32", "fp16")
    iterations: int = 0
    duration_s: float = 10.0
    warmup_ms: int = 500
    timing: TimingMode = field(default_factory=TimingMode)
    typing: str | None = None  # None: strongly typed where the target's TensorRT has it
    rebuild: bool = False
    timeout_s: float = 3600.0
    backend: str = "tensorrt"
    builder: str = "trtexec"
    frame: int = 0
    tegrastats_interval_ms: int = 500
    keep_remote_run: bool = False

    def check(self) -> None:
        """Raise ConfigError naming the option that is wrong."""
        if self.backend not in BACKENDS:
            raise ConfigError(f"--backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.builder not in BUILDERS:
            raise ConfigError(f"--builder {self.builder!r} is not one of {', '.join(BUILDERS)}")
        gone = [p for p in self.precisions if p in GONE]
        if gone:
            raise ConfigError(f"--precision {gone[0]}: {GONE[gone[0]]}")
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad or not self.precisions:
            raise ConfigError(f"--precision {','.join(bad) or '(empty)'}: use a comma list of {', '.join(PRECISIONS)}",
                              fix="e.g. --precision fp32,fp16")
        if self.typing is not None and self.typing not in TYPINGS:
            raise ConfigError(f"--typing {self.typing!r} is not one of auto, {', '.join(TYPINGS)}")
        if self.iterations < 0 or (self.duration_s <= 0 and self.iterations == 0):
            raise ConfigError("give --iterations N (N > 0) or --duration S (S > 0)")
        if self.warmup_ms < 0 or self.timeout_s <= 0 or self.frame < 0:
            raise ConfigError("--warmup, --timeout and --frame must not be negative")


@dataclass(frozen=True)
class RemoteArtifacts:
    """Where the pushed artefact set lies on the target."""

    root: str
    onnx: str
    plugin: str | None
    samples: str
    deploy: str
    set_hash: str | None = None
    manifest: dict[str, Any] = field(default_factory=dict, compare=False)
    graphs: dict[str, str] = field(default_factory=dict)  # precision -> remote graph (the manifest's `graphs`)
    pid_file: str | None = None  # where deploy/bench.py run keeps the running step's process group id


@dataclass
class TargetBench:
    """One target's runs: the result documents and where they were saved."""

    target: str
    results: list[BenchResult] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)


def _argv(words: Sequence[str]) -> str:
    return " ".join(quote(w) for w in words)


def _tagged(stdout: str, tag: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(tag + " "):
            return json.loads(line[len(tag) + 1:])
    return None


def locate_artifacts(session: TargetSession) -> RemoteArtifacts:
    """The pushed set under `<workdir>/current`: from its `fbocc-set.json` (push-to-target writes it), else
    by listing; a missing or incomplete set is one error naming what is missing."""
    root = str(PurePosixPath(session.workdir()) / "current")
    listing = session.run(
        f"cd {quote(root)} 2>/dev/null || exit 3; for f in *.onnx *.so; do [ -f \"$f\" ] && echo \"$f\"; done; "
        "[ -f samples/manifest.json ] && echo samples/manifest.json; [ -f deploy/bench.py ] && echo deploy/bench.py;"
        " [ -f fbocc-set.json ] && { echo FBOCC_SET; cat fbocc-set.json; };"
        " [ -f samples/manifest.json ] && { echo; echo FBOCC_MANIFEST; cat samples/manifest.json; }; exit 0",
        timeout=60, check=False)
    if listing.exit_code == 3:
        raise RemoteError(f"nothing has been pushed to {session.label}:{root}", where=session.label,
                          fix=f"run `fbocc push-to-target {session.label}` first")
    listed, _, manifest_json = listing.stdout.partition("\nFBOCC_MANIFEST\n")
    head, _, set_json = listed.partition("FBOCC_SET\n")
    names = head.split()
    set_doc: dict[str, Any] = {}
    if set_json.strip():
        try:
            set_doc = json.loads(set_json)
        except ValueError:
            set_doc = {}
    onnx = [set_doc["onnx"]] if set_doc.get("onnx") else [n for n in names if n.endswith(".onnx")]
    plugins = [set_doc["plugin"]] if set_doc.get("plugin") else [n for n in names if n.endswith(".so")]
    if len(onnx) != 1:
        raise RemoteError(f"{session.label}:{root} holds {len(onnx)} ONNX files ({', '.join(onnx) or 'none'}), "
                          "expected exactly one", where=session.label, fix="re-run `fbocc push-to-target`")
    if len(plugins) > 1:
        raise RemoteError(f"{session.label}:{root} holds several plugin libraries: {', '.join(plugins)}",
                          where=session.label, fix="re-run `fbocc push-to-target` with one plugin library")
    for needed in ("samples/manifest.json", "deploy/bench.py"):
        if needed not in names:
            raise RemoteError(f"{session.label}:{root}/{needed} is missing", where=session.label,
                              fix="re-run `fbocc push-to-target` (with samples): the artefact set is incomplete")
    try:
        manifest = json.loads(manifest_json)
    except ValueError as exc:
        raise RemoteError(f"{session.label}:{root}/samples/manifest.json is not valid JSON: {exc}",
                          where=session.label, fix="re-run `fbocc push-to-target`") from exc
    graphs = {"fp32": f"{root}/{onnx[0]}"}
    for entry in manifest.get("graphs") or []:  # files relative to samples/ (docs/precision.md)
        if isinstance(entry, dict) and entry.get("precision") and entry.get("file"):
            graphs[str(entry["precision"])] = posixpath.normpath(f"{root}/samples/{entry['file']}")
    return RemoteArtifacts(root=root, onnx=f"{root}/{onnx[0]}", plugin=f"{root}/{plugins[0]}" if plugins else None,
                           samples=f"{root}/samples", deploy=f"{root}/deploy", set_hash=set_doc.get("set"),
                           manifest=manifest, graphs=graphs)


def capture_environment(session: TargetSession, arts: RemoteArtifacts,
                        options: BenchOptions | None = None) -> dict[str, Any]:
    """deploy/bench.py env: versions, release, power mode, clocks, tegrastats as found on the target;
    with `options` (TensorRT backend) also the engine cache keys (`engine_keys`), in the same round trip."""
    t = session.target
    argv = [t.python, arts.deploy + "/bench.py", "env", "--trtexec", t.trtexec]
    if options is not None:
        # key every graph/typing a precision may build with; the host picks once the version is known
        requests = [f"{p}:{typing}:{arts.graphs[graph_for(p, typing)]}" for p in options.precisions
                    for typing in TYPINGS if graph_for(p, typing) in arts.graphs]
        argv += ["--samples", arts.samples, "--builder", options.builder,
                 "--engine-dir", f"{session.workdir()}/engines"]
        for request in requests:
            argv += ["--request", request]
        if arts.plugin:
            argv += ["--plugin", arts.plugin]
    res = session.run(_argv(argv), timeout=600, check=False)
    env = _tagged(res.stdout, "FBOCC_ENV")
    if res.exit_code != 0 or env is None:
        tail = "\n".join((res.stderr or res.stdout).strip().splitlines()[-5:])
        raise RemoteError(f"environment check on {session.label} failed (exit {res.exit_code}):\n{tail}",
                          where=session.label,
                          fix=f"check that `{t.python}` is Python >= 3.8 on the target ([targets.{t.name}] python)")
    return env


def frame_inputs(manifest: dict[str, Any], samples_dir: str, frame: int) -> tuple[str, dict[str, str],
                                                                                   dict[str, list[int]]]:
    """(frame id, every network input -> remote .dat path, dynamic inputs -> this frame's shape)."""
    frames = manifest.get("frames", [])
    if frame >= len(frames):
        raise ConfigError(f"--frame {frame}: the samples have {len(frames)} frames", fix="pick 0..len-1")
    f = frames[frame]
    names = [t["name"] for t in manifest["inputs"]]
    inputs = {n: f"{samples_dir}/{f['inputs'][n]['file']}" for n in names}
    profile = manifest.get("profile") or {}
    shapes = {n: list(f["inputs"][n]["shape"]) for n in names if n in profile}
    return str(f.get("id", frame)), inputs, shapes


def _prefixed(on_line: LineSink | None, label: str) -> LineSink | None:
    if on_line is None:
        return None
    return lambda line: on_line(f"[{label}] {line}")


def pid_file_for(session: TargetSession) -> str:
    """A fresh path on the target for the running step's process group id (see `stop_remote_run`)."""
    return f"{session.workdir()}/runs/.fbocc-{secrets.token_hex(6)}.pgid"


def stop_remote_run(session: TargetSession, pid_file: str) -> None:
    """Stop the step running under `pid_file` on the target (TERM, then KILL its process group)."""
    g = '"-$g"'
    session.run(f"[ -f {quote(pid_file)} ] || exit 0; g=$(cat {quote(pid_file)}); kill -TERM -- {g} 2>/dev/null; "
                f"i=0; while [ $i -lt 30 ] && kill -0 -- {g} 2>/dev/null; do sleep 0.1; i=$((i+1)); done; "
                f"kill -KILL -- {g} 2>/dev/null; rm -f {quote(pid_file)}; exit 0", timeout=20, check=False)


def _wrapped(session: TargetSession, arts: RemoteArtifacts, argv: Sequence[str]) -> str:
    """`argv` under deploy/bench.py run, which records its process group id in the pid file."""
    head = [session.target.python, arts.deploy + "/bench.py", "run"]
    if arts.pid_file:
        head += ["--pid-file", arts.pid_file]
    return _argv([*head, "--", *argv])


def bench_target(session: TargetSession, options: BenchOptions, results_dir: Path, *,
                 on_line: LineSink | None = None, pid_file: str | None = None) -> TargetBench:
    """Every requested precision on one target: engine (cached or built), benchmark, result saved."""
    options.check()
    label = session.label
    sink = _prefixed(on_line, label)
    arts = replace(locate_artifacts(session), pid_file=pid_file or pid_file_for(session))
    env = capture_environment(session, arts, options if options.backend == "tensorrt" else None)
    keys = env.pop("engine_keys", None)
    keys_error = env.pop("engine_keys_error", None)
    manifest = arts.manifest
    outcome = TargetBench(target=label)
    if options.backend == "onnxruntime":
        result = _bench_onnxruntime(session, arts, env, options, sink)
        outcome.results.append(result)
        outcome.paths.append(save_result(results_dir, result))
        return outcome
    trt = env.get("tensorrt", {})
    if not trt.get("trtexec_available"):
        raise RemoteError(f"trtexec is not usable on {label}: {trt.get('reason', 'not found')}", where=label,
                          fix=f"set [targets.{session.target.name}] trtexec to its path "
                          "(default /usr/src/tensorrt/bin/trtexec) or install TensorRT")
    if not trt.get("version"):
        raise RemoteError(f"cannot tell the TensorRT version on {label}", where=label,
                          fix="check that `trtexec --help` prints its '&&&& RUNNING TensorRT.trtexec [TensorRT vNNNN]' "
                          "line")
    version = TrtVersion.parse(trt["version"])
    if not supported(version):
        raise RemoteError(f"TensorRT {version} on {label} is not supported (8.6, 10.x, 11.x are)", where=label,
                          fix="use a DRIVE OS 6.0.10+ / JetPack 6 image")
    if not keys:
        raise RemoteError(f"cannot compute the engine cache keys on {label}: {keys_error or 'no answer'}",
                          where=label,
                          fix="re-run `fbocc push-to-target` (the samples or ONNX on the target are damaged)")
    plans = [_plan(session, arts, version, precision, options, keys) for precision in options.precisions]
    frame_id, inputs, shapes = frame_inputs(manifest, arts.samples, options.frame)
    profile = manifest.get("profile") or {}
    for plan, key in plans:
        result = _bench_precision(session, arts, env, version, plan, options, frame_id, inputs, shapes,
                                  profile, key, sink)
        outcome.results.append(result)
        outcome.paths.append(save_result(results_dir, result))
    return outcome


def _plan(session: TargetSession, arts: RemoteArtifacts, version: TrtVersion, precision: str,
          options: BenchOptions, keys: dict[str, Any]) -> tuple[PrecisionPlan, dict[str, Any]]:
    """The graph and switches of `precision` on this target, and its engine cache key; one error naming the fix."""
    try:
        plan = precision_plan(version, precision, options.typing)
    except ValueError as exc:
        raise ConfigError(f"{precision} on {session.label} (TensorRT {version}): {exc}") from exc
    key = keys.get(f"{precision}/{plan.typing}")
    if key is None:
        raise RemoteError(f"the pushed set on {session.label} has no {plan.graph} graph, which {precision} needs on "
                          f"TensorRT {version} (graphs pushed: {', '.join(sorted(arts.graphs))})", where=session.label,
                          fix=f"export it (fbocc export --precision fp32,{plan.graph}) and push again "
                          f"(fbocc push-to-target {session.label})")
    return plan, key


def _engine(session: TargetSession, arts: RemoteArtifacts, version: TrtVersion, plan: PrecisionPlan,
            options: BenchOptions, profile: dict[str, Any], key: dict[str, Any],
            sink: LineSink | None) -> dict[str, Any]:
    t = session.target
    precision = plan.precision
    engines = str(PurePosixPath(session.workdir()) / "engines")
    engine = str(key["engine"])
    exists = bool(key["exists"])
    info = {"key": key["key"], "path": engine, "cached": exists and not options.rebuild,
            "onnx_sha256": key["onnx_sha256"], "plugin_sha256": key["plugin_sha256"], "build_seconds": None,
            "command": None, "graph": plan.graph, "typing": plan.typing, "flags": list(plan.flags)}
    if info["cached"]:
        if sink:
            sink(f"engine {precision}: cached {engine}")
        return info
    if options.builder == "python":
        cmd = [t.python, arts.deploy + "/create_engine.py", "--onnx", key["onnx"], "--samples", arts.samples,
               "--precision", precision, "--typing", plan.typing, "--engine-dir", engines, "--timing-cache",
               f"{engines}/timing-{version}.cache", "--rebuild"]
        if arts.plugin:
            cmd += ["--plugin", arts.plugin]
        shell = f"mkdir -p {quote(engines)} && {_wrapped(session, arts, cmd)}"
    else:
        part = engine + ".part"
        cmd = build_command(t.trtexec, version, BuildSpec(
            onnx=key["onnx"], engine=part, plugin=arts.plugin, precision=precision, profile=profile,
            timing_cache=f"{engines}/timing-{version}.cache", typing=plan.typing))
        # the engine appears at its final path only when trtexec succeeded
        build = (f"{_argv(cmd)}; rc=$?; if [ $rc -eq 0 ] && [ -s {quote(part)} ]; "
                 f"then mv -f {quote(part)} {quote(engine)}; else rm -f {quote(part)}; exit $((rc ? rc : 1)); fi")
        shell = f"mkdir -p {quote(engines)} && {_wrapped(session, arts, ['/bin/sh', '-c', build])}"
    if sink:
        sink(f"engine {precision}: building with {options.builder} -> {engine}")
    info["command"] = cmd


    started = time.monotonic()
    res = session.run(shell, timeout=options.timeout_s, check=False, on_line=sink)
    info["build_seconds"] = round(time.monotonic() - started, 3)
    if res.exit_code != 0:
        text = res.stdout + "\n" + res.stderr
        d = diagnose_failure(text, plugin=arts.plugin)
        hint = d.hint
        if options.builder == "python" and "tensorrt Python module is not importable" in text:
            d.lines = [ln for ln in text.splitlines() if "create_engine:" in ln] or d.lines
            hint = ("this target has no TensorRT Python bindings: use --builder trtexec (the default), "
                    "or install python3-libnvinfer")
        raise RemoteError(f"the {precision} engine build failed on {session.label} (exit {res.exit_code}):\n  "
                          + "\n  ".join(d.lines), where=session.label,
                          fix=hint or "read the decisive lines above; the whole log was streamed")
    if options.builder == "python":
        built = _tagged(res.stdout, "FBOCC_ENGINE")
        if built:
            info["path"] = built["engine"]
    return info


def _bench_precision(session: TargetSession, arts: RemoteArtifacts, env: dict[str, Any], version: TrtVersion,
                     plan: PrecisionPlan, options: BenchOptions, frame_id: str, inputs: dict[str, str],
                     shapes: dict[str, list[int]], profile: dict[str, Any], key: dict[str, Any],
                     sink: LineSink | None) -> BenchResult:
    t = session.target
    precision = plan.precision
    engine = _engine(session, arts, version, plan, options, profile, key, sink)
    run_id = new_run_id(session.label, precision)
    run_dir = str(PurePosixPath(session.workdir()) / "runs" / run_id)
    spec = BenchSpec(engine=engine["path"], plugin=arts.plugin, inputs=inputs, shapes=shapes,
                     iterations=options.iterations, duration_s=options.duration_s, warmup_ms=options.warmup_ms,
                     timing=options.timing, export_times=f"{run_dir}/times.json",
                     export_profile=f"{run_dir}/profile.json")
    cmd = bench_command(t.trtexec, version, spec)
    wrapper = [t.python, arts.deploy + "/bench.py", "run", "--tegrastats-log", f"{run_dir}/tegrastats.log",
               "--interval-ms", str(options.tegrastats_interval_ms)]
    if arts.pid_file:
        wrapper += ["--pid-file", arts.pid_file]
    wrapper += ["--", *cmd]
    if sink:
        sink(f"benchmark {precision}: frame {frame_id}, "
             + (f"{options.iterations} iterations" if options.iterations else f"{options.duration_s:g} s"))
    try:
        res = session.run(f"mkdir -p {quote(run_dir)} && {_argv(wrapper)}", timeout=options.timeout_s,
                          check=False, on_line=sink)
        summary = parse_summary(res.stdout)
        if res.exit_code != 0 or not summary.complete:
            d = diagnose_failure(res.stdout + "\n" + res.stderr, plugin=arts.plugin, profile=profile, shapes=shapes)
            raise RemoteError(f"the {precision} benchmark failed on {session.label} (exit {res.exit_code}):\n  "
                              + "\n  ".join(d.lines), where=session.label,
                              fix=d.hint or "read the decisive lines above; the whole log was streamed")
        per_query: dict[str, list[float]] = {}
        layers: list[dict[str, Any]] = []
        with tempfile.TemporaryDirectory(prefix="fbocc-bench-") as tmp:
            local = Path(tmp)
            session.get(f"{run_dir}/times.json", local / "times.json")
            queries = parse_export_times((local / "times.json").read_text())
            per_query = {"compute": [q["computeMs"] for q in queries if "computeMs" in q],
                         "latency": [q["latencyMs"] for q in queries if "latencyMs" in q]}
            try:
                session.get(f"{run_dir}/profile.json", local / "profile.json")
                _, layer_times = parse_export_profile((local / "profile.json").read_text())
                layers = [{"name": lt.name, "average_ms": lt.average_ms, "median_ms": lt.median_ms,
                           "percentage": lt.percentage} for lt in layer_times]
            except Exception as exc:  # a missing profile costs the per-layer table, not the run
                layers = [{"unavailable": f"exportProfile not readable: {exc}"}]
        run_info = _tagged(res.stdout, "FBOCC_RUN") or {}
    finally:
        if not options.keep_remote_run:
            _remove_run_dir(session, run_dir)
    return BenchResult(
        run_id=run_id, target=session.label, backend="tensorrt", precision=precision, summary=summary.as_dict(),
        address=session.address, builder=options.builder, engine=engine,
        samples={"frame": frame_id, "inputs": sorted(inputs), "shapes": shapes, "set": arts.set_hash},
        options={"iterations": options.iterations, "duration_s": options.duration_s,
                 "warmup_ms": options.warmup_ms, "rebuild": options.rebuild, "timing": options.timing.as_dict()},
        command=cmd, per_query_ms=per_query, layers=layers, environment=env,
        tegrastats=run_info.get("tegrastats", {"available": False, "reason": "runner reported nothing"}))


def _remove_run_dir(session: TargetSession, run_dir: str) -> None:
    # over SFTP: no remote process to start for a cleanup (the exports are flat files)
    try:
        sftp = session.sftp()
        for name in sftp.listdir(run_dir):
            sftp.remove(f"{run_dir}/{name}")
        sftp.rmdir(run_dir)
    except OSError:
        session.run(f"rm -rf {quote(run_dir)}", timeout=60, check=False)


def _bench_onnxruntime(session: TargetSession, arts: RemoteArtifacts, env: dict[str, Any],
                       options: BenchOptions, sink: LineSink | None) -> BenchResult:
    """deploy/run_sequence.py --backend onnxruntime: per-frame latencies, labelled as ONNX Runtime."""
    t = session.target
    run_id = new_run_id(session.label, "fp32", "onnxruntime")
    run_dir = str(PurePosixPath(session.workdir()) / "runs" / run_id)
    script = arts.deploy + "/run_sequence.py"
    repeat = max(1, options.iterations)
    cmd = [t.python, script, "--backend", "onnxruntime", "--set-dir", arts.samples, "--onnx", arts.onnx,
           "--out", f"{run_dir}/out", "--repeat", str(repeat)]
    if sink:
        sink(f"onnxruntime: every frame x{repeat} (CPU, not a TensorRT number)")
    try:
        res = session.run(f"test -f {quote(script)} || {{ echo FBOCC_NO_SCRIPT; exit 2; }}; "
                          f"mkdir -p {quote(run_dir)} && {_wrapped(session, arts, cmd)}",
                          timeout=options.timeout_s, check=False, on_line=sink)
    finally:
        if not options.keep_remote_run:
            session.run(f"rm -rf {quote(run_dir)}", timeout=60, check=False)
    if "FBOCC_NO_SCRIPT" in res.stdout.splitlines():
        raise RemoteError(f"{session.label}:{script} is missing: the pushed deploy/ has no ONNX Runtime runner",
                          where=session.label, fix="update fbocc and re-run `fbocc push-to-target`")
    doc = _tagged(res.stdout, "FBOCC_RESULT")
    if res.exit_code != 0 or doc is None:
        error = _tagged(res.stdout, "FBOCC_ERROR") or {}
        raise RemoteError(f"the ONNX Runtime run failed on {session.label} (exit {res.exit_code}): "
                          f"{error.get('message') or (res.stderr or res.stdout).strip()[-400:]}",
                          where=session.label, fix=error.get("fix") or "re-run `fbocc push-to-target` and retry")
    per_frame = doc.get("per_frame") or []
    latencies = [float(v) for f in per_frame for v in f.get("latency_ms", [])] or \
        [float(v) for v in doc.get("latency_ms", [])]
    stats = query_stats([{"latencyMs": v} for v in latencies], key="latencyMs")
    if stats is None:
        raise RemoteError(f"the ONNX Runtime run on {session.label} reported no latencies", where=session.label,
                          fix="check deploy/run_sequence.py's FBOCC_RESULT line")
    summary = {"tensorrt_version": None, "status": "PASSED", "command": " ".join(cmd), "throughput_qps":
               1000.0 * len(latencies) / sum(latencies) if sum(latencies) > 0 else None,
               "metrics_ms": {"Latency": stats.as_dict()}, "total_host_walltime_s": sum(latencies) / 1000.0,
               "total_gpu_compute_s": None, "gpu_compute_cv_percent": None, "warnings": [],
               "backend_versions": doc.get("versions", {}),
               "note": "ONNX Runtime on the target's CPU via deploy/run_sequence.py: not a TensorRT number"}
    return BenchResult(
        run_id=run_id, target=session.label, backend="onnxruntime", precision=str(doc.get("precision", "fp32")),
        summary=summary, address=session.address, builder=None, engine={},
        samples={"frames": doc.get("frames"), "history": doc.get("history", []), "set": arts.set_hash},
        options={"repeat": repeat}, command=cmd, per_query_ms={"latency": latencies}, environment=env,
        tegrastats={"available": False, "reason": "not sampled for ONNX Runtime runs"})


def remote_bench(targets: Sequence[Target], options: BenchOptions, results_dir: Path, *,
                 known_hosts: Path | None = None, accept_new: bool = False,
                 on_line: LineSink | None = None) -> list[TargetOutcome[TargetBench]]:
    """Benchmark on every target (in parallel when several); one outcome per target, in order.

    One target runs in this thread (Ctrl-C reaches TargetSession.run, which kills the remote group) and
    its failure is raised. Several run in worker threads; Ctrl-C here stops each target's running step
    through its pid file, waits for the workers, and raises Interrupted.
    """
    options.check()
    if len(targets) == 1:
        started = time.monotonic()
        with TargetSession(targets[0], known_hosts=known_hosts, accept_new=accept_new) as session:
            value = bench_target(session, options, results_dir, on_line=on_line)
        return [TargetOutcome(targets[0], value=value, seconds=time.monotonic() - started)]

    live: dict[str, tuple[TargetSession, str]] = {}
    lock = threading.Lock()
    cancelled = threading.Event()

    def one(target: Target) -> TargetOutcome[TargetBench]:
        started = time.monotonic()
        try:
            with TargetSession(target, known_hosts=known_hosts, accept_new=accept_new) as session:
                pid_file = pid_file_for(session)
                with lock:
                    live[target.name] = (session, pid_file)
                try:
                    if cancelled.is_set():
                        raise Interrupted(f"interrupted before {target.name} started")
                    value = bench_target(session, options, results_dir, on_line=on_line, pid_file=pid_file)
                finally:
                    with lock:
                        live.pop(target.name, None)
            return TargetOutcome(target, value=value, seconds=time.monotonic() - started)
        except FboccError as exc:
            return TargetOutcome(target, error=exc, seconds=time.monotonic() - started)

    pool = ThreadPoolExecutor(max_workers=len(targets), thread_name_prefix="fbocc-bench")
    futures = [pool.submit(one, t) for t in targets]
    try:
        while not all(f.done() for f in futures):
            wait(futures, timeout=0.2)
    except KeyboardInterrupt:
        cancelled.set()
        with lock:
            running = list(live.values())
        for session, pid_file in running:
            with contextlib.suppress(FboccError):  # a lost connection: sshd ends its session's processes
                stop_remote_run(session, pid_file)
        wait(futures, timeout=60)
        pool.shutdown(wait=False, cancel_futures=True)
        raise Interrupted(f"interrupted; the running remote steps on {', '.join(t.name for t in targets)} "
                          "were stopped") from None
    pool.shutdown(wait=True)
    return [f.result() for f in futures]


def shell_words(argv: Sequence[str]) -> str:
    """The command as a user would paste it (for messages and the result document)."""
    return shlex.join(argv)
