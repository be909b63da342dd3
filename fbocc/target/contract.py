"""The target contract, host side: what lives under a target's workdir and how fbocc asks the target for it.

Owns, for every command that works on a pushed set (remote-bench, validate):

- the layout under the workdir `W` (the store below `current` is fbocc.target.store's)::

      W/current/              the active artefact set: fbocc-set.json, one *.onnx, plugin *.so,
                              samples/, deploy/ (the target-side package)
      W/engines/              the engine cache: <precision>-<key>.engine (+ .sha256 beside it),
                              timing-<TensorRT version>.cache
      W/runs/<run id>/        one run's outputs, removed once fetched

- `locate_pushed_set`: where the pushed files are (from `fbocc-set.json`, else by listing), and
  `pushed_samples_manifest`: their sample manifest (the host's copy when it is the pushed one);
- `deploy_command`: how a target-side module runs (`cd W/current && python3 -m deploy.<module> ...`)
  and `supervised`: a step under `deploy.bench run` (process group id in a pid file, tegrastats);
- `probe_target`: the target's environment and TensorRT version (`deploy.bench env`) and the engine
  cache keys of the pushed set, in one round trip; `require_tensorrt` turns it into a usable version;
- `ensure_engine`: THE engine for (pushed set, precision, builder, TensorRT version, profile), built or
  reused. Every command that needs an engine gets it here, so a latency and an accuracy that name the
  same engine come from the same file;
- `tagged`: the `FBOCC_*` result lines (deploy.protocol parses them for both sides).
"""

from __future__ import annotations

import json
import secrets
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from deploy import protocol
from fbocc.errors import ConfigError, RemoteError
from fbocc.target.artefacts import BUILD_MANIFEST
from fbocc.target.store import SET_MANIFEST
from fbocc.target.transport import TargetSession, quote
from fbocc.target.trtexec import TrtVersion, diagnose_failure, supported
from fbocc.target.trtexec_commands import (
    TYPINGS,
    BuildSpec,
    PrecisionPlan,
    build_command,
    graph_for,
    precision_plan,
)

LineSink = Callable[[str], None]
CURRENT = "current"
ENGINES = "engines"
RUNS = "runs"
BUILDERS = ("trtexec", "python")


def tagged(stdout: str, tag: str) -> dict[str, Any] | None:
    """The JSON object of the last `TAG {...}` line a target-side command printed (None when absent)."""
    return protocol.parse_tagged(stdout, tag)


def argv_line(words: Sequence[str]) -> str:
    """A remote command line from words, each shell-quoted."""
    return " ".join(quote(w) for w in words)


@dataclass(frozen=True)
class PushedSet:
    """Where the pushed artefact set lies on the target (absolute remote paths)."""

    root: str
    onnx: str
    plugin: str | None
    samples: str
    deploy: str
    set_hash: str | None = None
    files: dict[str, str] = field(default_factory=dict, compare=False)  # path in the set -> sha256
    graphs: dict[str, str] = field(default_factory=dict)  # precision -> graph (fp32: `onnx`; docs/precision.md)
    plugin_tensorrt: str | None = None  # TensorRT of the plugin library's headers (its fbocc-build.json)

    @property
    def samples_manifest_sha256(self) -> str | None:
        return self.files.get("samples/manifest.json")


def engines_dir(session: TargetSession) -> str:
    return str(PurePosixPath(session.workdir()) / ENGINES)


def run_dir(session: TargetSession, run_id: str) -> str:
    return str(PurePosixPath(session.workdir()) / RUNS / run_id)


