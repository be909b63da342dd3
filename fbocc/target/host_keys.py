"""Host-key policy of the SSH transport: a target's key must be known; unknown keys are refused or,
when asked (`--accept-new`), recorded like OpenSSH's `StrictHostKeyChecking accept-new`.

Part of the SSH owner (fbocc.target.transport uses it; nothing else does). Known keys come from the
user's `~/.ssh/known_hosts`, the files named by ssh_config `UserKnownHostsFile`/`GlobalKnownHostsFile`,
and the project file (`[project] known_hosts`, default `.fbocc/known_hosts`).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shlex
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import paramiko

from fbocc.errors import RemoteError

_known_hosts_lock = threading.Lock()


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style SHA256 fingerprint of a public key (`SHA256:...`)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts_name(host: str, port: int) -> str:
    """The name OpenSSH writes in known_hosts: `host` on port 22, `[host]:port` otherwise."""
    return host if port == 22 else f"[{host}]:{port}"


def _name_matches(pattern: str, name: str) -> bool:
    if pattern.startswith("|1|"):
        salt = pattern.split("|")[2]
        return paramiko.HostKeys.hash_host(name, salt) == pattern
    return pattern == name


def find_known_host_lines(files: Iterable[Path], name: str) -> list[tuple[Path, int, paramiko.PKey]]:
    """(file, line number, key) of every known_hosts line naming `name` (hashed names included)."""
    found: list[tuple[Path, int, paramiko.PKey]] = []
    for path in files:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for lineno, line in enumerate(lines, 1):
            if not line.strip() or line.lstrip().startswith(("#", "@")):
                continue
            try:
                entry = paramiko.hostkeys.HostKeyEntry.from_line(line, lineno)
            except Exception:  # unparsable lines are skipped, as OpenSSH does
                continue
            if entry is None or entry.key is None:
                continue
            if any(_name_matches(pattern, name) for pattern in entry.hostnames):
                found.append((path, lineno, entry.key))
    return found


def record_host_key(path: Path, hostname: str, key: paramiko.PKey) -> None:
    """Append `hostname keytype base64` to a known_hosts file (plain, as OpenSSH's accept-new does)."""
    with _known_hosts_lock:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as fh:
            fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


def split_paths(value: Any) -> list[Path]:
    """ssh_config's `UserKnownHostsFile`-style value (words, `~`, `none`) -> paths."""
    if not value:
        return []
    words: list[str] = []
    for item in value if isinstance(value, list) else [value]:
        words.extend(shlex.split(str(item)))
    return [Path(os.path.expanduser(w)) for w in words if w.lower() != "none"]


class StrictHostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Unknown host: refuse, or with accept_new record it in the project known_hosts and go on."""

    def __init__(self, files: list[Path], project_file: Path, accept_new: bool, label: str) -> None:
        self.files = files
        self.project_file = project_file
        self.accept_new = accept_new
        self.label = label

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        others = find_known_host_lines(self.files, hostname)
        if others:
            # Keys of another type are known for this host: a server that suddenly offers a different
            # key type is treated like a changed key, never as a new host.
            listed = "; ".join(f"{k.get_name()} {fingerprint(k)} ({p}:{n})" for p, n, k in others)
            raise RemoteError(
                f"host key for {hostname} does not match: the server offers {key.get_name()} "
                f"{fingerprint(key)}, known_hosts has {listed}",
                where=self.label,
                fix="if the target was re-installed, remove the old lines "
                f"(ssh-keygen -R {shlex.quote(hostname)} -f FILE) and re-run with --accept-new",
            )
        if not self.accept_new:
            raise RemoteError(
                f"unknown SSH host {hostname}: its {key.get_name()} key fingerprint is {fingerprint(key)}; "
                f"it is in none of {', '.join(str(f) for f in self.files)}",
                where=self.label,
                fix="check the fingerprint on the target (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub) and "
                f"re-run with --accept-new to trust it (recorded in {self.project_file})",
            )
        record_host_key(self.project_file, hostname, key)
        client.get_host_keys().add(hostname, key.get_name(), key)


def changed_key_error(exc: paramiko.BadHostKeyException, files: list[Path], host: str, port: int,
                      label: str) -> RemoteError:
    """Our error for paramiko's BadHostKeyException: both fingerprints and the line holding the old key."""
    name = known_hosts_name(host, port)
    lines = [f"{p}:{n}" for p, n, k in find_known_host_lines(files, name) if k == exc.expected_key]
    return RemoteError(
        f"host key for {name} has CHANGED: the server offers {exc.key.get_name()} "
        f"{fingerprint(exc.key)}, known_hosts has {fingerprint(exc.expected_key)}"
        f" ({', '.join(lines) or 'loaded known_hosts'}). Someone may be intercepting the "
        "connection, or the target was re-installed",
        where=label,
        fix="verify the new fingerprint on the target; if it is right, remove the old line "
        f"(ssh-keygen -R {shlex.quote(name)} -f FILE) and re-run with --accept-new",
    )
