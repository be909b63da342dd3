"""Does `plugins/` compile with CUDA 11 and an old gcc, as DRIVE OS 6 (CUDA 11.4 + gcc 9.3) will build it?

No reachable registry has CUDA 11.4. Debian has the two nearest, one each side (docker/old-cuda/):
`cuda-11.2` (bullseye: non-free nvidia-cuda-toolkit 11.2 + g++-9 9.3.0, DRIVE OS 6's gcc; 11.2 cannot
target sm_87, so sm_80/sm_86) and `cuda-11.8` (bookworm: 11.8 + g++-11 11.3.0, with sm_87). Each image
`fbocc/old-cuda:<recipe>-<hash of the recipe>` is made once per machine by `fbocc.build.debian_base`, like
the sim base: debootstrap, `apt-get install` in the chroot (the one step with network), `docker import`. The
compile then runs in a `BuildContainer` with networking off, sources and TensorRT headers mounted read-only.
A development check (`make check-old-toolchain`), run from a checkout; not shipped in the fbocc wheel.

    python -m tools.old_toolchain [--toolchain cuda-11.2|cuda-11.8] [--out DIR] [--trt-headers DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from fbocc.assets import asset_dir
from fbocc.build import container as bc
from fbocc.build.container import LineSink
from fbocc.build.cross_build import default_sources
from fbocc.build.debian_base import DebianRecipe, ensure_base_image, read_recipe
from fbocc.build.elf_check import ElfReport, verify_library
from fbocc.errors import BuildError, ConfigError, FboccError

IMAGE_REPO = "fbocc/old-cuda"
SRC_MOUNT, TRT_MOUNT, OUT_MOUNT = "/fbocc/src", "/fbocc/trt", "/fbocc/out"
_NEEDED_KEYS = ("components", "mirror", "apt_packages", "dpkg_exclude", "cuda_home", "cxx", "cuda_archs")


RECIPES = ("cuda-11.2", "cuda-11.8")


def recipe_path(name: str) -> Path:
    """The shipped recipe of an old-toolchain image (`cuda-11.2` or `cuda-11.8`)."""
    if name not in RECIPES:
        raise ConfigError(f"unknown old toolchain {name!r}", fix=f"use one of: {', '.join(RECIPES)}")
    return asset_dir("docker") / "old-cuda" / f"{name}.txt"


@dataclass(frozen=True)
class OldToolchainRecipe:
    """What the image holds and how `make -C plugins` is called in it."""

    name: str
    debian: DebianRecipe
    tag: str

    @property
    def settings(self) -> dict[str, str]:
        """The recipe's `key = value` settings."""
        return self.debian.settings

    @property
    def cuda_archs(self) -> list[str]:
        """SM versions the old nvcc compiles for."""
        return self.debian.words("cuda_archs")

    def make_args(self) -> list[str]:
        """The `make -C plugins` variables for this toolchain (TARGET=x86_64: Debian's toolkit is x86 only)."""
        archs = " ".join(self.cuda_archs)
        return ["TARGET=x86_64", f"CUDA_ARCHS={archs}", f"CXX={self.settings['cxx']}",
                f"CUDA_HOME={self.settings['cuda_home']}"]


def load_recipe(name: str, path: Path | None = None) -> OldToolchainRecipe:
    """Parse a recipe (the shipped one for `name` unless `path` is given); the tag carries its bytes' hash."""
    debian = read_recipe(path or recipe_path(name), required=_NEEDED_KEYS)
    return OldToolchainRecipe(name=name, debian=debian, tag=f"{IMAGE_REPO}:{name}-{debian.key}")


def ensure_image(recipe: OldToolchainRecipe, *, on_step: LineSink, on_line: LineSink) -> str:
    """The id of the recipe's image, making it first when the daemon does not have it (needs root once)."""
    return ensure_base_image(recipe.debian, recipe.tag, on_step=on_step, on_line=on_line)


