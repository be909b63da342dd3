"""plugins/ compiles with CUDA 11 and an old gcc: the reachable stand-ins for DRIVE OS 6 (CUDA 11.4 + gcc 9.3).

No registry we reach has CUDA 11.4; Debian has one each side of it (docker/old-cuda/):
- cuda-11.2: bullseye, nvcc 11.2 + g++-9 9.3.0 (DRIVE OS 6's gcc). 11.2 cannot target sm_87 (new in
  11.4), so it builds sm_80 and sm_86 cubins.
- cuda-11.8: bookworm, nvcc 11.8 + g++-11 11.3.0, with Orin's sm_87.
Each image `fbocc/old-cuda:<recipe>-<hash>` is made once per machine, as root: debootstrap + apt-get +
docker import, 3.5-4 minutes each here (1.3-1.6 GB download); later runs reuse it and only compile (about
a minute on 2 cores). TensorRT 8.6 headers come from FBOCC_TRT_HEADERS like test_plugins_build.py; without
them the plugin-library tests skip and the kernel libraries are still checked.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from fbocc.assets import asset_dir
from fbocc.errors import BuildError, ConfigError, EnvironmentCheckError
from tools.old_toolchain import RECIPES, OldToolchainBuild, compile_plugins, ensure_image, load_recipe, recipe_path

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TRT_HEADERS = Path(os.environ.get("FBOCC_TRT_HEADERS", "/work/trt-headers")) / "8.6.1" / "include"
# recipe -> (nvcc release prefix, g++ version, cubin SM versions)
EXPECTED = {"cuda-11.2": ("11.2.", "9.3.0", ["80", "86"]), "cuda-11.8": ("11.8.", "11.3.0", ["80", "86", "87"])}


def old_toolchain(test: Callable[..., None]) -> Callable[..., None]:
    """Marks a test that compiles in an old-CUDA image: Docker, slow, and a time limit that covers the first
    run on a machine making the image inside the test's fixture."""
    marked: Callable[..., None] = pytest.mark.docker(pytest.mark.slow(pytest.mark.timeout(1500)(test)))
    return marked


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def image_of(docker_daemon: None) -> Callable[[str], str]:
    """The id of a recipe's image, made on the first use on this machine."""
    made: dict[str, str] = {}

    def get(name: str) -> str:
        if name not in made:
            try:
                made[name] = ensure_image(load_recipe(name), on_step=_quiet, on_line=_quiet)
            except EnvironmentCheckError as exc:
                if IN_CI:
                    pytest.fail(f"CI=true and the {name} image cannot be made: {exc.render()}", pytrace=False)
                pytest.skip(exc.message)
        return made[name]

    return get


@pytest.fixture(scope="module")
def build_of(image_of: Callable[[str], str],
             tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], OldToolchainBuild]:
    """One build of the shipped plugins per toolchain (TensorRT headers included when present)."""
    built: dict[str, OldToolchainBuild] = {}
    headers = TRT_HEADERS if (TRT_HEADERS / "NvInfer.h").is_file() else None

    def get(name: str) -> OldToolchainBuild:
        if name not in built:
            built[name] = compile_plugins(load_recipe(name), image_of(name), tmp_path_factory.mktemp(name),
                                          trt_headers=headers, on_step=_quiet, on_line=_quiet)
        return built[name]

    return get


def test_an_image_tag_changes_with_its_recipe_and_only_with_it(tmp_path: Path) -> None:
    shipped = load_recipe("cuda-11.2")
    copy = tmp_path / "cuda-11.2.txt"
    copy.write_bytes(recipe_path("cuda-11.2").read_bytes())
    assert load_recipe("cuda-11.2", copy).tag == shipped.tag
    assert shipped.tag.startswith("fbocc/old-cuda:cuda-11.2-")
    copy.write_text(copy.read_text().replace("packages = g++-9 make", "packages = g++-9 make less"))
    assert load_recipe("cuda-11.2", copy).tag != shipped.tag
    assert shipped.make_args() == ["TARGET=x86_64", "CUDA_ARCHS=80 86", "CXX=g++-9", "CUDA_HOME=/usr"]
    assert load_recipe("cuda-11.8").make_args() == ["TARGET=x86_64", "CUDA_ARCHS=80 86 87", "CXX=g++-11",
                                                    "CUDA_HOME=/usr"]


