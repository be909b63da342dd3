"""A real OpenSSH server on 127.0.0.1 for tests: temporary host key, authorized client key, known_hosts.

Not a mock: it is /usr/sbin/sshd with a config of ours, so everything fbocc does over SSH (auth, host
key checks, SFTP, exec, ProxyJump) meets the real protocol.
"""

from __future__ import annotations

import getpass
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from fbocc.target import loopback_sshd
from fbocc.target.loopback_sshd import SSHD, free_port, keygen

__all__ = ["SSHD", "SshServer", "free_port", "keygen", "make_server"]


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
        return loopback_sshd.known_hosts_line(self.host, self.port, self.host_key)

    def config_text(self) -> str:
        lines = [*loopback_sshd.config_lines(self.root, self.host, self.port, self.host_key),
                 "AllowTcpForwarding yes", f"SetEnv FBOCC_TEST_SSHD={self.port}", *self.extra_config]
        return "\n".join(lines) + "\n"

    def start(self) -> SshServer:
        self.proc = loopback_sshd.start(self.root, self.config_text().splitlines(), self.host, self.port, timeout=10)
        return self

    def stop(self) -> None:
        loopback_sshd.stop(self.proc)
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
    host_key = keygen(root / "host_ed25519", comment="fbocc-test")
    if client_key is None:
        client_key = keygen(root / "client_ed25519", comment="fbocc-test")
    (root / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())
    server = SshServer(root=root, port=free_port(), user=getpass.getuser(), client_key=client_key,
                       host_key=host_key, known_hosts=root / "known_hosts", extra_config=extra_config or [])
    server.known_hosts.write_text(server.host_pubkey_line + "\n")
    return server.start()
