"""`make demo` / `python -m fbocc.demo`: the whole chain on this machine, with no Orin and no TensorRT.

    export (random weights)  ->  cross-build (sim image)  ->  local OpenSSH target on 127.0.0.1
    ->  push-to-target  ->  remote-bench (onnxruntime)  ->  validate (onnxruntime)  ->  report

The target is a real sshd started here on a free loopback port with a throw-away host key, client key
and known_hosts (strict host-key checking stays on), torn down at the end even on failure or Ctrl-C;
its Python is the interpreter running this demo. There is no TensorRT on this machine, so the target
runs the ONNX graph in ONNX Runtime with our three plugin ops as numpy custom ops: the latencies are
CPU numbers, not TensorRT numbers, and the demo says so.

Everything lands under `--work-dir` (default `build/demo`): export/, plugins/, results/ (the run
history `fbocc report` reads), validation/, report.md.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fbocc.config import Target
from fbocc.errors import EnvironmentCheckError, FboccError, Interrupted
from fbocc.target import loopback_sshd

NO_TENSORRT = ("There is no TensorRT on this machine: the target runs the ONNX graph in ONNX Runtime (CPU) "
               "with the three plugin ops as numpy custom ops. Latencies below are CPU numbers, not TensorRT "
               "numbers; the accuracy check is the real one.")


# --- the local target -----------------------------------------------------------------------------


@dataclass
class LocalTarget:
    """A real OpenSSH server on 127.0.0.1 for the demo; `target` and `known_hosts` are what fbocc uses."""

    root: Path
    port: int
    target: Target
    known_hosts: Path
    proc: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        loopback_sshd.stop(self.proc)
        self.proc = None


@contextmanager
def local_target(workdir: Path, *, python: str = sys.executable) -> Iterator[LocalTarget]:
    """Start sshd on a free loopback port with fresh keys; stop it and delete its keys on exit."""
    root = Path(tempfile.mkdtemp(prefix="fbocc-demo-sshd-"))
    os.chmod(root, 0o700)
    server: LocalTarget | None = None
    try:
        if shutil.which("ssh-keygen") is None:
            raise EnvironmentCheckError("OpenSSH (ssh-keygen) is not installed: the demo's target needs it",
                                        fix=loopback_sshd.SSHD_FIX)
        host_key = loopback_sshd.keygen(root / "host_ed25519", comment="fbocc-demo")
        client_key = loopback_sshd.keygen(root / "client_ed25519", comment="fbocc-demo")
        (root / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())
        port = loopback_sshd.free_port()
        known_hosts = root / "known_hosts"
        known_hosts.write_text(loopback_sshd.known_hosts_line("127.0.0.1", port, host_key) + "\n")
        proc = loopback_sshd.start(root, loopback_sshd.config_lines(root, "127.0.0.1", port, host_key), "127.0.0.1",
                                   port)
        target = Target(name="demo-local", host="127.0.0.1", port=port, user=getpass.getuser(),
                        identity_file=client_key, workdir=str(workdir), python=python)
        server = LocalTarget(root=root, port=port, target=target, known_hosts=known_hosts, proc=proc)
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


# --- stages ---------------------------------------------------------------------------------------


@dataclass
class StageResult:
    name: str
    status: str  # "done", "failed"
    seconds: float
    summary: str


@dataclass
class DemoRun:
    """The stages run so far and the report at the end."""

    stages: list[StageResult] = field(default_factory=list)
    report_markdown: str = ""


class Demo:
    """Runs the stages in order, printing what each did and how long it took."""

    def __init__(self, work: Path, *, frames: int, checkpoint: Path | None, say: Callable[[str], None]) -> None:
        self.work = work
        self.frames = frames
        self.checkpoint = checkpoint
        self.say = say
        self.run = DemoRun()
        self.results = work / "results"
        self.onnx: Path | None = None
        self.samples: Path | None = None
        self.plugin_dir: Path | None = None

    def stage(self, index: int, total: int, name: str, fn: Callable[[], str]) -> None:
        self.say(f"[{index}/{total}] {name} ...")
        started = time.monotonic()
        try:
            summary = fn()
        except BaseException:
            self.run.stages.append(StageResult(name, "failed", time.monotonic() - started, ""))
            raise
        seconds = time.monotonic() - started
        self.run.stages.append(StageResult(name, "done", seconds, summary))
        self.say(f"[{index}/{total}] {name}: {summary} ({seconds:.1f} s)")

    # Each returns its one-line summary. Stage modules are imported when the stage runs: export loads torch.

    def export(self) -> str:
        from fbocc.export.pipeline import ExportOptions, export

        out = self.work / "export"
        options = ExportOptions(out=out, random_weights=self.checkpoint is None, checkpoint=self.checkpoint,
                                samples=self.frames)
        result = export(options, progress=lambda msg: self.say(f"      export: {msg}"))
        self.onnx, self.samples = Path(result.onnx_path), Path(result.samples_dir)
        weights = "random weights (seed 0)" if self.checkpoint is None else f"checkpoint {self.checkpoint}"
        ops = ", ".join(f"{k} x{v}" for k, v in result.custom_ops.items())
        size = self.onnx.stat().st_size / 2**20
        return (f"{self.onnx.name} ({size:.0f} MiB, {weights}; plugin ops {ops}) and {self.frames} frames of "
                f"samples with PyTorch reference outputs in {out}")

    def precision_graphs(self) -> str:
        """fp16 and int8 graphs of the fbocc-tiny preset, each checked against fp32 PyTorch on this CPU (the
        full-size model's CPU fp16/int8 runs would take longer than the whole demo)."""
        from fbocc.export.pipeline import ExportOptions, export

        out = self.work / "precision"
        options = ExportOptions(out=out, preset="fbocc-tiny", random_weights=True, samples=2,
                                precisions=("fp32", "fp16", "int8"))
        result = export(options, progress=lambda msg: self.say(f"      precision: {msg}"))
        parts = []
        for graph in result.graphs[1:]:
            check = graph["host_check"]
            self.say(check["markdown"])
            pred = next(t for t in check["tensors"] if t["name"] == "pred_occupancy")
            parts.append(f"{graph['precision']} labels agree {check['label_agreement'] * 100:.2f} %, cosine "
                         f"{pred['cosine']:.6f}")
        return ("HOST CHECKS (ONNX Runtime on this CPU, not TensorRT; fbocc-tiny preset, random weights: a weak "
                f"proxy for a trained checkpoint): {'; '.join(parts)}; graphs and reports in {out}")

    def cross_build(self) -> str:
        from fbocc.build.cross_build import CrossBuildRequest, cross_build
        from fbocc.config import load_config

        cfg = load_config(cwd=self.work)
        out = self.work / "plugins"
        request = CrossBuildRequest(profile=cfg.profile("sim"), out_dir=out)
        result = cross_build(request, on_step=lambda s: self.say(f"      cross-build: {s}"),
                             on_line=lambda _line: None)
        self.plugin_dir = out
        libs = ", ".join(a.file for a in result.manifest.artefacts)
        archs = ", ".join(sorted({f"sm_{x}" for a in result.manifest.artefacts for x in a.cubin_archs}))
        how = "cache hit, no container started" if result.cache_hit else "built in the sim container"
        return f"{libs} for aarch64 ({archs}), {how}; verified ELF -> {out}"

    def push(self, lt: LocalTarget) -> str:
        from fbocc.target.artefacts import collect_artefacts
        from fbocc.target.push import push_artifacts
        from fbocc.target.transport import TargetSession

        aset = collect_artefacts(onnx=self.onnx, plugin=self.plugin_dir, samples=self.samples)
        with TargetSession(lt.target, known_hosts=lt.known_hosts) as session:
            result = push_artifacts(session, aset)
        detail = (f"{result.files_sent} of {result.files_total} files, {result.bytes_sent / 2**20:.1f} MiB sent "
                  f"at {result.mb_per_s:.0f} MB/s")
        return (f"ONNX + plugin + samples + deploy/ to {lt.target.user}@127.0.0.1:{lt.port}:{lt.target.workdir}"
                f"/current ({detail}; host key checked against the demo's known_hosts)")

    def remote_bench(self, lt: LocalTarget) -> str:
        from fbocc.target.bench import BenchOptions, remote_bench

        # one timed pass per frame: at full size a CPU frame takes tens of seconds
        options = BenchOptions(precisions=("fp32",), backend="onnxruntime", iterations=1)
        outcomes = remote_bench([lt.target], options, self.results, known_hosts=lt.known_hosts,
                                on_line=lambda line: self.say(f"      remote-bench: {line}"))
        outcome = outcomes[0]
        if outcome.error is not None:
            raise outcome.error
        assert outcome.value is not None  # an outcome holds its error or its value
        parts = []
        for r in outcome.value.results:
            median = r.headline_ms()
            parts.append(f"{r.backend} {r.precision}: median {median:.0f} ms per frame over "
                         f"{len(r.per_query_ms.get('latency', []))} runs (CPU, not TensorRT)")
        return "; ".join(parts) + f"; saved to {self.results}"

    def validate(self, lt: LocalTarget) -> str:
        from fbocc.target.transport import TargetSession
        from fbocc.target.validate import validate_target

        with TargetSession(lt.target, known_hosts=lt.known_hosts) as session:
            report = validate_target(session, backend="onnxruntime", precisions=["fp32"],
                                     local_dir=self.work / "validation", samples_dir=self.samples,
                                     results_dir=self.results,
                                     progress=lambda msg: self.say(f"      validate: {msg}"))
        self.validation = report
        comp = report.comparisons[0]
        worst = max(comp.tensors, key=lambda t: t.rel_error)
        lowest = min(t.cosine for t in comp.tensors)
        miou = "-" if comp.miou is None else f"{comp.miou:.2f}"
        against = "ground truth" if comp.miou_against == "ground-truth" else "the PyTorch prediction"
        verdict = "PASS" if report.passed else "FAIL"
        label = "-" if comp.label_agreement is None else f"{comp.label_agreement * 100:.3f}%"
        text = (f"{verdict}: {len(comp.tensors)} outputs x {comp.frames} frames vs PyTorch: worst relative error "
                f"{worst.rel_error:.2e} ({worst.name}), lowest cosine {lowest:.6f}; occupancy labels agree on "
                f"{label}; mIoU {miou} against {against}")
        if not report.passed:
            from fbocc.errors import ValidationError

            raise ValidationError(text, fix=f"see {self.work / 'validation'}")
        return text

    def report(self) -> str:
        from fbocc.results.history import load_history, load_validations
        from fbocc.results.report import compare, to_markdown

        history = load_history(self.results)
        rep = compare(history, validations=load_validations(self.results))
        self.run.report_markdown = to_markdown(rep)
        path = self.work / "report.md"
        path.write_text(self.run.report_markdown)
        return f"{len(history)} run(s) in the history -> {path}"


def run_demo(work: Path, *, frames: int = 2, checkpoint: Path | None = None,
             say: Callable[[str], None] = print) -> DemoRun:
    """Run every stage in order; the first failure ends the demo with its error (the local target is stopped)."""
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    demo = Demo(work, frames=frames, checkpoint=checkpoint, say=say)
    total = 8
    say(NO_TENSORRT)
    demo.stage(1, total, "export", demo.export)
    demo.stage(2, total, "cross-build --profile sim", demo.cross_build)
    say(f"[3/{total}] local target: starting OpenSSH on 127.0.0.1 (fresh host and client keys, strict known_hosts)")
    started = time.monotonic()
    with local_target(work / "target") as lt:
        demo.run.stages.append(StageResult("local target", "done", time.monotonic() - started,
                                           f"sshd on 127.0.0.1:{lt.port}"))
        say(f"[3/{total}] local target: sshd pid {lt.proc.pid if lt.proc else '?'} on 127.0.0.1:{lt.port}, "
            f"user {lt.target.user}, python {lt.target.python} ({time.monotonic() - started:.1f} s)")
        demo.stage(4, total, "push-to-target", lambda: demo.push(lt))
        demo.stage(5, total, "remote-bench --backend onnxruntime", lambda: demo.remote_bench(lt))
        demo.stage(6, total, "validate --backend onnxruntime", lambda: demo.validate(lt))
    say(f"[3/{total}] local target: sshd stopped, its keys deleted")
    demo.stage(7, total, "precision graphs fp16 + int8 (host checks)", demo.precision_graphs)
    demo.stage(8, total, "report", demo.report)
    say("")
    say(demo.run.report_markdown)
    say("stage timings: " + ", ".join(f"{s.name} {s.seconds:.1f} s ({s.status})" for s in demo.run.stages))
    return demo.run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fbocc.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, default=Path(os.environ.get("FBOCC_DEMO_DIR", "build/demo")))
    parser.add_argument("--frames", type=int, default=2, help="consecutive frames to export and run")
    parser.add_argument("--checkpoint", type=Path, help="FB-BEV checkpoint (default: random weights)")
    args = parser.parse_args(argv)

    def say(text: str) -> None:
        print(text, flush=True)

    try:
        run_demo(args.work_dir, frames=args.frames, checkpoint=args.checkpoint, say=say)
    except KeyboardInterrupt:
        err = Interrupted("demo interrupted; nothing left running (a started local target was stopped, "
                          "its keys deleted)")
        print(f"{err.kind}: {err.render()}", file=sys.stderr)
        return err.exit_code
    except FboccError as exc:
        print(f"{exc.kind}: {exc.render()}", file=sys.stderr)
        return exc.exit_code
    print("demo complete: every stage ran for real", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
