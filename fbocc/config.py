"""All configuration, read and validated in one place.

Precedence, lowest first (each layer overrides the ones before it):

1. built-in defaults (build profiles come from `cross/profiles.toml`)
2. user config: `~/.config/fbocc/config.toml` (or `$XDG_CONFIG_HOME/fbocc/config.toml`)
3. project config: `fbocc.toml` in the working directory, or the file given with `--config`
4. environment: `FBOCC_<SECTION>_<KEY>`, e.g. `FBOCC_BUILD_PROFILE=sim`
5. command-line options

Every value remembers where it came from (`fbocc config show`). Unknown keys are errors with a
"did you mean" hint; wrong types name the file, the key and what is expected.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from fbocc.assets import asset_dir
from fbocc.errors import ConfigError

PROJECT_FILE = "fbocc.toml"
BUILTIN = "built-in"


# --- typed sections -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectSettings:
    """[project]: where fbocc keeps its own state."""

    results_dir: Path = Path("fbocc-results")
    known_hosts: Path = Path(".fbocc/known_hosts")


@dataclass(frozen=True)
class BuildSettings:
    """[build]: defaults for `fbocc cross-build`."""

    profile: str = "drive-os-6.0.10"
    out_dir: Path = Path("build/plugins")
    trt_deb: Path | None = None
    jobs: int = 0
    keep_container: bool = False


@dataclass(frozen=True)
class BenchSettings:
    """[bench]: defaults for `fbocc remote-bench` and `fbocc report`."""

    precisions: list[str] = field(default_factory=lambda: ["fp32", "fp16"])
    iterations: int = 0
    duration_s: float = 10.0
    warmup_ms: int = 500
    # the four timing switches (fbocc.target.trtexec.TimingMode): TensorRT 11's defaults, set on every version
    data_transfers: bool = False
    cuda_graph: bool = True
    spin_wait: bool = True
    typing: str = "auto"  # auto (strongly typed where TensorRT has it), strong, weak (fp32 graph + flags, < 10.12)
    timeout_s: float = 3600.0
    regression_threshold: float = 0.05


@dataclass(frozen=True)
class BuildProfile:
    """[profiles.NAME]: one way to build the plugin library (image, toolchain, paths)."""

    name: str
    description: str
    target_arch: str
    base_image: str
    dockerfile: str
    cuda_version: str
    cuda_home: str
    cuda_target_dir: str
    cuda_archs: list[str]
    cxx: str
    tensorrt_version: str | None = None
    tensorrt_include_dir: str | None = None
    tensorrt_lib_dir: str | None = None
    trt_deb: str | None = None
    needs_login: str | None = None
    trt_packages: str | None = None
    base_recipe: str | None = None
    sources: list[str] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)

    @property
    def tensorrt_major(self) -> int | None:
        """The major of `tensorrt_version` (the one number a plugin library must share with its TensorRT)."""
        head = (self.tensorrt_version or "").split(".", 1)[0]
        return int(head) if head.isdigit() else None


@dataclass(frozen=True)
class Target:
    """[targets.NAME]: an Orin (or any TensorRT machine) reachable over SSH."""

    name: str
    host: str
    port: int | None = None
    user: str | None = None
    identity_file: Path | None = None
    proxy_jump: str | None = None
    workdir: str = "fbocc"
    trtexec: str = "/usr/src/tensorrt/bin/trtexec"
    python: str = "python3"
    connect_timeout_s: float = 10.0  # TCP connect + SSH handshake + login, per attempt
    stall_timeout_s: float = 30.0  # no answer from the target for this long: the link is stalled


# Earlier profile names that still work: overrides written under them apply to the profile they name now.
PROFILE_ALIASES = {"drive-os-6.5": "drive-os-6.5.1"}

SECTIONS: dict[str, type] = {
    "project": ProjectSettings,
    "build": BuildSettings,
    "bench": BenchSettings,
}
TABLES: dict[str, type] = {"profiles": BuildProfile, "targets": Target}
TOP_LEVEL = [*SECTIONS, *TABLES, "groups"]


@dataclass
class Config:
    """The merged configuration; `origins` maps each dotted key to where its value came from."""

    project: ProjectSettings
    build: BuildSettings
    bench: BenchSettings
    profiles: dict[str, BuildProfile]
    targets: dict[str, Target]
    groups: dict[str, list[str]]
    origins: dict[str, str]
    files: list[Path]

    def profile(self, name: str | None = None) -> BuildProfile:
        """The named build profile (default: `[build] profile`)."""
        name = name or self.build.profile
        if name not in self.profiles and PROFILE_ALIASES.get(name) in self.profiles:
            name = PROFILE_ALIASES[name]
        if name not in self.profiles:
            raise ConfigError(
                f"unknown build profile {name!r}{_hint(name, self.profiles)}",
                fix=f"use one of: {', '.join(sorted(self.profiles))}, or define [profiles.{name}] in fbocc.toml",
            )
        return self.profiles[name]

    def target(self, name: str) -> Target:
        """The named target; a name that is not configured is taken as an SSH host (ssh_config alias)."""
        if name in self.targets:
            return self.targets[name]
        if name in self.groups:
            raise ConfigError(f"{name!r} is a group of targets, not a single target",
                              fix=f"name one of its members: {', '.join(self.groups[name])}")
        return Target(name=name, host=name)

    def resolve_targets(self, names: list[str]) -> list[Target]:
        """Expand group names and return the targets, each once, in the order given."""
        seen: dict[str, Target] = {}
        for name in names:
            members = self.groups.get(name, [name])
            for member in members:
                if member not in seen:
                    seen[member] = self.target(member)
        if not seen:
            raise ConfigError("no target given", fix="pass a target name (see [targets.NAME] in fbocc.toml)")
        return list(seen.values())

    def value_rows(self) -> list[tuple[str, Any, str]]:
        """(dotted key, value, origin) for every setting, sorted: what `fbocc config show` prints."""
        rows: list[tuple[str, Any, str]] = []
        for section in SECTIONS:
            obj = getattr(self, section)
            for f in dataclasses.fields(obj):
                key = f"{section}.{f.name}"
                rows.append((key, _plain(getattr(obj, f.name)), self.origins.get(key, BUILTIN)))
        for table in TABLES:
            for entry_name, obj in sorted(getattr(self, table).items()):
                for f in dataclasses.fields(obj):
                    if f.name == "name":
                        continue
                    key = f"{table}.{entry_name}.{f.name}"
                    rows.append((key, _plain(getattr(obj, f.name)), self.origins.get(key, BUILTIN)))
        for group, members in sorted(self.groups.items()):
            rows.append((f"groups.{group}", members, self.origins.get(f"groups.{group}", BUILTIN)))
        return rows

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view with origins."""
        return {key: {"value": value, "origin": origin} for key, value, origin in self.value_rows()}