def locate_pushed_set(session: TargetSession) -> PushedSet:
    """The set under `<workdir>/current`, from its `fbocc-set.json` (push-to-target writes it), else by
    listing; a missing or incomplete set is one error naming what is missing and the fix."""
    root = str(PurePosixPath(session.workdir()) / CURRENT)
    listing = session.run(
        f"cd {quote(root)} 2>/dev/null || exit 3; for f in *.onnx *.so; do [ -f \"$f\" ] && echo \"$f\"; done; "
        "[ -f samples/manifest.json ] && echo samples/manifest.json; "
        "[ -f deploy/__init__.py ] && echo deploy/__init__.py;"
        f" [ -f {BUILD_MANIFEST} ] && {{ echo FBOCC_BUILD; cat {BUILD_MANIFEST}; echo; }};"
        f" [ -f {SET_MANIFEST} ] && {{ echo FBOCC_SET; cat {SET_MANIFEST}; }}; exit 0",
        timeout=60, check=False)
    if listing.exit_code == 3:
        raise RemoteError(f"nothing has been pushed to {session.label}:{root}", where=session.label,
                          fix=f"run `fbocc push-to-target {session.label}` first")
    head, _, set_json = listing.stdout.partition("FBOCC_SET\n")
    head, _, build_json = head.partition("FBOCC_BUILD\n")
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
    for needed in ("samples/manifest.json", "deploy/__init__.py"):
        if needed not in names:
            raise RemoteError(f"{session.label}:{root}/{needed} is missing", where=session.label,
                              fix="re-run `fbocc push-to-target` (with samples) with this fbocc version: "
                              "the artefact set is incomplete")
    files = {str(f.get("path")): str(f.get("sha256")) for f in set_doc.get("files", []) if isinstance(f, dict)}
    graphs = {str(p): f"{root}/{rel}" for p, rel in (set_doc.get("graphs") or {}).items()}
    graphs.setdefault("fp32", f"{root}/{onnx[0]}")
    return PushedSet(root=root, onnx=f"{root}/{onnx[0]}", plugin=f"{root}/{plugins[0]}" if plugins else None,
                     samples=f"{root}/samples", deploy=f"{root}/deploy", set_hash=set_doc.get("set"), files=files,
                     graphs=graphs, plugin_tensorrt=_headers_tensorrt(build_json))


def _headers_tensorrt(build_json: str) -> str | None:
    try:
        value = json.loads(build_json).get("tensorrt_version") if build_json.strip() else None
    except (ValueError, AttributeError):
        return None
    return str(value) if value else None


def target_tensorrt_version(session: TargetSession) -> str | None:
    """The target's TensorRT version from its trtexec banner, before anything is pushed (None: no trtexec)."""
    t = session.target
    res = session.run(f"{quote(t.trtexec)} --help 2>&1 | head -n 5", timeout=60, check=False)
    return protocol.trt_version_from_banner(res.stdout + res.stderr)


def require_plugin_abi(session: TargetSession, headers: str | None, target_tensorrt: str | None,
                       library: str) -> None:
    """Stop (BuildError) when the plugin library was built for another TensorRT major than the target's: its
    plugins would not register there (plugins/common/loadedTensorRT.cpp), so nothing is built with it."""
    from fbocc.build.tensorrt_abi import check_plugin_abi
    from fbocc.config import builtin_profiles

    check_plugin_abi(headers, target_tensorrt, library=library, target=session.label, profiles=builtin_profiles())


def pushed_samples_manifest(session: TargetSession, pushed: PushedSet, local_samples: Path | None) -> dict[str, Any]:
    """The pushed samples' manifest: the host's own copy in `local_samples` when it is the pushed one (same
    sha256 as `fbocc-set.json` records; checked against its files), else the pushed file fetched and checked
    as a document (its tensors are on the target, not here)."""
    from fbocc.export.samples import MANIFEST_NAME, check_manifest_document, load_manifest, sha256_file

    local = Path(local_samples) / MANIFEST_NAME if local_samples is not None else None
    wanted = pushed.samples_manifest_sha256
    if local is not None and local.is_file() and wanted and sha256_file(local) == wanted:
        return load_manifest(local.parent)
    with tempfile.TemporaryDirectory(prefix="fbocc-manifest-") as tmp:
        copy = Path(tmp) / MANIFEST_NAME
        session.get(f"{pushed.samples}/{MANIFEST_NAME}", copy)
        where = f"{session.label}:{pushed.samples}/{MANIFEST_NAME}"
        try:
            doc = json.loads(copy.read_text())
        except ValueError as exc:
            raise RemoteError(f"{where} is not valid JSON: {exc}", where=session.label,
                              fix="re-run `fbocc push-to-target`") from exc
    return check_manifest_document(doc, where)


