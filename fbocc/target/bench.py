"""`fbocc remote-bench`: get the engine of each precision on the target (fbocc.target.contract's one
engine function: cached or built), benchmark it with trtexec on one frame's real inputs, and keep one
result document per run, naming the engine it timed.

The remote layout and every target-side step are fbocc.target.contract's; trtexec command lines come
from fbocc.target.trtexec for the target's TensorRT version. Every remote command runs through
`TargetSession.run` (own process group, killed on timeout or Ctrl-C); every remote path is quoted.
The sample manifest is the host's own copy when it is the one pushed (same sha256), else the pushed
one, checked either way.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from deploy import protocol
from fbocc.config import Target
from fbocc.errors import ConfigError, FboccError, Interrupted, RemoteError
from fbocc.results.history import BACKENDS, BenchResult, new_run_id, save_result
from fbocc.target.contract import (
    BUILDERS,
    RUNS,
    EngineRecord,
    PushedSet,
    engine_plan,
    ensure_engine,
    locate_pushed_set,
    pid_file_for,
    probe_target,
    pushed_samples_manifest,
    require_tensorrt,
    run_dir,
    supervised,
    tagged,
)
from fbocc.target.supervision import MARKER_SUFFIX, clean_leftovers, workdir_lock
from fbocc.target.transport import TargetOutcome, TargetSession, quote
from fbocc.target.trtexec import (
    TrtVersion,
    diagnose_failure,
    parse_export_profile,
    parse_export_times,
    parse_summary,
    query_stats,
)
from fbocc.target.trtexec_commands import GONE, PRECISIONS, TYPINGS, BenchSpec, TimingMode, bench_command

LineSink = Callable[[str], None]


@dataclass(frozen=True)
class BenchOptions:
    """What `fbocc remote-bench` was asked to do (defaults from [bench])."""

    precisions: tuple[str, ...] = ("fp32", "fp16")
    iterations: int = 0
    duration_s: float = 10.0
    warmup_ms: int = 500
    timing: TimingMode = field(default_factory=TimingMode)  # set explicitly on every TensorRT version
    typing: str | None = None  # None: strongly typed where the target's TensorRT has it
    rebuild: bool = False
    timeout_s: float = 3600.0
    backend: str = "tensorrt"
    builder: str = "trtexec"
    frame: int = 0
    tegrastats_interval_ms: int = 500
    keep_remote_run: bool = False
    wait_lock_s: float = 0.0  # another fbocc in the workdir: wait this long for it, else fail

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


@dataclass
class TargetBench:
    """One target's runs: the result documents and where they were saved."""

    target: str
    results: list[BenchResult] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)


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


def bench_target(session: TargetSession, options: BenchOptions, results_dir: Path, *,
                 on_line: LineSink | None = None, pid_file: str | None = None,
                 samples_dir: Path | None = None) -> TargetBench:
    """Every requested precision on one target: engine (cached or built), benchmark, result saved.

    `samples_dir`: the host's export of the pushed samples; its manifest is used when it is the pushed one.
    """
    options.check()
    sink = _prefixed(on_line, session.label)
    with session.doing("benchmarking"), workdir_lock(session, "benchmarking", options.wait_lock_s, sink):
        clean_leftovers(session, str(PurePosixPath(session.workdir()) / RUNS), sink)
        return _bench_target(session, options, results_dir, sink, pid_file or pid_file_for(session), samples_dir)


def _bench_target(session: TargetSession, options: BenchOptions, results_dir: Path, sink: LineSink | None,
                  pid_file: str, samples_dir: Path | None) -> TargetBench:
    label = session.label
    pushed = locate_pushed_set(session)
    probe = probe_target(session, pushed, precisions=options.precisions,
                         builder=options.builder if options.backend == "tensorrt" else None)
    env = probe.environment
    outcome = TargetBench(target=label)
    if options.backend == "onnxruntime":
        result = _bench_onnxruntime(session, pushed, env, options, sink, pid_file)
        outcome.results.append(result)
        outcome.paths.append(save_result(results_dir, result))
        return outcome
    version = require_tensorrt(session, probe, pushed=pushed)  # stops a plugin built for another major
    manifest = pushed_samples_manifest(session, pushed, samples_dir)
    frame_id, inputs, shapes = frame_inputs(manifest, pushed.samples, options.frame)
    profile = manifest.get("profile") or {}
    for precision in options.precisions:  # every precision buildable here, before the first build
        engine_plan(session, pushed, probe, version, precision, options.typing)
    for precision in options.precisions:
        engine = ensure_engine(session, pushed, probe, precision, rebuild=options.rebuild,
                               timeout_s=options.timeout_s, on_line=sink, pid_file=pid_file, typing=options.typing)
        result = _bench_precision(session, pushed, env, version, engine, options, frame_id, inputs, shapes,
                                  profile, sink, pid_file)
        outcome.results.append(result)
        outcome.paths.append(save_result(results_dir, result))
    return outcome


