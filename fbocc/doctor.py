"""`fbocc doctor`: what is missing on this machine and on a target, and how to fix each piece.

Every check returns a `Check` (never raises for a missing piece); the report is non-zero when a required
check fails. Docker goes through `fbocc.build.container`, SSH through `fbocc.target.transport` — the modules that
own those systems.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from deploy.protocol import trt_version_from_banner
from fbocc.config import BuildProfile, Config, Target
from fbocc.errors import FboccError

OK, MISSING, WARN, SKIPPED = "ok", "missing", "warning", "skipped"


@dataclass
class Check:
    """One line of the doctor's table."""

    area: str
    name: str
    status: str
    detail: str
    fix: str | None = None
    required: bool = True

    @property
    def failed(self) -> bool:
        return self.status == MISSING and self.required


@dataclass
class DoctorReport:
    """All checks, in the order they ran."""

    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(c.failed for c in self.checks)

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks]}


# --- host ---------------------------------------------------------------------------------------


def check_docker() -> Check:
    from fbocc.build.container import docker_status

    ok, info = docker_status()
    if ok:
        return Check("host", "Docker daemon", OK, f"reachable, server {info}")
    return Check("host", "Docker daemon", MISSING, info,
                 fix="install docker.io and start the daemon (as root: `make setup`, or "
                     "`dockerd --bridge=none --iptables=false &`); or set DOCKER_HOST")


def check_build_image(cfg: Config, profile: BuildProfile) -> Check:
    from fbocc.build.profile_image import image_status

    status = image_status(cfg, profile)
    state = OK if status.state in ("present", "buildable") else MISSING
    detail = f"{status.image}: {status.state}" + (f" ({status.detail})" if status.detail else "")
    return Check("host", f"build image ({profile.name})", state, detail, fix=status.fix)


def check_trt_deb(cfg: Config, profile: BuildProfile, *, image_present: bool) -> Check:
    """The cross .deb is needed only to build the image; once the image exists it is optional."""
    from fbocc.build.profile_image import resolve_trt_deb

    name = f"TensorRT cross .deb ({profile.name})"
    if not profile.trt_deb:
        return Check("host", name, SKIPPED, "this profile needs no TensorRT .deb", required=False)
    path = resolve_trt_deb(cfg.build.trt_deb, profile) or Path.cwd() / profile.trt_deb
    required = not image_present
    if path.is_file():
        if not os.access(path, os.R_OK):
            return Check("host", name, MISSING, f"{path} is not readable", fix=f"chmod a+r {path}",
                         required=required)
        return Check("host", name, OK, f"{path} ({path.stat().st_size / 1e6:.0f} MB)", required=required)
    detail = f"{path} not found" + (" (not needed: the build image is already present)" if image_present else "")
    return Check("host", name, MISSING, detail, required=required,
                 fix="download it from NVIDIA's DRIVE OS / NVONLINE portal and pass --trt-deb PATH "
                     "or set [build] trt_deb in fbocc.toml")


def _tool_version(cmd: list[str], pattern: str) -> str | None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(pattern, proc.stdout + proc.stderr)
    return match.group(1) if match else None


def check_nvcc() -> Check:
    nvcc = shutil.which("nvcc") or next((str(p) for p in [Path("/usr/local/cuda/bin/nvcc")] if p.exists()), None)
    if nvcc is None:
        return Check("host", "nvcc (local kernel builds)", MISSING, "not on PATH or in /usr/local/cuda/bin",
                     fix="install the CUDA toolkit, or build in the container with `fbocc cross-build`",
                     required=False)
    version = _tool_version([nvcc, "--version"], r"release ([\d.]+)")
    return Check("host", "nvcc (local kernel builds)", OK, f"{nvcc} (CUDA {version or '?'})", required=False)


def check_cross_compiler() -> Check:
    cxx = shutil.which("aarch64-linux-gnu-g++")
    if cxx is None:
        return Check("host", "aarch64 cross compiler", MISSING, "aarch64-linux-gnu-g++ not on PATH",
                     fix="apt-get install g++-aarch64-linux-gnu (or build in the container)", required=False)
    version = _tool_version([cxx, "--version"], r"\) ([\d.]+)")
    return Check("host", "aarch64 cross compiler", OK, f"{cxx} {version or ''}".strip(), required=False)