def deploy_command(session: TargetSession, pushed: PushedSet, module: str, args: Sequence[str]) -> str:
    """The remote command line running `deploy.<module>` of the pushed set with `args`."""
    return f"cd -- {quote(pushed.root)} && {argv_line([session.target.python, '-m', f'deploy.{module}', *args])}"


def supervised(session: TargetSession, pushed: PushedSet, argv: Sequence[str], *, pid_file: str | None = None,
               tegrastats_log: str | None = None, interval_ms: int = 500) -> str:
    """`argv` under `deploy.bench run`: its process group id in `pid_file` while it runs (so the host can
    stop it from another connection), tegrastats sampled into `tegrastats_log` when given."""
    head = ["run"]
    if tegrastats_log:
        head += ["--tegrastats-log", tegrastats_log, "--interval-ms", str(interval_ms)]
    if pid_file:
        head += ["--pid-file", pid_file]
    return deploy_command(session, pushed, "bench", [*head, "--", *argv])


def pid_file_for(session: TargetSession) -> str:
    """A fresh path on the target for the running step's process group id (see `stop_remote_run`)."""
    return f"{session.workdir()}/{RUNS}/.fbocc-{secrets.token_hex(6)}.pgid"


def stop_remote_run(session: TargetSession, pid_file: str) -> None:
    """Stop the step running under `pid_file` on the target (TERM, then KILL its process group)."""
    g = '"-$g"'
    session.run(f"[ -f {quote(pid_file)} ] || exit 0; g=$(cat {quote(pid_file)}); kill -TERM -- {g} 2>/dev/null; "
                f"i=0; while [ $i -lt 30 ] && kill -0 -- {g} 2>/dev/null; do sleep 0.1; i=$((i+1)); done; "
                f"kill -KILL -- {g} 2>/dev/null; rm -f {quote(pid_file)}; exit 0", timeout=20, check=False)


# --- the target's environment and TensorRT ----------------------------------------------------------


@dataclass
class TargetProbe:
    """What `deploy.bench env` found: the environment document, and the engine cache keys asked for."""

    environment: dict[str, Any]
    engine_keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    builder: str | None = None
    keys_error: str | None = None

    @property
    def tensorrt(self) -> dict[str, Any]:
        return dict(self.environment.get("tensorrt") or {})


def probe_target(session: TargetSession, pushed: PushedSet, *, precisions: Sequence[str] = (),
                 builder: str | None = None) -> TargetProbe:
    """Versions, release, power mode, clocks and tegrastats as found on the target; with `builder` and
    `precisions` also the engine cache keys (files hashed there), in the same round trip: one per precision
    and typing whose graph was pushed (`PRECISION/TYPING`), since which typing applies depends on the
    TensorRT version this very call finds (`ensure_engine` picks)."""
    t = session.target
    args = ["env", "--trtexec", t.trtexec]
    if builder is not None and precisions:
        if builder not in BUILDERS:
            raise RemoteError(f"builder {builder!r} is not one of {', '.join(BUILDERS)}")
        args += ["--samples", pushed.samples, "--builder", builder, "--engine-dir", engines_dir(session)]
        for p in precisions:
            for typing in TYPINGS:
                if graph_for(p, typing) in pushed.graphs:
                    args += ["--request", f"{p}:{typing}:{pushed.graphs[graph_for(p, typing)]}"]
        if pushed.plugin:
            args += ["--plugin", pushed.plugin]
    res = session.run(deploy_command(session, pushed, "bench", args), timeout=600, check=False)
    env = tagged(res.stdout, protocol.ENV)
    if res.exit_code != 0 or env is None:
        tail = "\n".join((res.stderr or res.stdout).strip().splitlines()[-5:])
        raise RemoteError(f"environment check on {session.label} failed (exit {res.exit_code}):\n{tail}",
                          where=session.label,
                          fix=f"check that `{t.python}` is Python >= 3.8 on the target ([targets.{t.name}] python)")
    keys = env.pop("engine_keys", None) or {}
    error = env.pop("engine_keys_error", None)
    return TargetProbe(environment=env, engine_keys=keys, builder=builder, keys_error=error)


