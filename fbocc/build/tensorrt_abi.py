"""Which TensorRT a plugin library can live in, and which build profile fits a target.

The plugin interfaces differ between TensorRT majors, so the library registers its plugins only in a
TensorRT of its headers' major (the ABI guard, plugins/common/loadedTensorRT.cpp). These pure functions
let push-to-target, remote-bench and doctor say so before anything is built on a target, with the same
words as the library, and name the profile to rebuild with.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from fbocc.config import BuildProfile
from fbocc.errors import BuildError


def major_of(version: str) -> int | None:
    """'10.8.0.37' -> 10, 'v110100' (trtexec's tag) -> 11, '8.6' -> 8; None when not a version."""
    text = version.strip()
    tag = re.fullmatch(r"v(\d{4}|\d{6})", text)
    if tag:
        digits = tag.group(1)
        return int(digits[0]) if len(digits) == 4 else int(digits[:2])
    head = re.match(r"(\d+)(?:\.|$)", text)
    return int(head.group(1)) if head else None


def sm_of(compute_capability: str) -> str | None:
    """'8.7' -> '87', '11.0' -> '110' (as nvcc names the SM); None when not a compute capability."""
    match = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", compute_capability)
    return f"{match.group(1)}{match.group(2)}" if match else None


@dataclass(frozen=True)
class ProfileFit:
    """A build profile whose library loads on the target: same TensorRT major, the target's SM among its SMs."""

    name: str
    exact: bool  # the profile's TensorRT version is the target's (not only its major)
    notes: tuple[str, ...] = ()

    def describe(self, profile: BuildProfile) -> str:
        sms = "/".join(f"sm_{a}" for a in profile.cuda_archs)
        extra = f"; {'; '.join(self.notes)}" if self.notes else ""
        return f"{self.name} (TensorRT {profile.tensorrt_version}, CUDA {profile.cuda_version}, {sms}{extra})"


def fitting_profiles(profiles: Mapping[str, BuildProfile], *, tensorrt: str | None, cuda: str | None = None,
                     sm: str | None = None) -> list[ProfileFit]:
    """Profiles that build a library the target can load, best first (exact TensorRT version, then name)."""
    major = major_of(tensorrt) if tensorrt else None
    if major is None:
        return []
    fits = []
    for name, profile in profiles.items():
        if profile.tensorrt_major != major:
            continue
        if sm is not None and sm not in profile.cuda_archs:
            continue
        notes = []
        cuda_major = major_of(cuda) if cuda else None
        if cuda_major is not None and major_of(profile.cuda_version) not in (None, cuda_major):
            if "cuda_version" not in profile.unverified:
                continue  # a libcudart of another major is not on the target
            notes.append(f"its CUDA {profile.cuda_version} is unverified, the target has CUDA {cuda}")
        exact = tensorrt is not None and profile.tensorrt_version is not None and (
            tensorrt == profile.tensorrt_version or tensorrt.startswith(profile.tensorrt_version + "."))
        if sm is None:
            notes.append("the target's GPU was not identified: check its SM is among the profile's")
        fits.append(ProfileFit(name, exact, tuple(notes)))
    return sorted(fits, key=lambda f: (not f.exact, f.name))


def rebuild_fix(profiles: Mapping[str, BuildProfile], target_tensorrt: str, *, sm: str | None = None) -> str:
    """`fbocc cross-build --profile P` for the target's TensorRT, or how to define such a profile."""
    fits = fitting_profiles(profiles, tensorrt=target_tensorrt, sm=sm)
    if fits:
        names = " or ".join(f.name for f in fits)
        return f"rebuild for this TensorRT: fbocc cross-build --profile {names}"
    major = major_of(target_tensorrt)
    return (f"rebuild for this TensorRT: fbocc cross-build --profile NAME, with a [profiles.NAME] in fbocc.toml "
            f"whose tensorrt_version is {target_tensorrt} (TensorRT {major} headers)")


def check_plugin_abi(headers: str | None, target_tensorrt: str | None, *, library: str, target: str,
                     profiles: Mapping[str, BuildProfile], sm: str | None = None) -> None:
    """Raise BuildError when a library built with TensorRT `headers` would be refused by the target's TensorRT.

    Either version unknown (a kernels-only build, a target without trtexec) is not a mismatch: nothing to
    compare, the caller's own checks report what is missing.
    """
    if not headers or not target_tensorrt:
        return
    built, runs = major_of(headers), major_of(target_tensorrt)
    if built is None or runs is None or built == runs:
        return
    raise BuildError(
        f"{library}: built with TensorRT {headers} headers, the target runs TensorRT {target_tensorrt}: plugins "
        f"would not register (the plugin interfaces of TensorRT {built} and {runs} differ)",
        where=target, fix=rebuild_fix(profiles, target_tensorrt, sm=sm))