def check_ssh_credentials(targets: list[Target]) -> Check:
    keys = [t.identity_file for t in targets if t.identity_file]
    missing = [k for k in keys if not k.is_file()]
    if missing:
        return Check("host", "SSH key or agent", MISSING, f"identity file {missing[0]} does not exist",
                     fix="fix identity_file in [targets.NAME] or create the key with ssh-keygen")
    if keys:
        return Check("host", "SSH key or agent", OK, ", ".join(str(k) for k in keys))
    if os.environ.get("SSH_AUTH_SOCK"):
        return Check("host", "SSH key or agent", OK, f"agent at {os.environ['SSH_AUTH_SOCK']}")
    default = [p for p in (Path.home() / ".ssh").glob("id_*") if not p.name.endswith(".pub")]
    if default:
        return Check("host", "SSH key or agent", OK, ", ".join(str(p) for p in sorted(default)))
    return Check("host", "SSH key or agent", MISSING, "no identity file configured, no agent, no ~/.ssh/id_*",
                 fix="ssh-keygen -t ed25519, then ssh-copy-id to the target (or set identity_file)",
                 required=bool(targets))


# --- target -------------------------------------------------------------------------------------

def check_target(cfg: Config, target: Target, *, accept_new: bool = False) -> list[Check]:
    """Connect (strict host keys), then look at trtexec, TensorRT, CUDA, disk, Python and numpy."""
    from fbocc.target.transport import TargetSession

    area = f"target {target.name}"
    checks: list[Check] = []
    try:
        session = TargetSession(target, known_hosts=cfg.project.known_hosts, accept_new=accept_new)
        session.__enter__()
    except FboccError as exc:
        # The transport's message already says which of reachable / host key / login failed.
        checks.append(Check(area, "reachable, host key known, login", MISSING, exc.message, fix=exc.fix))
        return checks
    try:
        checks.append(Check(area, "reachable, host key known, login", OK,
                            session.address))
        checks.extend(_remote_checks(session, target, area, cfg))
    finally:
        session.__exit__(None, None, None)
    return checks


def _remote_checks(session: object, target: Target, area: str, cfg: Config) -> list[Check]:
    run: Callable[..., object] = session.run  # type: ignore[attr-defined]
    quote: Callable[[str], str] = session.quote  # type: ignore[attr-defined]

    def sh(command: str) -> tuple[int, str]:
        result = run(command, check=False, timeout=60)
        return result.exit_code, (result.stdout + result.stderr).strip()  # type: ignore[attr-defined]

    checks: list[Check] = []
    version: str | None = None
    code, text = sh(f"test -x {quote(target.trtexec)} && {quote(target.trtexec)} --help 2>&1 | head -n 5")
    if code != 0:
        checks.append(Check(area, "trtexec", MISSING, f"{target.trtexec} not found or not executable",
                            fix=f"install TensorRT on the target or set trtexec = \"...\" in [targets.{target.name}]"))
    else:
        version = trt_version_from_banner(text)
        checks.append(Check(area, "trtexec", OK, target.trtexec))
        checks.append(Check(area, "TensorRT version", OK if version else WARN,
                            version or "trtexec did not print its TensorRT version", required=False))
    code, text = sh("cat /usr/local/cuda/version.json 2>/dev/null | grep -m1 -A1 '\"cuda\"' | "
                    "grep -o '[0-9][0-9.]*' | head -n1 || true; "
                    "cat /usr/local/cuda/version.txt 2>/dev/null; ls -d /usr/local/cuda-* 2>/dev/null")
    cuda = re.search(r"(\d+\.\d+(?:\.\d+)?)", text)
    checks.append(Check(area, "CUDA", OK if cuda else MISSING,
                        f"CUDA {cuda.group(1)}" if cuda else "no /usr/local/cuda* on the target",
                        fix=None if cuda else "install the CUDA runtime (JetPack / DRIVE OS) on the target"))
    sm = _target_sm(sh, cuda.group(1) if cuda else None)
    checks.append(Check(area, "GPU", OK if sm else WARN, f"sm_{sm}" if sm else "not identified (no nvidia-smi "
                        "compute_cap, no Tegra device tree)", required=False))
    checks += _profile_checks(cfg, area, version, cuda.group(1) if cuda else None, sm)
    workdir = session.workdir()  # type: ignore[attr-defined]
    # The workdir may not exist yet: measure the nearest existing parent.
    code, text = sh(f"d={quote(workdir)}; while [ ! -d \"$d\" ]; do d=$(dirname \"$d\"); done; "
                    "df -Pk \"$d\" | tail -n 1")
    fields = text.split()
    if code == 0 and len(fields) >= 4 and fields[3].isdigit():
        free_gb = int(fields[3]) / 1024 / 1024
        state = OK if free_gb >= 2 else MISSING
        checks.append(Check(area, "free disk in workdir", state, f"{free_gb:.1f} GB free for {workdir}",
                            fix=None if state == OK else "free at least 2 GB there or set another workdir"))
    else:
        checks.append(Check(area, "free disk in workdir", MISSING, f"df failed: {text[:200]}",
                            fix="check that the workdir's filesystem is mounted"))
    probe = "import sys, numpy; print(sys.version.split()[0], numpy.__version__)"
    code, text = sh(f"{quote(target.python)} -c {quote(probe)}")
    if code == 0 and len(text.split()) >= 2:
        py, np_version = text.split()[-2:]
        checks.append(Check(area, "Python 3 and numpy", OK, f"Python {py}, numpy {np_version}"))
    else:
        checks.append(Check(area, "Python 3 and numpy", MISSING, text.splitlines()[-1] if text else "not found",
                            fix=f"install python3 and python3-numpy on the target (or set python = \"...\" in "
                                f"[targets.{target.name}])"))
    return checks