@dataclass
class OldToolchainBuild:
    """What the old toolchain compiled: compiler versions, the libraries and what they hold."""

    image: str
    nvcc_version: str  # "11.2.152"
    cxx_version: str  # "9.3.0"
    make_args: list[str]
    kernels: ElfReport
    plugins: ElfReport | None  # None when no TensorRT headers were given
    log: list[str]
    duration_s: float


def _version(pattern: str, lines: list[str], what: str) -> str:
    for line in lines:
        match = re.search(pattern, line)
        if match:
            return match.group(1)
    raise BuildError(f"cannot read the {what} version in the old-toolchain image from: {' / '.join(lines[-3:])}")


def _first_error(lines: list[str]) -> str:
    first = (next((line for line in lines if "error:" in line.lower()), None)
             or next((line for line in lines if re.search(r"\bError \d+", line)), None))
    return (first or (lines[-1] if lines else "no output")).strip()


def compile_plugins(recipe: OldToolchainRecipe, image: str, out_dir: Path, *, sources: Path | None = None,
                    trt_headers: Path | None = None, on_step: LineSink, on_line: LineSink) -> OldToolchainBuild:
    """`make -C plugins` in the image: the kernel-only library, then (with headers) the plugin library.

    The TensorRT headers are copied into a temporary directory mounted read-only: never into the image.
    """
    started = time.monotonic()
    sources = (sources or default_sources()).resolve()
    if trt_headers is not None and not (trt_headers / "NvInfer.h").is_file():
        raise ConfigError(f"{trt_headers}/NvInfer.h not found", fix="pass the include/ folder of TensorRT's headers")
    out_dir.mkdir(parents=True, exist_ok=True)
    # A fresh build tree every time: objects left by other sources must not satisfy make.
    staging = Path(tempfile.mkdtemp(prefix=".fbocc-old-toolchain-", dir=out_dir))
    try:
        return _compile_in(recipe, image, out_dir, staging, sources, trt_headers, started,
                           on_step=on_step, on_line=on_line)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _compile_in(recipe: OldToolchainRecipe, image: str, out_dir: Path, staging: Path, sources: Path,
                trt_headers: Path | None, started: float, *, on_step: LineSink,
                on_line: LineSink) -> OldToolchainBuild:
    uid, gid = os.getuid(), os.getgid()
    make = ["make", "-C", SRC_MOUNT, f"-j{os.cpu_count() or 2}", *recipe.make_args(), f"OUT={OUT_MOUNT}"]
    log: list[str] = []

    def sink(line: str) -> None:
        log.append(line)
        on_line(line)

    with tempfile.TemporaryDirectory(prefix="fbocc-trt-headers-") as headers_tmp:
        mounts = [bc.Mount(sources, SRC_MOUNT, read_only=True), bc.Mount(staging, OUT_MOUNT, read_only=False)]
        if trt_headers is not None:
            shutil.copytree(trt_headers, headers_tmp, dirs_exist_ok=True)
            mounts.append(bc.Mount(Path(headers_tmp), TRT_MOUNT, read_only=True))
        spec = bc.ContainerSpec(image=recipe.tag, user=f"{uid}:{gid}", mounts=mounts, environment={"HOME": "/tmp"},
                                labels={"org.fbocc.profile": "old-cuda"})
        with bc.BuildContainer(spec) as box:
            versions: list[str] = []
            box.call(["sh", "-c", f"nvcc --version; {recipe.settings['cxx']} --version"], on_line=versions.append)
            sink(" / ".join(v for v in versions if v.strip()))
            nvcc = _version(r"release [\d.]+, V([\d.]+)", versions, "nvcc")
            cxx = _version(r"^\S*g\+\+\S* \(.*\) ([\d.]+)", versions, recipe.settings["cxx"])
            steps = [("kernel library (no TensorRT headers)", make)]
            if trt_headers is not None:
                steps.append(("plugin library (TensorRT headers)", [*make, f"TENSORRT_INCLUDE_DIR={TRT_MOUNT}"]))
            for what, argv in steps:
                on_step(f"compiling the {what} with nvcc {nvcc} + {recipe.settings['cxx']} {cxx}")
                begin = len(log)
                code = box.call(argv, on_line=sink)
                if code != 0:
                    first = _first_error(log[begin:])
                    raise BuildError(f"the {what} does not compile with nvcc {nvcc} + {recipe.settings['cxx']} "
                                     f"{cxx} (exit {code}): {first}",
                                     fix="make the sources portable to CUDA 11 + gcc 9 (see the log above)")
            box.collect_outputs()
    libs = ["libfbocc_kernels.so", *(["libfbocc_plugins.so"] if trt_headers is not None else [])]
    for name in libs:
        if not (staging / name).is_file():
            raise BuildError(f"make finished but wrote no {name}", fix="check OUT handling in plugins/Makefile")
        os.replace(staging / name, out_dir / name)
    archs = recipe.cuda_archs
    kernels = verify_library(out_dir / libs[0], target_arch="x86_64", cuda_archs=archs, tensorrt=False)
    plugins = (verify_library(out_dir / libs[1], target_arch="x86_64", cuda_archs=archs, tensorrt=True)
               if trt_headers is not None else None)
    return OldToolchainBuild(image=image, nvcc_version=nvcc, cxx_version=cxx, make_args=recipe.make_args(),
                             kernels=kernels, plugins=plugins, log=log,
                             duration_s=round(time.monotonic() - started, 1))


