"""A real OpenSSH server on a loopback port with throw-away keys: `make demo`'s target and the tests' targets.

Not a mock: /usr/sbin/sshd runs with a config of ours (public-key auth only, SFTP, no PAM), so everything fbocc
does over SSH meets the real protocol. Host-key checking stays strict: callers get a known_hosts that trusts
exactly this server's fresh host key.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from fbocc.errors import EnvironmentCheckError

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SSHD_FIX = "run `make setup` as root, or apt-get install openssh-server"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path, kind: str = "ed25519", comment: str = "fbocc") -> Path:
    """A passphrase-less key pair at `path` and `path`.pub."""
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", comment, "-f", str(path)],
                   check=True, stdout=subprocess.DEVNULL)
    return path


def known_hosts_line(host: str, port: int, host_key: Path) -> str:
    kind, blob = Path(f"{host_key}.pub").read_text().split()[:2]
    return f"[{host}]:{port} {kind} {blob}"


def config_lines(root: Path, host: str, port: int, host_key: Path) -> list[str]:
    """The sshd_config both users share: keys under `root`, public-key auth only, SFTP, quiet log."""
    return [
        f"Port {port}", f"ListenAddress {host}", f"HostKey {host_key}", f"PidFile {root / 'sshd.pid'}",
        f"AuthorizedKeysFile {root / 'authorized_keys'}", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PubkeyAuthentication yes", "UsePAM no", "StrictModes no",
        "PermitRootLogin yes", "Subsystem sftp internal-sftp", "LogLevel ERROR", "MaxStartups 50", "MaxSessions 50",
    ]


def start(root: Path, config: list[str], host: str, port: int, timeout: float = 15.0) -> subprocess.Popen[bytes]:
    """Write `config` to root/sshd_config, start sshd in its own session and wait for its SSH banner.

    Raises EnvironmentCheckError (sshd missing, exited, or silent); on error no sshd is left running.
    """
    if not Path(SSHD).exists() or shutil.which("ssh-keygen") is None:
        raise EnvironmentCheckError("OpenSSH server (sshd) is not installed", fix=SSHD_FIX)
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation directory
    path = root / "sshd_config"
    path.write_text("\n".join(config) + "\n")
    log_path = root / "sshd.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen([SSHD, "-f", str(path), "-D", "-e"], stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise EnvironmentCheckError(f"sshd exited at start: {log_path.read_text().strip()}",
                                        fix=f"check that {SSHD} runs for this user")
        try:
            with socket.create_connection((host, port), timeout=0.5) as s:
                if s.recv(4).startswith(b"SSH-"):
                    return proc
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop(proc)
            raise EnvironmentCheckError(f"sshd on {host}:{port} did not answer within {timeout:.0f} s",
                                        fix=f"see {log_path}")
        time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    """Terminate sshd (kill it after 5 s)."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