# --- loading ------------------------------------------------------------------------------------


def user_config_path() -> Path:
    """Where the user's config lives (`$XDG_CONFIG_HOME/fbocc/config.toml`)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "fbocc" / "config.toml"


# --- machine settings: environment variables that are not [section] keys ------------------------


def cache_dir() -> Path:
    """Where fbocc keeps content-keyed downloads, base root filesystems and build results:
    `$XDG_CACHE_HOME/fbocc` (default `~/.cache/fbocc`)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fbocc"


def debian_mirror() -> str | None:
    """`FBOCC_DEBIAN_MIRROR`: the Debian mirror base images are made from, over the recipe's and the host's
    apt sources; None when unset."""
    return os.environ.get("FBOCC_DEBIAN_MIRROR") or None


def load_config(
    config_file: Path | None = None,
    *,
    cwd: Path | None = None,
    environ: typing.Mapping[str, str] | None = None,
    cli: dict[str, Any] | None = None,
    user_file: Path | None = None,
) -> Config:
    """Read every layer, validate it, and return the typed configuration.

    `cli` holds command-line overrides as dotted keys (`{"build.profile": "sim"}`); `None` values are
    ignored so callers can pass optional options straight through.
    """
    cwd = cwd or Path.cwd()
    environ = os.environ if environ is None else environ
    layers: list[tuple[str, Path | None, dict[str, Any]]] = [
        (f"{BUILTIN} (cross/profiles.toml)", asset_dir("cross") / "profiles.toml", _builtin_profiles()),
    ]
    files: list[Path] = []
    user = user_file if user_file is not None else user_config_path()
    if user.is_file():
        layers.append((f"user config {user}", user, _read_toml(user)))
        files.append(user)
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError(f"config file {config_file} does not exist",
                              fix="check the path given with --config")
        project: Path | None = config_file
    else:
        candidate = cwd / PROJECT_FILE
        project = candidate if candidate.is_file() else None
    if project is not None:
        layers.append((f"{project}", project, _read_toml(project)))
        files.append(project)
    env_layer = _environment_layer(environ)
    if env_layer:
        layers.append(("environment", None, env_layer))
    cli_layer = _unflatten({k: v for k, v in (cli or {}).items() if v is not None}, "command line")
    if cli_layer:
        layers.append(("command line", None, cli_layer))

    merged: dict[tuple[str, ...], Any] = {}
    origins: dict[str, str] = {}
    for label, path, data in layers:
        _check_layer(data, label)
        _merge(merged, origins, data, label, path, prefix=())
    return _build(merged, origins, files)


