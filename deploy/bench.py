"""Target-side helper of `fbocc remote-bench`: environment capture, engine cache keys, and a runner that
samples tegrastats while a benchmark runs.

Runs on the target: Python 3.8, standard library only (numpy/tensorrt optional); imports nothing from
fbocc. Each subcommand prints ONE final line `FBOCC_<NAME> <json>` (deploy.protocol) that the host
parses; everything else it prints is progress for the user. Run from the pushed set's root:

    python3 -m deploy.bench env --trtexec /usr/src/tensorrt/bin/trtexec
    python3 -m deploy.bench key --onnx M.onnx --plugin P.so --precision fp16 --tensorrt 8.6.13 --samples DIR
    python3 -m deploy.bench engine --engine engines/fp16-KEY.engine
    python3 -m deploy.bench run --tegrastats-log FILE [--interval-ms 500] -- trtexec ...

What is not available on the target is recorded as {"available": false, "reason": ...}, never guessed.
"""

import argparse
import glob
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

from . import create_engine, protocol
from . import manifest as samples_manifest


def unavailable(reason):
    # type: (str) -> Dict[str, Any]
    return {"available": False, "reason": reason}


def run_quiet(argv, timeout=20.0):
    # type: (List[str], float) -> Optional[subprocess.CompletedProcess]
    try:
        return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                              universal_newlines=True, start_new_session=True)
    except (OSError, subprocess.TimeoutExpired):
        return None


def read_text(path):
    # type: (str) -> Optional[str]
    try:
        with open(path, "r") as fh:
            return fh.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


# --- environment ----------------------------------------------------------------------------------


def tensorrt_info(trtexec):
    # type: (str) -> Dict[str, Any]
    """TensorRT version: from trtexec's own banner first (what benchmarks use), then the Python module."""
    info = {"trtexec": trtexec}  # type: Dict[str, Any]
    if os.path.isfile(trtexec) and os.access(trtexec, os.X_OK):
        proc = run_quiet([trtexec, "--help"])
        version = protocol.trt_version_from_banner(proc.stdout if proc is not None else "")
        if version:
            info["version"] = version
            info["source"] = "trtexec banner"
        info["trtexec_available"] = True
    else:
        info["trtexec_available"] = False
        info["reason"] = "{} is not an executable file".format(trtexec)
    try:
        import tensorrt  # type: ignore

        info["python_module"] = tensorrt.__version__
        info.setdefault("version", tensorrt.__version__)
        info.setdefault("source", "tensorrt Python module")
    except ImportError:
        info["python_module"] = None
    if "version" not in info:
        proc = run_quiet(["dpkg-query", "-W", "-f=${Version}", "libnvinfer8", "libnvinfer10"])
        if proc is not None and proc.returncode == 0 and proc.stdout.strip():
            info["version"] = proc.stdout.strip().split("-")[0]
            info["source"] = "dpkg libnvinfer"
    return info


def cuda_info():
    # type: () -> Dict[str, Any]
    for path in sorted(glob.glob("/usr/local/cuda*/version.json")):
        try:
            with open(path) as fh:
                doc = json.load(fh)
            return {"version": doc.get("cuda", {}).get("version"), "source": path}
        except (OSError, ValueError):
            continue
    for path in sorted(glob.glob("/usr/local/cuda*/version.txt")):
        text = read_text(path)
        if text:
            return {"version": text.split()[-1], "source": path}
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
    if nvcc:
        proc = run_quiet([nvcc, "--version"])
        m = re.search(r"release ([\d.]+)", proc.stdout if proc else "")
        if m:
            return {"version": m.group(1), "source": "nvcc --version"}
    return unavailable("no /usr/local/cuda*/version.json, version.txt or nvcc")


def release_info():
    # type: () -> Dict[str, Any]
    found = {}  # type: Dict[str, Any]
    text = read_text("/etc/nv_tegra_release")
    if text:
        found["nv_tegra_release"] = text.splitlines()[0]
    for path in sorted(glob.glob("/etc/nvidia/*release*")) + sorted(glob.glob("/etc/nvidia/version*")):
        text = read_text(path)
        if text:
            found[path] = text.splitlines()[0][:200]
    os_release = read_text("/etc/os-release")
    if os_release:
        m = re.search(r'^PRETTY_NAME="?([^"\n]+)', os_release, re.M)
        found["os"] = m.group(1) if m else None
    if not any(k != "os" for k in found):
        found["drive_os_or_jetpack"] = unavailable("no /etc/nv_tegra_release or /etc/nvidia/*release* on this target")
    return found


def power_info():
    # type: () -> Dict[str, Any]
    if shutil.which("nvpmodel") is None:
        return unavailable("nvpmodel is not installed (not a Jetson/DRIVE image, or not in PATH)")
    proc = run_quiet(["nvpmodel", "-q"])
    if proc is None or proc.returncode != 0:
        return unavailable("nvpmodel -q failed: {}".format((proc.stdout if proc else "timeout").strip()[:200]))
    return {"nvpmodel_q": proc.stdout.strip()}