# --- FB-BEV environment (export --fbbev, parity tools) ------------------------------------------

FBBEV_WANTED = {"mmcv": "1.7.0", "mmdet": "2.28.2", "mmseg": "0.30.0"}


def check_fbbev(tree: Path, python: str | None = None) -> list[Check]:
    """The FB-BEV tree (deployment/README.md steps done) and an interpreter that imports its mmdet3d with
    mmcv/mmdet/mmseg; probed in that interpreter (`python -m fbocc.export.fbbev --probe`), never imported here."""
    import json

    from fbocc.export.fbbev_recipe import SETUP_RECIPE

    python = python or os.environ.get("FBOCC_FBBEV_PYTHON") or sys.executable
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")) if p))
    try:
        run = subprocess.run([python, "-m", "fbocc.export.fbbev", "--probe", str(tree)], capture_output=True,
                             text=True, timeout=180, env=env, check=False)
        doc = json.loads(run.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        return [Check("fbbev", "FB-BEV environment", MISSING, f"{python} could not probe {tree}: {exc}",
                      fix="pass the python of the FB-BEV environment with --fbbev-python; to make one: "
                          + SETUP_RECIPE)]
    checks = []
    problems = doc.get("tree_problems", [])
    checks.append(Check("fbbev", "FB-BEV tree", MISSING if problems else OK,
                        "; ".join(problems) if problems else str(tree), fix=SETUP_RECIPE if problems else None))
    versions = doc.get("versions", {})
    errors = doc.get("import_errors", {})
    wrong = [f"{k} {versions.get(k)} (want {v})" for k, v in FBBEV_WANTED.items() if versions.get(k) != v]
    detail = ", ".join(f"{k} {v}" for k, v in versions.items() if v) + f" ({doc.get('python')})"
    if errors:
        detail += "; " + "; ".join(f"{k}: {e}" for k, e in errors.items())
    status = MISSING if errors or versions.get("mmcv") is None else (WARN if wrong else OK)
    checks.append(Check("fbbev", "FB-BEV environment (mmcv, mmdet, mmseg, torch)", status,
                        detail + (f"; differs from the tested set: {', '.join(wrong)}" if wrong else ""),
                        fix=SETUP_RECIPE if status != OK else None))
    if doc.get("mmdet3d"):
        checks.append(Check("fbbev", "mmdet3d from the tree", OK, f"{doc['mmdet3d']} {versions.get('mmdet3d', '')}"))
    return checks


# Tegra SoCs by their device-tree name: Orin is sm_87; Thor is sm_101 to CUDA 12.8/12.9 and sm_110 from CUDA 13.
TEGRA_SM = {"tegra234": "87", "tegra264": "110"}


def _target_sm(sh: Callable[[str], tuple[int, str]], cuda: str | None) -> str | None:
    """The target GPU's SM as nvcc names it: nvidia-smi's compute capability, else the Tegra SoC's."""
    from fbocc.build.tensorrt_abi import major_of, sm_of

    _, text = sh("nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1; "
                 "tr '\\0' ' ' < /proc/device-tree/compatible 2>/dev/null; true")
    lines = text.splitlines()
    sm = sm_of(lines[0]) if lines else None
    if sm is None:
        soc = next((TEGRA_SM[name] for name in TEGRA_SM if f"nvidia,{name}" in text), None)
        if soc == "110" and cuda is not None and (major_of(cuda) or 0) < 13:
            soc = "101"
        sm = soc
    return sm


def _profile_checks(cfg: Config, area: str, tensorrt: str | None, cuda: str | None, sm: str | None) -> list[Check]:
    """Which build profile fits this target, and whether the library in [build] out_dir would register there."""
    from fbocc.build.cross_build import MANIFEST_NAME
    from fbocc.build.tensorrt_abi import check_plugin_abi, fitting_profiles, rebuild_fix

    if tensorrt is None:
        return [Check(area, "build profile for this target", SKIPPED, "the target's TensorRT version is unknown",
                      required=False)]
    checks = []
    fits = fitting_profiles(cfg.profiles, tensorrt=tensorrt, cuda=cuda, sm=sm)
    if fits:
        best = fits[0]
        others = f"; also {', '.join(f.name for f in fits[1:])}" if len(fits) > 1 else ""
        checks.append(Check(area, "build profile for this target", OK,
                            best.describe(cfg.profiles[best.name]) + others, required=False))
    else:
        checks.append(Check(area, "build profile for this target", WARN,
                            f"no profile builds for TensorRT {tensorrt}" + (f" and sm_{sm}" if sm else ""),
                            fix=rebuild_fix(cfg.profiles, tensorrt, sm=sm).replace("rebuild for this TensorRT: ", ""),
                            required=False))
    manifest = cfg.build.out_dir / MANIFEST_NAME
    headers = _manifest_tensorrt(manifest)
    if headers is not None:
        try:
            check_plugin_abi(headers, tensorrt, library=str(manifest.parent), target=area, profiles=cfg.profiles,
                             sm=sm)
            checks.append(Check(area, "plugin library's TensorRT", OK,
                                f"{manifest.parent} built with TensorRT {headers} headers"))
        except FboccError as exc:
            checks.append(Check(area, "plugin library's TensorRT", MISSING, exc.message, fix=exc.fix))
    return checks


def _manifest_tensorrt(path: Path) -> str | None:
    import json

    try:
        value = json.loads(path.read_text()).get("tensorrt_version")
    except (OSError, ValueError, AttributeError):
        return None
    return str(value) if value else None


def run_doctor(cfg: Config, *, profile: str | None = None, targets: list[str] | None = None,
               accept_new: bool = False, fbbev: Path | None = None, fbbev_python: str | None = None
               ) -> DoctorReport:
    """Run every host check for the profile and every target check for the named targets."""
    report = DoctorReport()
    prof = cfg.profile(profile)
    resolved = cfg.resolve_targets(targets) if targets else []
    docker = check_docker()
    report.checks.append(docker)
    image_present = False
    if docker.status == OK:
        image = check_build_image(cfg, prof)
        image_present = image.status == OK and ": present" in image.detail
        report.checks.append(image)
    else:
        report.checks.append(Check("host", f"build image ({prof.name})", SKIPPED, "needs the Docker daemon",
                                   required=False))
    report.checks += [check_trt_deb(cfg, prof, image_present=image_present), check_nvcc(), check_cross_compiler(),
                      check_ssh_credentials(resolved)]
    for target in resolved:
        report.checks += check_target(cfg, target, accept_new=accept_new)
    if fbbev is not None:
        report.checks += check_fbbev(fbbev, fbbev_python)
    return report
