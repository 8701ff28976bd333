"""A wheelhouse is a folder of files nobody vouches for until their SHA-256 matches the manifest:
`facelink models` (run as root in README's install) must not run code from it before that check."""

from __future__ import annotations

import tarfile

import pytest

from facelink.errors import ModelError
from facelink.models.manifest import load_manifest
from facelink.models.provision import provision


def _evil_sdist(wheelhouse, name, version, marker):
    """An sdist of the manifest's package whose in-tree build backend (no build requirements, so
    pip needs nothing from an index) writes ``marker`` the moment pip imports it."""
    root = wheelhouse / "src" / f"{name}-{version}"
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\n')
    (root / "backend.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('code from the wheelhouse ran')\n"
        "def get_requires_for_build_wheel(config_settings=None):\n    return []\n"
        "def prepare_metadata_for_build_wheel(d, config_settings=None):\n    raise RuntimeError('no')\n"
        "def build_wheel(*a, **k):\n    raise RuntimeError('no')\n")
    (root / "PKG-INFO").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    with tarfile.open(wheelhouse / f"{name}-{version}.tar.gz", "w:gz") as tf:
        tf.add(root, arcname=root.name)


def test_an_sdist_in_the_wheelhouse_is_never_built(tmp_path):
    source = load_manifest().sources[0]
    name, version = source.package.split("==")
    wheelhouse, marker = tmp_path / "wheels", tmp_path / "ran"
    wheelhouse.mkdir()
    _evil_sdist(wheelhouse, name, version, marker)
    with pytest.raises(ModelError, match=name):
        provision(tmp_path / "models", wheelhouse=wheelhouse)
    assert not marker.exists(), "pip ran the sdist's build backend: code from the wheelhouse executed"