def clock_info():
    # type: () -> Dict[str, Any]
    out = {}  # type: Dict[str, Any]
    if shutil.which("jetson_clocks"):
        proc = run_quiet(["jetson_clocks", "--show"])
        if proc is not None and proc.returncode == 0:
            out["jetson_clocks_show"] = proc.stdout.strip()
        else:
            out["jetson_clocks_show"] = unavailable("jetson_clocks --show failed (needs root)")
    else:
        out["jetson_clocks_show"] = unavailable("jetson_clocks is not installed")
    rates = {}
    for path in sorted(glob.glob("/sys/class/devfreq/*/cur_freq")) + sorted(
            glob.glob("/sys/devices/system/cpu/cpu*/cpufreq/scaling_cur_freq")):
        value = read_text(path)
        if value and value.isdigit():
            rates[path] = int(value)
    out["kernel_clock_rates"] = rates if rates else unavailable("no devfreq or cpufreq clock files readable")
    return out


def capture_env(trtexec):
    # type: (str) -> Dict[str, Any]
    return {
        "hostname": platform.node(), "machine": platform.machine(), "kernel": platform.release(),
        "python": platform.python_version(), "tensorrt": tensorrt_info(trtexec), "cuda": cuda_info(),
        "release": release_info(), "power_mode": power_info(), "clocks": clock_info(),
        "tegrastats": {"available": shutil.which("tegrastats") is not None},
    }


def engine_keys(onnx, plugin, samples, precisions, trt_version, builder="trtexec", engine_dir=None, requests=None):
    # type: (Optional[str], Optional[str], str, List[str], str, str, Optional[str], Optional[List[str]]) -> Dict[str, Any]
    """{name: {key, onnx, onnx_sha256, plugin_sha256, profile, engine, exists}} (each file hashed once).

    `requests` ("PRECISION:TYPING:GRAPH", name "PRECISION/TYPING") key each precision's graph and typing, as
    the host plans them; without them every precision keys `onnx` under its own name (typing unset)."""
    manifest = samples_manifest.load(samples)
    profile = create_engine.profile_from_manifest(manifest)
    wanted = []  # type: List[Any]
    for req in requests or []:
        precision, typing, path = req.split(":", 2)
        wanted.append(("{}/{}".format(precision, typing), precision, typing, path))
    if not requests:
        wanted = [(p, p, None, onnx) for p in precisions]
    hashes = {}  # type: Dict[str, str]
    for flag, path in [("--onnx", w[3]) for w in wanted] + [("--plugin", plugin)]:
        if path is not None and not os.path.isfile(path):
            raise create_engine.UsageError("{} {}: no such file on the target".format(flag, path))
        if path is not None and path not in hashes:
            hashes[path] = samples_manifest.sha256_file(path)
    plugin_sha = hashes.get(plugin) if plugin else None
    out = {}  # type: Dict[str, Any]
    for name, precision, typing, path in wanted:
        k = create_engine.engine_cache_key(hashes[path], plugin_sha, precision, trt_version, profile, builder=builder,
                                           typing=typing)
        doc = {"key": k, "onnx": path, "onnx_sha256": hashes[path], "plugin_sha256": plugin_sha, "profile": profile}
        if engine_dir:
            doc["engine"] = os.path.join(engine_dir, protocol.engine_file_name(precision, k))
            doc["exists"] = os.path.isfile(doc["engine"])
            if doc["exists"]:
                identity = create_engine.engine_identity(doc["engine"])
                doc["sha256"], doc["bytes"] = identity["sha256"], identity["bytes"]
        out[name] = doc
    return out


# --- tegrastats -----------------------------------------------------------------------------------

_RAM = re.compile(r"RAM (\d+)/(\d+)MB")
_GR3D = re.compile(r"GR3D_FREQ (\d+)%(?:@\[?(\d+)\]?)?")
_EMC = re.compile(r"EMC_FREQ (\d+)%(?:@(\d+))?")
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]+) (\d+)mW/(\d+)mW")


def parse_tegrastats_line(line):
    # type: (str) -> Dict[str, Any]
    """One tegrastats line -> GPU load %, EMC load %, RAM MB and power rails (mW, current/average)."""
    sample = {}  # type: Dict[str, Any]
    m = _GR3D.search(line)
    if m:
        sample["gpu_load_pct"] = int(m.group(1))
        if m.group(2):
            sample["gpu_freq_mhz"] = int(m.group(2))
    m = _EMC.search(line)
    if m:
        sample["emc_load_pct"] = int(m.group(1))
        if m.group(2):
            sample["emc_freq_mhz"] = int(m.group(2))
    m = _RAM.search(line)
    if m:
        sample["ram_used_mb"] = int(m.group(1))
    rails = {r.group(1): int(r.group(2)) for r in _RAIL.finditer(line)}
    if rails:
        sample["rails_mw"] = rails
    return sample


# --- runner ---------------------------------------------------------------------------------------


def run_with_tegrastats(cmd, log_path, interval_ms, pid_file=None):
    # type: (List[str], Optional[str], int, Optional[str]) -> int
    """Run `cmd`, forwarding its output, with tegrastats logging beside it; stop both on any signal.

    `pid_file` receives our process group id while we run, so the host can stop this run from another
    connection (several targets in parallel, Ctrl-C)."""
    if pid_file:
        write_pid_file(pid_file)
    try:
        return _run(cmd, log_path, interval_ms)
    finally:
        if pid_file:
            try:
                os.remove(pid_file)
            except OSError:
                pass