def require_tensorrt(session: TargetSession, probe: TargetProbe, *, trtexec: bool = True,
                     pushed: PushedSet | None = None) -> TrtVersion:
    """The target's TensorRT version, when commands can be made for it (and trtexec runs, if needed) and the
    pushed plugin library (when `pushed` is given) was built for its major."""
    label = session.label
    trt = probe.tensorrt
    if trtexec and not trt.get("trtexec_available"):
        raise RemoteError(f"trtexec is not usable on {label}: {trt.get('reason', 'not found')}", where=label,
                          fix=f"set [targets.{session.target.name}] trtexec to its path "
                          "(default /usr/src/tensorrt/bin/trtexec) or install TensorRT")
    if not trt.get("version"):
        raise RemoteError(f"cannot tell the TensorRT version on {label}", where=label,
                          fix="check that `trtexec --help` prints its '&&&& RUNNING TensorRT.trtexec [TensorRT vNNNN]' "
                          "line")
    version = TrtVersion.parse(str(trt["version"]))
    if not supported(version):
        raise RemoteError(f"TensorRT {version} on {label} is not supported (8.6, 10.x, 11.x are)", where=label,
                          fix="use a DRIVE OS 6.0.10+ / JetPack 6 image")
    if pushed is not None and pushed.plugin:
        require_plugin_abi(session, pushed.plugin_tensorrt, str(trt["version"]), PurePosixPath(pushed.plugin).name)
    return version


# --- the engine -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineRecord:
    """One engine file in the target's cache, as result documents name it (docs/results-schema.md)."""

    precision: str
    builder: str
    tensorrt: str
    key: str
    path: str
    sha256: str | None
    cached: bool
    onnx_sha256: str | None = None
    plugin_sha256: str | None = None
    build_seconds: float | None = None
    command: list[str] | None = None
    bytes: int | None = None
    graph: str | None = None  # which of the pushed graphs it was built from (fp32, fp16, int8)
    typing: str | None = None  # strong: precision from the graph; weak: from builder flags
    flags: list[str] | None = None  # the precision switches the build was given

    def as_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "builder": self.builder, "tensorrt": self.tensorrt, "key": self.key,
                "path": self.path, "sha256": self.sha256, "bytes": self.bytes, "cached": self.cached,
                "onnx_sha256": self.onnx_sha256, "plugin_sha256": self.plugin_sha256,
                "build_seconds": self.build_seconds, "command": self.command, "graph": self.graph,
                "typing": self.typing, "flags": self.flags}


def engine_plan(session: TargetSession, pushed: PushedSet, probe: TargetProbe, version: TrtVersion, precision: str,
                typing: str | None = None) -> tuple[PrecisionPlan, dict[str, Any]]:
    """Which graph and switches build `precision` on this target's TensorRT, and that engine's cache key;
    one error naming the fix when the version cannot build it or its graph was not pushed."""
    try:
        plan = precision_plan(version, precision, typing)
    except ValueError as exc:
        raise ConfigError(f"{precision} on {session.label} (TensorRT {version}): {exc}") from exc
    key = probe.engine_keys.get(f"{precision}/{plan.typing}")
    if key:
        return plan, key
    if plan.graph not in pushed.graphs:
        raise RemoteError(f"the set pushed to {session.label} has no {plan.graph} graph, which {precision} needs on "
                          f"TensorRT {version} (pushed: {', '.join(sorted(pushed.graphs))})", where=session.label,
                          fix=f"export it (fbocc export --precision fp32,{plan.graph}) and push again "
                          f"(fbocc push-to-target {session.label})")
    raise RemoteError(f"cannot compute the {precision} engine cache key on {session.label}: "
                      f"{probe.keys_error or 'no answer'}", where=session.label,
                      fix="re-run `fbocc push-to-target` (the samples or ONNX on the target are damaged)")