def builtin_profiles() -> dict[str, BuildProfile]:
    """The profiles shipped in cross/profiles.toml, without any user or project override."""
    merged: dict[tuple[str, ...], Any] = {}
    origins: dict[str, str] = {}
    data = _builtin_profiles()
    _check_layer(data, BUILTIN)
    _merge(merged, origins, data, BUILTIN, None, prefix=())
    return _build(merged, origins, []).profiles


def _builtin_profiles() -> dict[str, Any]:
    path = asset_dir("cross") / "profiles.toml"
    data = _read_toml(path)
    return {"profiles": data.get("profiles", {})}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", fix="correct the syntax at the position shown") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", fix="check the file's permissions") from exc


def _environment_layer(environ: typing.Mapping[str, str]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith("FBOCC_") or name in ("FBOCC_CONFIG", "FBOCC_DEBUG"):
            continue
        rest = name[len("FBOCC_"):].lower()
        section, _, key = rest.partition("_")
        if section not in SECTIONS:
            continue  # FBOCC_* variables for other purposes (tests, tools) are not settings
        flat[f"{section}.{key}"] = raw
    return _unflatten(flat, "environment")


def _unflatten(flat: dict[str, Any], label: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        parts = dotted.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{label}: {dotted} conflicts with another setting")
        node[parts[-1]] = value
    return out


def _check_layer(data: dict[str, Any], label: str) -> None:
    for key, value in data.items():
        if key not in TOP_LEVEL:
            raise ConfigError(f"unknown section [{key}]{_hint(key, TOP_LEVEL)}", where=label,
                              fix=f"the sections are: {', '.join(TOP_LEVEL)}")
        if not isinstance(value, dict):
            raise ConfigError(f"[{key}] must be a table, got {type(value).__name__}", where=label)
        if key in SECTIONS:
            _check_keys(value, SECTIONS[key], key, label)
        elif key in TABLES:
            for entry, body in value.items():
                if not isinstance(body, dict):
                    raise ConfigError(f"[{key}.{entry}] must be a table", where=label)
                _check_keys(body, TABLES[key], f"{key}.{entry}", label, skip=("name",))
        else:  # groups
            for group, members in value.items():
                if not (isinstance(members, list) and all(isinstance(m, str) for m in members)):
                    raise ConfigError(f"groups.{group} must be a list of target names", where=label,
                                      fix=f'write it as {group} = ["orin-a", "orin-b"]')


def _check_keys(body: dict[str, Any], cls: type, where_key: str, label: str, skip: tuple[str, ...] = ()) -> None:
    known = [f.name for f in dataclasses.fields(cls) if f.name not in skip]
    for key in body:
        if key not in known:
            raise ConfigError(f"unknown key {where_key}.{key}{_hint(key, known)}", where=label,
                              fix=f"valid keys in [{where_key}]: {', '.join(known)}")


def _merge(merged: dict[tuple[str, ...], Any], origins: dict[str, str], data: dict[str, Any], label: str,
           path: Path | None, prefix: tuple[str, ...]) -> None:
    for key, value in data.items():
        keypath = (*prefix, key)
        if isinstance(value, dict):
            _merge(merged, origins, value, label, path, prefix=keypath)
        else:
            merged[keypath] = (value, path)
            origins[".".join(keypath)] = label


def _build(merged: dict[tuple[str, ...], Any], origins: dict[str, str], files: list[Path]) -> Config:
    # Keys are tuples, not dotted strings: profile names such as "drive-os-6.0.10" contain dots.
    def section(name: str) -> Any:
        values = {k[1]: v for k, v in merged.items() if k[0] == name and len(k) == 2}
        return _instantiate(SECTIONS[name], values, name, origins)

    tables: dict[str, dict[str, Any]] = {}
    for table, cls in TABLES.items():
        entries: dict[str, dict[str, Any]] = {}
        for keypath, value in merged.items():
            if keypath[0] == table and len(keypath) == 3:
                entries.setdefault(keypath[1], {})[keypath[2]] = value
        if table == "profiles":
            for alias, target in PROFILE_ALIASES.items():
                if alias in entries:
                    entries[target] = {**entries.get(target, {}), **entries.pop(alias)}
        tables[table] = {name: _instantiate(cls, {**vals, "name": (name, None)}, f"{table}.{name}", origins)
                         for name, vals in entries.items()}
    for profile in tables["profiles"].values():
        known = {f.name for f in dataclasses.fields(BuildProfile)}
        for key in profile.unverified:
            if key not in known:
                raise ConfigError(f"profiles.{profile.name}.unverified names {key!r}, which is not a profile key",
                                  where=origins.get(f"profiles.{profile.name}.unverified"),
                                  fix=f"list keys of [profiles.{profile.name}]: {', '.join(sorted(known))}")
    groups = {k[1]: v[0] for k, v in merged.items() if k[0] == "groups" and len(k) == 2}
    for group in groups:
        if group in tables["targets"]:
            raise ConfigError(f"groups.{group} has the same name as [targets.{group}]",
                              where=origins.get(f"groups.{group}"), fix="rename the group or the target")
    return Config(
        project=section("project"), build=section("build"), bench=section("bench"),
        profiles=tables["profiles"], targets=tables["targets"], groups=groups,
        origins=origins, files=files,
    )


def _instantiate(cls: type, values: dict[str, tuple[Any, Path | None]], where_key: str,
                 origins: dict[str, str]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, (raw, path) in values.items():
        origin = origins.get(f"{where_key}.{name}", BUILTIN)
        kwargs[name] = _coerce(raw, hints[name], f"{where_key}.{name}", origin, path)
    missing = [f.name for f in dataclasses.fields(cls)
               if f.name not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"[{where_key}] is missing required keys: {', '.join(missing)}",
                          where=origins.get(f"{where_key}.{next(iter(values), '')}"),
                          fix=f"add {', '.join(missing)} to [{where_key}]")
    return cls(**kwargs)


def _coerce(raw: Any, hint: Any, key: str, origin: str, path: Path | None) -> Any:
    """Convert a TOML/env/CLI value to the field's type, or raise a ConfigError naming the key."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        hint = args[0]
    if optional and raw in ("", None):
        return None
    from_text = isinstance(raw, str) and origin in ("environment", "command line")
    try:
        if hint is bool:
            if from_text:
                lowered = raw.strip().lower()
                if lowered in ("1", "true", "yes", "on"):
                    return True
                if lowered in ("0", "false", "no", "off"):
                    return False
                raise TypeError
            if isinstance(raw, bool):
                return raw
            raise TypeError
        if hint is int:
            if isinstance(raw, bool):
                raise TypeError
            if isinstance(raw, int) or from_text:
                return int(raw)
            raise TypeError
        if hint is float:
            if isinstance(raw, bool):
                raise TypeError
            if isinstance(raw, (int, float)) or from_text:
                return float(raw)
            raise TypeError
        if hint is str:
            if isinstance(raw, str):
                return raw
            raise TypeError
        if hint is Path:
            if not isinstance(raw, (str, Path)):
                raise TypeError
            p = Path(raw).expanduser()
            # Relative paths in a config file are relative to that file, as a reader of the file expects.
            if not p.is_absolute() and path is not None and origin != BUILTIN and not origin.startswith(BUILTIN):
                p = path.parent / p
            return p
        if typing.get_origin(hint) is list:
            if from_text:
                raw = [part.strip() for part in raw.split(",") if part.strip()]
            if isinstance(raw, list) and all(isinstance(x, (str, int)) for x in raw):
                return [str(x) for x in raw]
            raise TypeError
    except (TypeError, ValueError):
        expected = _describe(hint) + (" (or empty)" if optional else "")
        raise ConfigError(f"{key} must be {expected}, got {raw!r}", where=origin,
                          fix=f"set {key} to {expected}") from None
    raise AssertionError(f"unsupported config type {hint!r} for {key}")


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is list:
        return "a list of strings"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            Path: "a path"}.get(hint, str(hint))


def _hint(word: str, candidates: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    return value
