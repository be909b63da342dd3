"""`fbocc push-to-target`: a verified, resumable, incremental copy of an artefact set to a target.

An artefact set is the ONNX model (with its external-data files), the plugin library (every `.so` of a
cross-build output plus its build manifest `fbocc-build.json`), the samples directory (`manifest.json`
and the `.dat` files it names, validated before sending) and the target-side `deploy/` scripts.

Remote layout under the target's workdir `W` (what remote-bench and validate rely on)::

    W/current -> sets/<set-hash>     the last complete set; switched atomically (ln -sfn + mv -T)
    W/sets/<set-hash>/               one artefact set; <set-hash> = 16 hex digits of sha256 over
        fbocc-set.json                 (path, sha256, size) of every file; the set's manifest (below)
        <name>.onnx                  the ONNX model, its external-data files at their relative locations
        <lib>.so                     every plugin library, and fbocc-build.json (when present)
        samples/manifest.json        the samples directory as `fbocc export` wrote it
        samples/frame_000/<input>.dat
        deploy/...                   the target-side scripts (Python 3.8, numpy, tensorrt)
    W/sets/.<set-hash>.tmp/          a set being assembled; renamed to sets/<set-hash> when complete
    W/objects/<sha256>               every distinct file content once, read-only; set files are hard
                                     links to these, so versions share unchanged files
    W/objects/<sha256>.part          an upload in progress; resumed after its prefix hash is checked
    W/objects/index.tsv              `<sha256> <size> <mtime> <inode>` of objects verified on the target

`fbocc-set.json`: {"format": "fbocc-set/1", "set": <set-hash>, "created": <UTC ISO time>,
"total_bytes": N, "onnx": "x.onnx" | null, "plugin": "libx.so" | null,
"plugins": [...], "samples": "samples" | null, "deploy": "deploy",
"files": [{"path": ..., "sha256": ..., "bytes": ..., "role": ...}]} — paths relative to the set dir.

Hashing on the target uses `openssl dgst -sha256` when it works there (OpenSSL uses the CPU's SHA
instructions: 5x less CPU than coreutils here), else `sha256sum`.

Transfer rules: a file whose content is already an object (verified by sha256 once, re-hashed when
its size/mtime/inode changed) is skipped. Others go to `objects/<sha>.part` through pipelined SFTP
writes (several files in flight, one SFTP channel each), are hashed on the target and renamed to
`objects/<sha>` (rename(2)) only when the hash matches. A lost connection is re-opened with backoff and
the push goes on where it stopped. Free space is checked against the bytes still to send before
anything is sent; a half-pushed set is never `current`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import mmap
import os
import posixpath
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import paramiko

from fbocc.config import Target
from fbocc.errors import FboccError, Interrupted, RemoteError, TransferError, ValidationError
from fbocc.target.transport import TargetOutcome, TargetSession, connect_all, quote

log = logging.getLogger(__name__)
SET_FORMAT = "fbocc-set/1"
SET_MANIFEST = "fbocc-set.json"
BUILD_MANIFEST = "fbocc-build.json"
CHUNK = 1 << 20
# SFTP writes sized to fill exactly 4 SSH channel packets (32 KiB each) after the SFTP header.
PACKETS_PER_WRITE = 4
STAT_BATCH = 400
OPENSSL_SHA256 = "openssl dgst -sha256 -r"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


# --- the artefact set ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArtefactFile:
    """One file of the set: where it is here, where it goes in the set dir, and its content hash."""

    path: str
    local: Path
    size: int
    sha256: str
    role: str
    stamp: tuple[int, int, int] = (0, 0, 0)  # (size, mtime_ns, inode) when it was hashed


@dataclass(frozen=True)
class ArtefactSet:
    """Everything one push sends; `set_hash` names the remote set directory."""

    files: tuple[ArtefactFile, ...]
    set_hash: str
    onnx: str | None
    plugin: str | None
    plugins: tuple[str, ...]
    samples: str | None
    deploy: str

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def manifest(self, created: str | None = None) -> dict[str, Any]:
        """The `fbocc-set.json` document."""
        return {
            "format": SET_FORMAT, "set": self.set_hash,
            "created": created or datetime.now(UTC).isoformat(timespec="seconds"),
            "total_bytes": self.total_bytes, "onnx": self.onnx, "plugin": self.plugin,
            "plugins": list(self.plugins), "samples": self.samples, "deploy": self.deploy,
            "files": [{"path": f.path, "sha256": f.sha256, "bytes": f.size, "role": f.role} for f in self.files],
        }


class HashCache:
    """sha256 of local files keyed by (path, size, mtime, inode), kept in the user's cache directory."""

    def __init__(self, path: Path | None = None) -> None:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        self.path = path or Path(base) / "fbocc" / "hash-cache.json"
        self._lock = threading.Lock()
        self._dirty = False
        try:
            self._data: dict[str, list[Any]] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self._data = {}

    def sha256(self, path: Path) -> str:
        return self.stamped(path)[0]

    def stamped(self, path: Path) -> tuple[str, tuple[int, int, int]]:
        """(sha256, (size, mtime_ns, inode)) of a file; the stamp is the one the digest belongs to."""
        stamp = _stamp(path)
        key = str(path.resolve())
        with self._lock:
            hit = self._data.get(key)
        if hit and tuple(hit[:3]) == stamp:
            return str(hit[3]), stamp
        digest = sha256_file(path)
        if _stamp(path) != stamp:
            raise ValidationError(f"{path} changed while it was being hashed",
                                  fix="wait until whatever writes it has finished, then re-run the push")
        with self._lock:
            self._data[key] = [*stamp, digest]
            self._dirty = True
        return digest, stamp

    def save(self) -> None:
        if not self._dirty:
            return
        self._data = {k: v for k, v in self._data.items() if os.path.exists(k)}  # forget deleted files
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self._data))
            os.replace(tmp, self.path)
            self._dirty = False
        except OSError:
            pass  # a cache that cannot be written only costs time next run


