"""One hierarchy for every failure a user can cause, each with its own exit code.

The CLI catches `FboccError`, prints `message` (and `fix` when given) and exits with `exit_code`;
anything else is a bug and shows its traceback.
"""

from __future__ import annotations


class FboccError(Exception):
    """A failure the user can fix: what is wrong, where, and how to fix it."""

    exit_code = 1
    kind = "error"

    def __init__(self, message: str, *, fix: str | None = None, where: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.where = where

    def render(self) -> str:
        """The complete text shown to the user."""
        head = f"{self.where}: {self.message}" if self.where else self.message
        return f"{head}\n  fix: {self.fix}" if self.fix else head


class ConfigError(FboccError):
    """fbocc.toml, user config, environment or command-line values are wrong."""

    exit_code = 2
    kind = "configuration error"


class EnvironmentCheckError(FboccError):
    """Something the machine needs is missing: Docker daemon, image, .deb, compiler, key."""

    exit_code = 3
    kind = "environment error"


class BuildError(FboccError):
    """The plugin build (container or local) failed or produced a wrong artefact."""

    exit_code = 4
    kind = "build error"


class TransferError(FboccError):
    """Pushing or pulling files over SSH failed."""

    exit_code = 5
    kind = "transfer error"


class TargetDiskFull(TransferError):
    """The target ran out of space while receiving a file."""


class RemoteError(FboccError):
    """A command on the target failed (engine build, benchmark, sequence run) or the target is unusable."""

    exit_code = 6
    kind = "remote error"


class ConnectionLost(RemoteError):
    """The SSH connection dropped in the middle of a command or a transfer (callers may reconnect)."""


class ValidationError(FboccError):
    """Data does not match its contract: manifest vs files, ONNX vs plugin ops, outputs vs reference."""

    exit_code = 7
    kind = "validation error"


class Interrupted(FboccError):
    """The user pressed Ctrl-C; cleanup has run."""

    exit_code = 130
    kind = "interrupted"