def ensure_engine(session: TargetSession, pushed: PushedSet, probe: TargetProbe, precision: str, *,
                  rebuild: bool = False, timeout_s: float = 3600.0, on_line: LineSink | None = None,
                  pid_file: str | None = None, typing: str | None = None) -> EngineRecord:
    """The engine for (pushed set, precision, probe.builder, the target's TensorRT, the samples' profile):
    reused from `engines/` when its key is there (unless `rebuild`), else built there by the builder.

    The graph and its typing come from `engine_plan` (precision lives in the graph: issue 19); the key is
    computed on the target (deploy.create_engine.engine_cache_key over the graph and plugin contents,
    precision, typing, TensorRT version, profile and builder) by `probe_target`.
    """
    builder = probe.builder or "trtexec"
    version = require_tensorrt(session, probe, trtexec=builder == "trtexec", pushed=pushed)
    plan, key = engine_plan(session, pushed, probe, version, precision, typing)
    graph = str(key.get("onnx") or pushed.graphs[plan.graph])
    engine = str(key["engine"])
    record = EngineRecord(precision=precision, builder=builder, tensorrt=str(version), key=str(key["key"]),
                          path=engine, sha256=key.get("sha256"), cached=True, onnx_sha256=key.get("onnx_sha256"),
                          plugin_sha256=key.get("plugin_sha256"), bytes=key.get("bytes"), graph=plan.graph,
                          typing=plan.typing, flags=list(plan.flags))
    if key.get("exists") and not rebuild:
        if on_line:
            on_line(f"engine {precision}: cached {engine}")
        return record
    engines = engines_dir(session)
    timing = f"{engines}/timing-{version}.cache"
    if builder == "python":
        cmd = [session.target.python, "-m", "deploy.create_engine", "--onnx", graph, "--samples",
               pushed.samples, "--precision", precision, "--typing", plan.typing, "--engine-dir", engines,
               "--timing-cache", timing,
               "--rebuild", *(["--plugin", pushed.plugin] if pushed.plugin else [])]
        step = supervised(session, pushed, cmd, pid_file=pid_file)
    else:
        part = engine + ".part"
        cmd = build_command(session.target.trtexec, version, BuildSpec(
            onnx=graph, engine=part, plugin=pushed.plugin, precision=precision,
            profile=key.get("profile") or {}, timing_cache=timing, typing=plan.typing))
        # the engine appears at its final path only when trtexec succeeded; then its size and sha256
        build = (f"{argv_line(cmd)}; rc=$?; if [ $rc -eq 0 ] && [ -s {quote(part)} ]; "
                 f"then mv -f {quote(part)} {quote(engine)}; else rm -f {quote(part)}; exit $((rc ? rc : 1)); fi")
        step = (supervised(session, pushed, ["/bin/sh", "-c", build], pid_file=pid_file) + " && "
                + argv_line([session.target.python, "-m", "deploy.bench", "engine", "--engine", engine]))
    if on_line:
        on_line(f"engine {precision}: building with {builder} -> {engine}")
    started = time.monotonic()
    # A build cut off with its connection leaves no half-written engine behind (the supervisor removes it).
    res = session.run(f"mkdir -p {quote(engines)} && {step}", timeout=timeout_s, check=False, on_line=on_line,
                      remove=(engine + ".part",))
    seconds = round(time.monotonic() - started, 3)
    built = tagged(res.stdout, protocol.ENGINE)
    if res.exit_code != 0 or built is None:
        text = res.stdout + "\n" + res.stderr
        d = diagnose_failure(text, plugin=pushed.plugin)
        hint = d.hint
        if builder == "python" and "tensorrt Python module is not importable" in text:
            d.lines = [ln for ln in text.splitlines() if "create_engine:" in ln] or d.lines
            hint = ("this target has no TensorRT Python bindings: use --builder trtexec (the default), "
                    "or install python3-libnvinfer")
        raise RemoteError(f"the {precision} engine build failed on {session.label} (exit {res.exit_code}):\n  "
                          + "\n  ".join(d.lines), where=session.label,
                          fix=hint or "read the decisive lines above; the whole log was streamed")
    return EngineRecord(precision=precision, builder=builder, tensorrt=str(version), key=record.key,
                        path=str(built.get("engine", engine)), sha256=built.get("sha256"), cached=False,
                        onnx_sha256=record.onnx_sha256, plugin_sha256=record.plugin_sha256, build_seconds=seconds,
                        command=cmd, bytes=built.get("bytes"), graph=plan.graph, typing=plan.typing,
                        flags=list(plan.flags))