def sha256_file(path: Path, limit: int | None = None) -> str:
    """sha256 of a file (of its first `limit` bytes when given)."""
    digest = hashlib.sha256()
    left = limit
    with path.open("rb") as fh:
        while left is None or left > 0:
            block = fh.read(CHUNK if left is None else min(CHUNK, left))
            if not block:
                break
            digest.update(block)
            if left is not None:
                left -= len(block)
    return digest.hexdigest()


def _stamp(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _prefix_digest(path: Path, limit: int) -> Any:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while limit > 0:
            block = fh.read(min(CHUNK, limit))
            if not block:
                break
            digest.update(block)
            limit -= len(block)
    return digest


def onnx_external_data(path: Path) -> list[str]:
    """Relative locations of the external-data files an ONNX model's initializers name.

    Reads the protobuf wire format directly (ModelProto.graph -> initializer -> external_data), so a
    multi-GB model is scanned without loading it and without importing onnx.
    """
    try:
        with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            buf = memoryview(data)
            try:
                locations: list[str] = []
                graphs = [v for f, v in _fields(buf, 0, len(buf)) if f == 7]
                if not graphs:
                    raise ValueError("no graph")
                for gstart, gend in graphs:
                    for gf, (tstart, tend) in _fields(buf, gstart, gend):
                        if gf == 5:  # GraphProto.initializer: TensorProto
                            for tf, (estart, eend) in _fields(buf, tstart, tend):
                                if tf == 13:  # TensorProto.external_data: StringStringEntryProto
                                    entry = {k: bytes(buf[s:e]).decode() for k, (s, e) in _fields(buf, estart, eend)}
                                    if entry.get(1) == "location" and 2 in entry:
                                        locations.append(entry[2])
                return sorted(set(locations))
            finally:
                buf.release()
    except ValueError as exc:
        if str(exc) == "cannot mmap an empty file":
            raise ValidationError(f"{path} is empty, not an ONNX model", fix="re-run `fbocc export`") from exc
        raise ValidationError(f"{path} is not a readable ONNX model ({exc})",
                              fix="point --onnx at the .onnx file written by `fbocc export`") from exc


def _fields(buf: memoryview, start: int, end: int) -> list[tuple[int, tuple[int, int]]]:
    """Length-delimited fields (field number, (start, end)) of one protobuf message; others skipped."""
    out: list[tuple[int, tuple[int, int]]] = []
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise ValueError("truncated field")
            out.append((number, (pos, pos + length)))
            pos += length
        else:
            raise ValueError(f"unexpected wire type {wire}")
        if number == 0:
            raise ValueError("field number 0")
    if pos != end:
        raise ValueError("truncated message")
    return out


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("bad varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _safe_relative(rel: str, where: Path) -> str:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise ValidationError(f"{where} names the file {rel!r} outside its own directory",
                              fix="re-export with external data stored beside the model")
    return str(p)


def _plugin_files(plugin: Path) -> tuple[list[tuple[Path, str]], Path | None]:
    """(file, role) for the plugin libraries and the build manifest, from a .so or an output directory."""
    if plugin.is_dir():
        manifest = plugin / BUILD_MANIFEST
        libs = sorted(plugin.glob("*.so"))
        if not libs:
            raise ValidationError(f"no plugin library (*.so) in {plugin}",
                                  fix="run `fbocc cross-build` or point --plugin at the .so")
    elif plugin.is_file():
        manifest = plugin.parent / BUILD_MANIFEST
        libs = [plugin]
    else:
        raise ValidationError(f"plugin {plugin} does not exist",
                              fix="run `fbocc cross-build`, pass --plugin PATH, or --no-plugin to push without it")
    expected: dict[str, str] = {}
    if manifest.is_file():
        try:
            doc = json.loads(manifest.read_text())
            expected = {a["file"]: a["sha256"] for a in doc.get("artefacts", [])}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValidationError(f"{manifest} is not a readable build manifest ({exc})",
                                  fix="re-run `fbocc cross-build`") from exc
        if plugin.is_file():  # a single .so: bring the libraries its build produced with it
            libs = sorted({plugin, *(plugin.parent / name for name in expected if (plugin.parent / name).is_file())})
    files = [(lib, "plugin") for lib in libs]
    if manifest.is_file():
        files.append((manifest, "plugin-manifest"))
    return files, manifest if manifest.is_file() else None


def collect_artefacts(*, onnx: Path | None, plugin: Path | None, samples: Path | None,
                      deploy: Path | None = None, hash_cache: HashCache | None = None) -> ArtefactSet:
    """Validate the local artefacts and hash them; raise ValidationError naming a bad file."""
    from fbocc.assets import asset_dir

    cache = hash_cache or HashCache()
    entries: list[tuple[str, Path, str]] = []
    onnx_rel = plugin_rel = samples_rel = None
    plugin_rels: list[str] = []
    if onnx is not None:
        if not onnx.is_file():
            raise ValidationError(f"ONNX model {onnx} does not exist",
                                  fix="run `fbocc export` or pass --onnx PATH")
        onnx_rel = onnx.name
        entries.append((onnx_rel, onnx, "onnx"))
        for loc in onnx_external_data(onnx):
            rel = _safe_relative(loc, onnx)
            data = onnx.parent / rel
            if not data.is_file():
                raise ValidationError(f"{onnx} keeps weights in {rel}, which is missing beside it ({data})",
                                      fix="keep the external-data files next to the .onnx")
            entries.append((rel, data, "onnx-data"))
    expected_libs: dict[str, str] = {}
    if plugin is not None:
        files, manifest = _plugin_files(plugin)
        if manifest is not None:
            doc = json.loads(manifest.read_text())
            expected_libs = {a["file"]: a["sha256"] for a in doc.get("artefacts", [])}
        for path, role in files:
            rel = path.name
            entries.append((rel, path, role))
            if role == "plugin":
                plugin_rels.append(rel)
        plugin_rel = next((r for r in plugin_rels if "kernels" not in r), plugin_rels[0])
    expected_samples: dict[str, str] = {}
    if samples is not None:
        from fbocc.export.samples import MANIFEST_NAME, ManifestError, load_manifest, manifest_format

        if not samples.is_dir():
            raise ValidationError(f"samples directory {samples} does not exist",
                                  fix="run `fbocc export`, pass --samples DIR, or --no-samples")
        manifest_doc = load_manifest(samples)
        samples_rel = "samples"
        entries.append((f"samples/{MANIFEST_NAME}", samples / MANIFEST_NAME, "samples"))
        seen: set[str] = set()
        # Occ3D labels of a dataset export (manifest "dataset.ground_truth") travel for validate's mIoU
        kinds = ("inputs", "outputs", "ground_truth") if (manifest_doc.get("dataset") or {}).get("ground_truth") \
            else ("inputs", "outputs")
        for frame in manifest_doc.get("frames", []):
            for kind in kinds:
                for name, tensor in (frame.get(kind) or {}).items():
                    if kind == "ground_truth":  # load_manifest checks inputs and outputs only
                        try:
                            manifest_format.check_tensor(str(samples), name, tensor)
                        except ManifestError as exc:
                            raise ValidationError(exc.message, fix=exc.fix) from exc
                    rel = _safe_relative(tensor["file"], samples / MANIFEST_NAME)
                    if rel in seen:
                        continue
                    seen.add(rel)
                    entries.append((f"samples/{rel}", samples / rel, "samples"))
                    if tensor.get("sha256"):
                        expected_samples[f"samples/{rel}"] = tensor["sha256"]
        # the precision graphs (docs/precision.md) travel beside the fp32 graph, where the manifest says
        for graph in manifest_doc.get("graphs") or []:
            local = (samples / str(graph.get("file", ""))).resolve()
            rel = posixpath.normpath(f"samples/{graph.get('file', '')}")
            if not graph.get("file") or rel.startswith("../") or local == (onnx.resolve() if onnx else None):
                continue
            if not local.is_file():
                raise ValidationError(f"{samples}/manifest.json lists the {graph.get('precision')} graph "
                                      f"{graph['file']}, which is missing ({local})",
                                      fix="keep the graphs fbocc export wrote beside the fp32 graph, or re-export")
            entries.append((rel, local, "onnx"))
            if graph.get("sha256"):
                expected_samples[rel] = graph["sha256"]
    deploy = deploy or asset_dir("deploy")
    for path in sorted(deploy.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            entries.append((f"deploy/{path.relative_to(deploy).as_posix()}", path, "deploy"))

    by_path: dict[str, Path] = {}
    for rel, path, _ in entries:
        if any(c in rel for c in "\t\n\r"):
            raise ValidationError(f"{path}: file names with tabs or line breaks cannot be pushed",
                                  fix="rename the file")
        if by_path.setdefault(rel, path) != path:
            raise ValidationError(f"{path} and {by_path[rel]} would both be {rel!r} in the pushed set",
                                  fix="rename one of them (the ONNX, its data files and the plugin share a folder)")
    hashed: list[ArtefactFile] = []
    with ThreadPoolExecutor(max_workers=2) as pool:  # hashing releases the GIL: two files at a time
        digests = list(pool.map(lambda e: cache.stamped(e[1]), entries))
    cache.save()
    for (rel, path, role), (digest, stamp) in zip(entries, digests, strict=True):
        if role == "plugin" and expected_libs.get(path.name, digest) != digest:
            raise ValidationError(f"{path} does not match its build manifest {BUILD_MANIFEST} (sha256 differs)",
                                  fix="re-run `fbocc cross-build`; do not edit its output by hand")
        if rel in expected_samples and expected_samples[rel] != digest:
            raise ValidationError(f"{path} does not match the sha256 in {samples}/manifest.json",
                                  fix="re-export the samples (`fbocc export`); the file changed after export")
        hashed.append(ArtefactFile(path=rel, local=path, size=stamp[0], sha256=digest, role=role, stamp=stamp))
    listing = "".join(f"{f.path}\0{f.sha256}\0{f.size}\n" for f in sorted(hashed, key=lambda f: f.path))
    set_hash = hashlib.sha256(f"{SET_FORMAT}\n{listing}".encode()).hexdigest()[:16]
    return ArtefactSet(files=tuple(hashed), set_hash=set_hash, onnx=onnx_rel, plugin=plugin_rel,
                       plugins=tuple(plugin_rels), samples=samples_rel, deploy="deploy")


# --- results and progress --------------------------------------------------------------------------


@dataclass
class PushResult:
    """What one push to one target did."""

    target: str
    set_hash: str
    remote_set_dir: str
    remote_current: str
    files_total: int
    files_sent: int
    files_skipped: int
    bytes_total: int
    bytes_sent: int
    seconds: float
    resumed: int = 0
    reconnects: int = 0
    switched: bool = True

    @property
    def mb_per_s(self) -> float:
        return self.bytes_sent / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mb_per_s": round(self.mb_per_s, 1)}


class PushProgress(Protocol):
    """Receives progress from pushes (called from worker threads; implementations must be thread-safe)."""

    def planned(self, target: str, send_bytes: int, send_files: int, skipped: int) -> None: ...
    def file_started(self, target: str, name: str, size: int, offset: int) -> None: ...
    def advance(self, target: str, name: str, nbytes: int) -> None: ...
    def file_done(self, target: str, name: str) -> None: ...


class _NoProgress:
    def planned(self, target: str, send_bytes: int, send_files: int, skipped: int) -> None: ...
    def file_started(self, target: str, name: str, size: int, offset: int) -> None: ...
    def advance(self, target: str, name: str, nbytes: int) -> None: ...
    def file_done(self, target: str, name: str) -> None: ...


@dataclass
class RemoteSet:
    """One set directory on a target (`--list`)."""

    set_hash: str
    created: str
    total_bytes: int
    files: int
    onnx: str | None
    current: bool
    complete: bool


# --- the push --------------------------------------------------------------------------------------


class _ConnectionLost(Exception):
    pass


@dataclass
class _Object:
    sha256: str
    size: int
    local: Path
    stamp: tuple[int, int, int]
    names: list[str] = field(default_factory=list)


@dataclass
class _RemoteState:
    free_bytes: int
    objects: dict[str, tuple[int, int, int]]  # sha -> (size, mtime, inode)
    parts: dict[str, int]
    index: dict[str, tuple[int, int, int]]
    set_inodes: dict[str, int]
    set_manifest: bool
    current: str


class _Pusher:
    def __init__(self, session: TargetSession, aset: ArtefactSet, progress: PushProgress, parallel: int,
                 retries: int, verify: bool) -> None:
        self.session = session
        self.aset = aset
        self.progress = progress
        self.parallel = max(1, parallel)
        self.retries = retries
        self.verify = verify
        self.label = session.label
        self.objects: dict[str, _Object] = {}
        for f in aset.files:
            self.objects.setdefault(f.sha256, _Object(f.sha256, f.size, f.local, f.stamp)).names.append(f.path)
        self.sent: set[str] = set()
        self.bytes_sent = 0
        self.resumed = 0
        self.reconnects = 0
        self.bad_hash: dict[str, int] = {}
        self.hasher = "sha256sum"
        self.python: str | None = None  # the target's Python, when it has one: fewer process starts
        self.new_index: dict[str, tuple[int, int, int]] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._stop = threading.Event()

    # paths ---------------------------------------------------------------------------------------

    @property
    def workdir(self) -> str:
        return self.session.workdir()

    def obj(self, sha: str) -> str:
        return f"{self.workdir}/objects/{sha}"

    # the whole push, with reconnects ---------------------------------------------------------------

    def run(self) -> PushResult:
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                skipped, switched = self._attempt()
                break
            except _ConnectionLost as exc:
                log.info("push to %s: %s; reconnecting", self.label, exc)
                attempt += 1
                if attempt > self.retries:
                    raise TransferError(
                        f"the connection to {self.label} was lost {attempt} times; the last time: {exc}",
                        where=self.label,
                        fix="check the link to the target and re-run: finished files are kept and a "
                        "partial file is resumed") from None
                self._reconnect(attempt)
        del skipped  # after a reconnect the last attempt also "skips" what the first one sent
        files_sent = sum(len(self.objects[s].names) for s in self.sent)
        return PushResult(
            target=self.label, set_hash=self.aset.set_hash, remote_set_dir=f"{self.workdir}/sets/{self.aset.set_hash}",
            remote_current=f"{self.workdir}/current", files_total=len(self.aset.files),
            files_sent=files_sent, files_skipped=len(self.aset.files) - files_sent,
            bytes_total=self.aset.total_bytes, bytes_sent=self.bytes_sent,
            seconds=time.monotonic() - started, resumed=self.resumed, reconnects=self.reconnects,
            switched=switched)

    def _reconnect(self, attempt: int) -> None:
        delay = min(0.5 * 2 ** (attempt - 1), 8.0)
        while True:
            time.sleep(delay)
            self.reconnects += 1
            try:
                self.session.reconnect()
                return
            except RemoteError:
                attempt += 1
                if attempt > self.retries:
                    raise
                delay = min(delay * 2, 8.0)

    def _guard(self, fn: Callable[[], Any]) -> Any:
        """Run one remote step; any failure while the connection is down means 'connection lost'."""
        try:
            return fn()
        except (FboccError, OSError, EOFError, paramiko.SSHException) as exc:
            transport_failure = isinstance(exc, (EOFError, paramiko.SSHException)) and not isinstance(
                exc, paramiko.SFTPError)
            if not self.session.connected or transport_failure:
                raise _ConnectionLost(str(exc) or type(exc).__name__) from exc
            raise

    def _attempt(self) -> tuple[int, bool]:
        state = self._guard(self._query_state)
        todo = self._plan(state)
        skipped = len(self.aset.files) - sum(len(self.objects[s].names) for s in todo)
        send_bytes = sum(self.objects[s].size - state.parts.get(s, 0) for s in todo)
        self.progress.planned(self.label, send_bytes, len(todo), skipped)
        if send_bytes > state.free_bytes:
            raise TransferError(
                f"not enough space on {self.label}: {send_bytes / 1e6:.1f} MB to send, "
                f"{state.free_bytes / 1e6:.1f} MB free in {self.workdir}",
                where=self.label,
                fix="free space on the target (e.g. `fbocc push-to-target --prune --keep 1`) or set another "
                "workdir for this target")
        pending = self._send_all(todo, state) if todo else []
        switched = self._guard(lambda: self._assemble_and_switch(state, pending))
        return skipped, switched

    # remote state --------------------------------------------------------------------------------

    def _query_state(self) -> _RemoteState:
        w = quote(self.workdir)
        shas = sorted(self.objects)
        set_dir = f"sets/{self.aset.set_hash}"
        lines = [
            f"mkdir -p -- {w}/objects {w}/sets || exit 11",
            f"cd -- {w} || exit 11",
            "probe=.fbocc-probe.$$; : > \"$probe\" || exit 12; rm -f -- \"$probe\"",
            # The hasher: OpenSSL when it gives the right digest of nothing, else coreutils/busybox.
            f'if [ "$(printf "" | {OPENSSL_SHA256} 2>/dev/null | cut -c1-64)" = {EMPTY_SHA256} ]; '
            'then echo "HASHER openssl"; elif command -v sha256sum >/dev/null 2>&1; then echo "HASHER sha256sum"; '
            "else exit 13; fi",
            f"command -v {quote(self.session.target.python)} >/dev/null 2>&1 && echo PYTHON",
            'printf "DF %s\\n" "$(df -Pk . | tail -n 1)"',
            'printf "CURRENT %s\\n" "$(readlink current 2>/dev/null)"',
            "[ -f objects/index.tsv ] && sed 's/^/I /' objects/index.tsv",
            f"[ -f {quote(set_dir + '/' + SET_MANIFEST)} ] && echo SETOK",
        ]
        for i in range(0, len(shas), STAT_BATCH):
            batch = shas[i:i + STAT_BATCH]
            lines.append("stat -c 'F %n %s %Y %i' -- " + " ".join(f"objects/{s}" for s in batch) + " 2>/dev/null")
            lines.append("stat -c 'P %n %s' -- " + " ".join(f"objects/{s}.part" for s in batch) + " 2>/dev/null")
        names = [f.path for f in self.aset.files]
        for i in range(0, len(names), STAT_BATCH):
            batch = names[i:i + STAT_BATCH]
            lines.append("stat -c 'S %i %n' -- " + " ".join(quote(f"{set_dir}/{n}") for n in batch)
                         + " 2>/dev/null")
        lines.append("exit 0")
        res = self.session.run("\n".join(lines), check=False, timeout=120)
        self._check_preflight(res.exit_code, res.stderr)
        state = _RemoteState(free_bytes=0, objects={}, parts={}, index={}, set_inodes={}, set_manifest=False,
                             current="")
        prefix = f"{set_dir}/"
        for line in res.stdout.splitlines():
            tag, _, rest = line.partition(" ")
            parts = rest.split()
            if tag == "DF" and len(parts) >= 4:
                state.free_bytes = int(parts[3]) * 1024
            elif tag == "CURRENT":
                state.current = rest.strip()
            elif tag == "HASHER":
                self.hasher = OPENSSL_SHA256 if rest.strip() == "openssl" else "sha256sum"
            elif tag == "PYTHON":
                self.python = quote(self.session.target.python)
            elif tag == "SETOK":
                state.set_manifest = True
            elif tag == "I" and len(parts) == 4:
                state.index[parts[0]] = (int(parts[1]), int(parts[2]), int(parts[3]))
            elif tag == "F" and len(parts) == 4:
                state.objects[parts[0].removeprefix("objects/")] = (int(parts[1]), int(parts[2]), int(parts[3]))
            elif tag == "P" and len(parts) == 2:
                state.parts[parts[0].removeprefix("objects/").removesuffix(".part")] = int(parts[1])
            elif tag == "S" and rest.count(" ") >= 1:
                inode, _, name = rest.partition(" ")
                state.set_inodes[name.removeprefix(prefix)] = int(inode)
        return state

    def _check_preflight(self, code: int, stderr: str) -> None:
        if code == 0:
            return
        text = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        if code == 13:
            raise TransferError(f"{self.label} has neither sha256sum nor openssl, needed to verify what arrives",
                                where=self.label, fix="install coreutils (or busybox with sha256sum) on the target")
        if "Read-only file system" in stderr:
            raise TransferError(f"the workdir {self.workdir} on {self.label} is on a read-only filesystem ({text})",
                                where=self.label, fix="remount it read-write or set a workdir on a writable disk")
        if "Permission denied" in stderr:
            raise TransferError(f"permission denied writing to the workdir {self.workdir} on {self.label} ({text})",
                                where=self.label,
                                fix="chown the workdir to the SSH user or set a workdir the user may write")
        if "No space left" in stderr:
            raise TransferError(f"no space left in {self.workdir} on {self.label}", where=self.label,
                                fix="free space on the target (fbocc push-to-target --prune --keep 1)")
        raise TransferError(f"cannot prepare the workdir {self.workdir} on {self.label} (exit {code}): {text}",
                            where=self.label, fix="check the workdir setting and the target's disk")

    def _plan(self, state: _RemoteState) -> list[str]:
        """Objects still to send; objects present but not known verified are hashed on the target first."""
        unverified = [s for s in self.objects if s in state.objects
                      and (self.verify or state.index.get(s) != state.objects[s])]
        if unverified:
            hashed = self._guard(lambda: self._remote_hashes(unverified))
            for sha in unverified:
                if hashed.get(sha) == sha:
                    self.new_index[sha] = state.objects[sha]
                else:  # a damaged object: drop it so the set gets a good copy
                    del state.objects[sha]
                    self._remove(self.obj(sha))
        todo = [s for s in self.objects if s not in state.objects]
        todo.sort(key=lambda s: -self.objects[s].size)  # big files first; small ones fill the gaps
        return todo

    def _remote_hashes(self, shas: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for i in range(0, len(shas), STAT_BATCH):
            batch = shas[i:i + STAT_BATCH]
            cmd = f"cd -- {quote(self.workdir)}/objects && {self.hasher} {' '.join(batch)} 2>/dev/null; exit 0"
            for line in self.session.run(cmd, timeout=3600).stdout.splitlines():
                digest, _, name = line.partition(" ")
                out[name.strip().lstrip("*")] = digest
        return out

    # sending -------------------------------------------------------------------------------------

    def _send_all(self, todo: list[str], state: _RemoteState) -> list[str]:
        """Upload with `parallel` SFTP channels; a verifier thread hashes finished parts in batches.

        Returns the uploaded objects not verified yet: the final command verifies them (one round trip).
        """
        self._stop.clear()
        errors: list[BaseException] = []
        sftps: list[paramiko.SFTPClient] = []
        uploaded: queue.Queue[str | None] = queue.Queue()

        def fail(exc: BaseException) -> None:
            self._stop.set()
            with self._lock:
                errors.append(exc)

        def worker(sha: str) -> None:
            if self._stop.is_set():
                return
            try:
                sftp = getattr(self._local, "sftp", None)
                if sftp is None or sftp.sock.closed:
                    sftp = self.session.open_sftp()
                    self._local.sftp = sftp
                    with self._lock:
                        sftps.append(sftp)
                if self._send_one(sftp, sha, state.parts.get(sha, 0)):
                    uploaded.put(sha)
            except BaseException as exc:
                fail(exc)

        pending: list[str] = []

        def verifier() -> None:
            while True:
                first = uploaded.get()
                if first is None:
                    return
                batch = [first]
                while True:
                    try:
                        item = uploaded.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:  # uploads are over: what is left goes with the final command
                        pending.extend(batch)
                        return
                    batch.append(item)
                try:
                    self._verify_batch(batch)
                except BaseException as exc:
                    fail(exc)
                    return

        checker = threading.Thread(target=verifier, name=f"verify-{self.label}", daemon=True)
        checker.start()
        try:
            with ThreadPoolExecutor(max_workers=min(self.parallel, len(todo)),
                                    thread_name_prefix=f"push-{self.label}") as pool:
                # A file holding most of the bytes goes alone first: its hash on the target then runs
                # while the small files travel, instead of after everything.
                total = sum(self.objects[sha].size for sha in todo)
                head = todo[:1] if len(todo) > 1 and self.objects[todo[0]].size * 2 > total else []
                try:
                    for phase in (head, todo[len(head):]):
                        list(pool.map(worker, phase))
                except BaseException:
                    self._stop.set()  # Ctrl-C: workers stop at their next block; .part files stay resumable
                    raise
        finally:
            uploaded.put(None)
            checker.join()
            for sftp in sftps:
                with contextlib.suppress(Exception):  # a channel of a dead connection may not close cleanly
                    sftp.close()
            self._local = threading.local()
        if errors:
            lost = [e for e in errors if not isinstance(e, FboccError)]
            if lost and (not self.session.connected or any(
                    isinstance(e, (EOFError, paramiko.SSHException, TimeoutError, _ConnectionLost)) for e in lost)):
                raise _ConnectionLost(str(lost[0]) or type(lost[0]).__name__) from lost[0]
            if not self.session.connected:
                raise _ConnectionLost(str(errors[0])) from errors[0]
            first = next((e for e in errors if isinstance(e, FboccError)), errors[0])
            if isinstance(first, FboccError):
                raise first
            if isinstance(first, OSError):
                raise TransferError(f"writing to {self.label} failed: {first}", where=self.label,
                                    fix="check free space and permissions in the target's workdir") from first
            raise first
        unverified = [sha for sha in todo if sha not in self.sent and sha not in pending]
        if unverified:
            raise _ConnectionLost(f"{len(unverified)} file(s) arrived with a wrong sha256 "
                                  f"({', '.join(self.objects[s].names[0] for s in unverified)}); sending them again")
        return pending

    def _send_one(self, sftp: paramiko.SFTPClient, sha: str, part_size: int) -> bool:
        """Upload one object to its .part (resuming a good prefix); False when stopped early."""
        o = self.objects[sha]
        name = o.names[0]
        part = f"{self.obj(sha)}.part"
        offset = 0
        if 0 < part_size <= o.size:
            remote = self.session.run(f"head -c {part_size} -- {quote(part)} | {self.hasher}", timeout=3600).stdout
            if remote.split()[:1] == [_prefix_digest(o.local, part_size).hexdigest()]:
                offset = part_size
                with self._lock:
                    self.resumed += 1
        self.progress.file_started(self.label, name, o.size, offset)
        try:
            with o.local.open("rb") as src, sftp.open(part, "r+b" if offset else "wb") as dst:
                dst.MAX_REQUEST_SIZE = PACKETS_PER_WRITE * 32768 - (25 + len(dst.handle))  # type: ignore[arg-type]
                dst.set_pipelined(True)
                if offset:
                    src.seek(offset)
                    dst.seek(offset)
                while not self._stop.is_set():
                    block = src.read(CHUNK)
                    if not block:
                        break
                    dst.write(block)
                    with self._lock:
                        self.bytes_sent += len(block)
                    self.progress.advance(self.label, name, len(block))
            # A local file rewritten since it was hashed would arrive "corrupt": say what really happened.
            if not self._stop.is_set() and _stamp(o.local) != o.stamp:
                self._remove(part)
                raise TransferError(f"{o.local} changed while it was being pushed", where=self.label,
                                    fix="wait until whatever writes it has finished, then re-run the push")
        except OSError as exc:
            if not self.session.connected or self._stop.is_set():
                raise
            text = str(exc)
            self._remove(part)
            if "No space" in text or "Failure" in text or getattr(exc, "errno", None) == 28:
                raise TransferError(f"the target {self.label} ran out of space while receiving {name}",
                                    where=self.label,
                                    fix="free space on the target (`fbocc push-to-target --prune --keep 1`) "
                                    "or choose another workdir") from exc
            raise TransferError(f"writing {name} to {self.label} failed: {text}", where=self.label,
                                fix="check permissions and free space in the target's workdir") from exc
        self.progress.file_done(self.label, name)
        return not self._stop.is_set()

    def _verify_script(self, shas: Sequence[str]) -> str:
        """Shell lines (run in the workdir) hashing finished parts and renaming the good ones into place.

        Prints `OK <sha> size mtime inode` per good object (also appended to objects/index.tsv) and
        `BAD <sha> <got>` per bad one; leaves `bad=1` unless every object was good. One hasher process
        per batch, a few more per batch, one `mv` per file: process starts cost CPU on a small target.
        """
        if not shas:
            return "bad=0"
        parts = " ".join(f"{h}.part" for h in shas)
        renames = (f"{self.python} -c {quote(_RENAMER)} $ok" if self.python else
                   'for h in $ok; do mv -f -- "$h.part" "$h" || exit 1; done')
        return f"""bad=0; ok=; okparts=; n=0
sums=$(cd objects && {self.hasher} {parts} 2>/dev/null)
while read -r s p; do
  p=${{p#\\*}}; h=${{p%.part}}
  [ -n "$h" ] || continue
  if [ "$s" = "$h" ]; then ok="$ok $h"; okparts="$okparts $p"; n=$((n+1))
  else rm -f -- "objects/$p"; echo "BAD $h $s"; fi
done <<FBOCC_SUMS
$sums
FBOCC_SUMS
[ "$n" = {len(shas)} ] || bad=1
if [ -n "$ok" ]; then
  (cd objects && chmod a-w -- $okparts && {renames} &&
   stat -c '%n %s %Y %i' -- $ok | tee -a index.tsv | sed 's/^/OK /') || exit 1
fi"""

    def _verify_batch(self, shas: list[str]) -> None:
        """Hash the finished parts on the target; rename each to its object name only when it matches."""
        res = self.session.run(f"cd -- {quote(self.workdir)} || exit 1\n{self._verify_script(shas)}", timeout=3600)
        self._verified(res.stdout, shas)

    def _verified(self, stdout: str, shas: Sequence[str]) -> None:
        good: set[str] = set()
        got: dict[str, str] = {}
        for line in stdout.splitlines():
            words = line.split()
            if words[:1] == ["OK"] and len(words) == 5 and words[1] in self.objects:
                good.add(words[1])
            elif words[:1] == ["BAD"] and len(words) >= 2:
                got[words[1]] = words[2] if len(words) > 2 else "nothing"
        with self._lock:
            self.sent.update(good)
        if not self.session.connected and len(good) + len(got) < len(shas):
            raise _ConnectionLost("connection lost while verifying files")
        for sha in shas:
            if sha in good:
                continue
            with self._lock:
                self.bad_hash[sha] = self.bad_hash.get(sha, 0) + 1
                tries = self.bad_hash[sha]
            if tries >= 2:
                name = self.objects[sha].names[0]
                raise TransferError(
                    f"{name} arrived on {self.label} with sha256 {got.get(sha, '(unreadable)')}, expected {sha}, "
                    "twice", where=self.label, fix="check the target's disk and memory; the link corrupts data")

    def _remove(self, path: str) -> None:
        with contextlib.suppress(FboccError):
            self.session.run(f"rm -f -- {quote(path)}", timeout=60)

    # finishing -------------------------------------------------------------------------------------

    def _index_command(self) -> str:
        """Shell lines recording objects re-hashed during planning in objects/index.tsv, then compacting it."""
        lines = "".join(f"{s} {a} {b} {c}\n" for s, (a, b, c) in sorted(self.new_index.items()))
        record = f"printf %s {quote(lines)} >> objects/index.tsv && " if lines else ""
        return (f"{record}awk '{{e[$1]=$0}} END {{for (k in e) print e[k]}}' objects/index.tsv > objects/index.tsv.tmp"
                " && mv -f objects/index.tsv.tmp objects/index.tsv || exit 1")

    def _assemble_and_switch(self, state: _RemoteState, pending: Sequence[str]) -> bool:
        """One command: verify the last uploads, assemble the set dir, switch `current` (each if needed)."""
        w = quote(self.workdir)
        h = self.aset.set_hash
        inodes = {sha: (state.objects.get(sha) or (0, 0, 0))[2] for sha in self.objects}
        complete = not self.sent and not pending and state.set_manifest and all(
            state.set_inodes.get(f.path) == inodes.get(f.sha256) and inodes.get(f.sha256)
            for f in self.aset.files)
        cmds = [f"cd -- {w} || exit 1"]
        if pending:
            cmds += [self._verify_script(pending), '[ "$bad" = 0 ] || exit 30']
        if self.new_index or self.sent or pending:
            cmds.append(self._index_command())
        if not complete:
            tmp = f"sets/.{h}.tmp"
            dirs = sorted({str(PurePosixPath(tmp, f.path).parent) for f in self.aset.files})
            cmds += [f"rm -rf -- {quote(tmp)}", "mkdir -p -- " + " ".join(quote(d) for d in dirs) + " || exit 1"]
            # One Python process links every file (a process start per `ln` costs more than the links);
            # without Python on the target the same is done with ln/cp in the shell.
            pairs = "".join(f"objects/{f.sha256}\t{tmp}/{f.path}\n" for f in self.aset.files)
            shell_links = "\n".join(
                f"{{ ln -- objects/{f.sha256} {quote(f'{tmp}/{f.path}')} 2>/dev/null || "
                f"cp -p -- objects/{f.sha256} {quote(f'{tmp}/{f.path}')}; }} || exit 1" for f in self.aset.files)
            if self.python:
                cmds.append(f"{self.python} -c {quote(_LINKER)} <<'FBOCC_LINKS' || exit 1\n{pairs}FBOCC_LINKS")
            else:
                cmds.append(shell_links)
            doc = json.dumps(self.aset.manifest(), indent=1) + "\n"
            old = f"sets/.{h}.old.$$"
            cmds += [f"printf %s {quote(doc)} > {quote(tmp + '/' + SET_MANIFEST)} || exit 1",
                     f"if [ -e sets/{h} ]; then mv -T -- sets/{h} {old} || exit 1; fi",
                     f"mv -T -- {quote(tmp)} sets/{h} || exit 1", f"rm -rf -- {old}"]
        switched = state.current != f"sets/{h}" or not complete
        if switched:
            cmds.append(f"ln -sfn -- sets/{h} .current.tmp.$$ && mv -T -- .current.tmp.$$ current || exit 1")
        if len(cmds) > 1:
            res = self.session.run("\n".join(cmds), check=False, timeout=3600)
            if pending:
                self._verified(res.stdout, pending)
            if res.exit_code == 30:
                log.info("verification output: %s", res.stdout)
                raise _ConnectionLost("some files arrived with a wrong sha256; sending them again")
            if res.exit_code != 0:
                if not self.session.connected:
                    raise _ConnectionLost("connection lost while assembling the set")
                self._check_preflight(res.exit_code, res.stderr)
            self.new_index.clear()
        return switched


# Python 3.8-compatible: rename each verified <sha>.part to <sha> (rename(2): atomic, replaces).
_RENAMER = """import os, sys
for h in sys.argv[1:]:
    os.rename(h + ".part", h)
"""

# Python 3.8-compatible: hard-link each "object<TAB>path" line of stdin (copy where links fail).
_LINKER = """import os, shutil, sys
for line in sys.stdin:
    src, dst = line.rstrip("\\n").split("\\t")
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
"""


def push_artifacts(session: TargetSession, aset: ArtefactSet, *, progress: PushProgress | None = None,
                   parallel: int = 4, retries: int = 5, verify: bool = False) -> PushResult:
    """Push `aset` to the target of `session`; `current` points at it when this returns.

    Unchanged files are skipped, a cut connection is re-opened (up to `retries` times, with backoff)
    and the push resumes; `verify=True` re-hashes every object already on the target.
    """
    try:
        return _Pusher(session, aset, progress or _NoProgress(), parallel, retries, verify).run()
    except (KeyboardInterrupt, Interrupted):  # Ctrl-C here or inside a remote command (already killed)
        raise Interrupted(f"push to {session.label} interrupted; `current` still points at the previous set",
                          fix="re-run the same command: finished files are kept and partial ones resume") from None


def push_to_targets(targets: Sequence[Target], aset: ArtefactSet, *, known_hosts: Path | None = None,
                    accept_new: bool = False, progress: PushProgress | None = None, parallel: int = 4,
                    retries: int = 5, verify: bool = False,
                    connect_timeout: float = 10.0) -> list[TargetOutcome[PushResult]]:
    """Push one artefact set to several targets in parallel; one outcome per target, in order."""
    return connect_all(
        targets,
        lambda s: push_artifacts(s, aset, progress=progress, parallel=parallel, retries=retries, verify=verify),
        known_hosts=known_hosts, accept_new=accept_new, connect_timeout=connect_timeout)


# --- managing sets ---------------------------------------------------------------------------------


def list_sets(session: TargetSession) -> list[RemoteSet]:
    """The sets on the target, newest first; `current` marked."""
    w = quote(session.workdir())
    cmd = (f"cd -- {w} 2>/dev/null || exit 0; printf 'CURRENT %s\\n' \"$(readlink current 2>/dev/null)\"; "
           "for d in sets/*/; do [ -d \"$d\" ] || continue; d=${d%/}; printf 'SET %s\\n' \"${d#sets/}\"; "
           f"if [ -f \"$d/{SET_MANIFEST}\" ]; then printf 'JSON '; tr -d '\\n' < \"$d/{SET_MANIFEST}\"; echo; fi; done")
    res = session.run(cmd, timeout=120)
    current = ""
    sets: list[RemoteSet] = []
    for line in res.stdout.splitlines():
        tag, _, rest = line.partition(" ")
        if tag == "CURRENT":
            current = rest.strip().removeprefix("sets/")
        elif tag == "SET":
            sets.append(RemoteSet(rest.strip(), "", 0, 0, None, False, False))
        elif tag == "JSON" and sets:
            try:
                doc = json.loads(rest)
            except ValueError:
                continue
            s = sets[-1]
            s.created, s.total_bytes = str(doc.get("created", "")), int(doc.get("total_bytes", 0))
            s.files, s.onnx, s.complete = len(doc.get("files", [])), doc.get("onnx"), True
    for s in sets:
        s.current = s.set_hash == current
    sets.sort(key=lambda s: (s.created, s.current), reverse=True)  # same second: current first
    return sets


@dataclass
class PruneResult:
    """What `--prune` removed on one target."""

    target: str
    kept: list[str]
    removed: list[str]
    freed_bytes: int


def prune_sets(session: TargetSession, keep: int) -> PruneResult:
    """Keep the `keep` newest complete sets (and `current`); remove the rest and unreferenced objects."""
    if keep < 1:
        raise TransferError("--keep must be at least 1", fix="pass --keep N with N >= 1")
    sets = list_sets(session)
    complete = [s for s in sets if s.complete]
    kept = {s.set_hash for s in complete[:keep]} | {s.set_hash for s in sets if s.current}
    removed = [s.set_hash for s in sets if s.set_hash not in kept]
    w = quote(session.workdir())
    before = _used_bytes(session, w)
    rm = " ".join(quote(f"sets/{h}") for h in removed)
    # An object whose only link is its own name is in no set any more; stale .part files go too.
    cmd = (f"cd -- {w} || exit 1; {'rm -rf -- ' + rm + ';' if rm else ''} rm -rf sets/.*.tmp sets/.*.old.*; "
           "find objects -maxdepth 1 -type f -name '*.part' -delete; "
           "find objects -maxdepth 1 -type f -links 1 ! -name index.tsv -delete; exit 0")
    session.run(cmd, timeout=600)
    after = _used_bytes(session, w)
    return PruneResult(session.label, sorted(kept), removed, max(0, before - after))


def _used_bytes(session: TargetSession, w: str) -> int:
    out = session.run(f"du -sk -- {w} 2>/dev/null | cut -f1", check=False, timeout=300).stdout.strip()
    return int(out) * 1024 if out.isdigit() else 0
