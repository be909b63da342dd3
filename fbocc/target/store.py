"""The content-addressed store of artefact sets on a target: its layout and every shell step on it.

Remote layout under the target's workdir `W` (what fbocc.target.contract reads)::

    W/current -> sets/<set-hash>     the last complete set; switched atomically (ln -sfn + mv -T)
    W/sets/<set-hash>/               one artefact set (fbocc.target.artefacts names it):
        fbocc-set.json                 the set's manifest: every file's path, sha256, size and role
        <name>.onnx                  the ONNX model, its external-data files at their relative locations
        <lib>.so                     every plugin library, and fbocc-build.json (when present)
        samples/manifest.json        the samples directory as `fbocc export` wrote it
        samples/frame_000/<input>.dat
        deploy/...                   the target-side package (Python 3.8, numpy, tensorrt)
    W/sets/.<set-hash>.tmp/          a set being assembled; renamed to sets/<set-hash> when complete
    W/objects/<sha256>               every distinct file content once, read-only; set files are hard
                                     links to these, so versions share unchanged files
    W/objects/<sha256>.part          an upload in progress; resumed after its prefix hash is checked
    W/objects/index.tsv              `<sha256> <size> <mtime> <inode>` of objects verified on the target

Nothing in the store is locked: an object appears under its final name only by rename(2) after its
content hashed to that name, a set directory only by rename once every link is in place, and `current`
only by an atomic symlink switch. Two writers never disagree on an object's content; they can only race
on the same `<sha256>.part` (issue 22 adds a per-workdir lock for that).

Hashing on the target uses `openssl dgst -sha256` when it works there (OpenSSL uses the CPU's SHA
instructions: 5x less CPU than coreutils here), else `sha256sum`. With Python on the target one process
renames or links many files (a process start per `mv`/`ln` costs more than the work).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from fbocc.config import Target
from fbocc.errors import ConfigError, FboccError, TransferError
from fbocc.target.artefacts import ArtefactSet
from fbocc.target.supervision import workdir_lock
from fbocc.target.transport import TargetOutcome, TargetSession, connect_all, quote

log = logging.getLogger(__name__)
SET_MANIFEST = "fbocc-set.json"
STAT_BATCH = 400
OPENSSL_SHA256 = "openssl dgst -sha256 -r"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
VERIFY_FAILED = 30  # exit code of the final command when an upload hashed wrong


@dataclass
class StoreState:
    """What the target's store holds for one set, from one round trip."""

    free_bytes: int = 0
    objects: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # sha -> (size, mtime, inode)
    parts: dict[str, int] = field(default_factory=dict)  # sha -> bytes of its .part
    index: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # verified objects
    set_inodes: dict[str, int] = field(default_factory=dict)  # set file -> inode
    set_manifest: bool = False
    current: str = ""
    foreign_parts: list[str] = field(default_factory=list)  # objects/*.part of other sets (dead pushes)


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


@dataclass
class PruneResult:
    """What `--prune` removed on one target."""

    target: str
    kept: list[str]
    removed: list[str]
    freed_bytes: int