def main(argv: list[str] | None = None) -> int:
    """`python -m tools.old_toolchain`: make the image if needed, compile, print what compiled what."""
    parser = argparse.ArgumentParser(prog="python -m tools.old_toolchain", description=__doc__.splitlines()[0])
    parser.add_argument("--toolchain", choices=RECIPES, action="append",
                        help="which toolchain (repeatable; default: all)")
    parser.add_argument("--out", type=Path, default=Path("build/old-toolchain"),
                        help="where the libraries go (one folder per toolchain)")
    parser.add_argument("--trt-headers", type=Path, default=None,
                        help="TensorRT 8.6 include/ folder (NvInfer.h); without it only the kernels are compiled")
    parser.add_argument("-v", "--verbose", action="store_true", help="show every line of output")
    args = parser.parse_args(argv)

    def step(text: str) -> None:
        print(f"old-toolchain: {text}", flush=True)

    def line(text: str) -> None:
        if args.verbose:
            print(f"  {text}", flush=True)

    failed = 0
    for name in args.toolchain or RECIPES:
        try:
            _check(name, args.out.resolve() / name, args.trt_headers, step=step, line=line)
        except FboccError as exc:
            print(f"old-toolchain: {name}: {exc.render()}", file=sys.stderr)
            failed = failed or exc.exit_code
        except subprocess.SubprocessError as exc:
            print(f"old-toolchain: {name}: {exc}", file=sys.stderr)
            failed = failed or 1
    return failed


def _check(name: str, out: Path, trt_headers: Path | None, *, step: LineSink, line: LineSink) -> None:
    recipe = load_recipe(name)
    started = time.monotonic()
    image = ensure_image(recipe, on_step=step, on_line=line)
    step(f"image {recipe.tag} ready after {time.monotonic() - started:.0f}s")
    build = compile_plugins(recipe, image, out, trt_headers=trt_headers, on_step=step, on_line=line)
    compiler = f"nvcc {build.nvcc_version} + {recipe.settings['cxx']} {build.cxx_version}"
    for text in build.log:
        if "warning" in text.lower():
            step(f"WARNING {text}")
    for report in (build.kernels, build.plugins):
        if report is not None:
            archs = ", ".join(f"sm_{a}" for a in report.cubin_archs)
            step(f"OK {report.path}: {compiler}, cubins {archs}")
    step(f"{name}: compiled in {build.duration_s:.0f}s")


if __name__ == "__main__":
    sys.exit(main())
