"""The Debian base-image builder's recipes and settings (no Docker): what a recipe must say, what keys its
image, where the mirror and the cache come from. Making an image is exercised by the sim build image
(test_cross_build.py) and the old-CUDA images (test_plugins_old_toolchain.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fbocc.assets import asset_dir
from fbocc.build.debian_base import mirror_for, read_recipe
from fbocc.config import cache_dir
from fbocc.errors import ConfigError, EnvironmentCheckError


def _recipe(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_recipe_missing_a_key_is_refused_naming_the_file_and_the_key(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path / "sim" / "base.txt", "suite = bookworm\n# variant = minbase\npackages = make\n")
    with pytest.raises(ConfigError, match=r"base\.txt: missing variant$") as caught:
        read_recipe(recipe)
    assert caught.value.fix == "restore the shipped docker/sim/base.txt"
    with pytest.raises(ConfigError, match=r"missing variant, cxx$"):
        read_recipe(recipe, required=("variant", "cxx"))


def test_the_image_key_is_the_hash_of_the_recipes_bytes_comments_included(tmp_path: Path) -> None:
    shipped = read_recipe(asset_dir("docker") / "sim" / "base.txt")
    copy = _recipe(tmp_path / "base.txt", (asset_dir("docker") / "sim" / "base.txt").read_text())
    assert read_recipe(copy).key == shipped.key and len(shipped.key) == 16
    copy.write_text(copy.read_text() + "# a new comment\n")
    assert read_recipe(copy).key != shipped.key
    assert shipped.words("packages") == ["g++-aarch64-linux-gnu", "make", "unzip"]
    assert shipped.words("apt_packages") == []


def test_the_mirror_is_the_environment_then_the_recipe_then_the_hosts_apt(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FBOCC_DEBIAN_MIRROR", raising=False)
    pinned = read_recipe(_recipe(tmp_path / "a.txt", "suite = bullseye\nvariant = minbase\npackages = make\n"
                                 "mirror = http://mirror.example/debian\n"))
    unknown = read_recipe(_recipe(tmp_path / "b.txt", "suite = no-such-suite\nvariant = minbase\npackages = make\n"))
    assert mirror_for(pinned) == "http://mirror.example/debian"
    with pytest.raises(EnvironmentCheckError, match="no Debian mirror for 'no-such-suite'") as caught:
        mirror_for(unknown)
    assert caught.value.fix == "set FBOCC_DEBIAN_MIRROR to a Debian mirror URL"
    monkeypatch.setenv("FBOCC_DEBIAN_MIRROR", "http://override.example/debian")
    assert mirror_for(pinned) == mirror_for(unknown) == "http://override.example/debian"


def test_the_cache_directory_follows_xdg_cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "fbocc"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "fbocc"