class RemoteStore:
    """The store under one target's workdir, seen through one session (each method: one round trip)."""

    def __init__(self, session: TargetSession) -> None:
        self.session = session
        self.label = session.label
        self.hasher = "sha256sum"
        self.python: str | None = None  # the target's Python, when it has one: fewer process starts

    @property
    def workdir(self) -> str:
        return self.session.workdir()

    def object_path(self, sha: str) -> str:
        return f"{self.workdir}/objects/{sha}"

    def query(self, aset: ArtefactSet) -> StoreState:
        """Prepare the workdir and read what the store holds of `aset` (also picks hasher and Python).

        Changes nothing but creating the workdir (it may run before the workdir lock is confirmed). Lists
        the `.part` files of objects this set does not have (`foreign_parts`: uploads of pushes that died,
        or of one running now if the lock turns out to be someone else's).
        """
        w = quote(self.workdir)
        shas = sorted({f.sha256 for f in aset.files})
        set_dir = f"sets/{aset.set_hash}"
        lines = [
            f'if [ -L {w} ] && [ ! -e {w} ]; then echo "BROKENLINK $(readlink -- {w})"; exit 14; fi',
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
        names = [f.path for f in aset.files]
        for i in range(0, len(names), STAT_BATCH):
            batch = names[i:i + STAT_BATCH]
            lines.append("stat -c 'S %i %n' -- " + " ".join(quote(f"{set_dir}/{n}") for n in batch)
                         + " 2>/dev/null")
        keep = " ".join(f"{s}.part" for s in shas)
        lines.append(f'for p in objects/*.part; do [ -f "$p" ] || continue; case " {keep} " in '
                     '*" ${p#objects/} "*) ;; *) echo "FOREIGN ${p#objects/}";; esac; done')
        lines.append("exit 0")
        res = self.session.run("\n".join(lines), check=False, timeout=120)
        if res.exit_code == 14:
            link = res.stdout.partition("BROKENLINK ")[2].strip()
            raise TransferError(f"the workdir {self.workdir} on {self.label} is a broken link: a symbolic link to "
                                f"{link}, which does not exist", where=self.label,
                                fix=f"create {link} on the target, remove the link, or set another workdir")
        self.check_preflight(res.exit_code, res.stderr)
        state = StoreState()
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
            elif tag == "FOREIGN":
                state.foreign_parts.append(rest.strip())
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

    def check_preflight(self, code: int, stderr: str) -> None:
        """Raise TransferError naming why the workdir cannot take a push (exit codes of `query`)."""
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

    def hashes(self, shas: Sequence[str]) -> dict[str, str]:
        """{object name: sha256 of its content as the target computes it} for objects already there."""
        out: dict[str, str] = {}
        for i in range(0, len(shas), STAT_BATCH):
            batch = shas[i:i + STAT_BATCH]
            cmd = f"cd -- {quote(self.workdir)}/objects && {self.hasher} {' '.join(batch)} 2>/dev/null; exit 0"
            for line in self.session.run(cmd, timeout=3600).stdout.splitlines():
                digest, _, name = line.partition(" ")
                out[name.strip().lstrip("*")] = digest
        return out

    def part_prefix_hash(self, sha: str, nbytes: int) -> str | None:
        """sha256 of the first `nbytes` of `<sha>.part` on the target (to resume an upload)."""
        part = f"{self.object_path(sha)}.part"
        remote = self.session.run(f"head -c {nbytes} -- {quote(part)} | {self.hasher}", timeout=3600).stdout
        words = remote.split()
        return words[0] if words else None

    def reclaim(self, parts: Sequence[str]) -> None:
        """Remove `.part` files of pushes that died (only under the workdir lock: nobody else writes them)."""
        names = [p for p in parts if p.endswith(".part") and "/" not in p]
        if names:
            self.session.run(f"cd -- {quote(self.workdir)}/objects && rm -f -- "
                             + " ".join(quote(n) for n in names), timeout=60)

    def verify_script(self, shas: Sequence[str]) -> str:
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

    def verify(self, shas: Sequence[str]) -> str:
        """Hash the finished parts on the target, renaming each good one to its object name; the output
        for `verified`."""
        return self.session.run(f"cd -- {quote(self.workdir)} || exit 1\n{self.verify_script(shas)}",
                                timeout=3600).stdout

    @staticmethod
    def verified(stdout: str) -> tuple[set[str], dict[str, str]]:
        """(objects that verified, {object: the sha256 it arrived with} for those that did not)."""
        good: set[str] = set()
        got: dict[str, str] = {}
        for line in stdout.splitlines():
            words = line.split()
            if words[:1] == ["OK"] and len(words) == 5:
                good.add(words[1])
            elif words[:1] == ["BAD"] and len(words) >= 2:
                got[words[1]] = words[2] if len(words) > 2 else "nothing"
        return good, got

    def remove(self, path: str) -> None:
        """Remove one file of the store, quietly (a failure only leaves garbage `--prune` removes)."""
        with contextlib.suppress(FboccError):
            self.session.run(f"rm -f -- {quote(path)}", timeout=60)

    @staticmethod
    def index_command(new_index: Mapping[str, tuple[int, int, int]]) -> str:
        """Shell lines recording objects re-hashed during planning in objects/index.tsv, then compacting it."""
        lines = "".join(f"{s} {a} {b} {c}\n" for s, (a, b, c) in sorted(new_index.items()))
        record = f"printf %s {quote(lines)} >> objects/index.tsv && " if lines else ""
        return (f"{record}awk '{{e[$1]=$0}} END {{for (k in e) print e[k]}}' objects/index.tsv > objects/index.tsv.tmp"
                " && mv -f objects/index.tsv.tmp objects/index.tsv || exit 1")

    def assemble_commands(self, aset: ArtefactSet, state: StoreState, *, complete: bool) -> list[str]:
        """Shell lines (in the workdir) linking the set's files from objects/ and renaming the set into place,
        then switching `current` to it (each only when needed)."""
        h = aset.set_hash
        cmds: list[str] = []
        if not complete:
            tmp = f"sets/.{h}.tmp"
            dirs = sorted({str(PurePosixPath(tmp, f.path).parent) for f in aset.files})
            cmds += [f"rm -rf -- {quote(tmp)}", "mkdir -p -- " + " ".join(quote(d) for d in dirs) + " || exit 1"]
            pairs = "".join(f"objects/{f.sha256}\t{tmp}/{f.path}\n" for f in aset.files)
            if self.python:
                cmds.append(f"{self.python} -c {quote(_LINKER)} <<'FBOCC_LINKS' || exit 1\n{pairs}FBOCC_LINKS")
            else:
                cmds.append("\n".join(
                    f"{{ ln -- objects/{f.sha256} {quote(f'{tmp}/{f.path}')} 2>/dev/null || "
                    f"cp -p -- objects/{f.sha256} {quote(f'{tmp}/{f.path}')}; }} || exit 1" for f in aset.files))
            doc = json.dumps(aset.manifest(), indent=1) + "\n"
            old = f"sets/.{h}.old.$$"
            # Replacing an existing set: one renameat2(RENAME_EXCHANGE) swaps old and new, so `current`
            # (-> sets/<h>) never points at nothing; only without Python or that call, two renames.
            swap = (f"{self.python} -c {quote(_SWAPPER)} {quote(tmp)} sets/{h} && rm -rf -- {quote(tmp)} || "
                    if self.python else "")
            cmds += [f"printf %s {quote(doc)} > {quote(tmp + '/' + SET_MANIFEST)} || exit 1",
                     f"if [ -e sets/{h} ]; then {swap}{{ mv -T -- sets/{h} {old} && mv -T -- {quote(tmp)} sets/{h} "
                     f"&& rm -rf -- {old}; }} || exit 1; else mv -T -- {quote(tmp)} sets/{h} || exit 1; fi"]
        if state.current != f"sets/{h}" or not complete:
            cmds.append(f"ln -sfn -- sets/{h} .current.tmp.$$ && mv -T -- .current.tmp.$$ current || exit 1")
        return cmds


# Python 3.8-compatible: rename each verified <sha>.part to <sha> (rename(2): atomic, replaces).
_RENAMER = """import os, sys
for h in sys.argv[1:]:
    os.rename(h + ".part", h)
"""

# Python 3.8-compatible: exchange two directories in one rename (Linux renameat2 RENAME_EXCHANGE); exit 3
# where the kernel, libc or filesystem cannot (the caller then renames twice).
_SWAPPER = """import ctypes, os, sys
f = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
sys.exit(3 if f is None or f(-100, os.fsencode(sys.argv[1]), -100, os.fsencode(sys.argv[2]), 2) != 0 else 0)
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


def manage_sets(targets: Sequence[Target], *, keep: int | None, known_hosts: Path | None = None,
                accept_new: bool = False, wait_lock_s: float = 0.0) -> list[TargetOutcome[Any]]:
    """`--list` (keep=None: each target's sets) or `--prune` (keep=N: `prune_sets`, under the workdir lock)."""
    if keep is not None and keep < 1:
        raise ConfigError("--keep must be at least 1", fix="pass --keep N with N >= 1")

    def prune(session: TargetSession) -> PruneResult:
        assert keep is not None
        with session.doing("pruning"), workdir_lock(session, "pruning", wait_lock_s):
            return prune_sets(session, keep)

    fn: Callable[[TargetSession], Any] = list_sets if keep is None else prune
    return connect_all(targets, fn, known_hosts=known_hosts, accept_new=accept_new)


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
