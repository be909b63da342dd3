"""Planning `fbocc cross-build` without a daemon: image tags by content, cache keys, source hashing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from fbocc.build.container import daemon_is_remote
from fbocc.build.cross_build import cache_key, source_tree_hash
from fbocc.build.profile_image import plan_image, sim_base_tag
from fbocc.config import load_config
from fbocc.errors import ConfigError


@pytest.fixture
def cfg():  # type: ignore[no-untyped-def]
    return load_config(user_file=Path("/nonexistent"), cwd=Path("/"))


ORIN, THOR_CUDA12, THOR_CUDA13 = "87", "101", "110"


def test_every_builtin_profile_plans_an_image_from_a_shipped_dockerfile(cfg):
    assert {"drive-os-6.0.10", "drive-os-6.5.1", "jetpack-6", "drive-thor-7.0.3", "drive-thor-7.2.5",
            "jetpack-7-thor", "jetpack-7.2.2", "x86_64", "sim"} <= set(cfg.profiles)
    for name, profile in cfg.profiles.items():
        plan = plan_image(profile, None, base_id="sha256:base")
        assert plan.tag.startswith(f"fbocc/build:{name}-") and plan.dockerfile.is_file()
        assert profile.cuda_target_dir.startswith(profile.cuda_home)
        assert {ORIN, THOR_CUDA12, THOR_CUDA13} & set(profile.cuda_archs) or profile.target_arch == "x86_64"


def test_drive_os_6_5_1_has_the_values_of_fb_bevs_own_deployment_and_6_5_is_its_alias(cfg, tmp_path):
    p = cfg.profile("drive-os-6.5.1")
    assert p.base_image == "nvcr.io/drive/driveos-sdk/drive-agx-orin-linux-aarch64-pdk-build-x86:6.5.1.0-latest"
    assert (p.tensorrt_version, p.tensorrt_major, p.cuda_archs) == ("10.8.0", 10, ["87"])
    assert not {"base_image", "tensorrt_version", "cuda_archs"} & set(p.unverified)
    assert "unverified" not in p.description.split("(")[0]
    assert any("NVlabs/FB-BEV" in s and "deployment/README.md" in s for s in p.sources)
    assert cfg.profile("drive-os-6.5") == p
    project = tmp_path / "fbocc.toml"
    project.write_text('[profiles."drive-os-6.5"]\ntensorrt_include_dir = "/opt/TensorRT-10.8.0.37/include"\n')
    overridden = load_config(project, user_file=Path("/nonexistent"), cwd=tmp_path).profile("drive-os-6.5")
    assert (overridden.name, overridden.tensorrt_include_dir) == ("drive-os-6.5.1", "/opt/TensorRT-10.8.0.37/include")


def test_thor_profiles_name_thors_sm_as_their_cuda_does_and_unverified_values_are_marked(cfg):
    """CUDA 12.8/12.9 call Thor sm_101, CUDA 13 sm_110; every profile but the public sim one cites sources."""
    for name, profile in cfg.profiles.items():
        if THOR_CUDA12 in profile.cuda_archs:
            assert profile.cuda_version.startswith("12."), name
        if THOR_CUDA13 in profile.cuda_archs:
            assert profile.cuda_version.startswith("13."), name
        if profile.unverified:
            assert "unverified" in profile.description, f"{name}: its description must say some values are unverified"
        assert profile.sources or name in ("sim", "jetpack-6", "x86_64"), name
    assert cfg.profile("drive-thor-7.0.3").tensorrt_version == "10.10.10"
    assert cfg.profile("drive-thor-7.2.5").tensorrt_major == 11
    assert (cfg.profile("jetpack-7.2.2").tensorrt_version, cfg.profile("jetpack-7.2.2").cuda_archs) == (
        "11.4.1", [ORIN, THOR_CUDA13])
    assert cfg.profile("sim").cuda_archs == [ORIN, THOR_CUDA13]


def test_an_unverified_list_naming_no_profile_key_is_refused(tmp_path):
    project = tmp_path / "fbocc.toml"
    project.write_text('[profiles.sim]\nunverified = ["base_imgae"]\n')
    with pytest.raises(ConfigError, match="names 'base_imgae', which is not a profile key"):
        load_config(project, user_file=Path("/nonexistent"), cwd=tmp_path)


def test_drive_os_profile_matches_the_public_deployment_guide(cfg):
    p = cfg.profile("drive-os-6.0.10")
    assert p.base_image == "nvcr.io/drive/driveos-sdk/drive-agx-orin-linux-aarch64-sdk-build-x86:6.0.10.0-0009"
    assert p.trt_deb == "nv-tensorrt-repo-ubuntu2004-cuda11.4-trt8.6.13.3-d6l-cross-ga-20240202_1-1_amd64.deb"
    assert p.trt_packages == "tensorrt-safe-cross-aarch64"
    assert (p.cuda_target_dir, p.tensorrt_include_dir, p.tensorrt_lib_dir) == (
        "/usr/local/cuda-11.4/targets/aarch64-linux", "/usr/include/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu")
    plan = plan_image(p, None, base_id=None)
    assert plan.buildargs["TRT_DEB"] == p.trt_deb and plan.buildargs["BASE_IMAGE"] == p.base_image


def test_image_tag_changes_with_the_base_image_content_and_the_deb(cfg, tmp_path):
    p = cfg.profile("drive-os-6.0.10")
    deb = tmp_path / str(p.trt_deb)
    deb.write_bytes(b"x" * 10)
    a = plan_image(p, deb, base_id="sha256:one").tag
    assert plan_image(p, deb, base_id="sha256:one").tag == a
    assert plan_image(p, deb, base_id="sha256:two").tag != a
    deb.write_bytes(b"x" * 11)
    assert plan_image(p, deb, base_id="sha256:one").tag != a


def test_sim_base_tag_is_the_hash_of_its_recipe(cfg, tmp_path):
    recipe = tmp_path / "base.txt"
    recipe.write_text("suite = bookworm\nvariant = minbase\npackages = make\n")
    first = sim_base_tag(recipe)
    recipe.write_text("suite = bookworm\nvariant = minbase\npackages = make unzip\n")
    assert first.startswith("fbocc/sim-base:") and sim_base_tag(recipe) != first


def test_source_hash_follows_content_and_ignores_build_outputs(tmp_path):
    src = tmp_path / "plugins"
    (src / "op").mkdir(parents=True)
    (src / "Makefile").write_text("all:\n")
    (src / "op" / "op.cu").write_text("// kernel\n")
    first = source_tree_hash(src)
    (src / "build" / "x86_64").mkdir(parents=True)
    (src / "build" / "x86_64" / "libfbocc_kernels.so").write_bytes(b"\x7fELF")
    (src / "op" / "op.o").write_bytes(b"obj")
    assert source_tree_hash(src) == first
    (src / "op" / "op.cu").write_text("// kernel, changed\n")
    assert source_tree_hash(src) != first
    with pytest.raises(ConfigError, match="do not exist"):
        source_tree_hash(tmp_path / "missing")


def test_cache_key_covers_profile_image_sources_and_recipe(cfg):
    p = cfg.profile("sim")
    key = cache_key(p, "sha256:img", "src", "recipe")
    assert key == cache_key(p, "sha256:img", "src", "recipe")
    assert len({key, cache_key(p, "sha256:other", "src", "recipe"), cache_key(p, "sha256:img", "src2", "recipe"),
                cache_key(p, "sha256:img", "src", "recipe2"),
                cache_key(dataclasses.replace(p, cuda_archs=["87", "90"]), "sha256:img", "src", "recipe")}) == 5


def test_ssh_and_tcp_daemons_are_remote_the_local_socket_is_not():
    import docker

    for url, remote in (("unix:///var/run/docker.sock", False), ("tcp://127.0.0.1:2375", True)):
        client = docker.DockerClient(base_url=url, version="1.41")  # no connection made
        try:
            assert daemon_is_remote(client) is remote, url
        finally:
            client.close()


def test_no_daemon_is_one_environment_error_and_docker_status_says_why(monkeypatch, tmp_path, capsys):
    from fbocc.build.container import docker_status
    from fbocc.cli import run

    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")  # nothing listens on port 1
    ok, reason = docker_status()
    assert not ok and "tcp://127.0.0.1:1" in reason
    code = run(["cross-build", "--profile", "sim", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 3
    assert err.count("environment error:") == 1 and "no Docker daemon answers" in err and "fix:" in err
