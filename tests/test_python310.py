"""Python 3.10 is the floor (JetPack 6 ships it): no 3.11-only syntax or standard-library API in
anything FaceLink installs or runs, and the tomli fallback works where tomllib is missing."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["errors", "config", "models", "enroll", "mqtt", "device", "audit", "access", "fleet", "serve"]
CHECKED = [p for p in PACKAGES + ["tools", "tests"] if (ROOT / p).is_dir()]


@functools.lru_cache(maxsize=1)
def python310() -> str | None:
    """A working Python 3.10 interpreter (a pyenv shim may exist and refuse to run)."""
    for candidate in ("/root/.pyenv/versions/3.10.13/bin/python3.10", "/usr/bin/python3.10",
                      shutil.which("python3.10")):
        if candidate and os.access(candidate, os.X_OK):
            ok = subprocess.run([candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 10)"],
                                capture_output=True, timeout=60)
            if ok.returncode == 0:
                return candidate
    return None


def test_no_api_newer_than_310():
    """vermin reads every module and names what needs a newer Python (e.g. tomllib, 3.11)."""
    vermin = shutil.which("vermin", path=str(Path(sys.executable).parent)) or shutil.which("vermin")
    if vermin is None:
        pytest.skip("vermin is not installed (pip install -e '.[dev]')")
    out = subprocess.run([vermin, "-t=3.10-", "--no-tips", "--eval-annotations", "--violations",
                          *[str(ROOT / p) for p in CHECKED]], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "Target versions not met" not in out.stdout, out.stdout + out.stderr


@pytest.mark.skipif(python310() is None, reason="no python3.10 on this machine")
def test_every_module_compiles_with_python310():
    """The real 3.10 compiler over every file: 3.11 syntax (except*, PEP 646 unpacking) fails here."""
    script = ("import sys, pathlib\nbad = []\n"
              "for root in sys.argv[1:]:\n"
              "    for f in sorted(pathlib.Path(root).rglob('*.py')):\n"
              "        try:\n            compile(f.read_text(encoding='utf-8'), str(f), 'exec')\n"
              "        except SyntaxError as e:\n            bad.append(f'{f}:{e.lineno}: {e.msg}')\n"
              "print('\\n'.join(bad)); sys.exit(1 if bad else 0)\n")
    out = subprocess.run([python310(), "-c", script, *[str(ROOT / p) for p in CHECKED]],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.skipif(python310() is None, reason="no python3.10 on this machine")
def test_dependency_free_modules_import_on_python310(tmp_path):
    """Modules that need no third-party package import on a bare 3.10."""
    pkg = tmp_path / "facelink"
    pkg.mkdir()
    for name in PACKAGES:
        if (ROOT / name).is_dir():
            (pkg / name).symlink_to(ROOT / name)
    code = ("import facelink.errors, facelink.mqtt.topics\n"
            "from facelink.mqtt.topics import DeviceTopics\n"
            "assert DeviceTopics('facelink', 'd').decision == 'facelink/d/decision'\n")
    out = subprocess.run([python310(), "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(tmp_path), "PATH": os.environ.get("PATH", "")})
    assert out.returncode == 0, out.stderr


def test_manifest_reads_with_tomli_where_tomllib_is_missing():
    """What 3.10 does: no tomllib, so the manifest is read with tomli."""
    pytest.importorskip("tomli")
    code = ("import sys\nsys.modules['tomllib'] = None  # as on Python 3.10\n"
            "from facelink.models import manifest\n"
            "assert manifest.tomllib.__name__ == 'tomli'\n"
            "m = manifest.load_manifest()\nprint(type(m).__name__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
