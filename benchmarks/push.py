"""`make bench-push`: fbocc push-to-target against OpenSSH scp, same files, same loopback sshd, same run.

Measures, over a real OpenSSH server on 127.0.0.1 (tests/sshd.py):
- full push of a fresh ~300 MB artefact set (ONNX + external weights, plugin .so, samples, deploy/):
  fbocc (connect, pipelined SFTP, remote sha256sum of every file, set assembly, `current` switch)
  against `scp -r` of exactly the same files, interleaved, median of N repetitions;
- unchanged re-push: library call (hash cache warm) and the whole `fbocc push-to-target` process;
- the floor: `ssh <target> true` (connect + one remote command) on the same server.
Writes a markdown report (machine, load, command, table) to docs/benchmarks/push.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fbocc.config import Target, cache_dir  # noqa: E402
from fbocc.target.artefacts import HashCache, collect_artefacts  # noqa: E402
from fbocc.target.push import push_artifacts  # noqa: E402
from fbocc.target.transport import TargetSession  # noqa: E402
from tests.sshd import SshServer, make_server  # noqa: E402


def make_artefacts(root: Path, total_mb: int) -> dict[str, Path]:
    """A deterministic artefact set of about `total_mb` MB: 83% ONNX weights, 15% samples, 2% plugin."""
    import onnx
    from onnx import TensorProto, helper

    from fbocc.export.samples import save_manifest, write_tensor

    stamp = root / f".complete-{total_mb}"
    paths = {"onnx": root / "fbocc.onnx", "plugin": root / "plugins", "samples": root / "samples"}
    if stamp.exists():
        return paths
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    total = total_mb * 1_000_000
    weights = (int(total * 0.83) // 4) * 4
    (root / "weights.bin").write_bytes(rng.bytes(weights))
    w = onnx.TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[weights // 4])
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "weights.bin"), ("offset", "0"), ("length", str(weights))):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "bench",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [weights // 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [weights // 4])], [w])
    onnx.save_model(helper.make_model(graph), str(paths["onnx"]))
    paths["plugin"].mkdir()
    (paths["plugin"] / "libfbocc_plugins.so").write_bytes(rng.bytes(int(total * 0.02)))
    frames = 20
    per_tensor = (int(total * 0.15) // frames // 2 // 4) * 4
    entries = []
    for i in range(frames):
        fid = f"{i:03d}"
        x = write_tensor(paths["samples"], f"frame_{fid}/img.dat",
                         rng.standard_normal(per_tensor // 4, dtype=np.float32))
        y = write_tensor(paths["samples"], f"frame_{fid}/occ.dat",
                         rng.standard_normal(per_tensor // 4, dtype=np.float32))
        entries.append({"id": fid, "inputs": {"img": x}, "outputs": {"occ": y}})
    save_manifest(paths["samples"], {"format": "fbocc-samples/1", "inputs": [{"name": "img", "dtype": "float32"}],
                                     "outputs": [{"name": "occ", "dtype": "float32"}], "profile": {},
                                     "history": [], "frames": entries})
    stamp.touch()
    return paths


def without_login_rc(server: SshServer) -> SshServer:
    """Restart `server` so bash skips ~/.bashrc for sshd commands (SHLVL=1), as on a stock target."""
    server.stop()
    text = server.config_text().replace(f"SetEnv FBOCC_TEST_SSHD={server.port}",
                                        f"SetEnv FBOCC_TEST_SSHD={server.port} SHLVL=1")
    server.config_text = lambda: text  # type: ignore[method-assign]
    return server.start()


def ssh_base(server: SshServer) -> list[str]:
    return ["-i", str(server.client_key), "-o", f"UserKnownHostsFile={server.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"]


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def process_cpu(pid: int) -> float:
    """CPU seconds of a process and of its reaped children (sshd: every finished session under it)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def own_cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=300, help="artefact set size in MB")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each full transfer")
    parser.add_argument("--jobs", type=int, default=4, help="fbocc files in flight")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "push.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="bench-push: %(name)s: %(message)s")
    logging.getLogger("fbocc").setLevel(logging.INFO)

    cache = cache_dir() / f"bench-push-{args.mb}"
    print(f"bench-push: artefacts in {cache}", file=sys.stderr)
    arts = make_artefacts(cache, args.mb)
    tmp = Path(tempfile.mkdtemp(prefix="fbocc-bench-push-"))
    as_is = make_server(tmp / "sshd-as-is")
    server = without_login_rc(make_server(tmp / "sshd"))
    load_before = loadavg()
    try:
        hash_cache = HashCache(tmp / "hash-cache.json")
        # A snapshot of deploy/: other work may edit it while the benchmark runs.
        deploy = tmp / "deploy"
        shutil.copytree(REPO / "deploy", deploy, ignore=shutil.ignore_patterns("__pycache__"))
        cold_hash = time.perf_counter()
        aset = collect_artefacts(onnx=arts["onnx"], plugin=arts["plugin"], samples=arts["samples"],
                                 deploy=deploy, hash_cache=hash_cache)
        cold_hash = time.perf_counter() - cold_hash
        # scp gets exactly the files of the set, laid out as in the set (hard links, no copy).
        staging = tmp / "staging"
        for f in aset.files:
            (staging / f.path).parent.mkdir(parents=True, exist_ok=True)
            os.link(f.local, staging / f.path)
        mb = aset.total_bytes / 1e6
        print(f"bench-push: {len(aset.files)} files, {mb:.1f} MB; sshd on port {server.port}", file=sys.stderr)
        remote = tmp / "remote"
        remote.mkdir()
        target = Target(name="bench", host=server.host, port=server.port, user=server.user,
                        identity_file=server.client_key, workdir=str(remote / "fbocc"))

        def scp() -> None:
            subprocess.run(["scp", "-q", "-r", "-P", str(server.port), *ssh_base(server), str(staging),
                            f"{server.user}@{server.host}:{remote / 'scp'}"], check=True)

        def fbocc_push() -> None:
            with TargetSession(target, known_hosts=server.known_hosts) as session:
                result = push_artifacts(session, aset, parallel=args.jobs)
            assert result.files_sent == len(aset.files) and result.bytes_sent == aset.total_bytes, result

        def ssh_true(srv: SshServer) -> None:
            subprocess.run(["ssh", "-p", str(srv.port), *ssh_base(srv), f"{srv.user}@{srv.host}", "true"], check=True)

        times: dict[str, list[float]] = {"scp": [], "fbocc": []}
        client_cpu: dict[str, list[float]] = {"scp": [], "fbocc": []}
        target_cpu: dict[str, list[float]] = {"scp": [], "fbocc": []}
        assert server.proc is not None
        client_of = {"scp": resource.RUSAGE_CHILDREN, "fbocc": resource.RUSAGE_SELF}
        for rep in range(args.reps):
            order = [("scp", scp), ("fbocc", fbocc_push)]
            for name, fn in order if rep % 2 == 0 else reversed(order):
                shutil.rmtree(remote / "scp", ignore_errors=True)
                subprocess.run(["chmod", "-R", "u+w", str(remote)], check=False)
                shutil.rmtree(remote / "fbocc", ignore_errors=True)
                c0, s0 = own_cpu(client_of[name]), process_cpu(server.proc.pid)
                times[name].append(timed(fn))
                time.sleep(0.3)  # let sshd reap the finished session so its CPU is counted
                client_cpu[name].append(own_cpu(client_of[name]) - c0)
                target_cpu[name].append(process_cpu(server.proc.pid) - s0)
                print(f"bench-push: rep {rep + 1} {name}: {times[name][-1]:.2f} s", file=sys.stderr)
        # Unchanged re-push: what the command does after the first push (hash cache warm).
        def repush(srv: SshServer, workdir: Path) -> None:
            again = collect_artefacts(onnx=arts["onnx"], plugin=arts["plugin"], samples=arts["samples"],
                                      deploy=deploy, hash_cache=hash_cache)
            t = Target(name="bench", host=srv.host, port=srv.port, user=srv.user, identity_file=srv.client_key,
                       workdir=str(workdir))
            with TargetSession(t, known_hosts=srv.known_hosts) as session:
                result = push_artifacts(session, again)
            assert result.files_sent == 0 and result.bytes_sent == 0, result

        repush_times = [timed(lambda: repush(server, remote / "fbocc")) for _ in range(5)]
        floor = [timed(lambda: ssh_true(server)) for _ in range(5)]
        # The same on the server as this machine has it (root's ~/.bashrc runs for every command).
        with TargetSession(Target(name="as-is", host=as_is.host, port=as_is.port, user=as_is.user,
                                  identity_file=as_is.client_key, workdir=str(remote / "fbocc")),
                           known_hosts=as_is.known_hosts) as session:
            push_artifacts(session, aset)  # the objects are there: this only assembles and switches
        repush_as_is = [timed(lambda: repush(as_is, remote / "fbocc")) for _ in range(3)]
        floor_as_is = [timed(lambda: ssh_true(as_is)) for _ in range(3)]
        project = tmp / "project"
        project.mkdir()
        (project / "fbocc.toml").write_text(server.target_toml("bench", remote / "fbocc"))
        (project / ".fbocc").mkdir()
        (project / ".fbocc" / "known_hosts").write_text(server.host_pubkey_line + "\n")
        cli = [str(Path(sys.executable).with_name("fbocc")), "push-to-target", "bench", "--onnx", str(arts["onnx"]),
               "--plugin", str(arts["plugin"]), "--samples", str(arts["samples"]), "--json"]
        env = {**os.environ, "XDG_CACHE_HOME": str(tmp / "xdg-cache")}
        subprocess.run(cli, cwd=project, env=env, check=True, capture_output=True)  # warms the CLI's hash cache
        cli_times, cli_cpu = [], []
        for _ in range(3):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            cli_times.append(timed(lambda: subprocess.run(cli, cwd=project, env=env, check=True,
                                                          capture_output=True)))
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cli_cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        load_after = loadavg()
    finally:
        server.stop()
        as_is.stop()
        subprocess.run(["chmod", "-R", "u+w", str(tmp)], check=False)
        shutil.rmtree(tmp, ignore_errors=True)

    scp_s, fb_s = statistics.median(times["scp"]), statistics.median(times["fbocc"])
    ratio = scp_s / fb_s
    repush_s, floor_s, cli_s = statistics.median(repush_times), statistics.median(floor), statistics.median(cli_times)
    med = statistics.median
    from fbocc.target.transport import ssh_stack

    ssh_version = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    rows = [
        ("full push, OpenSSH `scp -r`", f"{scp_s:.2f} s", f"{mb / scp_s:.0f} MB/s",
         " ".join(f"{t:.2f}" for t in times["scp"])),
        (f"full push, fbocc (jobs={args.jobs}, verified)", f"{fb_s:.2f} s", f"{mb / fb_s:.0f} MB/s",
         " ".join(f"{t:.2f}" for t in times["fbocc"])),
        ("unchanged re-push, library call", f"{repush_s:.2f} s", "", " ".join(f"{t:.2f}" for t in repush_times)),
        ("unchanged re-push, whole `fbocc push-to-target` process", f"{cli_s:.2f} s",
         f"CPU {med(cli_cpu):.2f} s", " ".join(f"{t:.2f}" for t in cli_times)),
        ("floor: `ssh target true` (OpenSSH client)", f"{floor_s:.2f} s", "", " ".join(f"{t:.2f}" for t in floor)),
        ("unchanged re-push, library call, sshd as-is (root's ~/.bashrc runs)", f"{med(repush_as_is):.2f} s", "",
         " ".join(f"{t:.2f}" for t in repush_as_is)),
        ("floor: `ssh target true`, sshd as-is", f"{med(floor_as_is):.2f} s", "",
         " ".join(f"{t:.2f}" for t in floor_as_is)),
    ]
    bar_tp = "met" if ratio >= 0.9 else f"NOT met (needs {0.9 / ratio:.2f}x faster)"
    bar_re = "met" if repush_s < 1.0 else f"NOT met ({repush_s:.2f} s)"
    lines = [
        "# push-to-target benchmark",
        "",
        "Produced by `make bench-push` (`benchmarks/push.py`); numbers below are from the last run.",
        "",
        f"- machine: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        f"- load average (1/5/15 min) before: {load_before}; after: {load_after} (the machine is shared)",
        f"- {ssh_version}; {ssh_stack()}",
        "- link: loopback to a real OpenSSH sshd on 127.0.0.1 (internal-sftp), same disk for source and target",
        "- sshd: `SetEnv SHLVL=1` so that bash does not source the login user's `~/.bashrc` for sshd commands, "
        "as a stock target's `.bashrc` returns at once for non-interactive shells; this machine's root "
        "`.bashrc` runs `pyenv init` (~0.5-1 s per remote command under load); the last two rows are "
        "measured on an sshd without that setting",
        f"- artefact set: {len(aset.files)} files, {mb:.1f} MB (ONNX + external weights, plugin .so, "
        "20 sample frames, deploy/); hashing it cold took " f"{cold_hash:.2f} s (then cached)",
        f"- command: `python benchmarks/push.py --mb {args.mb} --reps {args.reps} --jobs {args.jobs}`; "
        "full pushes interleaved (scp, fbocc, then fbocc, scp, ...), medians shown",
        "",
        "| measurement | median | throughput | all runs (s) |",
        "| --- | --- | --- | --- |",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
        "",
        "CPU seconds per full push (medians; both ends share the same 2 cores, so CPU is the currency):",
        "",
        "| | client (scp+ssh / fbocc process) | target side (sshd, sftp-server, hashing, shell) | total |",
        "| --- | --- | --- | --- |",
        *[f"| {n} | {med(client_cpu[n]):.2f} | {med(target_cpu[n]):.2f} | "
          f"{med([a + b for a, b in zip(client_cpu[n], target_cpu[n], strict=True)]):.2f} |" for n in ("scp", "fbocc")],
        "",
        f"- throughput ratio fbocc / scp: **{ratio:.2f}x** (bar >= 0.9x: {bar_tp})",
        f"- unchanged re-push: **{repush_s:.2f} s** (bar < 1 s: {bar_re}); one remote command after connecting, "
        "so it sits close to the `ssh target true` floor",
        "",
        "fbocc's full push includes what scp does not do: a SHA-256 of every file on the target (`openssl dgst`, "
        "else `sha256sum`) before it is renamed into place, the set assembly and the atomic `current` switch; "
        "the CPU table shows what that costs. With both ends on 2 shared cores the wall-clock ratio moves with "
        "the machine's load from run to run: compare the individual runs, not only the medians.",
        "The whole-process re-push row adds Python start-up and imports (typer, rich, paramiko, fabric) on a "
        "loaded machine; the bar is read on the library call, which is what the command does after start-up.",
    ]
    lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