def _bench_precision(session: TargetSession, pushed: PushedSet, env: dict[str, Any], version: TrtVersion,
                     engine: EngineRecord, options: BenchOptions, frame_id: str, inputs: dict[str, str],
                     shapes: dict[str, list[int]], profile: dict[str, Any], sink: LineSink | None,
                     pid_file: str) -> BenchResult:
    t = session.target
    precision = engine.precision
    run_id = new_run_id(session.label, precision)
    remote_run = run_dir(session, run_id)
    spec = BenchSpec(engine=engine.path, plugin=pushed.plugin, inputs=inputs, shapes=shapes,
                     iterations=options.iterations, duration_s=options.duration_s, warmup_ms=options.warmup_ms,
                     timing=options.timing, export_times=f"{remote_run}/times.json",
                     export_profile=f"{remote_run}/profile.json")
    cmd = bench_command(t.trtexec, version, spec)
    step = supervised(session, pushed, cmd, pid_file=pid_file, tegrastats_log=f"{remote_run}/tegrastats.log",
                      interval_ms=options.tegrastats_interval_ms)
    if sink:
        sink(f"benchmark {precision}: frame {frame_id}, "
             + (f"{options.iterations} iterations" if options.iterations else f"{options.duration_s:g} s"))
    try:
        res = session.run(f"mkdir -p {quote(remote_run)} && {step}", timeout=options.timeout_s,
                          check=False, on_line=sink, marker=remote_run + MARKER_SUFFIX, remove=(remote_run,))
        summary = parse_summary(res.stdout)
        if res.exit_code != 0 or not summary.complete:
            d = diagnose_failure(res.stdout + "\n" + res.stderr, plugin=pushed.plugin, profile=profile,
                                 shapes=shapes)
            raise RemoteError(f"the {precision} benchmark failed on {session.label} (exit {res.exit_code}):\n  "
                              + "\n  ".join(d.lines), where=session.label,
                              fix=d.hint or "read the decisive lines above; the whole log was streamed")
        per_query: dict[str, list[float]] = {}
        layers: list[dict[str, Any]] = []
        with tempfile.TemporaryDirectory(prefix="fbocc-bench-") as tmp:
            local = Path(tmp)
            session.get(f"{remote_run}/times.json", local / "times.json")
            queries = parse_export_times((local / "times.json").read_text())
            per_query = {"compute": [q["computeMs"] for q in queries if "computeMs" in q],
                         "latency": [q["latencyMs"] for q in queries if "latencyMs" in q]}
            try:
                session.get(f"{remote_run}/profile.json", local / "profile.json")
                _, layer_times = parse_export_profile((local / "profile.json").read_text())
                layers = [{"name": lt.name, "average_ms": lt.average_ms, "median_ms": lt.median_ms,
                           "percentage": lt.percentage} for lt in layer_times]
            except (FboccError, ValueError) as exc:  # a missing profile costs the per-layer table, not the run
                layers = [{"unavailable": f"exportProfile not readable: {exc}"}]
        run_info = tagged(res.stdout, protocol.RUN) or {}
    finally:
        # After a lost link the target's supervisor removes the folder itself (and the error stays the cause).
        if not options.keep_remote_run and session.connected and not session.stalled:
            session.remove_tree(remote_run)
    return BenchResult(
        run_id=run_id, target=session.label, backend="tensorrt", precision=precision, summary=summary.as_dict(),
        address=session.address, builder=options.builder, engine=engine.as_dict(),
        samples={"frame": frame_id, "inputs": sorted(inputs), "shapes": shapes, "set": pushed.set_hash},
        options={"iterations": options.iterations, "duration_s": options.duration_s,
                 "warmup_ms": options.warmup_ms, "rebuild": options.rebuild, "timing": options.timing.as_dict()},
        command=cmd, per_query_ms=per_query, layers=layers, environment=env,
        tegrastats=run_info.get("tegrastats", {"available": False, "reason": "runner reported nothing"}))


