"""The local half of a push: the artefact set (ONNX + external data, plugin libraries + build manifest,
samples, deploy/) collected, validated and hashed here, with a cache of file hashes.

`collect_artefacts(...)` returns an `ArtefactSet`: every file with its path in the set, size, sha256 and
role; `set_hash` (16 hex digits of sha256 over (path, sha256, size) of every file) names the set on the
target. `ArtefactSet.manifest()` is the set's `fbocc-set.json` (fbocc.target.store puts it there).
Content hashes are `deploy.manifest.sha256_file`, the one sha256 of fbocc.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from deploy.manifest import sha256_file
from fbocc.config import cache_dir
from fbocc.errors import ValidationError

SET_FORMAT = "fbocc-set/1"
BUILD_MANIFEST = "fbocc-build.json"


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
    graphs: dict[str, str] = field(default_factory=dict)  # precision -> graph in the set (fp32: `onnx`)

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
            "graphs": dict(self.graphs),
            "files": [{"path": f.path, "sha256": f.sha256, "bytes": f.size, "role": f.role} for f in self.files],
        }


class HashCache:
    """sha256 of local files keyed by (path, size, mtime, inode), kept in the user's cache directory.

    `remember` keeps other facts derived from a file's content under the same key (the external-data
    files an ONNX names), so an unchanged set is re-pushed without reading its files again.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_dir() / "hash-cache.json"
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
        stamp = file_stamp(path)
        key = str(path.resolve())
        with self._lock:
            hit = self._data.get(key)
        if hit and tuple(hit[:3]) == stamp and hit[3]:
            return str(hit[3]), stamp
        digest = sha256_file(str(path))
        if file_stamp(path) != stamp:
            raise ValidationError(f"{path} changed while it was being hashed",
                                  fix="wait until whatever writes it has finished, then re-run the push")
        self._store(key, stamp, digest=digest)
        return digest, stamp

    def remember(self, path: Path, name: str, compute: Callable[[Path], Any]) -> Any:
        """`compute(path)` (JSON-able), cached under `name` until the file's stamp changes."""
        stamp = file_stamp(path)
        key = str(path.resolve())
        with self._lock:
            hit = self._data.get(key)
        if hit and tuple(hit[:3]) == stamp and len(hit) > 4 and name in hit[4]:
            return hit[4][name]
        value = compute(path)
        self._store(key, stamp, extra={name: value})
        return value

    def _store(self, key: str, stamp: tuple[int, int, int], *, digest: str | None = None,
               extra: dict[str, Any] | None = None) -> None:
        with self._lock:
            old = self._data.get(key) or []
            same = tuple(old[:3]) == stamp
            extras = dict(old[4]) if same and len(old) > 4 else {}
            extras.update(extra or {})
            self._data[key] = [*stamp, digest or (old[3] if same else None), extras]
            self._dirty = True

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


def file_stamp(path: Path) -> tuple[int, int, int]:
    """(size, mtime_ns, inode): what says a file is unchanged since it was hashed."""
    st = path.stat()
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _safe_relative(rel: str, where: Path) -> str:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise ValidationError(f"{where} names the file {rel!r} outside its own directory",
                              fix="re-export with external data stored beside the model")
    return str(p)


def _plugin_files(plugin: Path) -> tuple[list[tuple[Path, str]], dict[str, str]]:
    """(file, role) for the plugin libraries and the build manifest, from a .so or an output directory,
    and the sha256 the build manifest records for each library."""
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
        from fbocc.build.cross_build import BuildManifest

        try:
            expected = {a.file: a.sha256 for a in BuildManifest.from_json(manifest.read_text()).artefacts}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValidationError(f"{manifest} is not a readable build manifest ({exc})",
                                  fix="re-run `fbocc cross-build`") from exc
        if plugin.is_file():  # a single .so: bring the libraries its build produced with it
            libs = sorted({plugin, *(plugin.parent / name for name in expected if (plugin.parent / name).is_file())})
    files = [(lib, "plugin") for lib in libs]
    if manifest.is_file():
        files.append((manifest, "plugin-manifest"))
    return files, expected


@dataclass(frozen=True)
class ArtefactPaths:
    """The local files of one push: ONNX, plugin (.so or build output dir) and samples, each optional."""

    onnx: Path
    plugin: Path | None
    samples: Path | None


def artefact_paths(export_dir: Path, *, onnx: Path | None = None, plugin: Path | None = None,
                   samples: Path | None = None, build_out: Path | None = None, no_plugin: bool = False,
                   no_samples: bool = False) -> ArtefactPaths:
    """What to push: explicit paths, else the export's one *.onnx and samples/ and the cross-build output;
    ConfigError naming the option when one of them is missing."""
    from fbocc.errors import ConfigError

    if onnx is None:
        models = sorted(export_dir.glob("*.onnx"))
        if len(models) != 1:
            raise ConfigError(f"{export_dir} holds several ONNX models: {', '.join(m.name for m in models)}"
                              if models else f"no ONNX model in {export_dir}", where="--onnx",
                              fix="pass --onnx PATH to choose one" if models else
                              "run `fbocc export` first, or pass --onnx PATH (or --export-dir DIR)")
        onnx = models[0]
    if not onnx.is_file():
        raise ConfigError(f"ONNX model {onnx} does not exist", where="--onnx",
                          fix="run `fbocc export` first or pass --onnx PATH")
    plugin_path = None if no_plugin else (plugin or build_out)
    if plugin_path is not None and not plugin_path.exists():
        raise ConfigError(f"plugin {plugin_path} does not exist", where="--plugin",
                          fix="run `fbocc cross-build`, pass --plugin PATH (a .so or the build output dir), "
                          "or --no-plugin to push without it")
    samples_path = None if no_samples else (samples or export_dir / "samples")
    if samples_path is not None and not samples_path.is_dir():
        raise ConfigError(f"samples directory {samples_path} does not exist", where="--samples",
                          fix="run `fbocc export` first, pass --samples DIR, or --no-samples to push without them")
    return ArtefactPaths(onnx, plugin_path, samples_path)


def collect_artefacts(*, onnx: Path | None, plugin: Path | None, samples: Path | None,
                      deploy: Path | None = None, hash_cache: HashCache | None = None) -> ArtefactSet:
    """Validate the local artefacts and hash them; raise ValidationError naming a bad file."""
    from fbocc.assets import asset_dir

    cache = hash_cache or HashCache()
    entries: list[tuple[str, Path, str]] = []
    onnx_rel = plugin_rel = samples_rel = None
    graphs: dict[str, str] = {}
    plugin_rels: list[str] = []
    if onnx is not None:
        if not onnx.is_file():
            raise ValidationError(f"ONNX model {onnx} does not exist",
                                  fix="run `fbocc export` or pass --onnx PATH")
        from fbocc.export.onnx_graph import external_data_files

        onnx_rel = onnx.name
        graphs["fp32"] = onnx_rel
        entries.append((onnx_rel, onnx, "onnx"))
        for loc in cache.remember(onnx, "onnx-external-data", external_data_files):
            rel = _safe_relative(loc, onnx)
            data = onnx.parent / rel
            if not data.is_file():
                raise ValidationError(f"{onnx} keeps weights in {rel}, which is missing beside it ({data})",
                                      fix="keep the external-data files next to the .onnx")
            entries.append((rel, data, "onnx-data"))
    expected_libs: dict[str, str] = {}
    if plugin is not None:
        files, expected_libs = _plugin_files(plugin)
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
            graphs[str(graph.get("precision"))] = rel
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
                       plugins=tuple(plugin_rels), samples=samples_rel, deploy="deploy", graphs=graphs)
