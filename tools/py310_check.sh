#!/usr/bin/env bash
# The test suite on Python 3.10, README's floor (JetPack 6 ships it), on this machine.
#
#   tools/py310_check.sh          (or: make py310-check)
#
# The suite runs on .venv's Python (3.11 here and in CI), and tests/test_python310.py keeps
# 3.11-only syntax and APIs out (vermin, the 3.10 compiler). Code can still *behave* differently
# on 3.10, and FaceLink's did: asyncio's start_tls lost the ClientHello if the connection was
# paused first (serve/protocol.py), and datetime.fromisoformat refused 'Z' timestamps. This builds
# a Python 3.10 venv (var/py310/venv, reused) with FaceLink from this checkout and the newest
# releases of its dependencies that support 3.10 (upgraded every run), and runs the whole suite
# there: the door, the desk, serve (server and clients), fleet, audit, OSDP.
#
# Environment: PY310 (a python3.10 to use; default: pyenv's 3.10.13, then python3.10 on PATH),
# SKIP_PY310_CHECK=1 (exit 0 at once); arguments are passed to pytest (e.g. tests/serve).
# Exit: 0 passed; 1 failed (a test, or FaceLink does not install or import on 3.10); 2 it could
# not run here (no Python 3.10, or no venv for it).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

if [ "${SKIP_PY310_CHECK:-0}" = 1 ]; then
  echo "Python 3.10 check skipped (SKIP_PY310_CHECK=1)"
  exit 0
fi
VENV=$REPO/var/py310/venv
step() { printf '\n== Python 3.10 check: %s\n' "$*"; }
failed() { echo "Python 3.10 check: FAILED ($1)"; exit 1; }

is310() { [ -n "$1" ] && [ -x "$1" ] && "$1" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; }
py=""
for candidate in "${PY310:-}" /root/.pyenv/versions/3.10.13/bin/python3.10 "$(command -v python3.10 || true)"; do
  if is310 "$candidate"; then py=$candidate; break; fi
done
if [ -z "$py" ]; then
  echo "Python 3.10 check: no Python 3.10 on this machine (set PY310=/path/to/python3.10)" >&2
  exit 2
fi

step "venv $VENV from $py"
if ! is310 "$VENV/bin/python"; then
  rm -rf "$VENV"
  "$py" -m venv "$VENV" || exit 2
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
# setuptools builds in the checkout's build/: a module deleted here would still be in an old
# build/lib.*-cpython-310 and so in the wheel
rm -rf build/lib.*-cpython-310 build/bdist.*
# the dependencies at the newest releases that support 3.10 (the .venv of this checkout pins
# nothing either), then this checkout itself, rebuilt every run. The .venv install has already
# reached the package index, so a failure here is FaceLink's (e.g. a dependency or
# requires-python that leaves 3.10 out), not the machine's.
pip() {  # quiet, less this machine's pip configuration's notes about missing local indexes
  "$VENV/bin/python" -m pip install --quiet "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
pip --upgrade --upgrade-strategy eager '.[dev]' || failed "FaceLink and its dependencies do not install on Python 3.10"
pip --no-deps --force-reinstall . || failed "FaceLink does not build on Python 3.10"
"$VENV/bin/python" - <<'PY' || failed "FaceLink does not import on Python 3.10"
import sys
from importlib.metadata import version

import facelink.device.main  # noqa: F401
import facelink.enroll.cli  # noqa: F401

assert sys.version_info[:2] == (3, 10), sys.version
print(f"Python {sys.version.split()[0]}; " + ", ".join(f"{name} {version(name)}" for name in (
    "uvicorn", "h11", "numpy", "onnxruntime", "opencv-python-headless", "pydantic", "paho-mqtt", "libosdp")))
PY

step "the test suite on Python 3.10"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@" || failed "tests"
echo "Python 3.10 check: PASSED"
