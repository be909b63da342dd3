"""Measure `fbocc remote-bench`'s own overhead on the loopback target (not a test; run it by hand):

    .venv/bin/python -m tests.remote_bench_overhead [--iterations 100] [--repeats 3]

A real sshd on 127.0.0.1, the trtexec TEST DOUBLE as trtexec (no TensorRT here), fp32+fp16. Prints the
wall time of each remote-bench call (first with --rebuild, then cached) next to the time the double
itself spent timing, so the difference is what orchestration (SSH round trips, env capture, cache key,
result fetch) costs. These are not TensorRT numbers.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from fbocc.config import Target
from fbocc.target.bench import BenchOptions, remote_bench
from tests import test_remote_bench as e2e
from tests.sshd import make_server


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fbocc-overhead-"))
    srv = make_server(tmp / "sshd")
    try:
        remote = tmp / "remote"
        remote.mkdir()
        launcher = tmp / "trtexec"
        launcher.write_text(f'#!/bin/sh\nexec {sys.executable} {e2e.DOUBLE} "$@"\n')
        launcher.chmod(0o755)
        target = Target(name="loop", host=srv.host, port=srv.port, user=srv.user, identity_file=srv.client_key,
                        workdir=str(remote), trtexec=str(launcher), python=sys.executable)
        started = time.monotonic()
        e2e.upload(target, srv.known_hosts, e2e.make_artifacts(tmp / "local"), remote)
        print(f"push (first, {sum(1 for _ in (tmp / 'local').rglob('*'))} paths): {time.monotonic() - started:.2f} s")
        for i in range(args.repeats):
            rebuild = i == 0
            started = time.monotonic()
            out = remote_bench([target], BenchOptions(precisions=("fp32", "fp16"), iterations=args.iterations,
                                                      warmup_ms=0, rebuild=rebuild), tmp / "results",
                               known_hosts=srv.known_hosts)
            wall = time.monotonic() - started
            results = out[0].value.results if out[0].value else []
            timed = sum(r.summary["total_host_walltime_s"] for r in results)
            print(f"{'rebuild' if rebuild else 'cached '}: {wall:6.2f} s wall, double timed {timed:.2f} s, "
                  f"overhead {wall - timed:.2f} s; medians "
                  + ", ".join(f"{r.precision} {r.headline_ms():.3f} ms" for r in results))
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
