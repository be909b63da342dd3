"""A real OpenSSH server on 127.0.0.1 for tests: temporary host key, authorized client key, known_hosts.

Not a mock: it is /usr/sbin/sshd with a config of ours, so everything fbocc does over SSH (auth, host
key checks, SFTP, exec, ProxyJump) meets the real protocol.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path, kind: str = "ed25519") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "fbocc-test", "-f", str(path)],
                   check=True, stdout=subprocess.DEVNULL)
    return path


@dataclass
class SshServer:
    """One running sshd. `known_hosts` trusts its host key; `client_key` is authorized."""

    root: Path
    port: int
    user: str
    client_key: Path
    host_key: Path
    known_hosts: Path
    proc: subprocess.Popen[bytes] | None = None
    extra_config: list[str] = field(default_factory=list)

    host: str = "127.0.0.1"

    @property
    def host_pubkey_line(self) -> str:
        kind, blob = Path(f"{self.host_key}.pub").read_text().split()[:2]
        return f"[{self.host}]:{self.port} {kind} {blob}"

    def config_text(self) -> str:
        lines = [
            f"Port {self.port}", f"ListenAddress {self.host}", f"HostKey {self.host_key}",
            f"PidFile {self.root / 'sshd.pid'}", f"AuthorizedKeysFile {self.root / 'authorized_keys'}",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
            "UsePAM no", "StrictModes no", "PermitRootLogin yes", "AllowTcpForwarding yes",
            "Subsystem sftp internal-sftp", "LogLevel ERROR", "MaxStartups 50", "MaxSessions 50",
            f"SetEnv FBOCC_TEST_SSHD={self.port}",
            *self.extra_config,
        ]
        return "\n".join(lines) + "\n"

    def start(self) -> SshServer:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege-separation dir sshd insists on
        cfg = self.root / "sshd_config"
        cfg.write_text(self.config_text())
        log = (self.root / "sshd.log").open("ab")
        self.proc = subprocess.Popen([SSHD, "-f", str(cfg), "-D", "-e"], stdout=log, stderr=log,
                                     start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.root / 'sshd.log').read_text()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd on port {self.port} did not answer: {(self.root / 'sshd.log').read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def ssh_config(self, alias: str, *, proxy_jump: str | None = None) -> str:
        """An ~/.ssh/config stanza for this server (for tests of alias resolution and ProxyJump)."""
        lines = [f"Host {alias}", f"  HostName {self.host}", f"  Port {self.port}", f"  User {self.user}",
                 f"  IdentityFile {self.client_key}", f"  UserKnownHostsFile {self.known_hosts}",
                 "  StrictHostKeyChecking yes"]
        if proxy_jump:
            lines.append(f"  ProxyJump {proxy_jump}")
        return "\n".join(lines) + "\n"

    def target_toml(self, name: str, workdir: str | Path, **extra: str) -> str:
        """A [targets.NAME] table pointing at this server."""
        body = [f"[targets.{name}]", f'host = "{self.host}"', f"port = {self.port}", f'user = "{self.user}"',
                f'identity_file = "{self.client_key}"', f'workdir = "{workdir}"']
        body += [f'{k} = "{v}"' for k, v in extra.items()]
        return "\n".join(body) + "\n"


def make_server(root: Path, *, client_key: Path | None = None, extra_config: list[str] | None = None) -> SshServer:
    """Create keys and config under `root` and start sshd on a free loopback port."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    host_key = keygen(root / "host_ed25519")
    if client_key is None:
        client_key = keygen(root / "client_ed25519")
    (root / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())
    server = SshServer(root=root, port=free_port(), user=getpass.getuser(), client_key=client_key,
                       host_key=host_key, known_hosts=root / "known_hosts", extra_config=extra_config or [])
    server.known_hosts.write_text(server.host_pubkey_line + "\n")
    return server.start()