def _bench_onnxruntime(session: TargetSession, pushed: PushedSet, env: dict[str, Any],
                       options: BenchOptions, sink: LineSink | None, pid_file: str) -> BenchResult:
    """deploy.run_sequence --backend onnxruntime: per-frame latencies, labelled as ONNX Runtime."""
    t = session.target
    run_id = new_run_id(session.label, "fp32", "onnxruntime")
    remote_run = run_dir(session, run_id)
    script = pushed.deploy + "/run_sequence.py"
    repeat = max(1, options.iterations)
    cmd = [t.python, "-m", "deploy.run_sequence", "--backend", "onnxruntime", "--set-dir", pushed.samples,
           "--onnx", pushed.onnx, "--out", f"{remote_run}/out", "--repeat", str(repeat)]
    if sink:
        sink(f"onnxruntime: every frame x{repeat} (CPU, not a TensorRT number)")
    try:
        res = session.run(f"test -f {quote(script)} || {{ echo FBOCC_NO_SCRIPT; exit 2; }}; "
                          f"mkdir -p {quote(remote_run)} && {supervised(session, pushed, cmd, pid_file=pid_file)}",
                          timeout=options.timeout_s, check=False, on_line=sink, marker=remote_run + MARKER_SUFFIX,
                          remove=(remote_run,))
    finally:
        if not options.keep_remote_run and session.connected and not session.stalled:
            session.remove_tree(remote_run)
    if "FBOCC_NO_SCRIPT" in res.stdout.splitlines():
        raise RemoteError(f"{session.label}:{script} is missing: the pushed deploy/ has no ONNX Runtime runner",
                          where=session.label, fix="update fbocc and re-run `fbocc push-to-target`")
    doc = tagged(res.stdout, protocol.RESULT)
    if res.exit_code != 0 or doc is None:
        error = tagged(res.stdout, protocol.ERROR) or {}
        raise RemoteError(f"the ONNX Runtime run failed on {session.label} (exit {res.exit_code}): "
                          f"{error.get('message') or (res.stderr or res.stdout).strip()[-400:]}",
                          where=session.label, fix=error.get("fix") or "re-run `fbocc push-to-target` and retry")
    per_frame = doc.get("per_frame") or []
    latencies = [float(v) for f in per_frame for v in f.get("latency_ms", [])] or \
        [float(v) for v in doc.get("latency_ms", [])]
    stats = query_stats([{"latencyMs": v} for v in latencies], key="latencyMs")
    if stats is None:
        raise RemoteError(f"the ONNX Runtime run on {session.label} reported no latencies", where=session.label,
                          fix="check deploy.run_sequence's FBOCC_RESULT line")
    summary = {"tensorrt_version": None, "status": "PASSED", "command": " ".join(cmd), "throughput_qps":
               1000.0 * len(latencies) / sum(latencies) if sum(latencies) > 0 else None,
               "metrics_ms": {"Latency": stats.as_dict()}, "total_host_walltime_s": sum(latencies) / 1000.0,
               "total_gpu_compute_s": None, "gpu_compute_cv_percent": None, "warnings": [],
               "backend_versions": doc.get("versions", {}),
               "note": "ONNX Runtime on the target's CPU via deploy.run_sequence: not a TensorRT number"}
    return BenchResult(
        run_id=run_id, target=session.label, backend="onnxruntime", precision=str(doc.get("precision", "fp32")),
        summary=summary, address=session.address, builder=None, engine={},
        samples={"frames": doc.get("frames"), "history": doc.get("history", []), "set": pushed.set_hash},
        options={"repeat": repeat}, command=cmd, per_query_ms={"latency": latencies}, environment=env,
        tegrastats={"available": False, "reason": "not sampled for ONNX Runtime runs"})


def remote_bench(targets: Sequence[Target], options: BenchOptions, results_dir: Path, *,
                 known_hosts: Path | None = None, accept_new: bool = False, on_line: LineSink | None = None,
                 samples_dir: Path | None = None) -> list[TargetOutcome[TargetBench]]:
    """Benchmark on every target (in parallel when several); one outcome per target, in order.

    One target runs in this thread (Ctrl-C reaches TargetSession.run, which kills the remote group) and
    its failure is raised. Several run in worker threads; Ctrl-C here closes every connection (each
    target's supervisor then stops its running step) and raises Interrupted at once.
    """
    options.check()
    if len(targets) == 1:
        started = time.monotonic()
        with TargetSession(targets[0], known_hosts=known_hosts, accept_new=accept_new) as session:
            value = bench_target(session, options, results_dir, on_line=on_line, samples_dir=samples_dir)
        return [TargetOutcome(targets[0], value=value, seconds=time.monotonic() - started)]

    live: dict[str, TargetSession] = {}
    lock = threading.Lock()
    cancelled = threading.Event()

    def one(target: Target) -> TargetOutcome[TargetBench]:
        started = time.monotonic()
        try:
            with TargetSession(target, known_hosts=known_hosts, accept_new=accept_new) as session:
                pid_file = pid_file_for(session)
                with lock:
                    live[target.name] = session
                try:
                    if cancelled.is_set():
                        raise Interrupted(f"interrupted before {target.name} started")
                    value = bench_target(session, options, results_dir, on_line=on_line, pid_file=pid_file,
                                         samples_dir=samples_dir)
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
        for session in running:
            session.abort()  # the target's supervisor sees its session end and stops the running step
        pool.shutdown(wait=False, cancel_futures=True)
        raise Interrupted(f"interrupted; the running remote steps on {', '.join(t.name for t in targets)} "
                          "were stopped") from None
    pool.shutdown(wait=True)
    return [f.result() for f in futures]
