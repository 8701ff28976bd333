#!/usr/bin/env bash
# FaceLink on the door's CPU (arm64), checked on an x86-64 machine under qemu user emulation.
#
#   sudo tools/arm64_check.sh          (or: make arm64-check)
#
# Builds a Debian bookworm arm64 root (Raspberry Pi OS is bookworm-based; Python 3.11) with
# debootstrap, installs FaceLink from this checkout into a venv inside it, and there:
#   1. runs `facelink models` (verifies the model files built on this machine, copied in;
#      FACELINK_ARM64_BUILD_MODELS=1 downloads and converts them there instead: > 30 min),
#   2. runs `facelink detect-faces` and `compare-faces` on real photos,
#   3. runs the engine, collection and decision tests,
#   4. dumps the embedding of every face in ../shared/faces/people with the default engine
#      (YuNet in onnxruntime, SFace in OpenCV DNN) and with the int8 path (onnxruntime QDQ),
#      and checks each against the same dump made on this x86-64 machine: cosine >= 0.999
#      (int8: >= 0.99, its tolerance to its own float reference; integer kernels differ by CPU).
# Needs root (debootstrap, chroot, mounts) and network to Debian's mirror and the package
# index. Timings under emulation mean nothing and are not reported.
#
# Environment: FACELINK_ARM64_ROOT (default var/arm64/bookworm; reused between runs),
# FACELINK_ARM64_MIRROR (default http://deb.debian.org/debian), FACELINK_TEST_FACES
# (default ../shared/faces), SKIP_ARM64_CHECK=1 (exit 0 at once: for CI).
# Exit: 0 passed; 1 a check failed on arm64; 2 it could not run here (no root, no binfmt_misc,
# no network to build the root or install the wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

if [ "${SKIP_ARM64_CHECK:-0}" = 1 ]; then
  echo "arm64 check skipped (SKIP_ARM64_CHECK=1)"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "arm64 check: needs root (debootstrap, chroot, mounts)" >&2
  exit 2
fi

