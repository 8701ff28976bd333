#!/usr/bin/env bash
# `facelink serve` on Python 3.10, README's floor (JetPack 6 ships it), checked on this machine.
#
#   tools/py310_check.sh          (or: make py310-check)
#
# The tests run on the Python of .venv (3.11 here and in CI), and a vermin check keeps 3.11-only
# APIs out; but code can also behave differently on 3.10, and serve's TLS handshake does: asyncio's
# start_tls loses the ClientHello on 3.10 if the transport was paused first (serve/protocol.py
# pauses only on 3.11+; found in review, where 14 of 20 handshakes hung). This builds a Python
# 3.10 venv (var/py310/venv, reused) with FaceLink from this checkout and the newest releases of
# its dependencies that still support 3.10, then runs tests/serve with `facelink serve` on 3.10
# (FACELINK_SERVE_PYTHON) and the clients (boto3, the aws CLI, ssl) on .venv's Python.
#
# Environment: PY310 (a python3.10 to use; default: pyenv's 3.10.13, then python3.10 on PATH),
# HOST_PY (default .venv/bin/python), SKIP_PY310_CHECK=1 (exit 0 at once).
# Exit: 0 passed; 1 a test failed on 3.10; 2 it could not run here (no Python 3.10, or pip could
# not install FaceLink's dependencies for it).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

if [ "${SKIP_PY310_CHECK:-0}" = 1 ]; then
  echo "Python 3.10 check skipped (SKIP_PY310_CHECK=1)"
  exit 0
fi
HOST_PY=${HOST_PY:-$REPO/.venv/bin/python}
VENV=$REPO/var/py310/venv
step() { printf '\n== Python 3.10 check: %s\n' "$*"; }

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
# the dependencies (pip picks the newest release of each that supports 3.10), then this checkout
# itself, rebuilt every run so that what is tested is what is here
"$VENV/bin/python" -m pip install --quiet . || exit 2
"$VENV/bin/python" -m pip install --quiet --no-deps --force-reinstall . || exit 2
"$VENV/bin/python" - <<'PY' || exit 2
import sys
from importlib.metadata import version

import facelink.serve.protocol  # noqa: F401  (the module under test imports on 3.10)

assert sys.version_info[:2] == (3, 10), sys.version
print(f"Python {sys.version.split()[0]}; " + ", ".join(
    f"{name} {version(name)}" for name in ("uvicorn", "h11", "numpy", "onnxruntime", "opencv-python-headless")))
PY

step "tests/serve with the server on Python 3.10"
FACELINK_SERVE_PYTHON=$VENV/bin/python "$HOST_PY" -m pytest -q -p no:cacheprovider tests/serve || {
  echo "Python 3.10 check: FAILED"; exit 1; }
echo "Python 3.10 check: PASSED"