def write_pid_file(path):
    # type: (str) -> None
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".part"
    with open(tmp, "w") as fh:
        fh.write(str(os.getpgid(0)))
    os.replace(tmp, path)


def _run(cmd, log_path, interval_ms):
    # type: (List[str], Optional[str], int) -> int
    stats = None
    if log_path and shutil.which("tegrastats"):
        try:
            stats = subprocess.Popen(["tegrastats", "--interval", str(interval_ms), "--logfile", log_path],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError:
            stats = None
    try:
        child = subprocess.Popen(cmd)
    except OSError as exc:
        sys.stderr.write("bench.py: cannot start {}: {}\n".format(cmd[0], exc))
        if stats is not None:
            stats.terminate()
        return 127

    def stop(signum, _frame):
        # the host kills our whole process group too; this makes a lone SIGTERM/SIGHUP just as final
        for proc in (child, stats):
            if proc is not None and proc.poll() is None:
                proc.terminate()
        sys.exit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, stop)
    try:
        code = child.wait()
    finally:
        if stats is not None and stats.poll() is None:
            stats.terminate()
            try:
                stats.wait(5)
            except subprocess.TimeoutExpired:
                stats.kill()
    samples = []
    if log_path and os.path.isfile(log_path):
        with open(log_path, "r", errors="replace") as fh:
            samples = [parse_tegrastats_line(ln) for ln in fh if ln.strip()]
    protocol.emit(protocol.RUN, {"exit_code": code, "tegrastats": {
        "available": stats is not None, "interval_ms": interval_ms, "samples": samples} if stats is not None else
        {"available": False, "reason": "tegrastats is not installed on this target"}})
    return code


def main(argv=None):
    # type: (Optional[List[str]]) -> int
    ap = argparse.ArgumentParser(description="fbocc remote-bench helper (target side)")
    sub = ap.add_subparsers(dest="command")
    env = sub.add_parser("env")
    env.add_argument("--trtexec", required=True)
    for flag in ("--onnx", "--plugin", "--samples", "--precisions", "--engine-dir"):
        env.add_argument(flag)
    env.add_argument("--builder", default="trtexec")
    env.add_argument("--request", action="append", help="PRECISION:TYPING:GRAPH to key (repeatable)")
    key = sub.add_parser("key")
    key.add_argument("--onnx", required=True)
    key.add_argument("--plugin")
    key.add_argument("--precision", required=True, help="one precision or a comma list")
    key.add_argument("--tensorrt", required=True)
    key.add_argument("--samples", required=True)
    key.add_argument("--builder", default="trtexec")
    key.add_argument("--engine-dir", help="report whether <engine-dir>/<precision>-<key>.engine exists")
    engine = sub.add_parser("engine", help="print the size and sha256 of a built engine")
    engine.add_argument("--engine", required=True)
    run = sub.add_parser("run")
    run.add_argument("--tegrastats-log")
    run.add_argument("--interval-ms", type=int, default=500)
    run.add_argument("--pid-file", help="write our process group id here while running")
    run.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    if args.command == "env":
        doc = capture_env(args.trtexec)
        if args.samples and (args.request or (args.onnx and args.precisions)):
            # the cache keys in the same round trip, for the TensorRT version just found
            version = doc["tensorrt"].get("version")
            try:
                if not version:
                    raise create_engine.UsageError("the TensorRT version is unknown")
                doc["engine_keys"] = engine_keys(args.onnx, args.plugin, args.samples,
                                                 (args.precisions or "").split(","), version, args.builder,
                                                 args.engine_dir, args.request)
            except (create_engine.UsageError, samples_manifest.ManifestError) as exc:
                doc["engine_keys_error"] = str(getattr(exc, "message", exc))
        protocol.emit(protocol.ENV, doc)
        return 0
    if args.command == "key":
        try:
            keys = engine_keys(args.onnx, args.plugin, args.samples, args.precision.split(","), args.tensorrt,
                               args.builder, args.engine_dir)
        except (create_engine.UsageError, samples_manifest.ManifestError) as exc:
            sys.stderr.write("bench.py key: {}\n".format(getattr(exc, "message", exc)))
            return 2
        protocol.emit(protocol.KEY, keys)
        return 0
    if args.command == "engine":
        if not os.path.isfile(args.engine):
            sys.stderr.write("bench.py engine: {} does not exist\n".format(args.engine))
            return 2
        protocol.emit(protocol.ENGINE, create_engine.engine_identity(args.engine))
        return 0
    if args.command == "run":
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        if not cmd:
            ap.error("run needs a command after --")
        started = time.time()
        code = run_with_tegrastats(cmd, args.tegrastats_log, args.interval_ms, args.pid_file)
        sys.stderr.write("bench.py: {} exited {} after {:.1f} s\n".format(os.path.basename(cmd[0]), code,
                                                                         time.time() - started))
        return code
    ap.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
