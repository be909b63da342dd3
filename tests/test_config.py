"""Configuration: layering order, provenance, and every validation error a user can make."""

from __future__ import annotations

from pathlib import Path

import pytest

from fbocc.config import load_config
from fbocc.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_builtin_profiles_are_all_present(isolated_home: Path) -> None:
    cfg = load_config()
    assert {"drive-os-6.0.10", "drive-os-6.5.1", "jetpack-6", "x86_64", "sim"} <= set(cfg.profiles)
    assert cfg.profile("drive-os-6.5").name == "drive-os-6.5.1"  # the earlier name still works
    drive = cfg.profile("drive-os-6.0.10")
    assert drive.base_image == "nvcr.io/drive/driveos-sdk/drive-agx-orin-linux-aarch64-sdk-build-x86:6.0.10.0-0009"
    assert drive.cuda_target_dir == "/usr/local/cuda-11.4/targets/aarch64-linux"
    assert drive.tensorrt_include_dir == "/usr/include/aarch64-linux-gnu"
    assert drive.cuda_archs == ["87"]
    assert cfg.origins.get("build.profile") is None  # a default has no file origin
    assert dict((k, o) for k, _, o in cfg.value_rows())["build.profile"] == "built-in"


def test_layers_override_in_documented_order(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(isolated_home / ".config/fbocc/config.toml", '[build]\nprofile = "x86_64"\njobs = 2\nout_dir = "u"\n')
    write(Path("fbocc.toml"), '[build]\nprofile = "jetpack-6"\njobs = 3\n')
    monkeypatch.setenv("FBOCC_BUILD_JOBS", "5")
    cfg = load_config(cli={"build.profile": "sim", "build.trt_deb": None})
    assert cfg.build.profile == "sim"
    assert cfg.origins["build.profile"] == "command line"
    assert cfg.build.jobs == 5
    assert cfg.origins["build.jobs"] == "environment"
    # The user file set out_dir and nothing above it did; relative paths resolve against that file.
    assert cfg.build.out_dir == isolated_home / ".config/fbocc/u"
    assert cfg.origins["build.out_dir"].startswith("user config")


def test_project_file_from_cwd_and_explicit_path(isolated_home: Path, tmp_path: Path) -> None:
    write(Path("fbocc.toml"), '[bench]\nprecisions = ["fp16"]\n')
    assert load_config().bench.precisions == ["fp16"]
    other = write(tmp_path / "elsewhere.toml", '[bench]\nprecisions = ["fp32", "fp16"]\n')
    cfg = load_config(other)
    assert cfg.bench.precisions == ["fp32", "fp16"]
    assert cfg.files == [other]


def test_env_list_and_bool_values(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FBOCC_BENCH_PRECISIONS", "fp32, fp16")
    monkeypatch.setenv("FBOCC_BENCH_CUDA_GRAPH", "no")
    monkeypatch.setenv("FBOCC_UNRELATED_THING", "ignored")
    cfg = load_config()
    assert cfg.bench.precisions == ["fp32", "fp16"]
    assert cfg.bench.cuda_graph is False  # the default is on (TensorRT 11's default, set on every version)


def test_targets_groups_and_profile_override(isolated_home: Path) -> None:
    write(Path("fbocc.toml"), """
[targets.orin-a]
host = "10.0.0.2"
user = "nvidia"
identity_file = "keys/orin"

[targets.orin-b]
host = "orin-b.lab"

[groups]
lab = ["orin-a", "orin-b"]

[profiles."drive-os-6.0.10"]
trt_deb = "other.deb"
""")
    cfg = load_config()
    a = cfg.target("orin-a")
    assert (a.host, a.user, a.port, a.trtexec) == ("10.0.0.2", "nvidia", None, "/usr/src/tensorrt/bin/trtexec")
    assert a.identity_file == Path.cwd() / "keys/orin"
    assert [t.name for t in cfg.resolve_targets(["lab", "orin-a", "alias-from-ssh-config"])] == [
        "orin-a", "orin-b", "alias-from-ssh-config"]
    assert cfg.target("alias-from-ssh-config").host == "alias-from-ssh-config"
    drive = cfg.profile("drive-os-6.0.10")
    assert drive.trt_deb == "other.deb"
    assert drive.cuda_version == "11.4"  # untouched keys keep their built-in values
    assert cfg.origins["profiles.drive-os-6.0.10.trt_deb"].endswith("fbocc.toml")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[build]\nprofle = "sim"\n', "unknown key build.profle (did you mean 'profile'?)"),
        ('[biuld]\nprofile = "sim"\n', "unknown section [biuld] (did you mean 'build'?)"),
        ('[build]\njobs = "four"\n', "build.jobs must be an integer, got 'four'"),
        ('[bench]\nprecisions = "fp16"\n', "bench.precisions must be a list of strings"),
        ('[targets.orin]\nuser = "nvidia"\n', "[targets.orin] is missing required keys: host"),
        ('[targets.orin]\nhost = "x"\nprot = 22\n', "unknown key targets.orin.prot (did you mean 'port'?)"),
        ('[targets.orin]\nhost = "x"\nport = "22"\n', "targets.orin.port must be an integer"),
        ('[profiles.mine]\ncxx = "g++"\n', "[profiles.mine] is missing required keys"),
        ('[groups]\nlab = "orin"\n', "groups.lab must be a list of target names"),
        ('build = 3\n', "[build] must be a table"),
        ('[build\nprofile = "sim"\n', "is not valid TOML"),
    ],
)
def test_validation_errors_name_file_key_and_fix(isolated_home: Path, text: str, needle: str) -> None:
    path = write(Path("fbocc.toml"), text)
    with pytest.raises(ConfigError) as info:
        load_config()
    rendered = info.value.render()
    assert needle in rendered
    assert str(path.name) in rendered
    assert info.value.exit_code == 2


def test_unknown_profile_and_missing_config_file(isolated_home: Path, tmp_path: Path) -> None:
    cfg = load_config()
    with pytest.raises(ConfigError, match=r"unknown build profile 'simm' \(did you mean 'sim'\?\)"):
        cfg.profile("simm")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_env_error_names_the_environment(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FBOCC_BUILD_KEEP_CONTAINER", "perhaps")
    with pytest.raises(ConfigError) as info:
        load_config()
    assert info.value.render().startswith("environment: build.keep_container must be true or false")