ROOT=$(realpath -m "${FACELINK_ARM64_ROOT:-var/arm64/bookworm}")
MIRROR=${FACELINK_ARM64_MIRROR:-http://deb.debian.org/debian}
FACES=$(realpath "${FACELINK_TEST_FACES:-../shared/faces}")
HOST_PY=${HOST_PY:-$REPO/.venv/bin/python}
OUT=$REPO/var/arm64/out
mkdir -p "$OUT"
step() { printf '\n== arm64 check: %s\n' "$*"; }
# a check that fails is exit 1, whatever code the failing command gave (pytest's 2 for a
# collection error would otherwise read as "could not run here")
fail() { step "FAILED ($1)"; exit 1; }

step "host tools (qemu-user-static, binfmt-support, debootstrap)"
need=()
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v update-binfmts >/dev/null || need+=(binfmt-support)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
update-binfmts --enable qemu-aarch64 2>/dev/null || true
if ! grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null; then
  echo "arm64 check: qemu-aarch64 binfmt handler is not enabled" >&2
  exit 2
fi

if [ ! -e "$ROOT/.facelink-bootstrapped" ]; then
  step "debootstrap bookworm arm64 into $ROOT (a few minutes)"
  rm -rf "$ROOT"
  mkdir -p "$ROOT"
  debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$ROOT" "$MIRROR" > "$OUT/debootstrap.log" 2>&1 || { tail -20 "$OUT/debootstrap.log"; exit 2; }
  touch "$ROOT/.facelink-bootstrapped"
fi

mounts=()
cleanup() {
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
bind() {  # bind SRC DST [ro]
  mkdir -p "$2"
  mount --bind "$1" "$2"
  mounts+=("$2")
  if [ "${3:-}" = ro ]; then mount -o remount,bind,ro "$2"; fi
}
mount -t proc proc "$ROOT/proc"; mounts+=("$ROOT/proc")
# no /sys: onnxruntime's cpuinfo reads the host's (x86) CPU topology there and crashes under
# qemu; without it onnxruntime warns and runs
bind /dev "$ROOT/dev"
mkdir -p "$ROOT/dev/shm"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/host-ca.crt"

step "copy the checkout (tracked and new files, no .venv/var) into the arm64 root"
rm -rf "$ROOT/opt/facelink"
mkdir -p "$ROOT/opt/facelink" "$ROOT/opt/shared/faces"
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$ROOT/opt/facelink"
bind "$FACES" "$ROOT/opt/shared/faces" ro

in_root() {
  chroot "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 PATH=/opt/venv/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_CERT=/etc/ssl/certs/host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 \
    FACELINK_TEST_FACES=/opt/shared/faces /bin/bash -euo pipefail -c "cd /opt/facelink; $1"
}

step "machine inside the root"
in_root 'echo "$(uname -m), $(. /etc/os-release; echo "$PRETTY_NAME"), $(python3 --version)"'

step "install FaceLink from the checkout (arm64 wheels from the package index)"
# Same versions of the numeric stack as the x86 side, so the comparison is of CPUs, not releases.
pins=$("$HOST_PY" -m pip freeze 2>/dev/null | grep -i -E '^(numpy|onnxruntime|opencv-python-headless|onnx)==' || true)
printf '%s\n' "$pins" > "$ROOT/opt/pins.txt"
# a C compiler and Python's headers build the int8 scan kernel (device/_int8dot.c, NEON here)
in_root 'command -v gcc > /dev/null && [ -e "/usr/include/python3.11/Python.h" ] || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      gcc libc6-dev python3-dev > /dev/null; } || exit 2
  [ -x /opt/venv/bin/python ] || python3 -m venv /opt/venv
  # qemu-user occasionally crashes a long pip run (SIGSEGV in the emulator): one retry
  pip install --quiet -c /opt/pins.txt . pytest || pip install --quiet -c /opt/pins.txt . pytest || exit 2
  python -c "import numpy, onnxruntime, cv2; print(\"numpy\", numpy.__version__, \"onnxruntime\", onnxruntime.__version__, \"opencv\", cv2.__version__)"
  python -c "from facelink.device import scan; print(\"int8 scan kernel:\", scan.kernel_isa()); assert scan.kernel_isa() == \"neon\""'

if [ "${FACELINK_ARM64_BUILD_MODELS:-0}" = 1 ]; then
  step "facelink models (download, verify, convert on arm64: over 30 minutes under qemu)"
else
  # Converting under emulation takes over half an hour (int8 calibration runs SFace hundreds of
  # times in emulated float code). The files are the same bytes on either CPU, so the ones this
  # machine built are copied in and `facelink models` only verifies them (sha256 against the
  # manifest and the lock file); FACELINK_ARM64_BUILD_MODELS=1 builds them inside the root.
  step "facelink models (verify on arm64 the model files built on this machine)"
  host_models=$("$HOST_PY" -c "from facelink.config.settings import load_settings; print(load_settings().models.models_dir)")
  "$(dirname "$HOST_PY")/facelink" models > /dev/null  # make sure they exist and are whole here
  rm -rf "$ROOT/root/.local/share/facelink/models"
  mkdir -p "$ROOT/root/.local/share/facelink"
  cp -a "$host_models" "$ROOT/root/.local/share/facelink/models"
fi
in_root 'facelink models > /opt/models.json; python -c "import json; d=json.load(open(\"/opt/models.json\")); print(json.dumps(d)[:400])"' || fail "facelink models"

step "detect-faces / compare-faces on real photos"
in_root 'facelink detect-faces --image /opt/shared/faces/multi/six_people.jpg \
           | python -c "import json,sys; n=len(json.load(sys.stdin)[\"FaceDetails\"]); print(\"six_people.jpg:\", n, \"faces\"); sys.exit(n != 6)"
         facelink compare-faces --source-image /opt/shared/faces/people/obama/1.jpg \
           --target-image /opt/shared/faces/people/obama/2.jpg --similarity-threshold 99 \
           | python -c "import json,sys; m=json.load(sys.stdin)[\"FaceMatches\"]; print(\"obama 1 vs 2: Similarity\", [round(x[\"Similarity\"], 2) for x in m]); sys.exit(len(m) != 1)"
         facelink compare-faces --source-image /opt/shared/faces/people/obama/1.jpg \
           --target-image /opt/shared/faces/people/biden/1.jpg --similarity-threshold 0 \
           | python -c "import json,sys; m=json.load(sys.stdin)[\"FaceMatches\"]; print(\"obama vs biden: Similarity\", [round(x[\"Similarity\"], 2) for x in m]); sys.exit(not m or m[0][\"Similarity\"] >= 50)"' || fail "detect-faces / compare-faces"

step "engine, collection, decision, heap, wall-clock and matcher tests (the int8 kernel on NEON)"
# test_heap and test_wall_clock call libc through ctypes (malloc_trim, adjtimex's struct timex)
in_root 'python -m pytest -q -p no:cacheprovider tests/models/test_engine.py tests/models/test_runtime.py \
           tests/enroll/test_collections.py tests/device/test_decision.py tests/device/test_heap.py \
           tests/device/test_wall_clock.py 2>&1 | tail -15' \
  || fail "the engine, collection, decision, heap and wall-clock tests"
# every int8 kernel test, by name (a new one is included without editing this list)
in_root 'python -m pytest -q -p no:cacheprovider tests/device/test_matcher.py -k int8_kernel 2>&1 | tail -5' \
  || fail "the int8 kernel tests"

step "embeddings: arm64 vs x86-64 on every face of people/ (default engine and int8 path)"
rc=0
for precision in fp32 int8; do
  "$HOST_PY" tools/embeddings.py dump "$FACES/people" "$OUT/x86_$precision.npz" --precision "$precision"
  in_root "python tools/embeddings.py dump /opt/shared/faces/people /opt/arm64_$precision.npz --precision $precision" \
    || fail "embedding dump ($precision)"
  cp "$ROOT/opt/arm64_$precision.npz" "$OUT/arm64_$precision.npz"
  # fp32 arithmetic agrees across CPUs to rounding: >= 0.999. The int8 model's integer kernels
  # requantise differently on x86 (AVX-512 VNNI) and arm64 (NEON dot product): measured min 0.994,
  # so it is held to the tolerance the int8 model has against its own float reference (0.99).
  min=0.999; [ "$precision" = int8 ] && min=0.99
  "$HOST_PY" tools/embeddings.py compare "$OUT/x86_$precision.npz" "$OUT/arm64_$precision.npz" --min-cosine "$min" || rc=1
done

if [ $rc = 0 ]; then step "PASSED"; else step "FAILED (embeddings differ)"; fi
exit $rc