def test_an_unknown_toolchain_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown old toolchain 'cuda-11\.4'") as caught:
        load_recipe("cuda-11.4")
    assert caught.value.fix == "use one of: cuda-11.2, cuda-11.8"


def test_tensorrt_headers_without_nvinfer_h_are_refused_before_any_container(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"NvInfer\.h not found"):
        compile_plugins(load_recipe("cuda-11.2"), "unused", tmp_path / "out", trt_headers=tmp_path,
                        on_step=_quiet, on_line=_quiet)


@old_toolchain
@pytest.mark.parametrize("name", RECIPES)
def test_each_image_holds_the_compilers_its_recipe_names(build_of: Callable[[str], OldToolchainBuild],
                                                         name: str) -> None:
    nvcc, cxx, _ = EXPECTED[name]
    build = build_of(name)
    assert build.nvcc_version.startswith(nvcc), build.nvcc_version
    assert build.cxx_version == cxx


@old_toolchain
@pytest.mark.parametrize("name", RECIPES)
def test_kernel_library_compiles_with_cuda_11(build_of: Callable[[str], OldToolchainBuild], name: str) -> None:
    kernels = build_of(name).kernels
    assert kernels.machine == "EM_X86_64"
    assert kernels.cubin_archs == EXPECTED[name][2]
    assert "libcudart.so.11.0" in kernels.needed
    assert Path(kernels.path).is_file()


@old_toolchain
@pytest.mark.parametrize("name", RECIPES)
def test_plugin_library_compiles_with_cuda_11_against_tensorrt_8_6(build_of: Callable[[str], OldToolchainBuild],
                                                                   name: str) -> None:
    plugins = build_of(name).plugins
    if plugins is None:
        pytest.skip(f"TensorRT 8.6 OSS headers not unpacked at {TRT_HEADERS} (see plugins/README.md)")
    assert plugins.cubin_archs == EXPECTED[name][2]
    assert {"getPluginCreators", "setLoggerFinder"} <= set(plugins.exported)
    assert "libcudart.so.11.0" in plugins.needed


@old_toolchain
@pytest.mark.parametrize("name", RECIPES)
def test_the_old_compilers_print_no_warning_for_our_sources(build_of: Callable[[str], OldToolchainBuild],
                                                            name: str) -> None:
    warnings = [line for line in build_of(name).log if "warning" in line.lower()]
    assert not warnings, "\n".join(warnings)


@old_toolchain
def test_a_source_the_old_compiler_rejects_fails_naming_compiler_and_error(image_of: Callable[[str], str],
                                                                           tmp_path: Path) -> None:
    sources = tmp_path / "plugins"
    shutil.copytree(asset_dir("plugins"), sources, ignore=shutil.ignore_patterns("build", ".*"))
    kernel = sources / "bevPoolV2" / "bevPoolV2.cu"
    kernel.write_text("#error fbocc-test-rejected\n" + kernel.read_text())
    with pytest.raises(BuildError) as caught:
        compile_plugins(load_recipe("cuda-11.2"), image_of("cuda-11.2"), tmp_path / "out", sources=sources,
                        on_step=_quiet, on_line=_quiet)
    message = caught.value.message
    assert "kernel library (no TensorRT headers) does not compile with nvcc 11.2." in message
    assert "g++-9 9.3.0" in message and "fbocc-test-rejected" in message
    assert not list((tmp_path / "out").glob("*.so")), "a failed build left a library behind"
