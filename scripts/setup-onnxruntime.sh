#!/usr/bin/env bash
# Provides ONNX Runtime for senti: downloads the pinned `onnxruntime` wheel from PyPI, checks its
# sha256, and unpacks libonnxruntime.so into .cache/onnxruntime/ (ignored by git). ort loads it at
# run time (`load-dynamic`); crates/model/src/runtime.rs finds it there. Idempotent.
set -euo pipefail

VERSION=1.31.1
WHEEL=onnxruntime-${VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl
WHEEL_SHA256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
LIB=libonnxruntime.so.${VERSION}

root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.cache/onnxruntime"
if [ -f "$dest/$LIB" ] && [ -f "$dest/.verified-$WHEEL_SHA256" ]; then
  exit 0
fi
if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
  echo "setup-onnxruntime: only Linux x86_64 is provisioned automatically; set ORT_DYLIB_PATH to a libonnxruntime 1.31 for $(uname -s)-$(uname -m)" >&2
  exit 1
fi
mkdir -p "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "setup-onnxruntime: downloading onnxruntime $VERSION from PyPI"
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version 3.11 --implementation cp --abi cp311 --platform manylinux_2_28_x86_64 \
  "onnxruntime==$VERSION" -d "$tmp"
actual=$(sha256sum "$tmp/$WHEEL" | cut -d' ' -f1)
if [ "$actual" != "$WHEEL_SHA256" ]; then
  echo "setup-onnxruntime: $WHEEL has sha256 $actual, expected $WHEEL_SHA256; refusing it" >&2
  exit 1
fi
python3 - "$tmp/$WHEEL" "$dest" "$LIB" <<'PY'
import sys, zipfile, os
wheel, dest, lib = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    data = z.read(f"onnxruntime/capi/{lib}")
tmp = os.path.join(dest, lib + ".part")
with open(tmp, "wb") as f:
    f.write(data)
os.replace(tmp, os.path.join(dest, lib))
PY
touch "$dest/.verified-$WHEEL_SHA256"
echo "setup-onnxruntime: $dest/$LIB ready"
