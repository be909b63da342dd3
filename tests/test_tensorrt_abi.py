"""A plugin library only registers in a TensorRT of its headers' major: the host says so before a target builds
anything, and names the build profile that fits the target (pure functions over the built-in profiles)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fbocc.build.tensorrt_abi import check_plugin_abi, fitting_profiles, major_of, rebuild_fix, sm_of
from fbocc.config import load_config
from fbocc.errors import BuildError


@pytest.fixture(scope="module")
def profiles():  # type: ignore[no-untyped-def]
    return load_config(user_file=Path("/nonexistent"), cwd=Path("/")).profiles


@pytest.mark.parametrize(("text", "major"), [("10.8.0.37", 10), ("10.8.0", 10), ("8.6.13", 8), ("11.4.1", 11),
                                             ("v8613", 8), ("v110100", 11), ("11", 11), ("beta", None)])
def test_major_of_every_spelling(text: str, major: int | None) -> None:
    assert major_of(text) == major


def test_sm_of_compute_capability() -> None:
    assert (sm_of("8.7"), sm_of("11.0"), sm_of("10.1"), sm_of("n/a")) == ("87", "110", "101", None)


def test_a_10x_library_on_an_11x_target_stops_naming_both_versions_and_the_profile(profiles) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BuildError) as info:
        check_plugin_abi("10.8.0", "11.4.1", library="build/plugins/libfbocc_plugins.so", target="orin",
                         profiles=profiles, sm="87")
    err = info.value
    assert err.message == ("build/plugins/libfbocc_plugins.so: built with TensorRT 10.8.0 headers, the target runs "
                           "TensorRT 11.4.1: plugins would not register (the plugin interfaces of TensorRT 10 and 11 "
                           "differ)")
    assert err.where == "orin" and err.exit_code == 4
    assert err.fix == "rebuild for this TensorRT: fbocc cross-build --profile jetpack-7.2.2"


def test_the_reverse_and_8_to_10_stop_too(profiles) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BuildError, match=r"built with TensorRT 11\.0\.1 headers, the target runs TensorRT 10\.8\.0"):
        check_plugin_abi("11.0.1", "10.8.0", library="lib.so", target="car", profiles=profiles, sm="87")
    with pytest.raises(BuildError) as info:
        check_plugin_abi("8.6.13", "10.8.0.37", library="lib.so", target="car", profiles=profiles, sm="87")
    assert info.value.fix == "rebuild for this TensorRT: fbocc cross-build --profile drive-os-6.5.1"


@pytest.mark.parametrize(("headers", "target"), [("10.8.0", "10.16.0"), ("11.0.1", "11.4.1"), ("8.6.13", "8.6.12"),
                                                 (None, "11.1.0"), ("10.8.0", None)])
def test_same_major_or_nothing_to_compare_passes(profiles, headers: str | None, target: str | None) -> None:  # type: ignore[no-untyped-def]
    check_plugin_abi(headers, target, library="lib.so", target="t", profiles=profiles)


@pytest.mark.parametrize(("tensorrt", "cuda", "sm", "best"), [
    ("8.6.13", "11.4", "87", "drive-os-6.0.10"),     # DRIVE OS 6.0.10 Orin
    ("10.8.0", None, "87", "drive-os-6.5.1"),         # DRIVE OS 6.5.1 Orin (FB-BEV's deployment)
    ("10.10.10", "12.8", "101", "drive-thor-7.0.3"),  # DRIVE Thor, DriveOS 7.0.3 (CUDA 12: sm_101)
    ("11.0.1", "13.0", "110", "drive-thor-7.2.5"),    # DRIVE Thor, DriveOS 7.2.5+
    ("11.4.1", "13.0", "87", "jetpack-7.2.2"),        # Jetson AGX Orin, JetPack 7.2.2
    ("11.4.1", "13.0", "110", "jetpack-7.2.2"),       # Jetson Thor, JetPack 7.2.2
])
def test_the_profile_that_fits_a_target_from_its_tensorrt_cuda_and_gpu(profiles, tensorrt: str, cuda: str | None,  # type: ignore[no-untyped-def]
                                                                       sm: str, best: str) -> None:
    fits = fitting_profiles(profiles, tensorrt=tensorrt, cuda=cuda, sm=sm)
    assert fits and fits[0].name == best and fits[0].exact, fits
    assert all(sm in profiles[f.name].cuda_archs for f in fits)


def test_no_profile_fits_an_unknown_major_and_the_fix_says_how_to_define_one(profiles) -> None:  # type: ignore[no-untyped-def]
    assert fitting_profiles(profiles, tensorrt="12.0.0", sm="110") == []
    assert fitting_profiles(profiles, tensorrt=None, sm="87") == []
    assert "whose tensorrt_version is 12.0.0" in rebuild_fix(profiles, "12.0.0", sm="110")


def test_a_target_gpu_not_in_a_profiles_sms_rules_it_out(profiles) -> None:  # type: ignore[no-untyped-def]
    names = [f.name for f in fitting_profiles(profiles, tensorrt="10.10.10", sm="110")]
    assert "drive-thor-7.0.3" not in names  # built for sm_101 (CUDA 12's name for Thor), not sm_110
    unknown_gpu = fitting_profiles(profiles, tensorrt="10.8.0")
    assert unknown_gpu[0].name == "drive-os-6.5.1" and "GPU was not identified" in unknown_gpu[0].notes[-1]
