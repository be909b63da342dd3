"""push-to-target against real OpenSSH servers on loopback: incremental, verified, resumable, parallel."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fbocc.build.cross_build import Artefact, BuildManifest
from fbocc.cli import run as cli
from fbocc.config import Target
from fbocc.errors import BuildError, Interrupted, RemoteError, TransferError, ValidationError
from fbocc.export.onnx_graph import external_data_files
from fbocc.export.samples import save_manifest, write_tensor
from fbocc.target.artefacts import ArtefactSet, HashCache, collect_artefacts
from fbocc.target.push import push_artifacts
from fbocc.target.store import list_sets, prune_sets
from fbocc.target.transport import TargetSession
from tests.conftest import IN_CI
from tests.sshd import SshServer, free_port

pytestmark = pytest.mark.ssh


# --- small real artefacts -----------------------------------------------------------------------------


def make_onnx(path: Path, weights: int, data_name: str = "weights.bin") -> None:
    """A real ONNX model (Add with a float initializer) whose weights live in an external-data file."""
    w = numpy_helper.from_array(np.arange(weights, dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [weights])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [weights])], [w])
    onnx.save_model(helper.make_model(graph), str(path), save_as_external_data=True, location=data_name,
                    size_threshold=0)


def make_samples(samples: Path, frames: int = 2) -> None:
    entries = []
    for i in range(frames):
        fid = f"{i:03d}"
        x = write_tensor(samples, f"frame_{fid}/x.dat", np.full((4, 8), i, np.float32))
        y = write_tensor(samples, f"frame_{fid}/y.dat", np.full((4, 8), i + 1, np.float32))
        entries.append({"id": fid, "inputs": {"x": x}, "outputs": {"y": y}})
    save_manifest(samples, {"format": "fbocc-samples/1", "inputs": [{"name": "x", "dtype": "float32"}],
                            "outputs": [{"name": "y", "dtype": "float32"}], "profile": {}, "history": [],
                            "frames": entries})


@pytest.fixture
def artefacts(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "artefacts"
    root.mkdir()
    make_onnx(root / "fbocc model.onnx", weights=64 * 1024)  # 256 KiB of external weights
    plugin = root / "plugins"
    plugin.mkdir()
    (plugin / "libfbocc_plugins.so").write_bytes(b"\x7fELF" + os.urandom(20000))
    make_samples(root / "samples")
    deploy = root / "deploy"  # a stand-in for deploy/, so the library tests do not depend on its contents
    (deploy / "lib").mkdir(parents=True)
    (deploy / "bench.py").write_text("print('bench')\n")
    (deploy / "lib" / "it's here.py").write_text("X = 1\n")
    return {"onnx": root / "fbocc model.onnx", "plugin": plugin, "samples": root / "samples", "deploy": deploy}


def collect(a: dict[str, Path], tmp_path: Path) -> ArtefactSet:
    return collect_artefacts(onnx=a["onnx"], plugin=a["plugin"], samples=a["samples"], deploy=a["deploy"],
                             hash_cache=HashCache(tmp_path / "hash-cache.json"))


def target_for(server: SshServer, workdir: Path | str, name: str = "orin", **kw: object) -> Target:
    fields: dict[str, object] = {"host": server.host, "port": server.port, "user": server.user,
                                 "identity_file": server.client_key, "workdir": str(workdir)}
    fields.update(kw)
    return Target(name=name, **fields)  # type: ignore[arg-type]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_set_matches(workdir: Path, aset: ArtefactSet) -> None:
    """The remote `current` is exactly this set: every file present with its sha256, no .part left."""
    current = workdir / "current"
    assert os.readlink(current) == f"sets/{aset.set_hash}"
    for f in aset.files:
        assert sha(current / f.path) == f.sha256, f.path
    doc = json.loads((current / "fbocc-set.json").read_text())
    assert doc["set"] == aset.set_hash and {e["path"] for e in doc["files"]} == {f.path for f in aset.files}
    assert not list((workdir / "objects").glob("*.part"))
    assert not list((workdir / "sets").glob(".*"))


# --- artefact set ------------------------------------------------------------------------------------


def test_artefact_set_layout_and_validation(artefacts: dict[str, Path], tmp_path: Path) -> None:
    aset = collect(artefacts, tmp_path)
    paths = {f.path for f in aset.files}
    assert {"fbocc model.onnx", "weights.bin", "libfbocc_plugins.so", "samples/manifest.json",
            "samples/frame_000/x.dat", "samples/frame_000/y.dat", "samples/frame_001/x.dat",
            "samples/frame_001/y.dat", "deploy/bench.py", "deploy/lib/it's here.py"} == paths
    assert aset.onnx == "fbocc model.onnx" and aset.plugin == "libfbocc_plugins.so"
    assert external_data_files(artefacts["onnx"]) == ["weights.bin"]
    assert collect(artefacts, tmp_path).set_hash == aset.set_hash  # same content, same set

    (artefacts["samples"] / "frame_001" / "x.dat").write_bytes(b"\0" * 12)  # truncated input
    with pytest.raises(ValidationError, match=r"frame_001/x\.dat"):
        collect(artefacts, tmp_path)
    make_samples(artefacts["samples"])

    (artefacts["onnx"].parent / "weights.bin").rename(artefacts["onnx"].parent / "elsewhere.bin")
    with pytest.raises(ValidationError, match=r"weights\.bin.*missing"):
        collect(artefacts, tmp_path)
    (artefacts["onnx"].parent / "elsewhere.bin").rename(artefacts["onnx"].parent / "weights.bin")

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\xff" * 100)
    with pytest.raises(ValidationError, match="not a readable ONNX model"):
        collect_artefacts(onnx=garbage, plugin=None, samples=None, hash_cache=HashCache(tmp_path / "c.json"))

    lib = artefacts["plugin"] / "libfbocc_plugins.so"
    built = BuildManifest(
        profile="sim", target_arch="aarch64", image="fbocc-sim", image_id="sha256:0", cuda_version="13.0",
        tensorrt_version=None, toolchain={}, source_dir="plugins", source_hash="0", recipe_hash="0",
        cache_key="0", make_args="", compile_flags=[], cuda_archs=["87"], duration_s=0.0, cache="miss",
        transfer="archive", built_at="2026-01-01T00:00:00Z",
        artefacts=[Artefact(file=lib.name, sha256="0" * 64, size=lib.stat().st_size, machine="aarch64",
                            cubin_archs=["87"], ptx_archs=[], needed=[], registration_symbols=[])])
    (artefacts["plugin"] / "fbocc-build.json").write_text(built.to_json())
    with pytest.raises(ValidationError, match="does not match its build manifest"):
        collect(artefacts, tmp_path)
    (artefacts["plugin"] / "fbocc-build.json").write_text(json.dumps({"artefacts": [{"file": lib.name}]}))
    with pytest.raises(ValidationError, match="not a readable build manifest"):
        collect(artefacts, tmp_path)


# --- pushing -----------------------------------------------------------------------------------------


def test_first_push_repush_and_one_changed_file(sshd: SshServer, artefacts: dict[str, Path], tmp_path: Path) -> None:
    workdir = tmp_path / "target's work dir"  # spaces and a quote in every remote path
    aset = collect(artefacts, tmp_path)
    with TargetSession(target_for(sshd, workdir), known_hosts=sshd.known_hosts) as session:
        first = push_artifacts(session, aset)
        assert (first.files_sent, first.files_skipped) == (len(aset.files), 0)
        assert first.bytes_sent == sum({f.sha256: f.size for f in aset.files}.values())
        assert_set_matches(workdir, aset)

        again = push_artifacts(session, aset)
        assert (again.files_sent, again.files_skipped, again.bytes_sent) == (0, len(aset.files), 0)
        assert again.switched is False

        lib = artefacts["plugin"] / "libfbocc_plugins.so"
        lib.write_bytes(lib.read_bytes() + b"rebuilt")
        changed = collect(artefacts, tmp_path)
        third = push_artifacts(session, changed)
        assert (third.files_sent, third.bytes_sent) == (1, lib.stat().st_size)
        assert changed.set_hash != aset.set_hash
        assert_set_matches(workdir, changed)
        # The old set still exists and shares the unchanged files (hard links to one object each).
        old_onnx = workdir / "sets" / aset.set_hash / "fbocc model.onnx"
        assert old_onnx.stat().st_ino == (workdir / "current" / "fbocc model.onnx").stat().st_ino

        listed = list_sets(session)
        assert {s.set_hash for s in listed} == {aset.set_hash, changed.set_hash}
        assert [s.set_hash for s in listed if s.current] == [changed.set_hash]

        # A file damaged on the target is found (its stat changed), re-hashed and replaced.
        obj = workdir / "objects" / next(f.sha256 for f in aset.files if f.path == "weights.bin")
        obj.chmod(0o644)
        obj.write_bytes(b"damaged")
        repaired = push_artifacts(session, changed)
        assert repaired.files_sent == 1 and repaired.bytes_sent > 0
        assert_set_matches(workdir, changed)

        pruned = prune_sets(session, keep=1)
        assert pruned.removed == [aset.set_hash] and pruned.kept == [changed.set_hash]
        assert not (workdir / "sets" / aset.set_hash).exists()
        assert len(list((workdir / "objects").glob("[0-9a-f]" * 64))) == len({f.sha256 for f in changed.files})
        assert_set_matches(workdir, changed)


class CuttingProxy:
    """TCP proxy on 127.0.0.1 that drops its first connection after `cut_after` client->server bytes."""

    def __init__(self, upstream_port: int, cut_after: int | None, bytes_per_s: float | None = None) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.bytes_per_s = bytes_per_s
        self.cuts = 0
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            limit = self.cut_after if self.connections == 1 else None
            threading.Thread(target=self._pipe, args=(client, upstream, limit), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, None), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if limit is not None and sent + len(data) > limit:
                    self.cuts += 1
                    break  # the link dies mid-transfer: both directions are closed below
                dst.sendall(data)
                sent += len(data)
                if self.bytes_per_s:  # a slow link
                    time.sleep(len(data) / self.bytes_per_s)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.closed = True
        self.listener.close()


def test_cut_connection_resumes_and_ends_verified(sshd: SshServer, artefacts: dict[str, Path],
                                                  tmp_path: Path) -> None:
    make_onnx(artefacts["onnx"], weights=1024 * 1024)  # 4 MiB of weights: the cut lands inside this file
    aset = collect(artefacts, tmp_path)
    proxy = CuttingProxy(sshd.port, cut_after=2_500_000)
    known_hosts = tmp_path / "kh"
    known_hosts.write_text(sshd.host_pubkey_line.replace(f":{sshd.port} ", f":{proxy.port} ") + "\n")
    workdir = tmp_path / "remote"
    try:
        with TargetSession(target_for(sshd, workdir, port=proxy.port), known_hosts=known_hosts) as session:
            result = push_artifacts(session, aset, parallel=1)
    finally:
        proxy.close()
    assert proxy.cuts == 1 and result.reconnects >= 1
    assert result.resumed == 1  # the partial weights file continued from its verified prefix
    assert result.bytes_sent < aset.total_bytes + 2_500_000
    assert_set_matches(workdir, aset)


def test_ctrl_c_mid_push_keeps_current_and_the_next_push_resumes(sshd: SshServer, artefacts: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    aset = collect(artefacts, tmp_path)
    workdir = tmp_path / "remote"
    with TargetSession(target_for(sshd, workdir), known_hosts=sshd.known_hosts) as session:
        push_artifacts(session, aset)
    make_onnx(artefacts["onnx"], weights=1024 * 1024)  # a new 4 MiB weights file over a 1 MB/s link
    changed = collect(artefacts, tmp_path)
    proxy = CuttingProxy(sshd.port, cut_after=None, bytes_per_s=1_000_000)
    known_hosts = tmp_path / "kh"
    known_hosts.write_text(sshd.host_pubkey_line.replace(f":{sshd.port} ", f":{proxy.port} ") + "\n")

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        with TargetSession(target_for(sshd, workdir, port=proxy.port), known_hosts=known_hosts) as session:
            signal.setitimer(signal.ITIMER_REAL, 2.0)
            with pytest.raises(Interrupted, match="interrupted") as stopped:
                push_artifacts(session, changed, parallel=1)
            signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        proxy.close()
    assert "re-run" in (stopped.value.fix or "")
    assert os.readlink(workdir / "current") == f"sets/{aset.set_hash}"  # the old set is still the one in use
    weights = next(f for f in changed.files if f.path == "weights.bin")
    assert not (workdir / "objects" / weights.sha256).exists()  # nothing half-written at a final name
    with TargetSession(target_for(sshd, workdir), known_hosts=sshd.known_hosts) as session:
        resumed = push_artifacts(session, changed)
    assert resumed.resumed == 1 and resumed.bytes_sent < weights.size
    assert_set_matches(workdir, changed)


def trtexec_at(tmp_path: Path, version: str) -> Path:
    """The trtexec double (tests/doubles/, a TensorRT stand-in) answering as TensorRT `version`."""
    import sys

    double = Path(__file__).parent / "doubles" / "trtexec_double.py"
    wrapper = tmp_path / f"trtexec-{version}"
    wrapper.write_text(f"#!/bin/sh\nFBOCC_DOUBLE_TRT_VERSION={version} exec {sys.executable} {double} \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper


def test_a_plugin_built_for_another_tensorrt_major_is_refused_before_sending(
        sshd: SshServer, artefacts: dict[str, Path], tmp_path: Path) -> None:
    lib = artefacts["plugin"] / "libfbocc_plugins.so"
    built = BuildManifest(
        profile="drive-os-6.5.1", target_arch="aarch64", image="i", image_id="sha256:0", cuda_version="11.4",
        tensorrt_version="10.8.0", toolchain={}, source_dir="plugins", source_hash="0", recipe_hash="0",
        cache_key="0", make_args="", compile_flags=[], cuda_archs=["87"], duration_s=0.0, cache="miss",
        transfer="archive", built_at="2026-01-01T00:00:00Z",
        artefacts=[Artefact(file=lib.name, sha256=sha(lib), size=lib.stat().st_size, machine="EM_AARCH64",
                            cubin_archs=["87"], ptx_archs=[], needed=[], registration_symbols=[])])
    (artefacts["plugin"] / "fbocc-build.json").write_text(built.to_json())
    aset = collect(artefacts, tmp_path)
    workdir = tmp_path / "w"
    eleven = target_for(sshd, workdir, trtexec=str(trtexec_at(tmp_path, "11.4.1")))
    with TargetSession(eleven, known_hosts=sshd.known_hosts) as session, pytest.raises(BuildError) as refused:
        push_artifacts(session, aset)
    assert refused.value.message == ("libfbocc_plugins.so: built with TensorRT 10.8.0 headers, the target runs "
                                     "TensorRT 11.4.1: plugins would not register (the plugin interfaces of "
                                     "TensorRT 10 and 11 differ)")
    assert (refused.value.fix or "").startswith("rebuild for this TensorRT: fbocc cross-build --profile ")
    assert "jetpack-7.2.2" in (refused.value.fix or "")
    assert not (workdir / "current").exists() and not list((workdir / "objects").glob("*"))  # nothing sent
    same_major = target_for(sshd, workdir, trtexec=str(trtexec_at(tmp_path, "10.16.0")))
    with TargetSession(same_major, known_hosts=sshd.known_hosts) as session:
        push_artifacts(session, aset)
    assert_set_matches(workdir, aset)


def test_out_of_space_is_refused_before_sending(sshd: SshServer, artefacts: dict[str, Path],
                                                tmp_path: Path) -> None:
    small = tmp_path / "small disk"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(small)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        if IN_CI:
            pytest.fail(f"CI=true but tmpfs cannot be mounted: {mounted.stderr}")
        pytest.skip(f"mounting a small tmpfs is not permitted here: {mounted.stderr.strip()}")
    try:
        aset = collect(artefacts, tmp_path)
        with TargetSession(target_for(sshd, small / "w"), known_hosts=sshd.known_hosts) as session, \
                pytest.raises(TransferError, match="not enough space") as refused:
            push_artifacts(session, aset)
        assert "prune" in (refused.value.fix or "")
        assert list((small / "w" / "objects").iterdir()) == []  # nothing was sent
        assert not (small / "w" / "current").exists()
        subprocess.run(["mount", "-o", "remount,ro", str(small)], check=True)
        with TargetSession(target_for(sshd, small / "w"), known_hosts=sshd.known_hosts) as session, \
                pytest.raises(TransferError, match="read-only filesystem"):
            push_artifacts(session, aset)
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_no_sftp_subsystem_is_one_clear_error(sshd_factory: Callable[..., SshServer], artefacts: dict[str, Path],
                                              tmp_path: Path) -> None:
    server = sshd_factory()
    server.stop()
    text = server.config_text().replace("Subsystem sftp internal-sftp\n", "")
    server.config_text = lambda: text  # type: ignore[method-assign]
    server.start()
    with TargetSession(target_for(server, tmp_path / "w"), known_hosts=server.known_hosts) as session, \
            pytest.raises(RemoteError, match="no SFTP subsystem"):
        push_artifacts(session, collect(artefacts, tmp_path), retries=0)
    assert not (tmp_path / "w" / "current").exists()


# --- the command line ----------------------------------------------------------------------------------


@pytest.fixture
def project(isolated_home: Path, artefacts: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The cwd of an isolated project with the artefacts at the default places."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(isolated_home / ".cache"))  # the CLI's hash cache
    work = Path.cwd()
    (work / "fbocc-export").mkdir()  # where `fbocc export` writes
    artefacts["onnx"].rename(work / "fbocc-export" / "fbocc.onnx")
    (artefacts["onnx"].parent / "weights.bin").rename(work / "fbocc-export" / "weights.bin")
    artefacts["samples"].rename(work / "fbocc-export" / "samples")
    (work / "build").mkdir()
    artefacts["plugin"].rename(work / "build" / "plugins")
    yield work


def test_cli_unknown_host_refused_then_accept_new_recorded(sshd: SshServer, project: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    (project / "fbocc.toml").write_text(sshd.target_toml("orin", project / "remote"))
    assert cli(["push-to-target", "orin"]) == RemoteError.exit_code
    captured = capsys.readouterr()
    assert "unknown SSH host" in captured.err and "--accept-new" in captured.err
    assert not (project / "remote").exists()

    assert cli(["push-to-target", "orin", "--accept-new", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["targets"][0]["ok"] and doc["targets"][0]["files_sent"] == doc["files"]
    recorded = (project / ".fbocc" / "known_hosts").read_text()
    assert recorded.split() == sshd.host_pubkey_line.split()
    assert (project / "remote" / "current" / "fbocc.onnx").is_file()

    assert cli(["push-to-target", "orin", "--no-samples", "--onnx", "missing.onnx"]) == 2
    assert "--onnx" in capsys.readouterr().err

    assert cli(["push-to-target", "orin", "--no-samples"]) == 0  # a second set
    capsys.readouterr()
    assert cli(["push-to-target", "orin", "--list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)[0]["result"]
    assert len(listed) == 2 and [s["current"] for s in listed] == [True, False]
    assert cli(["push-to-target", "orin", "--prune", "--keep", "1"]) == 0
    assert "removed 1 set(s)" in capsys.readouterr().out
    assert len(list((project / "remote" / "sets").iterdir())) == 1


def test_cli_two_targets_in_parallel_one_down(sshd_factory: Callable[..., SshServer], project: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    a = sshd_factory()
    down_port = free_port()
    (project / "fbocc.toml").write_text(
        a.target_toml("orin-a", project / "remote-a")
        + f'[targets.orin-b]\nhost = "127.0.0.1"\nport = {down_port}\nuser = "{a.user}"\n'
        + f'identity_file = "{a.client_key}"\nworkdir = "{project / "remote-b"}"\n'
        + '[groups]\nfleet = ["orin-a", "orin-b"]\n')
    (project / ".fbocc").mkdir()
    (project / ".fbocc" / "known_hosts").write_text(a.host_pubkey_line + "\n")
    code = cli(["push-to-target", "fleet"])
    captured = capsys.readouterr()
    assert code == TransferError.exit_code
    assert "1 of 2 targets failed: orin-b" in captured.err
    assert "orin-a" in captured.out and "ok" in captured.out and "failed" in captured.out
    assert (project / "remote-a" / "current" / "fbocc.onnx").is_file()
    assert not (project / "remote-b").exists()


def test_targets_without_openssl_or_python_use_sha256sum_and_ln(
        sshd: SshServer, artefacts: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fbocc.target.store

    monkeypatch.setattr(fbocc.target.store, "OPENSSL_SHA256", "no-such-openssl dgst -sha256 -r")
    aset = collect(artefacts, tmp_path)
    workdir = tmp_path / "w"
    target = target_for(sshd, workdir, python="no-such-python3")
    with TargetSession(target, known_hosts=sshd.known_hosts) as session:
        assert push_artifacts(session, aset).files_sent == len(aset.files)
        (workdir / "objects" / "index.tsv").unlink()  # forget what was verified: everything is re-hashed
        assert push_artifacts(session, aset).files_sent == 0
    assert_set_matches(workdir, aset)


def test_push_through_a_proxyjump_host(sshd_factory: Callable[..., SshServer], artefacts: dict[str, Path],
                                       isolated_home: Path, tmp_path: Path) -> None:
    jump = sshd_factory()
    target = sshd_factory(client_key=jump.client_key)
    (isolated_home / ".ssh" / "config").write_text(jump.ssh_config("jumpbox"))
    aset = collect(artefacts, tmp_path)
    workdir = tmp_path / "via jump"
    with TargetSession(target_for(target, workdir, proxy_jump="jumpbox"), known_hosts=target.known_hosts) as session:
        assert session._conn is not None and session._conn.gateway.port == jump.port
        assert push_artifacts(session, aset).files_sent == len(aset.files)
    assert_set_matches(workdir, aset)
